"""The TRL side of benches/compare/grpo_step.sh: GRPO training steps of TRL's GRPOTrainer on a
local HF model directory, timed per step and split into generation and learning.

    python benches/compare/trl_grpo.py --model DIR --data FILE.jsonl --steps 6 --threads 2 --out FILE.json

Settings (the same as benches/compare/grpo-step.yaml gives tandem): 8 prompts × G = 4 completions
a step (per_device_train_batch_size = 32 completions, gradient_accumulation_steps = 1, so
steps_per_generation = 1 and generation_batch_size = 32: one generation batch, one optimizer step,
and with num_iterations = 1 no separate old-log-prob pass), max_completion_length 64, temperature
1.0, plain-text prompts (no chat template), lr 1e-6 constant, no weight decay, beta = 0 (no
reference model), loss_type TRL's default (`dapo`, token mean), fp32 on the CPU, no vLLM, no
logging integrations, no checkpoints.

Per step (a TrainerCallback, on_step_begin → on_step_end, which covers TRL's generation and
scoring, the forward/backward, the clip and the AdamW step): the step's wall time; `generation`,
the wall time of the model's `generate` call; `learning`, the time after TRL's `_prepare_inputs`
(generation + rewards + advantages) returned until the step ended (forward, backward, clip, AdamW);
the rest is `overhead` (tokenising, decoding, the reward, advantages, padding, the callbacks).
`period` is the time from the previous step's end, which adds the data loader and TRL's logging.
Writes one JSON object with every step's figures, the mean completion length TRL logged, and the
process's peak RSS.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="JSONL with a `question` field")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=4, help="G, completions per prompt")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", help="write the figures here as JSON (default: stdout)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    with open(args.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    dataset = Dataset.from_list([{"prompt": r["question"]} for r in rows])

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    group = args.group

    def distinct_chars(completions, **kwargs):
        # The reward of grpo-step.yaml: distinct characters / 10, plus the position in the group
        # / 100 to break ties (TRL's RepeatSampler puts each prompt's G completions in a row).
        return [len(set(c)) / 10 + (i % group) / 100 for i, c in enumerate(completions)]

    timing = {"generate": 0.0, "prepare_end": None}

    # Generation: the wall time of the model's own generate (TRL calls it on the unwrapped model,
    # which on one CPU process is this object).
    inner_generate = model.generate

    def timed_generate(*a, **kw):
        t = time.perf_counter()
        out = inner_generate(*a, **kw)
        timing["generate"] += time.perf_counter() - t
        return out

    model.generate = timed_generate

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-grpo-"),
        per_device_train_batch_size=args.prompts * group,
        gradient_accumulation_steps=1,
        num_generations=group,
        num_iterations=1,
        max_completion_length=args.new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=0.0,
        max_steps=args.steps,
        use_vllm=False,
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )

    steps = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            timing["generate"] = 0.0
            timing["prepare_end"] = None
            self.begin = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            end = time.perf_counter()
            step = end - self.begin
            # From the previous step's end: also counts the data loader and TRL's logging.
            period = end - self.last_end if getattr(self, "last_end", None) else float("nan")
            self.last_end = end
            learning = end - timing["prepare_end"] if timing["prepare_end"] else float("nan")
            steps.append(
                {
                    "step": state.global_step - 1,
                    "seconds": step,
                    "period": period,
                    "generation": timing["generate"],
                    "learning": learning,
                    "overhead": step - timing["generate"] - learning,
                }
            )

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=distinct_chars,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )

    inner_prepare = trainer._prepare_inputs

    def timed_prepare(*a, **kw):
        out = inner_prepare(*a, **kw)
        timing["prepare_end"] = time.perf_counter()
        return out

    trainer._prepare_inputs = timed_prepare

    trainer.train()

    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    result = {
        "tool": "trl",
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "threads": torch.get_num_threads(),
        "steps": steps,
        "completion_lengths": lengths,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
