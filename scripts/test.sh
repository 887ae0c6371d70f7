#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (README: "Run the tests").
#
# Installs what the tests need on a fresh machine, into a cache reused across checkouts:
# libtorch (scripts/setup-libtorch.sh), and a Python venv with pyarrow and DuckDB, which the
# interop test uses to read a run's streams the way users will, HF `datasets`, which writes
# the dataset layouts the loader must read (tests/hf_layouts.rs), and the official `openai`
# client, which drives `tandem serve` (tests/serve.rs); and vLLM (scripts/setup-vllm.sh), which
# samples for `generate.openai` in tests/vllm.rs. Extra arguments go to cargo test.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}

"$repo/scripts/setup-libtorch.sh"

readers="$cache/py-readers"
# -I: isolated, so the repository's own datasets/ folder cannot pass for the package.
if ! "$readers/bin/python" -I -c 'import pyarrow, duckdb, datasets, openai' 2>/dev/null; then
  echo "test.sh: installing pyarrow, duckdb, datasets and openai into $readers (once)" >&2
  rm -rf "$readers"
  python3 -m venv "$readers"
  "$readers/bin/pip" install --quiet --disable-pip-version-check pyarrow==26.0.1 duckdb==2.0.0 \
    datasets==5.2.0 openai==3.63.0 >&2
fi
export TANDEM_PYTHON="$readers/bin/python"

# vLLM for CPUs, which tests/vllm.rs trains with (generate.openai); once, about 2 minutes.
TANDEM_VLLM_PYTHON=$("$repo/scripts/setup-vllm.sh")
export TANDEM_VLLM_PYTHON

cd "$repo"
cargo test --workspace "$@"
