#!/usr/bin/env bash
# Full fine-tuning against LoRA r=16 on all seven projections: one train step of the policy
# engine on the Qwen2.5-0.5B shape (8 × 128 tokens), alternating, one process per measurement so
# each peak RSS is that bench's own (BENCHMARKS.md, "LoRA").
#
#   benches/compare/lora_train_step.sh            # ROUNDS=1
#   ROUNDS=2 benches/compare/lora_train_step.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

MODELS=${MODELS:-$HOME/.cache/tandem/bench-models}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
TOKENIZER=tests/fixtures/models/qwen2-tiny/tokenizer.json

cargo build --release --quiet --bin tandem --example policy_bench
if [[ ! -f $MODELS/qwen0.5b/model.safetensors ]]; then
  target/release/tandem model init "$MODELS/qwen0.5b" --arch qwen2 --tokenizer "$TOKENIZER" \
    --hidden 896 --layers 24 --heads 14 --kv-heads 2 --intermediate 4864 --vocab 151936 >&2
fi
args=(--model "$MODELS/qwen0.5b" --bench train_step --threads "$THREADS" --batch 8 --seq-len 128 --repeat 2)
for _ in $(seq "$ROUNDS"); do
  target/release/examples/policy_bench "${args[@]}"
  target/release/examples/policy_bench "${args[@]}" --lora-r 16
done
