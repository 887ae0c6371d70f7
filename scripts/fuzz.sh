#!/usr/bin/env bash
# Fuzzes the answer parsers for a bounded time each: the math verifier (extraction,
# normalisation, parsing, equivalence) and the Countdown parser. A panic, a verdict over its
# time limit, or an input that takes libFuzzer longer than 10 s stops the run and leaves the
# input under fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 min per target
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if missing.
# The first run compiles the stages crate and its dependencies with sanitizers (minutes).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (once)" >&2
  cargo install --locked cargo-fuzz >&2
fi

cd "$repo"
# Seed each corpus with the shipped cases, so fuzzing starts from realistic answers.
mkdir -p fuzz/corpus/math fuzz/corpus/countdown
python3 - <<'PY'
import json, pathlib
for target, file in [("math", "verify-math-cases.jsonl"), ("countdown", "verify-countdown-cases.jsonl")]:
    out = pathlib.Path("fuzz/corpus") / target
    for line in pathlib.Path("datasets/data", file).read_text().splitlines():
        row = json.loads(line)
        if target == "math":
            text = f"{row['gold']}\n{row['prediction']}"
        else:
            answer = row["prediction"].split("<answer>")[-1].split("</answer>")[0]
            text = answer
        (out / f"seed-{row['id']}").write_text(text)
PY

for target in math countdown; do
  echo "fuzz.sh: $target for ${seconds}s" >&2
  cargo +nightly fuzz run "$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536
done
echo "fuzz.sh: no failures" >&2
