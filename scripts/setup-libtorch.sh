#!/usr/bin/env bash
# Installs libtorch for tch 0.24.0 with no manual step, and links it at .libtorch/ in the repo,
# where .cargo/config.toml points LIBTORCH. Reuses the install when it is already there.
#
# libtorch comes from the PyPI torch wheel (installed with --no-deps), beside the two CUDA runtime
# wheels that libtorch_cpu links against even on a CPU machine. The pins must match tch exactly:
# torch-sys checks nothing at link time, and the GPU machines carry torch 2.11.0.
#
#   TANDEM_CACHE   where installs live (default: ~/.cache/tandem); shared by every checkout
#
# With --print-env, prints `export LIBTORCH=...` (for `eval "$(scripts/setup-libtorch.sh --print-env)"`
# in shells that build outside this repo's cargo config).
set -euo pipefail

TORCH_VERSION=2.11.0
CUDA_RUNTIME_VERSION=13.0.96
CUDA_CUPTI_VERSION=13.0.85

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
prefix="$cache/libtorch-$TORCH_VERSION"
stamp="$prefix/.complete"

if [ ! -f "$stamp" ]; then
  echo "setup-libtorch: installing torch==$TORCH_VERSION into $prefix (once; ~1 GB)" >&2
  python=${PYTHON:-python3}
  command -v "$python" >/dev/null || { echo "setup-libtorch: python3 with pip is needed" >&2; exit 1; }
  tmp="$prefix.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$cache"
  # --no-deps: we want libtorch, not the Python stack; the two nvidia wheels are what it links.
  "$python" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    --only-binary=:all: --target "$tmp" \
    "torch==$TORCH_VERSION" \
    "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" \
    "nvidia-cuda-cupti==$CUDA_CUPTI_VERSION" >&2
  test -f "$tmp/torch/lib/libtorch_cpu.so" || { echo "setup-libtorch: wheel has no torch/lib/libtorch_cpu.so" >&2; exit 1; }
  rm -rf "$prefix"
  mv "$tmp" "$prefix"
  touch "$stamp"
fi

# The link makes `cargo build` find libtorch with no environment, from any checkout.
ln -sfn "$prefix" "$repo/.libtorch"
if [ "${1:-}" = "--print-env" ]; then
  echo "export LIBTORCH=$prefix/torch"
fi
