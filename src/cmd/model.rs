//! `tandem model …`: load, inspect, sample from, score with, and create HF-format models.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;
use tandem_stages::policy::{
    self, Arch, ChatMessage, DeviceSpec, GenerationRequest, InitOptions, LoraConfig, LoraInit,
    Policy, SamplingParams, Sequence, TargetModule, WeightDtype,
};

/// Arguments of `tandem model`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Architecture, parameter count, dtype, vocabulary and device of a model directory.
    Info {
        #[command(flatten)]
        load: Load,
    },
    /// Sample completions of a prompt.
    Generate(GenerateArgs),
    /// Per-token log-probs of a completion given a prompt.
    Logprobs(LogprobsArgs),
    /// Write a randomly initialised HF-format model (for tests, benchmarks and the demo).
    Init(InitArgs),
    /// Train a byte-level BPE tokenizer (Qwen2-style, ChatML template) on JSON Lines text.
    Tokenizer(TokenizerArgs),
    /// Fold a LoRA adapter (PEFT format) into its base model and write the merged HF model.
    Merge(MergeArgs),
    /// Write a new LoRA adapter (PEFT format) for a base model.
    InitAdapter(InitAdapterArgs),
    /// Write a copy whose tied output projection is its own `lm_head.weight`: the layout a
    /// vLLM server must start from for `generate.openai`'s weight sync.
    Untie(UntieArgs),
}

