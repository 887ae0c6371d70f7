#!/usr/bin/env python3
"""Writes offline-arithmetic.jsonl: arithmetic questions, each with four stored completions in the
paper's tag format (some right, some wrong, some asking for help), so a pipeline can run from
nothing but this repository. Deterministic: the same file every time.

    python3 datasets/data/make_offline_arithmetic.py > datasets/data/offline-arithmetic.jsonl
"""
import json
import random

rng = random.Random(20261120)
OPS = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]
HELP = "<unknown> I need external assistance </unknown>"

for i in range(256):
    hard = i % 2 == 1
    digits = 4 if hard else 2
    a, b = rng.randrange(10 ** (digits - 1), 10 ** digits), rng.randrange(10 ** (digits - 1), 10 ** digits)
    sym, fn = rng.choice(OPS)
    answer = fn(a, b)
    question = f"What is {a} {sym} {b}?"
    completions = []
    for _ in range(4):
        roll = rng.random()
        # Hard questions are solved less often and ask for help more often.
        p_right, p_help = (0.3, 0.4) if hard else (0.75, 0.1)
        if roll < p_right:
            completions.append(f"<think>{a} {sym} {b} = {answer}</think> <answer>{answer}</answer>")
        elif roll < p_right + p_help:
            completions.append(f"<think>{a} {sym} {b} is too hard to do reliably.</think> {HELP}")
        else:
            wrong = answer + rng.choice([-10, -2, -1, 1, 2, 10]) * (10 if hard else 1)
            completions.append(f"<think>{a} {sym} {b} = {wrong}</think> <answer>{wrong}</answer>")
    print(json.dumps({
        "id": f"arith-{i:04d}",
        "question": question,
        "answer": answer,
        "level": "hard" if hard else "easy",
        "completions": completions,
    }))
