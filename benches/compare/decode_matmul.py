"""Why a decoding step multiplies as (W·xᵀ)ᵀ (BENCHMARKS.md, "Policy engine").

Times `linear(x, W)` (= x·Wᵀ, what nn.Linear and transformers run) against `mm(W, xᵀ)ᵀ` (what
tandem's `project` runs for up to 256 rows) on the projection shapes of the two benchmark models,
for the row counts of a decoding step (batch × samples) and a small prefill. CPU, f32, 2 threads,
the same libtorch as tandem. Each figure is the median of repeated calls on one weight, so the
weight may sit in the last-level cache; in a real step it streams from memory.

    ~/.cache/tandem/py-hf/bin/python benches/compare/decode_matmul.py
"""

import time

import torch

torch.set_num_threads(2)

# (K, N): hidden → out features of the small model (hidden 256, vocab 32k) and the 0.5B shape.
SHAPES = [(256, 32000), (256, 1024), (1024, 256), (256, 256),
          (896, 151936), (896, 4864), (4864, 896), (896, 896)]
ROWS = [1, 8, 32, 128, 256, 512]


def median_ms(f, n):
    for _ in range(2):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def main():
    print("| K → N | " + " | ".join(f"{m} rows" for m in ROWS) + " |")
    print("|---|" + "---|" * len(ROWS))
    for k, n in SHAPES:
        w = torch.randn(n, k)
        reps = 5 if n * k > 10_000_000 else 30
        cells = []
        for m in ROWS:
            x = torch.randn(m, k)
            a = median_ms(lambda: torch.nn.functional.linear(x, w), reps)
            b = median_ms(lambda: torch.mm(w, x.t()).t(), reps)
            cells.append(f"{a:.2f} / {b:.2f}")
        print(f"| {k} → {n} | " + " | ".join(cells) + " |", flush=True)
    print("\nEach cell: linear ms / (W·xᵀ)ᵀ ms.")


if __name__ == "__main__":
    main()
