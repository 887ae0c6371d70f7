#!/usr/bin/env bash
# `tandem verify --kind math` against the Python `math-verify` package (0.9.0) on the same
# cases: the shipped datasets/data/verify-math-cases.jsonl, repeated so that both take long
# enough to time. Both figures are in-process time (no interpreter or process start-up), JSON
# reading included; math-verify runs in one thread, tandem in one and in two, once per judging
# mode of verify.math (`strict`, the default, and `math_verify`, which judges as math-verify
# does), each with its agreement with the labels and with math-verify's own verdicts.
#
#   benches/compare/verify_vs_math_verify.sh [repeats]     # default 20 (1,200 cases)
#
# Environment: CASES (another case file, same format), MODES (default "strict math_verify"),
# TANDEM_BIN (a tandem binary to use instead of building target/release/tandem; throughput is
# only meaningful for a release build), MATH_VERIFY_VENV (a venv that has math-verify).
# Installs math-verify into a venv under ~/.cache/tandem once (PyPI must be reachable).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
repeats=${1:-20}
cases=${CASES:-datasets/data/verify-math-cases.jsonl}
modes=${MODES:-strict math_verify}
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
venv=${MATH_VERIFY_VENV:-$cache/math-verify}

if ! "$venv/bin/python" -c 'import math_verify' 2>/dev/null; then
  echo "verify_vs_math_verify.sh: installing math-verify into $venv (once)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "math-verify[antlr4-13-2]==0.9.0" >&2
fi

cd "$repo"
if [ -n "${TANDEM_BIN:-}" ]; then
  tandem=$TANDEM_BIN
else
  cargo build --release --quiet
  tandem=target/release/tandem
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for _ in $(seq "$repeats"); do cat "$cases"; done > "$work/cases.jsonl"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "machine: $(nproc) cores, $cpu"
echo "cases: $(wc -l < "$work/cases.jsonl") ($repeats x $cases)"

"$venv/bin/python" benches/compare/math_verify.py "$work/cases.jsonl" "$work/math-verify.jsonl"

for mode in $modes; do
  for threads in 1 2; do
    TANDEM_LOG=warn "$tandem" verify --kind math --input "$work/cases.jsonl" \
      --params "{\"mode\": \"$mode\"}" --output "$work/tandem.jsonl" --threads "$threads" \
      2> "$work/summary.txt"
    python3 - "$work/tandem.jsonl" "$threads" "$work/summary.txt" "$work/math-verify.jsonl" "$mode" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
theirs = [json.loads(l)["correct"] for l in open(sys.argv[4])]
summary = open(sys.argv[3]).readline()
seconds = float(re.search(r"([0-9.]+) s \(", summary).group(1))
labelled = [r for r in rows if "expected" in r]
agree = sum(r["correct"] == r["expected"] for r in labelled)
same = sum(r["correct"] == t for r, t in zip(rows, theirs))
threads = sys.argv[2]
print(f"tandem verify (mode {sys.argv[5]}, {threads} thread{'s' if threads != '1' else ''}): "
      f"{len(rows)} verifications in {seconds:.3f} s = {len(rows) / seconds:,.0f}/s; "
      f"agrees with the labels on {agree}/{len(labelled)}, with math-verify on {same}/{len(rows)}")
PY
  done
  echo "cases where mode $mode and math-verify disagree (one copy of each):"
  python3 - "$work/tandem.jsonl" "$work/math-verify.jsonl" <<'PY'
import json, sys
seen = set()
for ours, theirs in zip(open(sys.argv[1]), open(sys.argv[2])):
    r, t = json.loads(ours), json.loads(theirs)
    if r["correct"] != t["correct"] and r["id"] not in seen:
        seen.add(r["id"])
        print(f"  {r['id']}: gold {r['gold']!r}, extracted {r.get('extracted')!r}: "
              f"tandem {r['correct']}, math-verify {t['correct']}, expected {r.get('expected')}")
PY
done

echo "cases where math-verify and the labels disagree (one copy of each):"
python3 - "$work/math-verify.jsonl" <<'PY'
import json, sys
seen = set()
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "expected" in r and r["correct"] != r["expected"] and r["id"] not in seen:
        seen.add(r["id"])
        answer = r["prediction"].rsplit("answer is", 1)[-1].strip()
        print(f"  {r['id']}: gold {r['gold']!r}, prediction ...{answer[-40:]!r}: expected {r['expected']}, math-verify {r['correct']}")
PY