/// Where a model comes from and where it runs.
#[derive(Debug, clap::Args)]
struct Load {
    /// A HF model directory (config.json, *.safetensors, tokenizer.json).
    dir: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32, bf16 or f16 (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    dtype: Option<String>,
    /// Torch intra-op threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    /// A LoRA adapter directory (PEFT's adapter_config.json + adapter_model.safetensors) to
    /// apply on top of the model.
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
}

impl Load {
    fn policy(&self) -> Result<Policy> {
        policy::set_threads(self.threads);
        let device: DeviceSpec = self.device.parse()?;
        let dtype = self.dtype.as_deref().map(parse_dtype).transpose()?;
        match &self.adapter {
            None => Policy::load(&self.dir, &device, dtype)
                .with_context(|| format!("loading {}", self.dir.display())),
            Some(adapter) => Policy::load_with_adapter(&self.dir, adapter, &device, dtype)
                .with_context(|| {
                    format!(
                        "loading {} with the adapter {}",
                        self.dir.display(),
                        adapter.display()
                    )
                }),
        }
    }
}

#[derive(Debug, clap::Args)]
struct MergeArgs {
    /// The base model directory.
    base: PathBuf,
    /// The adapter directory.
    adapter: PathBuf,
    /// The directory to write (replaced if it exists).
    out: PathBuf,
    /// dtype of the written weights: f32, bf16 or f16 (default: the base's).
    #[arg(long)]
    dtype: Option<String>,
}

#[derive(Debug, clap::Args)]
struct UntieArgs {
    /// The model directory.
    dir: PathBuf,
    /// The directory to write (replaced if it exists).
    out: PathBuf,
    /// dtype of the written weights: f32, bf16 or f16 (default: the model's).
    #[arg(long)]
    dtype: Option<String>,
}

#[derive(Debug, clap::Args)]
struct InitAdapterArgs {
    /// The base model directory (named as given in `base_model_name_or_path`).
    base: PathBuf,
    /// The directory to write (replaced if it exists).
    out: PathBuf,
    /// Rank.
    #[arg(long, default_value_t = 8)]
    r: usize,
    /// lora_alpha (default: r).
    #[arg(long)]
    alpha: Option<f64>,
    /// Scale by alpha/√r (rsLoRA) instead of alpha/r.
    #[arg(long)]
    rslora: bool,
    /// lora_dropout recorded in the config.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Projections, comma-separated (default: all seven).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Seed of the matrices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draw B too (PEFT's init_lora_weights=False), so the adapter changes the model; by
    /// default B is zero and the adapted model starts as the base.
    #[arg(long)]
    random_b: bool,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    #[command(flatten)]
    load: Load,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens per completion.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Greedy decoding (overrides temperature).
    #[arg(long)]
    greedy: bool,
    /// Stop strings (repeatable), e.g. --stop '</answer>'.
    #[arg(long)]
    stop: Vec<String>,
    /// Seed of the sampling streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Completions to draw (they share one prefill of the prompt).
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
}

#[derive(Debug, clap::Args)]
struct LogprobsArgs {
    #[command(flatten)]
    load: Load,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// The completion text to score.
    #[arg(long)]
    completion: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// The directory to write (replaced if it exists).
    dir: PathBuf,
    /// qwen2 or llama.
    #[arg(long)]
    arch: String,
    /// Width of the residual stream.
    #[arg(long)]
    hidden: usize,
    /// Decoder layers.
    #[arg(long)]
    layers: usize,
    /// Query heads.
    #[arg(long)]
    heads: usize,
    /// Key/value heads.
    #[arg(long)]
    kv_heads: usize,
    /// Width of the MLP.
    #[arg(long)]
    intermediate: usize,
    /// tokenizer.json to ship (tokenizer_config.json etc. beside it are copied too).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Embedding rows (default: the tokenizer's size rounded up to a multiple of 64).
    #[arg(long)]
    vocab: Option<usize>,
    /// Longest context.
    #[arg(long, default_value_t = 4096)]
    max_positions: usize,
    /// RoPE base (default: 1e6 for qwen2, 5e5 for llama).
    #[arg(long)]
    rope_theta: Option<f64>,
    /// Tie the output projection to the embedding (default: yes for qwen2, no for llama).
    #[arg(long)]
    tie_embeddings: Option<bool>,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Standard deviation of the weights.
    #[arg(long, default_value_t = 0.02)]
    init_std: f64,
    /// dtype of the written weights: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct TokenizerArgs {
    /// A JSON Lines file to learn from (repeatable).
    #[arg(long, required_unless_present = "text")]
    corpus: Vec<PathBuf>,
    /// Fields of each row to learn from: strings, numbers, or lists of them. Rows without a
    /// field are skipped for it.
    #[arg(long, value_delimiter = ',', default_value = "question,completions")]
    fields: Vec<String>,
    /// More text to learn from (repeatable), e.g. a system prompt.
    #[arg(long)]
    text: Vec<String>,
    /// Tokens in all: 256 bytes, the learned merges and 3 special tokens.
    #[arg(long, default_value_t = 512)]
    vocab_size: usize,
    /// A pair must occur this often to be merged.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// The directory to write tokenizer.json and tokenizer_config.json into.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Info { load } => info(&load),
        Command::Generate(a) => generate(&a),
        Command::Logprobs(a) => logprobs(&a),
        Command::Init(a) => init(&a),
        Command::Tokenizer(a) => tokenizer(&a),
        Command::Merge(a) => merge(&a),
        Command::InitAdapter(a) => init_adapter(&a),
        Command::Untie(a) => untie(&a),
    }
}

