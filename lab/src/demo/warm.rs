//! The warm start: task data, a tokenizer trained on it, a fresh model, and supervised
//! fine-tuning — cached, because it depends only on the settings that made it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_datasets::tasks;
use tandem_stages::policy::{self, Arch, InitOptions, TokenizerTrainOptions, WeightDtype};
use tandem_stages::prompt::NamedTemplate;

use super::config::{DemoConfig, Source};
use super::pipelines::{final_checkpoint, run_pipeline};

/// Bumped when what a cache entry holds, or how it is made, changes.
const CACHE_FORMAT: u32 = 5;

/// A warm start, made now or found in the cache.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Warm {
    /// The cache entry.
    pub dir: PathBuf,
    /// `train.jsonl`, `test.jsonl`, `sft.jsonl` and `dataset.json`.
    pub data: PathBuf,
    /// The fine-tuned model (a HF directory).
    pub model: PathBuf,
    /// The supervised run that made it (in the demo that made the entry).
    pub sft_run: PathBuf,
    /// Seconds it took to make.
    pub seconds: f64,
    /// Whether this demo found it in the cache.
    #[serde(skip)]
    pub reused: bool,
}

/// The cache key: every setting the warm start depends on, hashed.
fn cache_key(config: &DemoConfig, source: &Source) -> Result<String> {
    let pipeline = source.read(&config.warm_start.pipeline)?;
    let inputs = serde_json::json!({
        "format": CACHE_FORMAT,
        "tandem": env!("CARGO_PKG_VERSION"),
        "seed": config.seed,
        "data": config.data,
        "tokenizer": config.tokenizer,
        "model": config.model,
        "pipeline": pipeline,
        "set": config.warm_start.set,
    });
    Ok(hex::encode(Sha256::digest(inputs.to_string().as_bytes())))
}

