#!/usr/bin/env bash
# Cluster runs on this machine, over loopback (BENCHMARKS.md, "Cluster runs"):
#
#  1. generation: sampled tokens/s of a generation-bound pipeline (source.jsonl → generate.policy
#     on a 12M-parameter random model, 32 steps of 8 prompts × 4 samples, no learner) as
#     1 process × 1 worker, 2 processes × 1 worker (`--local-cluster 2`) and, for reference,
#     1 process × 2 workers; one torch thread per worker, alternating, ROUNDS rounds. Wall time
#     of the whole command (start-up included), and of the same command for one step.
#  2. weights: bytes and seconds per policy version sent from the learner's process to another
#     through the cluster's broadcast operator, on the Qwen2.5-0.5B shape (examples/weights_bench.rs).
#
#   benches/cluster.sh            # both; ROUNDS=3 by default
#   PARTS=weights benches/cluster.sh
#
# Needs TANDEM_PYTHON with pyarrow (scripts/test.sh installs one) to count the sampled tokens.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rounds=${ROUNDS:-3}
parts=${PARTS:-generation weights}
python=${TANDEM_PYTHON:-$HOME/.cache/tandem/py-readers/bin/python}
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
cargo build --release --quiet --bin tandem --example weights_bench
bin="$repo/target/release/tandem"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tokenizer="$repo/tests/fixtures/models/qwen2-tiny/tokenizer.json"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%FT%TZ), $(git rev-parse --short HEAD)"

if [[ " $parts " == *" generation "* ]]; then
  "$bin" model init --arch qwen2 --tokenizer "$tokenizer" --hidden 256 --layers 4 --heads 4 \
    --kv-heads 2 --intermediate 1024 --seed 1 "$work/small" >/dev/null
  python3 - "$work/data.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(256):
        f.write(json.dumps({"id": f"p{i}", "question": f"What is {i} + {i % 7}?", "answer": str(i + i % 7)}) + "\n")
PY
  cat > "$work/gen.yaml" <<YAML
run: { name: gen, seed: 3, prompts_per_step: 8, group_size: 4, steps: 32 }
stages:
  - { id: prompts, kind: source.jsonl, params: { path: $work/data.jsonl, fields: { id: id } } }
  - id: rollouts
    kind: generate.policy
    params: { model: $work/small, chat: false, threads: 1, max_new_tokens: 64, temperature: 1.0, batch_prompts: 4 }
YAML
  for round in $(seq 1 "$rounds"); do
    for layout in "1x1" "2x1" "1x2"; do
      case $layout in
        1x1) extra=(--workers 1) ;;
        2x1) extra=(--workers 1 --local-cluster 2) ;;
        1x2) extra=(--workers 2) ;;
      esac
      # Start-up alone: the same command for one step.
      rm -rf "$work/runs"
      start=$(date +%s.%N)
      TANDEM_LOG=warn "$bin" run "$work/gen.yaml" --out "$work/runs" "${extra[@]}" --set run.steps=1 >/dev/null
      end=$(date +%s.%N)
      echo "{\"bench\": \"one_step\", \"layout\": \"$layout\", \"round\": $round, \"wall_s\": $(python3 -c "print(round($end - $start, 2))")}"
      rm -rf "$work/runs"
      start=$(date +%s.%N)
      TANDEM_LOG=warn "$bin" run "$work/gen.yaml" --out "$work/runs" "${extra[@]}" >/dev/null
      end=$(date +%s.%N)
      "$python" - "$work/runs" "$layout" "$round" "$start" "$end" <<'PY'
import glob, json, sys
import pyarrow.parquet as pq
runs, layout, round_, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
tokens = sum(sum(len(t) for t in pq.read_table(p, columns=["token_ids"]).column("token_ids").to_pylist())
             for p in glob.glob(f"{runs}/*/streams/rollouts/step=*/*.parquet"))
wall = end - start
print(json.dumps({"bench": "generation", "layout": layout, "round": round_, "tokens": tokens,
                  "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1)}))
PY
    done
  done
fi

if [[ " $parts " == *" weights "* ]]; then
  model=$cache/bench-models/qwen0.5b
  if [ ! -f "$model/model.safetensors" ]; then
    "$bin" model init --arch qwen2 --tokenizer "$tokenizer" --hidden 896 --layers 24 --heads 14 \
      --kv-heads 2 --intermediate 4864 --vocab 151936 --tie-embeddings true --seed 7 "$model" >/dev/null
  fi
  ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
  read -r p0 p1 <<<"$ports"
  printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$p0" "$p1" > "$work/hostfile"
  weights="$repo/target/release/examples/weights_bench"
  # bf16 (a GPU's dtype, 1 GB a version), then f32 (this CPU's training dtype, 2 GB): both
  # processes hold the model, a published copy and a version in flight, about 11 and 13 GB
  # at f32 on a 24 GB machine.
  # at f32 on a 24 GB machine, so f32 sends 3 versions only.
  for run in "bf16 10" "f32 3"; do
    read -r dtype versions <<<"$run"
    "$weights" --model "$model" --hostfile "$work/hostfile" --process 1 --versions "$versions" --dtype "$dtype" &
    other=$!
    "$weights" --model "$model" --hostfile "$work/hostfile" --process 0 --versions "$versions" --dtype "$dtype"
    wait "$other"
  done
fi
