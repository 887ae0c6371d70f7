#!/usr/bin/env bash
# Every CUDA check in one go, for the day a GPU is lent (issue 19, part 5). Within 10 minutes on
# one H200 it runs, and prints one summary line per check (`gpu-check: NAME: ok|FAIL …`):
#
#   info        `tandem model info` on cuda: the backend is there and the model loads on it
#   logprobs    per-token log-probs on cuda (f32 and bf16) against the CPU in f32
#   generate    greedy generation on cuda (f32 and bf16) against the CPU in f32
#   train-step  one learner step on cuda against the CPU: loss and gradient norm
#   gapg        a short GAPG run of the CI demo with generation and both learners on cuda
#   cluster     a short training run as 2 local processes (generation on `device: auto`, the
#               learner on the device) against the same run in one process: the same rows
#   bench-*     the generation and train-step benches on the Qwen2.5-1.5B shape (random weights)
#
# The device machine cannot reach crates.io, so the binaries are built here and carried there:
#
#   scripts/gpu-check.sh --build           # here: release tandem + policy_bench, stripped, into target/gpu/
#   # then, with the device tool: carry target/gpu, run `scripts/gpu-check.sh` on the machine
#
# libtorch there is the machine's own torch 2.11.0 (found through `python3 -c 'import torch'`),
# or $LIBTORCH; the binaries dlopen libtorch_cuda.so from it (stages/src/policy/device.rs).
# On a machine without a GPU, `GPU_CHECK_DEVICE=cpu scripts/gpu-check.sh` runs the same checks
# against the CPU itself (the script's own test). Exit status: the number of failed checks.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$repo/target/gpu"
device=${GPU_CHECK_DEVICE:-cuda}
work=${GPU_CHECK_DIR:-$(mktemp -d)}
mkdir -p "$work"

if [ "${1:-}" = "--build" ]; then
  cd "$repo"
  cargo build --release --bin tandem --example policy_bench || exit 1
  mkdir -p "$bin"
  for b in target/release/tandem target/release/examples/policy_bench; do
    # No debug info: the device tool carries at most 64 MiB.
    strip -o "$bin/$(basename "$b")" "$b" || exit 1
  done
  ls -la "$bin"
  exit 0
fi

for b in tandem policy_bench; do
  [ -x "$bin/$b" ] || { echo "gpu-check: $bin/$b missing: run scripts/gpu-check.sh --build first" >&2; exit 1; }
done
if [ -z "${LIBTORCH:-}" ]; then
  LIBTORCH=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null) ||
    LIBTORCH="$repo/.libtorch/torch"
fi
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
tandem="$bin/tandem"
failed=0

# `check NAME COMMAND…`: runs it with its output in $work/NAME.log, prints the summary line.
check() {
  local name=$1
  shift
  local started=$SECONDS detail
  if detail=$("$@" 2>"$work/$name.log"); then
    echo "gpu-check: $name: ok ($((SECONDS - started)) s) $detail"
  else
    echo "gpu-check: $name: FAIL ($((SECONDS - started)) s) $detail; log: $work/$name.log"
    tail -5 "$work/$name.log" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
}

# The checks compare devices on the parity fixture (tests/fixtures/models/qwen2-tiny: its greedy
# steps have top-1/top-2 logit margins of 5e-3 or more, so f32 on another device must not flip
# a token); the benches use the Qwen2.5-1.5B shape with random bf16 weights.
small="$repo/tests/fixtures/models/qwen2-tiny"
setup() {
  if [ "$device" = cpu ]; then
    echo "no bench model on cpu"
    return 0
  fi
  "$tandem" model init --arch qwen2 --tokenizer "$small/tokenizer.json" \
    --hidden 1536 --layers 28 --heads 12 --kv-heads 2 --intermediate 8960 --vocab 151936 \
    --tie-embeddings true --dtype bf16 --seed 7 "$work/qwen1.5b" >/dev/null &&
  echo "Qwen2.5-1.5B shape in $work/qwen1.5b"
}