fn untie(a: &UntieArgs) -> Result<()> {
    let model = policy::Policy::load(&a.dir, &policy::DeviceSpec::Cpu, Some(WeightDtype::F32))?;
    let dtype = match a.dtype.as_deref() {
        Some(d) => parse_dtype(d)?,
        None => policy::ModelConfig::from_dir(&a.dir)?.dtype,
    };
    policy::save_for_engine(&model.model, &a.dir, &a.out, dtype, true)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn merge(a: &MergeArgs) -> Result<()> {
    let dtype = a.dtype.as_deref().map(parse_dtype).transpose()?;
    policy::merge_adapter(&a.base, &a.adapter, &a.out, dtype)
        .with_context(|| format!("merging {} into {}", a.adapter.display(), a.base.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn init_adapter(a: &InitAdapterArgs) -> Result<()> {
    let targets = if a.targets.is_empty() {
        TargetModule::ALL.to_vec()
    } else {
        a.targets
            .iter()
            .map(|t| t.parse::<TargetModule>().context("--targets"))
            .collect::<Result<_>>()?
    };
    let config = LoraConfig {
        r: a.r,
        alpha: a.alpha,
        rslora: a.rslora,
        dropout: a.dropout,
        targets,
    };
    let init = if a.random_b {
        LoraInit::Random { seed: a.seed }
    } else {
        LoraInit::Peft { seed: a.seed }
    };
    policy::init_adapter(&a.base, &a.out, &config, init)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn parse_dtype(s: &str) -> Result<WeightDtype> {
    match s {
        "f32" | "float32" => Ok(WeightDtype::F32),
        "bf16" | "bfloat16" => Ok(WeightDtype::BF16),
        "f16" | "float16" => Ok(WeightDtype::F16),
        other => anyhow::bail!("--dtype {other}: expected f32, bf16 or f16"),
    }
}

fn info(load: &Load) -> Result<()> {
    let policy = load.policy()?;
    let c = &policy.model.config;
    let device = policy::describe_device(policy.model.device());
    let value = json!({
        "dir": load.dir,
        "architecture": c.arch.hf_class(),
        "model_type": c.arch.model_type(),
        "parameters": policy.model.num_parameters(),
        "stored_dtype": c.dtype.hf_name(),
        "dtype": format!("{:?}", policy.model.kind()),
        "device": device,
        "vocab_size": c.vocab_size,
        "tokenizer_vocab_size": policy.tokenizer.vocab_size(),
        "hidden_size": c.hidden_size,
        "layers": c.num_hidden_layers,
        "heads": c.num_attention_heads,
        "kv_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "intermediate_size": c.intermediate_size,
        "tie_word_embeddings": c.tie_word_embeddings,
        "rope_theta": c.rope_theta,
        "rope_scaling": format!("{:?}", c.rope_scaling),
        "eos_token_ids": policy.eos_token_ids(),
        "chat_template": policy.tokenizer.has_chat_template(),
    });
    if load.json {
        println!("{value}");
    } else {
        for (k, v) in value.as_object().into_iter().flatten() {
            println!(
                "{k:<22} {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            );
        }
    }
    Ok(())
}

fn prompt_ids(policy: &Policy, prompt: &str, chat: bool, system: Option<&str>) -> Result<Vec<u32>> {
    if chat {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(ChatMessage {
                role: "system".into(),
                content: system.into(),
            });
        }
        messages.push(ChatMessage::user(prompt));
        Ok(policy.tokenizer.encode_chat(&messages)?)
    } else {
        Ok(policy.tokenizer.encode(prompt, true)?)
    }
}

fn generate(a: &GenerateArgs) -> Result<()> {
    let policy = a.load.policy()?;
    let ids = prompt_ids(&policy, &a.prompt, a.chat, a.system.as_deref())?;
    let params = SamplingParams {
        max_new_tokens: a.max_new_tokens,
        temperature: if a.greedy { 0.0 } else { a.temperature },
        top_p: a.top_p,
        top_k: a.top_k,
        stop: a.stop.clone(),
        eos_token_ids: policy.eos_token_ids(),
    };
    let request = GenerationRequest {
        prompt_ids: ids.clone(),
        num_samples: a.num_samples,
        seed: a.seed,
    };
    let started = std::time::Instant::now();
    let completions = policy::generate(&policy.model, &policy.tokenizer, &[request], &params)?
        .pop()
        .unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    if a.load.json {
        let samples: Vec<_> = completions
            .iter()
            .map(|c| {
                json!({
                    "text": c.text,
                    "token_ids": c.token_ids,
                    "logprobs": c.logprobs,
                    "finish_reason": c.finish_reason,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"prompt_ids": ids, "samples": samples, "seconds": seconds})
        );
    } else {
        for (i, c) in completions.iter().enumerate() {
            if completions.len() > 1 {
                println!(
                    "--- sample {i} ({:?}, {} tokens)",
                    c.finish_reason,
                    c.token_ids.len()
                );
            }
            println!("{}", c.text);
        }
    }
    Ok(())
}

fn logprobs(a: &LogprobsArgs) -> Result<()> {
    let policy = a.load.policy()?;
    let prompt = prompt_ids(&policy, &a.prompt, a.chat, None)?;
    let completion = policy.tokenizer.encode(&a.completion, false)?;
    anyhow::ensure!(
        !completion.is_empty(),
        "--completion tokenises to no tokens"
    );
    let sequence = Sequence {
        prompt_ids: prompt.clone(),
        completion_ids: completion.clone(),
        ..Sequence::default()
    };
    let (values, _) = tch::no_grad(|| policy::sequence_logprobs(&policy.model, &[&sequence], 1.0))?;
    let values: Vec<f32> = Vec::<f32>::try_from(values.squeeze_dim(0).to_device(tch::Device::Cpu))?;
    let total: f64 = values.iter().map(|&v| f64::from(v)).sum();
    if a.load.json {
        println!(
            "{}",
            json!({"prompt_ids": prompt, "completion_ids": completion, "logprobs": values, "sum": total})
        );
    } else {
        for (id, lp) in completion.iter().zip(&values) {
            let piece = policy.tokenizer.decode(&[*id], false)?;
            println!("{id:>8} {lp:>12.6} {piece:?}");
        }
        println!("sum {total:.6}");
    }
    Ok(())
}

fn init(a: &InitArgs) -> Result<()> {
    let arch = Arch::from_model_type(&a.arch)
        .with_context(|| format!("--arch {}: expected qwen2 or llama", a.arch))?;
    let options = InitOptions {
        arch,
        hidden_size: a.hidden,
        num_hidden_layers: a.layers,
        num_attention_heads: a.heads,
        num_key_value_heads: a.kv_heads,
        intermediate_size: a.intermediate,
        vocab_size: a.vocab,
        max_position_embeddings: a.max_positions,
        rope_theta: a
            .rope_theta
            .unwrap_or(if arch == Arch::Qwen2 { 1e6 } else { 5e5 }),
        tie_word_embeddings: a.tie_embeddings.unwrap_or(arch == Arch::Qwen2),
        tokenizer: a.tokenizer.clone(),
        seed: a.seed,
        init_std: a.init_std,
        dtype: parse_dtype(&a.dtype)?,
    };
    let config = policy::init_model(&a.dir, &options)?;
    let summary = json!({
        "dir": a.dir,
        "architecture": arch.hf_class(),
        "vocab_size": config.vocab_size,
        "parameters": config.num_parameters(),
    });
    if a.json {
        println!("{summary}");
    } else {
        println!(
            "wrote {} ({}, {} parameters)",
            a.dir.display(),
            arch.hf_class(),
            summary["parameters"]
        );
    }
    Ok(())
}

/// The texts of `fields` in every row of a JSON Lines file.
fn corpus_texts(path: &std::path::Path, fields: &[String], out: &mut Vec<String>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let before = out.len();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), index + 1))?;
        for field in fields {
            let values = match row.get(field) {
                Some(serde_json::Value::Array(items)) => items.clone(),
                Some(value) => vec![value.clone()],
                None => Vec::new(),
            };
            for value in values {
                match value {
                    serde_json::Value::String(s) => out.push(s),
                    serde_json::Value::Number(n) => out.push(n.to_string()),
                    serde_json::Value::Null => {}
                    other => anyhow::bail!(
                        "{}:{}: field `{field}` must hold strings or numbers, found {other}",
                        path.display(),
                        index + 1
                    ),
                }
            }
        }
    }
    anyhow::ensure!(
        out.len() > before,
        "{}: no row has any of the fields {} (set --fields)",
        path.display(),
        fields.join(", ")
    );
    Ok(())
}

fn tokenizer(a: &TokenizerArgs) -> Result<()> {
    let mut texts = Vec::new();
    for path in &a.corpus {
        corpus_texts(path, &a.fields, &mut texts)?;
    }
    texts.extend(a.text.iter().cloned());
    let options = policy::TokenizerTrainOptions {
        vocab_size: a.vocab_size,
        min_frequency: a.min_frequency,
    };
    policy::train_tokenizer(&texts, &options, &a.out)?;
    let trained = policy::Tokenizer::from_dir(&a.out)
        .with_context(|| format!("reloading {}", a.out.display()))?;
    println!(
        "wrote {} ({} tokens from {} texts)",
        a.out.display(),
        trained.vocab_size(),
        texts.len()
    );
    Ok(())
}