/// The warm start for `config`: the cached one unless `fresh`, else made under `cache`, with
/// the supervised run stored in `runs` (its progress line says `label`).
pub fn prepare(
    config: &DemoConfig,
    source: &Source,
    cache: &Path,
    runs: &Path,
    fresh: bool,
    label: &str,
) -> Result<Warm> {
    let key = cache_key(config, source)?;
    let entry = cache.join(format!("warm-{}", &key[..16]));
    let record = entry.join("warm.json");
    if !fresh && record.exists() {
        let text = std::fs::read_to_string(&record)
            .with_context(|| format!("{}: cannot read", record.display()))?;
        let mut warm: Warm = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a warm-start record", record.display()))?;
        warm.reused = true;
        return Ok(warm);
    }
    let started = Instant::now();
    // Made beside the entry and renamed into place at the end: a stopped demo leaves no entry
    // that looks complete.
    let staging = cache.join(format!(".warm-{}-{}", &key[..16], std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let made = make(config, source, runs, &staging, label);
    let sft_run = match made {
        Ok(run) => run,
        Err(e) => {
            // Nothing half-made stays in the cache; the runs under `runs` stay for inspection.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if entry.exists() {
        std::fs::remove_dir_all(&entry)
            .with_context(|| format!("{}: cannot replace", entry.display()))?;
    }
    std::fs::rename(&staging, &entry)
        .with_context(|| format!("{}: cannot create", entry.display()))?;
    let warm = Warm {
        data: entry.join("data"),
        model: entry.join("model"),
        dir: entry,
        sft_run,
        seconds: started.elapsed().as_secs_f64(),
        reused: false,
    };
    let json = serde_json::to_string_pretty(&warm)?;
    std::fs::write(&record, format!("{json}\n"))
        .with_context(|| format!("{}: cannot write", record.display()))?;
    Ok(warm)
}

/// The warm start's inputs: the task data, and a fresh model with a tokenizer trained on it.
pub(super) struct Inputs {
    /// `train.jsonl`, `test.jsonl`, `sft.jsonl` and `dataset.json`.
    pub data: PathBuf,
    /// The randomly initialised model (a HF directory).
    pub init: PathBuf,
}

impl Inputs {
    /// The variables the warm-start pipeline is filled in with.
    pub fn vars(&self, config: &DemoConfig) -> [(&'static str, String); 4] {
        [
            (
                "SFT_DATA",
                self.data.join("sft.jsonl").display().to_string(),
            ),
            ("INIT_MODEL", self.init.display().to_string()),
            ("SEED", config.seed.to_string()),
            ("THREADS", config.threads.to_string()),
        ]
    }
}

/// Makes the data, the tokenizer and the initial model in `dir`.
pub(super) fn make_inputs(config: &DemoConfig, dir: &Path) -> Result<Inputs> {
    let data = dir.join("data");
    let task = config.data.resolve()?;
    let splits = tasks::generate(&config.data, config.seed)?;
    tasks::write_dataset(&data, &task, config.seed, &splits, tasks::Format::Jsonl)?;
    eprintln!(
        "data: {} train, {} test, {} warm-start problems",
        splits.train.len(),
        splits.test.len(),
        splits.sft.len(),
    );

    let tokenizer = dir.join("tokenizer");
    policy::train_tokenizer(
        &corpus(&splits),
        &TokenizerTrainOptions {
            vocab_size: config.tokenizer.vocab_size,
            min_frequency: config.tokenizer.min_frequency,
        },
        &tokenizer,
    )?;
    let init = dir.join("init");
    let m = &config.model;
    let shape = policy::init_model(
        &init,
        &InitOptions {
            arch: Arch::Qwen2,
            hidden_size: m.hidden_size,
            num_hidden_layers: m.num_hidden_layers,
            num_attention_heads: m.num_attention_heads,
            num_key_value_heads: m.num_key_value_heads,
            intermediate_size: m.intermediate_size,
            vocab_size: None,
            max_position_embeddings: m.max_position_embeddings,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            tokenizer: tokenizer.join("tokenizer.json"),
            seed: config.seed,
            init_std: m.init_std,
            dtype: WeightDtype::F32,
        },
    )?;
    eprintln!(
        "model: Qwen2, {} parameters, vocabulary {}",
        shape.num_parameters(),
        shape.vocab_size
    );
    Ok(Inputs { data, init })
}

/// Makes the data, tokenizer, initial and fine-tuned models in `staging`; returns the
/// supervised run's directory.
fn make(
    config: &DemoConfig,
    source: &Source,
    runs: &Path,
    staging: &Path,
    label: &str,
) -> Result<PathBuf> {
    let inputs = make_inputs(config, staging)?;
    let summary = run_pipeline(
        source,
        &config.warm_start,
        &inputs.vars(config),
        runs,
        label,
    )?;
    let checkpoint = final_checkpoint(&summary, "learn.sft")?;
    copy_model(&checkpoint, &staging.join("model"))?;
    Ok(summary.run_dir)
}

/// What the tokenizer learns from: every question and response, and the prompt templates.
fn corpus(splits: &tasks::Splits) -> Vec<String> {
    let mut texts: Vec<String> = [&splits.train, &splits.test, &splits.sft]
        .into_iter()
        .flatten()
        .flat_map(|e| [e.question.clone(), e.solution.clone()])
        .collect();
    // Every prompt carries a template and many responses the help text: weighted as often as
    // the prompts use them, their words become single tokens and prompts get short.
    let weight = splits.train.len().max(1);
    for _ in 0..weight {
        texts.push(tasks::HELP_RESPONSE.to_owned());
        for template in NamedTemplate::ALL {
            texts.extend(template.system_prompt());
            texts.push(template.user_turn().replace("{question}", ""));
        }
    }
    texts
}

/// Copies a checkpoint's HF directory into `to`: everything but the files only a resumed run
/// reads (optimiser moments, f32 master weights, trainer state).
fn copy_model(checkpoint: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let trainer_only = [
        policy::OPTIMIZER_FILE,
        policy::MASTER_FILE,
        policy::STATE_FILE,
    ];
    for entry in std::fs::read_dir(checkpoint)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_file() && !trainer_only.contains(&&*name) {
            std::fs::copy(&path, to.join(&*name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}
