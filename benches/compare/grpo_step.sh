#!/usr/bin/env bash
# Side by side: one GRPO training step of tandem against TRL's GRPOTrainer on the same
# random-weight model, group size, batch and lengths (BENCHMARKS.md, "Training step: side by
# side with TRL's GRPOTrainer").
#
#   benches/compare/grpo_step.sh                 # 1 round: 6 steps of each tool, the first dropped
#   ROUNDS=3 STEPS=6 benches/compare/grpo_step.sh
#
# A step: 8 prompts × G = 4 completions of exactly 64 sampled tokens (temperature 1.0, plain
# prompts; a random model almost never samples EOS), a reward that costs nothing, GRPO advantages,
# one forward/backward over the 32 sequences and one AdamW step (lr 1e-6, no KL). tandem runs
# benches/compare/grpo-step.yaml (`--workers 1`, `threads: 2`); TRL runs
# benches/compare/trl_grpo.py (`torch.set_num_threads(2)`), which says how TRL is configured.
# Each round runs tandem, then TRL, each in a fresh process.
#
# tandem's split comes from its metrics stream: generation = `seconds.rollouts`, learning =
# `learn_seconds`, overhead = `seconds.step` minus both (every other stage, the dataflow, the
# stored streams). TRL's comes from a callback: generation = the model's `generate` call,
# learning = the forward/backward/AdamW after TRL has scored the batch, overhead = the rest.
#
# Needs the venv of scripts/parity/README.md (torch + transformers) with TRL added
# (`pip install trl==1.16.0`) at $HF_PYTHON (default ~/.cache/tandem/py-hf/bin/python), the
# readers' venv (pyarrow) at $READ_PYTHON (default ~/.cache/tandem/py-readers/bin/python), and
# python3 on PATH (the reward plug-in). The model is written once under $MODELS (default
# ~/.cache/tandem/bench-models) by `tandem model init`, the same "small" model as
# policy_vs_transformers.sh. Runs, logs and the data go to $WORK (default target/bench-grpo-step).
set -euo pipefail
cd "$(dirname "$0")/../.."

HF_PYTHON=${HF_PYTHON:-$HOME/.cache/tandem/py-hf/bin/python}
READ_PYTHON=${READ_PYTHON:-$HOME/.cache/tandem/py-readers/bin/python}
MODELS=${MODELS:-$HOME/.cache/tandem/bench-models}
THREADS=${THREADS:-2}
STEPS=${STEPS:-6}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-1}
WORK=${WORK:-target/bench-grpo-step}
TOKENIZER=tests/fixtures/models/qwen2-tiny/tokenizer.json

cargo build --release --quiet --bin tandem
TANDEM=target/release/tandem
MODEL=$MODELS/small
if [[ ! -f $MODEL/model.safetensors ]]; then
  # A hidden-256, 4-layer model with a 32k vocabulary (12M parameters).
  "$TANDEM" model init "$MODEL" --arch qwen2 --tokenizer "$TOKENIZER" \
    --hidden 256 --layers 4 --heads 4 --kv-heads 2 --intermediate 1024 --vocab 32000 >&2
fi

