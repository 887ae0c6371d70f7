#!/usr/bin/env bash
# Whole-run throughput of the release binary: sample rows/s for a generated dataset through
# source.jsonl → generate.offline → verify.exact, with materialisation on and off, on 1 and 2
# workers. Wall time includes start-up and loading the dataset (criterion's bench excludes them).
#
#   benches/run_throughput.sh [prompts] [group_size] [prompts_per_step] [repeats]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prompts=${1:-16384}; g=${2:-8}; per_step=${3:-1024}; repeats=${4:-3}
cd "$repo"
cargo build --release --quiet
bin="$repo/target/release/tandem"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

python3 - "$work/data.jsonl" "$prompts" "$g" <<'PY'
import json, sys
path, n, g = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "w") as f:
    for i in range(n):
        comps = [f"<think>{i} plus {j} makes a few words of reasoning text here</think> <answer>{i + j % 2}</answer>" for j in range(g)]
        f.write(json.dumps({"id": f"p{i}", "question": f"What is {i} + 0?", "answer": i, "completions": comps}) + "\n")
PY
cat > "$work/pipeline.yaml" <<YAML
run: { seed: 1, prompts_per_step: $per_step, group_size: $g }
stages:
  - { id: prompts, kind: source.jsonl, params: { path: $work/data.jsonl, fields: { id: id, completions: completions } } }
  - { id: rollouts, kind: generate.offline }
  - { id: verdicts, kind: verify.exact }
YAML

python3 - "$bin" "$work" "$prompts" "$g" "$per_step" "$repeats" <<'PY'
import os, platform, subprocess, sys, time
bin, work, prompts, g, per_step, repeats = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
samples = prompts // per_step * per_step * g
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"machine: {os.cpu_count()} cores, {cpu}")
print(f"dataset: {prompts} prompts x {g} samples, {per_step} prompts/step ({samples} sample rows)")
env = dict(os.environ, TANDEM_LOG="warn")
for workers in (1, 2):
    for materialize in (False, True):
        best = float("inf")
        for _ in range(repeats):
            args = [bin, "run", f"{work}/pipeline.yaml", "--workers", str(workers), "--out", f"{work}/runs"]
            if not materialize:
                args.append("--no-materialize")
            start = time.perf_counter()
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env)
            best = min(best, time.perf_counter() - start)
            subprocess.run(["rm", "-rf", f"{work}/runs"], check=True)
        print(f"workers={workers} materialize={'on' if materialize else 'off':<3} best of {repeats}: {best:6.2f} s  {samples / best:9.0f} sample rows/s")
PY
