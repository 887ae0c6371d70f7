"""Greedy and sampled accuracy and help rate of a demo checkpoint, read with transformers.

Used for the SFT learning-rate figures in BENCHMARKS.md ("tandem demo"): every single-digit
sum and difference of the operands 1-9 (the easy level, 162 questions) and 100 seeded 4-digit products (hard), each
with the RL prompt's help sentence and bare (the device-only prompt). Greedy: one answer per
question; sampled: 4 per question at temperature 1 (no top-k/top-p).

    ~/.cache/tandem/py-hf/bin/python benches/compare/demo_warm_accuracy.py \
        ~/.cache/tandem/demo/warm-<key>/model [more checkpoints...]

Needs the venv of scripts/parity/README.md (torch + transformers).
"""

import random
import re
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HELP_SENTENCE = " Ask for help if you cannot solve it."
ANSWER = re.compile(r"<answer>\s*(-?\d+)\s*</answer>")


def questions():
    easy = [
        (f"What is {a} {op} {b}?", a + b if op == "+" else a - b)
        for a in range(1, 10)
        for b in range(1, 10)
        for op in "+-"
    ]
    rng = random.Random(1)
    hard = []
    for _ in range(100):
        a, b = rng.randint(1000, 9999), rng.randint(1000, 9999)
        hard.append((f"What is {a} * {b}?", a * b))
    return {"easy": easy, "hard": hard}


def judge(texts, answers):
    correct = asked = 0
    for text, answer in zip(texts, answers):
        asked += "<unknown>" in text
        match = ANSWER.search(text)
        correct += bool(match and int(match.group(1)) == answer)
    return correct / len(texts), asked / len(texts)


def evaluate(directory):
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id or 0
    print(directory)
    for level, items in questions().items():
        answers = [answer for _, answer in items]
        for suffix, prompt_name in [(HELP_SENTENCE, "with help sentence"), ("", "bare")]:
            prompts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": q + suffix}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for q, _ in items
            ]
            batch = tokenizer(prompts, return_tensors="pt", padding=True)
            start = batch.input_ids.shape[1]
            with torch.no_grad():
                greedy = model.generate(**batch, max_new_tokens=24, do_sample=False, pad_token_id=pad)
                torch.manual_seed(0)
                sampled = model.generate(
                    **batch, max_new_tokens=24, do_sample=True, temperature=1.0, top_k=0,
                    top_p=1.0, num_return_sequences=4, pad_token_id=pad,
                )
            decode = lambda rows: [tokenizer.decode(r[start:], skip_special_tokens=True) for r in rows]
            g_acc, g_ask = judge(decode(greedy), answers)
            s_acc, s_ask = judge(decode(sampled), [a for a in answers for _ in range(4)])
            print(
                f"  {level:4} {prompt_name:18} greedy acc {g_acc:.2f} asks {g_ask:.2f} | "
                f"sampled acc {s_acc:.2f} asks {s_ask:.2f}"
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    for directory in sys.argv[1:]:
        evaluate(directory)
