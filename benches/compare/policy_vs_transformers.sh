#!/usr/bin/env bash
# Side by side: the policy engine against HF transformers on the same random-weight models, the
# same batches and the same thread count (BENCHMARKS.md, "Policy engine").
#
#   benches/compare/policy_vs_transformers.sh            # all shapes
#   SHAPES=small benches/compare/policy_vs_transformers.sh
#   ROUNDS=2 benches/compare/policy_vs_transformers.sh   # interleave the tools twice
#
# Needs the venv of scripts/parity/README.md (torch + transformers) at $HF_PYTHON
# (default ~/.cache/tandem/py-hf/bin/python). Models are written once under $MODELS
# (default ~/.cache/tandem/bench-models) by `tandem model init`. One process per measurement,
# so each peak RSS is that bench's own.
set -euo pipefail
cd "$(dirname "$0")/../.."

HF_PYTHON=${HF_PYTHON:-$HOME/.cache/tandem/py-hf/bin/python}
MODELS=${MODELS:-$HOME/.cache/tandem/bench-models}
THREADS=${THREADS:-2}
SHAPES=${SHAPES:-"small qwen0.5b"}
ROUNDS=${ROUNDS:-1}
TOKENIZER=tests/fixtures/models/qwen2-tiny/tokenizer.json

cargo build --release --quiet --bin tandem --example policy_bench
TANDEM=target/release/tandem
BENCH=target/release/examples/policy_bench

make_model() { # name, init args...
  local name=$1; shift
  if [[ ! -f $MODELS/$name/model.safetensors ]]; then
    "$TANDEM" model init "$MODELS/$name" --arch qwen2 --tokenizer "$TOKENIZER" "$@" >&2
  fi
}
# A hidden-256, 4-layer model with a 32k vocabulary (TinyLlama's size): per-token overhead
# dominates. (With Qwen's 151,936 rows the step is the output projection's 155 MB weight read.)
make_model small --hidden 256 --layers 4 --heads 4 --kv-heads 2 --intermediate 1024 --vocab 32000
# Qwen2.5-0.5B's shape with random weights.
make_model qwen0.5b --hidden 896 --layers 24 --heads 14 --kv-heads 2 --intermediate 4864 --vocab 151936

# Single runs on this VM vary by tens of percent (memory bandwidth shared with neighbours), so
# the tools alternate: tandem, transformers, tandem, ... for ROUNDS rounds per bench.
for shape in $SHAPES; do
  # The 0.5B shape takes half a minute per step on 2 cores: one warm-up, two measured runs.
  repeat=3; [[ $shape == qwen0.5b ]] && repeat=2
  for bench in generate train_step; do
    args=(--model "$MODELS/$shape" --bench "$bench" --threads "$THREADS" --batch 8 --prompt-len 64 --new-tokens 64 --seq-len 128 --repeat $repeat)
    for _ in $(seq "$ROUNDS"); do
      "$BENCH" "${args[@]}"
      "$HF_PYTHON" benches/compare/hf_policy.py "${args[@]}"
    done
  done
done
