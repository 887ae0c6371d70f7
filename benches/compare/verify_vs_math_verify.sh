#!/usr/bin/env bash
# `tandem verify --kind math` against the Python `math-verify` package (0.9.0) on the same
# cases: the shipped datasets/data/verify-math-cases.jsonl, repeated so that both take long
# enough to time. Both figures are in-process time (no interpreter or process start-up), JSON
# reading included; math-verify runs in one thread, tandem in one and in two.
#
#   benches/compare/verify_vs_math_verify.sh [repeats]     # default 20 (1,200 cases)
#
# Installs math-verify into a venv under ~/.cache/tandem once (PyPI must be reachable).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
repeats=${1:-20}
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
venv="$cache/math-verify"

if ! "$venv/bin/python" -c 'import math_verify' 2>/dev/null; then
  echo "verify_vs_math_verify.sh: installing math-verify into $venv (once)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "math-verify[antlr4-13-2]==0.9.0" >&2
fi

cd "$repo"
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for _ in $(seq "$repeats"); do cat datasets/data/verify-math-cases.jsonl; done > "$work/cases.jsonl"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "machine: $(nproc) cores, $cpu"
echo "cases: $(wc -l < "$work/cases.jsonl") ($repeats x datasets/data/verify-math-cases.jsonl)"

"$venv/bin/python" benches/compare/math_verify.py "$work/cases.jsonl" "$work/math-verify.jsonl"

for threads in 1 2; do
  TANDEM_LOG=warn target/release/tandem verify --kind math --input "$work/cases.jsonl" \
    --output "$work/tandem.jsonl" --threads "$threads" 2> "$work/summary.txt"
  python3 - "$work/tandem.jsonl" "$threads" "$work/summary.txt" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
summary = open(sys.argv[3]).readline()
seconds = float(re.search(r"([0-9.]+) s \(", summary).group(1))
agree = sum(r["correct"] == r["expected"] for r in rows)
print(f"tandem verify ({sys.argv[2]} thread{'s' if sys.argv[2] != '1' else ''}): {len(rows)} verifications in "
      f"{seconds:.3f} s = {len(rows) / seconds:,.0f}/s; agrees with the labels on {agree}/{len(rows)}")
PY
done

echo "cases where math-verify and the labels disagree (one copy of each):"
python3 - "$work/math-verify.jsonl" <<'PY'
import json, sys
seen = set()
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["correct"] != r["expected"] and r["id"] not in seen:
        seen.add(r["id"])
        answer = r["prediction"].rsplit("answer is", 1)[-1].strip()
        print(f"  {r['id']}: gold {r['gold']!r}, prediction ...{answer[-40:]!r}: expected {r['expected']}, math-verify {r['correct']}")
PY
