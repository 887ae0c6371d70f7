//! Side-by-side benchmark of the policy engine, printing the JSON lines
//! `benches/compare/hf_policy.py` prints for transformers (one bench per process, so the peak
//! RSS is the bench's own):
//!
//! ```sh
//! cargo run --release --example policy_bench -- --model DIR --bench generate --batch 8 --prompt-len 64 --new-tokens 64
//! cargo run --release --example policy_bench -- --model DIR --bench train_step --batch 8 --seq-len 128
//! cargo run --release --example policy_bench -- --model DIR --bench train_step --lora-r 16   # LoRA, all projections
//! ```
//! `benches/compare/policy_vs_transformers.sh` runs both tools on the shapes of BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tandem_stages::policy::{
    self, DeviceSpec, GenerationRequest, Learner, LearnerConfig, LoraConfig, LoraInit, Policy,
    PolicyGradient, SamplingParams, Sequence, WeightDtype,
};

#[derive(Parser)]
struct Args {
    /// A local HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// generate or train_step.
    #[arg(long)]
    bench: String,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32 or bf16 (default: f32 on CPU, bf16 on CUDA). `scripts/gpu-check.sh`
    /// compares a train step in f32 across devices.
    #[arg(long)]
    dtype: Option<String>,
    /// Train LoRA adapters of this rank on all seven projections (alpha = 2r) instead of
    /// every weight (train_step only; 0 = full fine-tuning).
    #[arg(long, default_value_t = 0)]
    lora_r: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    policy::set_threads(args.threads);
    let device: DeviceSpec = args.device.parse()?;
    let dtype = match args.dtype.as_deref() {
        None => None,
        Some("f32") => Some(WeightDtype::F32),
        Some("bf16") => Some(WeightDtype::BF16),
        Some(other) => anyhow::bail!("--dtype {other}: expected f32 or bf16"),
    };
    let mut policy = Policy::load(&args.model, &device, dtype)?;
    if args.lora_r > 0 {
        let mut lora = LoraConfig::new(args.lora_r);
        lora.alpha = Some(2.0 * args.lora_r as f64);
        policy
            .model
            .attach_lora(&lora, LoraInit::Peft { seed: 0 })?;
    }
    let vocab = policy
        .tokenizer
        .vocab_size()
        .min(policy.model.config.vocab_size) as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut ids =
        |len: usize| -> Vec<u32> { (0..len).map(|_| rng.random_range(0..vocab)).collect() };
    let model_name = args
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let line = match args.bench.as_str() {
        "generate" => {
            let requests: Vec<GenerationRequest> = (0..args.batch)
                .map(|i| GenerationRequest {
                    prompt_ids: ids(args.prompt_len),
                    num_samples: 1,
                    seed: i as u64,
                })
                .collect();
            // Greedy, no EOS, no stop strings: exactly `new_tokens` per row, as the Python side.
            let params = SamplingParams {
                max_new_tokens: args.new_tokens,
                temperature: 0.0,
                ..SamplingParams::default()
            };
            let seconds = timed(args.warmup, args.repeat, || {
                let out = policy::generate(&policy.model, &policy.tokenizer, &requests, &params)
                    .expect("generate");
                assert!(out.iter().all(|r| r[0].token_ids.len() == args.new_tokens));
            });
            json!({"tool": "tandem", "bench": "generate", "model": model_name, "batch": args.batch,
                   "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "seconds": seconds,
                   "new_tokens_per_s": (args.batch * args.new_tokens) as f64 / seconds, "peak_rss_mb": peak_rss_mb()})
        }
        "train_step" => {
            // Next-token loss over every position after the first, as `labels=input_ids` in HF.
            let sequences: Vec<Sequence> = (0..args.batch)
                .map(|_| {
                    let all = ids(args.seq_len);
                    Sequence {
                        prompt_ids: all[..1].to_vec(),
                        completion_ids: all[1..].to_vec(),
                        advantage: 1.0,
                        old_logprobs: None,
                        sampled_logprobs: None,
                    }
                })
                .collect();
            let mut config = LearnerConfig {
                micro_batch_size: args.batch,
                max_grad_norm: 0.0,
                ..LearnerConfig::default()
            };
            config.optimizer.lr = 1e-5;
            let mut learner = Learner::new(&policy.model, config);
            let objective = PolicyGradient {
                clip_eps: None,
                clip_eps_high: None,
                kl_coef: 0.0,
            };
            // The first step's loss and gradient norm (a warm-up step too): what a step on
            // another device must reproduce (scripts/gpu-check.sh).
            let first = learner.step(&policy.model, None, &sequences, &objective)?;
            let seconds = timed(args.warmup, args.repeat, || {
                learner
                    .step(&policy.model, None, &sequences, &objective)
                    .expect("step");
            });
            json!({"tool": "tandem", "bench": "train_step", "model": model_name, "batch": args.batch,
                   "seq_len": args.seq_len, "lora_r": args.lora_r,
                   "trainable_parameters": policy.model.trainable_parameters().iter().map(|(_, t)| t.numel()).sum::<usize>(),
                   "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
                   "first_mean_logprob": first.mean_logprob, "first_grad_norm": first.grad_norm})
        }
        other => anyhow::bail!("--bench {other}: expected generate or train_step"),
    };
    println!("{line}");
    Ok(())
}

/// Median wall time of `repeat` runs after `warmup` unmeasured ones.
fn timed(warmup: usize, repeat: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Peak resident set (VmHWM) in MiB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