info() {
  "$tandem" model info "$small" --device "$device" --json >"$work/info.json" &&
  python3 - "$work/info.json" "$device" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
assert info["device"].startswith(sys.argv[2]), f"loaded on {info['device']!r}, not {sys.argv[2]!r}"
print(f"device {info['device']}, {info['parameters']} parameters, dtype {info['dtype']}")
PY
}

# Max |Δ| of per-token log-probs against the CPU in f32, within a tolerance per dtype.
logprobs() {
  local args=(--prompt "What is 12 + 30?" --completion " <answer>42</answer>" --chat --json)
  "$tandem" model logprobs "$small" "${args[@]}" --device cpu --dtype f32 >"$work/lp-cpu.json" &&
  "$tandem" model logprobs "$small" "${args[@]}" --device "$device" --dtype f32 >"$work/lp-f32.json" &&
  "$tandem" model logprobs "$small" "${args[@]}" --device "$device" --dtype bf16 >"$work/lp-bf16.json" &&
  python3 - "$work" <<'PY'
import json, sys
def tokens(name):
    doc = json.load(open(f"{sys.argv[1]}/lp-{name}.json"))
    return doc["logprobs"]
cpu = tokens("cpu")
out = []
for name, tolerance in [("f32", 1e-3), ("bf16", 0.15)]:
    other = tokens(name)
    assert len(other) == len(cpu), f"{name}: {len(other)} tokens, cpu {len(cpu)}"
    delta = max(abs(a - b) for a, b in zip(cpu, other))
    assert delta <= tolerance, f"{name}: max |Δ| {delta:.2e} > {tolerance}"
    out.append(f"{name} max |Δ| {delta:.1e}")
print(", ".join(out))
PY
}

# Greedy tokens against the CPU: f32 must agree, bf16 must run and give text.
generate() {
  local args=(--prompt "What is 12 + 30?" --chat --max-new-tokens 24 --greedy --json)
  "$tandem" model generate "$small" "${args[@]}" --device cpu --dtype f32 >"$work/gen-cpu.json" &&
  "$tandem" model generate "$small" "${args[@]}" --device "$device" --dtype f32 >"$work/gen-f32.json" &&
  "$tandem" model generate "$small" "${args[@]}" --device "$device" --dtype bf16 >"$work/gen-bf16.json" &&
  python3 - "$work" <<'PY'
import json, sys
def ids(name):
    doc = json.load(open(f"{sys.argv[1]}/gen-{name}.json"))
    return doc["samples"][0]["token_ids"]
cpu, f32, bf16 = ids("cpu"), ids("f32"), ids("bf16")
assert f32 == cpu, f"f32 greedy differs from the cpu's: {f32} vs {cpu}"
same = sum(a == b for a, b in zip(cpu, bf16))
print(f"f32 = cpu ({len(cpu)} tokens), bf16 agrees on {same} of {len(cpu)}")
PY
}

# One learner step (f32 on both): the first step's loss and gradient norm.
train_step() {
  local args=(--model "$small" --bench train_step --batch 8 --seq-len 128 --warmup 0 --repeat 1 --dtype f32)
  "$bin/policy_bench" "${args[@]}" --device cpu >"$work/step-cpu.json" &&
  "$bin/policy_bench" "${args[@]}" --device "$device" >"$work/step-gpu.json" &&
  python3 - "$work" <<'PY'
import json, sys
cpu = json.load(open(f"{sys.argv[1]}/step-cpu.json"))
gpu = json.load(open(f"{sys.argv[1]}/step-gpu.json"))
out = []
for key in ["first_mean_logprob", "first_grad_norm"]:
    a, b = cpu[key], gpu[key]
    rel = abs(a - b) / max(abs(a), 1e-12)
    assert rel <= 1e-3, f"{key}: cpu {a} vs gpu {b} (relative {rel:.1e})"
    out.append(f"{key} {b:.4f} (rel Δ {rel:.1e})")
print(", ".join(out))
PY
}

