#!/usr/bin/env python3
"""Load test of `tandem serve` (BENCHMARKS.md, "`tandem serve`"), standard library only.

Starts `tandem cloud-sim` and `tandem serve MODEL` on free ports, then for each concurrency level
runs that many closed-loop clients (each sends its next request when the last is answered) and
reports requests/s and p50/p99 latency. Then the same prompts through `tandem model generate`,
one process per request, one at a time: the wall time of each (start and model load included)
and the generation time it reports itself.

    scripts/serve_load.py --tandem target/release/tandem --model /tmp/bench-model \
        --levels 1,8,64 --requests 16,64,256 --max-tokens 64 --threads 1
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def start(cmd):
    """Starts a tandem server and returns (process, base URL) from its ready line."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    base = line.strip().rsplit(" ", 1)[-1]
    if not base.startswith("http"):
        proc.kill()
        sys.exit(f"no ready line from {cmd[:2]}: {line!r}")
    return proc, base


def question(rng):
    return f"What is {rng.randint(1, 9999)} + {rng.randint(1, 9999)}?"


def post(base, body):
    request = urllib.request.Request(
        base + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def level(base, clients, total, max_tokens, seed):
    rng = random.Random(seed)
    questions = [question(rng) for _ in range(total)]
    latencies, tokens, lock = [], [], threading.Lock()
    next_index = iter(range(total))

    def client():
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            body = {
                "model": "device",
                "messages": [{"role": "user", "content": questions[i]}],
                "max_tokens": max_tokens,
            }
            started = time.perf_counter()
            answer = post(base, body)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                tokens.append(answer["usage"]["completion_tokens"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": total,
        "seconds": wall,
        "requests_per_s": total / wall,
        "p50_ms": 1e3 * percentile(latencies, 50),
        "p99_ms": 1e3 * percentile(latencies, 99),
        "mean_completion_tokens": statistics.mean(tokens),
    }


def generate_one_at_a_time(tandem, model, runs, max_tokens, threads, template_suffix, seed):
    rng = random.Random(seed)
    walls, inner = [], []
    for _ in range(runs):
        prompt = question(rng) + template_suffix
        cmd = [tandem, "model", "generate", model, "--chat", "--greedy", "--prompt", prompt,
               "--max-new-tokens", str(max_tokens), "--threads", str(threads),
               "--stop", "</answer>", "--stop", "</unknown>", "--json"]
        started = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        walls.append(time.perf_counter() - started)
        inner.append(json.loads(out)["seconds"])
    return {
        "requests": runs,
        "requests_per_s": runs / sum(walls),
        "p50_ms": 1e3 * percentile(walls, 50),
        "p99_ms": 1e3 * percentile(walls, 99),
        "generation_p50_ms": 1e3 * percentile(inner, 50),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tandem", default="target/release/tandem")
    parser.add_argument("--model", required=True)
    parser.add_argument("--levels", default="1,8,64")
    parser.add_argument("--requests", default="16,64,256", help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, serve and generate alike")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--generate-runs", type=int, default=10)
    parser.add_argument("--out", default=None, help="ledger directory (default: a temporary one)")
    args = parser.parse_args()
    import tempfile

    out = args.out or tempfile.mkdtemp(prefix="serve-load-")
    sim, cloud = start([args.tandem, "cloud-sim", "--bind", "127.0.0.1:0", "--exit-on-stdin-eof"])
    serve, base = start([
        args.tandem, "serve", args.model, "--cloud", cloud, "--template", "arithmetic",
        "--bind", "127.0.0.1:0", "--threads", str(args.threads), "--max-batch", str(args.max_batch),
        "--max-new-tokens", str(args.max_tokens), "--out", out, "--exit-on-stdin-eof",
    ])
    results = {"serve": [], "machine": os.uname().nodename, "cpus": os.cpu_count()}
    try:
        post(base, {"messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4})
        for clients, total in zip(map(int, args.levels.split(",")), map(int, args.requests.split(","))):
            results["serve"].append(level(base, clients, total, args.max_tokens, seed=clients))
    finally:
        for proc in (serve, sim):
            proc.stdin.close()
            proc.wait(timeout=60)
    results["generate"] = generate_one_at_a_time(
        args.tandem, args.model, args.generate_runs, args.max_tokens, args.threads,
        " Ask for help if you cannot solve it.", seed=0,
    )
    print("| client | concurrent | requests | requests/s | p50 ms | p99 ms | tokens/answer |")
    print("|---|---|---|---|---|---|---|")
    for r in results["serve"]:
        print(f"| tandem serve | {r['clients']} | {r['requests']} | {r['requests_per_s']:.1f} | "
              f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_completion_tokens']:.1f} |")
    g = results["generate"]
    print(f"| tandem model generate (a process per request) | 1 | {g['requests']} | "
          f"{g['requests_per_s']:.2f} | {g['p50_ms']:.0f} | {g['p99_ms']:.0f} | – |")
    print(f"\n(generation alone inside `model generate`: p50 {g['generation_p50_ms']:.0f} ms)")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
