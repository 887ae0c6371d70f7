#!/usr/bin/env bash
# `tandem report` on a synthetic run of 1M sample rows (1,000 steps × 1,000 samples, groups of 4,
# with prompts, local + cloud verdicts, rewards and a cloud ledger: ~3.6M rows read), cold, then
# again after appending 10 steps (1%), then with --from-scratch. Figures go to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tandem --example report_bench
run="${1:-/tmp/report-bench-run}"
rm -rf "$run"
target/release/examples/report_bench "$run" 0 1000 1000
time_report() {
    local label=$1; shift
    local start end
    start=$(date +%s.%N)
    target/release/tandem --log warn report "$run" "$@" --json > /tmp/report-bench.json
    end=$(date +%s.%N)
    printf '%-12s %6.2f s  rows_read=%s steps_processed=%s\n' "$label" "$(echo "$end - $start" | bc)" \
        "$(grep -m1 '"rows_read"' /tmp/report-bench.json | tr -dc 0-9)" \
        "$(grep -m1 '"steps_processed"' /tmp/report-bench.json | tr -dc 0-9)"
}
time_report cold
target/release/examples/report_bench "$run" 1000 1010 1000
time_report incremental
time_report scratch --from-scratch