# The CI demo, shortened, with generation and both learners on the device (evaluations on CPU).
gapg() {
  "$tandem" demo "$repo/configs/demo-ci.yaml" --json --out "$work/demo" --cache "$work/demo-cache" \
    --set 'warm_start.set=[run.steps=200, stages.2.params.schedule.total_steps=200, stages.2.params.device='"$device"']' \
    --set 'train.set=[run.steps=10, stages.1.params.max_new_tokens=64, stages.1.params.device='"$device"', stages.7.params.device='"$device"']' \
    >"$work/demo.json" &&
  python3 - "$work/demo.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"10 RL steps in {d['seconds']['train']:.0f} s, 200 SFT steps in {d['seconds']['warm_start']:.0f} s; "
      f"overall at the budget {d['before']['overall_accuracy']:.2f} -> {d['after']['overall_accuracy']:.2f}")
PY
}

# A learner's versions crossing processes from the device: the same short run (no cloud:
# a length reward) in one process and as a local cluster of two, generation on every device
# libtorch sees (`auto`), the learner on $device. Steps before the first update must agree
# exactly; later ones may differ in the last bits where the device's backward pass is not
# deterministic, so the check reports how many steps agree.
cluster() {
  local dir="$work/cluster"
  mkdir -p "$dir"
  for layout in one two; do
    cat >"$dir/$layout.yaml" <<YAML
run: { name: cluster, seed: 3, prompts_per_step: 4, group_size: 4, steps: 4, max_staleness: 1 }
stages:
  - { id: prompts, kind: source.jsonl, params: { path: $repo/datasets/data/offline-arithmetic.jsonl, fields: { id: id } } }
  - id: rollouts
    kind: generate.policy
    params: { model: $small, device: auto, dtype: f32, chat: false, max_new_tokens: 16, batch_prompts: 1 }
  - { id: verdicts, kind: verify.exact }
  - { id: length, kind: reward.length, params: { max_tokens: 4, penalty_per_token: 0.1 } }
  - { id: advantage, kind: advantage.grpo }
  - { id: groups, kind: sink.jsonl, params: { path: $dir/$layout.jsonl } }
  - { id: learn, kind: learn.pg, params: { device: $device, optimizer: { lr: 0.01 } } }
YAML
  done
  "$tandem" run "$dir/one.yaml" --out "$dir/runs" >/dev/null &&
  "$tandem" run "$dir/two.yaml" --out "$dir/runs" --local-cluster 2 >/dev/null &&
  python3 - "$dir" <<'PY'
import json, sys
def samples(name):
    out = {}
    for line in open(f"{sys.argv[1]}/{name}.jsonl"):
        group = json.loads(line)
        for s in group["samples"]:
            out[(s["step"], s["prompt_id"], s["sample_idx"])] = (s["token_ids"], s["policy_version"])
    return out
one, two = samples("one"), samples("two")
assert one.keys() == two.keys(), f"{len(one)} samples in one process, {len(two)} in two"
steps = sorted({k[0] for k in one})
same = [t for t in steps if all(one[k] == two[k] for k in one if k[0] == t)]
assert 0 in same and 1 in same, f"the steps before the first update differ: {sorted(set(steps) - set(same))}"
versions = sorted({v for _, v in two.values()})
print(f"{len(one)} samples; steps equal in 2 processes and in 1: {same} of {steps}; versions sampled {versions}")
PY
}

bench() {
  local model="$work/qwen1.5b"
  [ "$device" = cpu ] && model=$small   # the self-test: the code path, on the fixture
  "$bin/policy_bench" --model "$model" --device "$device" "$@" >"$work/bench.json" &&
  python3 - "$work/bench.json" <<'PY'
import json, sys
b = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
rate = f", {b['new_tokens_per_s']:.0f} new tokens/s" if "new_tokens_per_s" in b else ""
print(f"{b['model']} {b['bench']} batch {b['batch']}: {b['seconds']:.3f} s{rate}, peak RSS {b['peak_rss_mb']:.0f} MiB")
PY
}

echo "gpu-check: device $device, libtorch $LIBTORCH, work dir $work"
check setup setup
check info info
check logprobs logprobs
check generate generate
check train-step train_step
check gapg gapg
check cluster cluster
check bench-generate bench --bench generate --batch 8 --prompt-len 64 --new-tokens 64
check bench-train-step bench --bench train_step --batch 8 --seq-len 128 --warmup 1 --repeat 3
echo "gpu-check: $failed failed"
exit "$failed"
