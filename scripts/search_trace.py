#!/usr/bin/env python3
"""What the model did on a search suite (the built-in demo, configs/demo.yaml): per evaluation run of a demo
directory, how its searches ended.

    $TANDEM_PYTHON scripts/search_trace.py runs/demo-<time>

For each `eval-help-*` (the prompt with the help option) and `eval-local-*` (without it) run,
in the order they ran (before RL, then after), it prints:

- right: the verdicts stream's share of right answers (for `eval-help`, the cloud's answers to
  the asks included, before the budget cap);
- found and answered: the last try reached the target and the model answered;
- answered without finding: it answered after a try that missed;
- asked: it called for help, with how many tries it had made first (`asked after n`);
- asked after finding: it asked although a try had reached the target (a wasted call);
- cut off: it ran out of tokens mid-search;
- repeated: some number was tried twice.

It reads the stored Parquet streams only (pyarrow), never the model.
"""

import collections
import glob
import os
import re
import sys

import pyarrow.parquet as pq

QUESTION = re.compile(r"Which of (.*) (plus|minus|times) (-?\d+) is (-?\d+)\?")
TRY = re.compile(r"(-?\d+) [-+*] (-?\d+) = (-?\d+)")


def rows(run, stream):
    files = sorted(glob.glob(os.path.join(run, "streams", stream, "**", "*.parquet"), recursive=True))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def trace(run):
    questions = {p["prompt_id"]: p["question"] for p in rows(run, "prompts")}
    solved = [v["correct"] for v in rows(run, "verdicts")]
    counts = collections.Counter()
    asked_after = collections.Counter()
    samples = rows(run, "rollouts")
    for sample in samples:
        match = QUESTION.search(questions[sample["prompt_id"]])
        if match is None:
            continue
        target = int(match.group(4))
        tries = [(int(n), int(v)) for n, _, v in TRY.findall(sample["text"])]
        found = any(v == target for _, v in tries)
        if len({n for n, _ in tries}) < len(tries):
            counts["repeated"] += 1
        if sample["asked_help"]:
            counts["asked"] += 1
            asked_after[len(tries)] += 1
            if found:
                counts["asked after finding"] += 1
        elif "<answer>" in sample["text"]:
            key = "found and answered" if tries and tries[-1][1] == target else "answered without finding"
            counts[key] += 1
        if sample["finish_reason"] == "length":
            counts["cut off"] += 1
    n = len(samples)
    share = lambda k: f"{100 * counts[k] / n:.0f}%"
    print(f"{os.path.basename(run)}: {n} answers, right {100 * sum(solved) / len(solved):.0f}%")
    for key in ["found and answered", "answered without finding", "asked", "asked after finding", "cut off", "repeated"]:
        print(f"  {key:<26} {share(key)}")
    if asked_after:
        spread = ", ".join(f"{k}: {asked_after[k]}" for k in sorted(asked_after))
        print(f"  asked after n tries        {spread}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    demo = sys.argv[1]
    runs = sorted(glob.glob(os.path.join(demo, "eval-help-*")) + glob.glob(os.path.join(demo, "eval-local-*")),
                  key=lambda r: (r.rsplit("-", 2)[-2:], "local" in r))
    if not runs:
        sys.exit(f"{demo}: no eval-help-* or eval-local-* runs")
    for run in runs:
        trace(run)


if __name__ == "__main__":
    main()
