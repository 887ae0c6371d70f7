#!/usr/bin/env python3
"""A tandem `reward.command` plug-in: one group per line in, one line of scores out.

Scores each sample with two components: `exact` (1 when the last <answer>...</answer> equals the
reference answer, else 0) and `brevity` (-0.01 per word past 40). Uses only the standard library.

Try it by hand:
    echo '{"answer": "4", "samples": [{"text": "<answer>4</answer>"}]}' | python3 examples/rewards/exact_brevity.py
"""
import json
import re
import sys

ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
WORD_BUDGET = 40


def score(group):
    gold = str(group.get("answer") or "").strip()
    scores = []
    for sample in group["samples"]:
        found = ANSWER.findall(sample["text"])
        exact = 1.0 if found and gold and found[-1].strip() == gold else 0.0
        words = len(sample["text"].split())
        brevity = -0.01 * (words - WORD_BUDGET) if words > WORD_BUDGET else 0.0
        scores.append({"exact": exact, "brevity": brevity})
    return {"scores": scores}


def main():
    for line in sys.stdin:
        try:
            reply = score(json.loads(line))
        except Exception as error:  # the group becomes an error row; the run goes on
            reply = {"error": f"{type(error).__name__}: {error}"}
        # allow_nan=False: a NaN would be rejected by tandem anyway; fail here, where it is made.
        print(json.dumps(reply, allow_nan=False), flush=True)


if __name__ == "__main__":
    main()
