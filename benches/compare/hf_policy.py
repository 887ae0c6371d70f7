#!/usr/bin/env python3
"""HF transformers side of the tandem policy-engine benchmark (CPU, 2 threads, float32).

One benchmark per invocation (so peak RSS is that benchmark's own), one JSON line on stdout:

  generate:   {"tool": "transformers", "bench": "generate", "model": ..., "batch": 8, "prompt_len": 64,
               "new_tokens": 64, "seconds": s, "new_tokens_per_s": x, "peak_rss_mb": m}
  train_step: {"tool": "transformers", "bench": "train_step", "model": ..., "batch": 8, "seq_len": 128,
               "seconds": s, "tokens_per_s": x, "peak_rss_mb": m}

`seconds` is the median over --repeat timed runs after --warmup untimed ones.

  python benches/compare/hf_policy.py --model tests/fixtures/models/qwen2-tiny --bench generate
  python benches/compare/hf_policy.py --model DIR --bench train_step --batch 8 --seq-len 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import transformers
from transformers import AutoModelForCausalLM, GenerationConfig

SEED = 0


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def load(model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model


def random_ids(vocab: int, batch: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(SEED)
    return torch.randint(0, vocab, (batch, length), generator=g)


def bench_generate(model, args) -> dict:
    model.eval()
    ids = random_ids(model.config.vocab_size, args.batch, args.prompt_len)
    mask = torch.ones_like(ids)
    n = args.new_tokens
    # eos_token_id=None: nothing stops early, every row produces exactly n tokens.
    gen = GenerationConfig(
        do_sample=False,
        max_new_tokens=n,
        min_new_tokens=n,
        eos_token_id=None,
        pad_token_id=0,
        use_cache=True,
    )

    def once() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, generation_config=gen)
        dt = time.perf_counter() - t0
        assert out.shape == (args.batch, args.prompt_len + n), out.shape
        return dt

    seconds = timed(once, args)
    return {
        "bench": "generate",
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "new_tokens": n,
        "seconds": seconds,
        "new_tokens_per_s": args.batch * n / seconds,
    }


def bench_train_step(model, args) -> dict:
    model.train()
    ids = random_ids(model.config.vocab_size, args.batch, args.seq_len)
    mask = torch.ones_like(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)

    def once() -> float:
        t0 = time.perf_counter()
        # labels=input_ids: HF shifts internally -> mean next-token cross-entropy over batch*(seq_len-1)
        loss = model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        assert torch.isfinite(loss), loss
        return dt

    seconds = timed(once, args)
    return {
        "bench": "train_step",
        "batch": args.batch,
        "seq_len": args.seq_len,
        "seconds": seconds,
        "tokens_per_s": args.batch * args.seq_len / seconds,
    }


def timed(fn, args) -> float:
    for _ in range(args.warmup):
        fn()
    return statistics.median(fn() for _ in range(args.repeat))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="local HF model directory")
    p.add_argument("--bench", choices=["generate", "train_step"], required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    model = load(args.model)
    result = (bench_generate if args.bench == "generate" else bench_train_step)(model, args)
    line = {
        "tool": "transformers",
        "model": args.model.resolve().name,
        **result,
        "peak_rss_mb": peak_rss_mb(),
        "threads": args.threads,
        "dtype": "float32",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    # keep "tool", "bench" first for readability
    ordered = {"tool": line.pop("tool"), "bench": line.pop("bench"), **line}
    print(json.dumps(ordered), flush=True)


if __name__ == "__main__":
    main()
