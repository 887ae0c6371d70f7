#!/usr/bin/env bash
# `tandem replay` on a synthetic run of 1M sample rows (1,000 steps × 1,000 samples, groups of 4,
# written by examples/report_bench.rs): the stored prompts, samples, cloud answers and verdicts
# are read back and reward.collab (a new αc) and advantage.gapg run again. Figures go to
# BENCHMARKS.md ("`tandem replay`").
#
#   benches/replay_bench.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tandem --example report_bench
run="${1:-/tmp/replay-bench-run}"
out=/tmp/replay-bench-out
rm -rf "$run" "$out"
target/release/examples/report_bench "$run" 0 1000 1000
pipeline=$(mktemp --suffix .yaml)
cat > "$pipeline" <<'YAML'
run: { name: replay-bench, prompts_per_step: 250, group_size: 4, seed: 0 }
stages:
  - { id: prompts, kind: source.jsonl, params: { path: synthetic.jsonl } }
  - { id: rollouts, kind: generate.offline }
  - { id: cloud, kind: cloud.openai, params: { base_url: "http://127.0.0.1:9/v1", model: synthetic } }
  - { id: verdicts, kind: verify.exact }
  - { id: reward, kind: reward.collab, params: { alpha_cloud: 0.6 } }
  - { id: advantage, kind: advantage.gapg }
YAML
for workers in 1 2; do
  rm -rf "$out"
  start=$(date +%s.%N)
  /usr/bin/time -f "peak RSS %M KB" target/release/tandem --log warn replay "$run" --from reward \
    --pipeline "$pipeline" --workers "$workers" --out "$out" > /dev/null
  end=$(date +%s.%N)
  printf 'replay, %s worker(s): %.2f s\n' "$workers" "$(echo "$end - $start" | bc)"
done
rm -f "$pipeline"