mkdir -p "$WORK"
DATA=$WORK/arithmetic.jsonl
# 64 addition questions (8 steps' worth), the same file for both tools.
python3 - "$DATA" <<'EOF'
import json, random, sys
rng = random.Random(0)
with open(sys.argv[1], "w") as f:
    for i in range(64):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        f.write(json.dumps({"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n")
EOF

# Runs a command; writes to the file $1, as JSON, the peak RSS (KiB) of its largest process, its
# CPU seconds, and the busy CPU seconds of the whole machine over the same wall time (the
# difference is what other processes took: a run that had to share the 2 cores shows it).
measure() {
  local out=$1; shift
  python3 -c 'import json, os, resource, subprocess, sys, time
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
b0, t0 = busy(), time.time()
code = subprocess.call(sys.argv[2:])
wall, b1 = time.time() - t0, busy()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rss_kb": ru.ru_maxrss, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "busy": b1 - b0}, open(sys.argv[1], "w"))
sys.exit(code)' "$out" "$@"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS: tandem" >&2
  rm -rf "$WORK/runs-$round"
  MODEL=$MODEL DATA=$DATA THREADS=$THREADS STEPS=$STEPS \
    measure "$WORK/tandem-$round.proc" "$TANDEM" run benches/compare/grpo-step.yaml \
    --workers 1 --out "$WORK/runs-$round" >"$WORK/tandem-$round.log" 2>&1 \
    || { tail -20 "$WORK/tandem-$round.log" >&2; exit 1; }
  echo "round $round/$ROUNDS: TRL" >&2
  measure "$WORK/trl-$round.proc" "$HF_PYTHON" benches/compare/trl_grpo.py --model "$MODEL" \
    --data "$DATA" --steps "$STEPS" --threads "$THREADS" --out "$WORK/trl-$round.json" \
    >"$WORK/trl-$round.log" 2>&1 \
    || { tail -20 "$WORK/trl-$round.log" >&2; exit 1; }
done

"$READ_PYTHON" - "$WORK" "$ROUNDS" "$WARMUP" <<'EOF'
import glob, json, math, statistics, sys
import pyarrow.compute as pc
import pyarrow.parquet as pq

work, rounds, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {"tandem": [], "TRL": []}
lengths = {"tandem": [], "TRL": []}
proc = {"tandem": [], "TRL": []}
learned = []
per_round = {"tandem": [], "TRL": []}
version = ""
for r in range(1, rounds + 1):
    (run,) = glob.glob(f"{work}/runs-{r}/*/")
    steps = []
    for path in sorted(glob.glob(f"{run}streams/metrics/step=*/part-0.parquet")):
        rec = pq.read_table(path).to_pylist()[0]
        v = dict(rec["values"])
        step = int(path.split("step=")[1].split("/")[0])
        gen, learn, wall = v["seconds.rollouts"], v["learn_seconds"], v["seconds.step"]
        steps.append((step, dict(seconds=wall, generation=gen, learning=learn, overhead=wall - gen - learn)))
        if step >= warmup:
            learned.append(v.get("tokens", 0))
    steps = [s for n, s in sorted(steps, key=lambda x: x[0]) if n >= warmup]
    rows["tandem"] += steps
    per_round["tandem"].append(statistics.mean(s["seconds"] for s in steps))
    for path in glob.glob(f"{run}streams/rollouts/step=*/*.parquet"):
        step = int(path.split("step=")[1].split("/")[0])
        if step >= warmup:
            lengths["tandem"] += pc.list_value_length(pq.read_table(path, columns=["token_ids"])["token_ids"]).to_pylist()
    proc["tandem"].append(json.load(open(f"{work}/tandem-{r}.proc")))

    trl = json.load(open(f"{work}/trl-{r}.json"))
    steps = [s for s in trl["steps"] if s["step"] >= warmup]
    rows["TRL"] += steps
    per_round["TRL"].append(statistics.mean(s["seconds"] for s in steps))
    lengths["TRL"] += trl["completion_lengths"][warmup:]
    proc["TRL"].append(json.load(open(f"{work}/trl-{r}.proc")))
    version = "TRL {trl} / transformers {transformers} / torch {torch}".format(**trl["versions"])

def mean(tool, key):
    return statistics.mean(s[key] for s in rows[tool])

print(f"{len(rows['tandem'])} measured steps per tool ({rounds} round(s), first {warmup} step(s) of each run dropped); {version}")
print(f"{'':8} {'s/step mean':>11} {'min':>6} {'generation':>10} {'learning':>8} {'overhead':>8} {'of step':>7} {'compl. tokens':>13} {'peak RSS':>9}")
for tool in ("tandem", "TRL"):
    step, over = mean(tool, "seconds"), mean(tool, "overhead")
    print(f"{tool:8} {step:11.2f} {min(s['seconds'] for s in rows[tool]):6.2f} {mean(tool, 'generation'):10.2f} "
          f"{mean(tool, 'learning'):8.2f} {over:8.3f} {100 * over / step:6.2f}% {statistics.mean(lengths[tool]):13.1f} "
          f"{max(p['rss_kb'] for p in proc[tool]) / 1024:6.0f} MB")
for tool in ("tandem", "TRL"):
    print(f"{tool} per run: " + "; ".join(
        f"{x:.2f} s/step, own CPU {p['cpu'] / p['wall']:.2f} cores, others {(p['busy'] - p['cpu']) / p['wall']:.2f} cores"
        for x, p in zip(per_round[tool], proc[tool])))
periods = [s["period"] for s in rows["TRL"] if not math.isnan(s.get("period", math.nan))]
if periods:
    print(f"TRL step-end to step-end (adds its data loader and logging): {statistics.mean(periods):.2f} s")
print(f"tandem learned on {statistics.mean(learned):.0f} completion tokens a step (all 32 × 64 = 2048 when no advantage is 0)")
print(f"TRL / tandem time per step: {mean('TRL', 'seconds') / mean('tandem', 'seconds'):.2f}×")
EOF
