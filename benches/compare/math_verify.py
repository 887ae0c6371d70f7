"""Verifications per second of the Python `math-verify` package on a JSON Lines case file
(`{"gold": ..., "prediction": ..., "expected": bool}` per line), in one process and one thread,
the way its README uses it: `verify(parse(gold), parse(prediction))`. A gold answer without `$`
or `\\boxed` is wrapped in `$...$`, as math-verify asks for LaTeX gold answers.

    python math_verify.py CASES.jsonl [OUT.jsonl]

Prints the throughput (imports and one warm-up call excluded) and the agreement with the
`expected` labels; OUT.jsonl gets each row with math-verify's verdict as `correct`.
"""

import json
import os
import sys
import time

# This file's name shadows the package: import it from site-packages, not from here.
here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != here]

from math_verify import parse, verify  # noqa: E402


def gold_text(gold):
    gold = str(gold)
    return gold if "$" in gold or "\\boxed" in gold else f"${gold}$"


def main():
    path = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else None
    with open(path) as f:
        cases = [json.loads(line) for line in f if line.strip()]
    verify(parse("$1$"), parse("1"))  # warm-up: lazy imports and grammar loading
    verdicts = []
    start = time.perf_counter()
    for case in cases:
        verdicts.append(bool(verify(parse(gold_text(case["gold"])), parse(case["prediction"]))))
    seconds = time.perf_counter() - start
    labelled = [(v, c["expected"]) for v, c in zip(verdicts, cases) if "expected" in c]
    agree = sum(v == e for v, e in labelled)
    print(
        f"math-verify: {len(cases)} verifications in {seconds:.3f} s = "
        f"{len(cases) / seconds:,.0f}/s; agrees with the labels on {agree}/{len(labelled)}"
    )
    if out:
        with open(out, "w") as f:
            for case, verdict in zip(cases, verdicts):
                f.write(json.dumps({**case, "correct": verdict}) + "\n")


if __name__ == "__main__":
    main()
