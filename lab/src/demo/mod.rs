//! `tandem demo`: the whole idea on a laptop CPU, from nothing but this repository. A seeded task
//! suite, a tokenizer trained on it, a fresh small model warm-started by supervised fine-tuning
//! (cached), an evaluation against a simulated cloud started on loopback, GAPG training against
//! that cloud, the evaluation again, and a summary of what RL changed.
//!
//! Every step is an ordinary, stored run under the demo's directory; the demo only chains them
//! and reads their results back.

mod config;
mod pipelines;
mod summary;
mod warm;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

pub use config::{DemoConfig, PipelineRef, Source, load};
pub use summary::{DemoReport, Evaluated, RouterBaseline};
pub use warm::Warm as WarmStart;

use crate::eval;
use tandem_cloudsim::{SimConfig, SimHandle, spawn};

/// Where the demo writes and caches.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory the demo's directory is created in.
    pub out: PathBuf,
    /// Where warm starts are cached.
    pub cache: PathBuf,
    /// Make the warm start again even when the cache has it.
    pub fresh: bool,
}

/// Seconds each phase took.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Seconds {
    /// Data, tokenizer, model and supervised fine-tuning (0 when cached).
    pub warm_start: f64,
    /// Both evaluations.
    pub eval: f64,
    /// The RL run.
    pub train: f64,
    /// Everything.
    pub total: f64,
}

/// Runs the demo; returns its report (also written as `demo.json` and `summary.md`).
pub fn run(config: &DemoConfig, source: &Source, options: &Options) -> Result<DemoReport> {
    let started = Instant::now();
    let mut seconds = Seconds::default();
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("{}: cannot create", options.out.display()))?;
    let (_, dir) = tandem_pipeline::rundir::create_run_dir(&options.out, &config.name)
        .with_context(|| format!("creating the demo's directory in {}", options.out.display()))?;
    eprintln!("demo: writing to {}", dir.display());

    eprintln!("[1/4] warm start");
    let warm = warm::prepare(
        config,
        source,
        &options.cache,
        &dir,
        options.fresh,
        "warm start",
    )?;
    if warm.reused {
        eprintln!(
            "warm start: reusing {} (made by {}); --fresh makes it again",
            warm.dir.display(),
            warm.sft_run.display()
        );
    } else {
        seconds.warm_start = warm.seconds;
    }

    let cloud = spawn_cloud(config)?;
    let url = cloud.base_url();
    eprintln!(
        "cloud: simulated, accuracy {}, at {url}",
        config.cloud.accuracy
    );

    let eval_started = Instant::now();
    eprintln!("[2/4] evaluation before RL");
    let before = evaluate_model(config, &warm, &warm.model, &url, &dir)?;
    seconds.eval += eval_started.elapsed().as_secs_f64();

    eprintln!("[3/4] RL");
    let train_started = Instant::now();
    let (train_run, trained) = train(config, source, &warm, &url, &dir, "RL")?;
    seconds.train = train_started.elapsed().as_secs_f64();

    let eval_started = Instant::now();
    eprintln!("[4/4] evaluation after RL");
    let after = evaluate_model(config, &warm, &trained, &url, &dir)?;
    seconds.eval += eval_started.elapsed().as_secs_f64();
    cloud.shutdown();

    seconds.total = started.elapsed().as_secs_f64();
    let report = summary::write(&dir, config, &warm, &train_run, before, after, seconds)?;
    Ok(report)
}

/// The simulated cloud of `config.cloud`, seeded by `config.seed`, on a free loopback port.
pub fn spawn_cloud(config: &DemoConfig) -> Result<SimHandle> {
    Ok(spawn(
        SimConfig {
            seed: config.seed,
            accuracy: config.cloud.accuracy,
            latency_mean: std::time::Duration::try_from_secs_f64(config.cloud.latency_ms / 1e3)
                .context("cloud.latency_ms must be a finite number >= 0")?,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )?)
}

/// The warm start for `config` (cached under `cache`, made with its supervised run stored in
/// `runs` when the cache lacks it; its progress line says `label`).
pub fn warm_start(
    config: &DemoConfig,
    source: &Source,
    cache: &Path,
    runs: &Path,
    label: &str,
) -> Result<WarmStart> {
    warm::prepare(config, source, cache, runs, false, label)
}

/// Runs the suite's RL pipeline (`config.train`) from the warm start against `cloud`, stored
/// in `runs`; returns the run and its final checkpoint.
pub fn train(
    config: &DemoConfig,
    source: &Source,
    warm: &WarmStart,
    cloud: &str,
    runs: &Path,
    label: &str,
) -> Result<(PathBuf, PathBuf)> {
    let vars = train_vars(config, &warm.data, &warm.model, cloud);
    let summary = pipelines::run_pipeline(source, &config.train, &vars, runs, label)?;
    let trained = pipelines::final_checkpoint(&summary, "learn.pg")?;
    Ok((summary.run_dir, trained))
}

/// The variables the RL pipeline is filled in with.
fn train_vars(
    config: &DemoConfig,
    data: &Path,
    model: &Path,
    cloud: &str,
) -> [(&'static str, String); 5] {
    [
        ("TRAIN_DATA", data.join("train.jsonl").display().to_string()),
        ("WARM_MODEL", model.display().to_string()),
        ("CLOUD_URL", cloud.to_owned()),
        ("SEED", config.seed.to_string()),
        ("THREADS", config.threads.to_string()),
    ]
}

/// Checks a demo file as `tandem validate` checks a pipeline: the demo's own settings (read by
/// [`load`]), then both of its pipelines exactly as they would be planned, on the data,
/// tokenizer and fresh model the demo makes, in a temporary directory. The RL pipeline is
/// planned on the fresh model in place of the warm start (the same shape and tokenizer).
/// Nothing is trained and no cloud is asked. Returns each pipeline's file and plan.
pub fn validate(
    config: &DemoConfig,
    source: &Source,
) -> Result<Vec<(PathBuf, tandem_pipeline::Plan)>> {
    validate_with(config, source, &[("RL".to_owned(), config.train.clone())])
}

/// [`validate`] with other RL pipelines in place of `config.train`, each planned on the same
/// data and fresh model (made once); an error names the pipeline's label.
pub fn validate_with(
    config: &DemoConfig,
    source: &Source,
    trains: &[(String, PipelineRef)],
) -> Result<Vec<(PathBuf, tandem_pipeline::Plan)>> {
    let scratch = tempfile::tempdir().context("a temporary directory")?;
    let inputs = warm::make_inputs(config, scratch.path())?;
    let warm_plan = pipelines::plan_pipeline(source, &config.warm_start, &inputs.vars(config))?;
    let mut plans = vec![(source.path(&config.warm_start.pipeline), warm_plan)];
    // Never contacted while planning.
    let cloud = "http://127.0.0.1:9/v1";
    let vars = train_vars(config, &inputs.data, &inputs.init, cloud);
    for (label, train) in trains {
        let plan = pipelines::plan_pipeline(source, train, &vars).context(label.clone())?;
        plans.push((source.path(&train.pipeline), plan));
    }
    Ok(plans)
}

/// `tandem eval` of `model` on the test split, against `cloud`, stored in `dir` (with the
/// learned-router baseline when `config.eval.router`).
pub fn evaluate_model(
    config: &DemoConfig,
    warm: &warm::Warm,
    model: &Path,
    cloud: &str,
    dir: &Path,
) -> Result<Evaluated> {
    let task = match config.data.task {
        tandem_datasets::tasks::TaskKind::Arithmetic => eval::Task::Arithmetic,
        tandem_datasets::tasks::TaskKind::Countdown => eval::Task::Countdown,
    };
    let args = eval::Args {
        model: model.to_owned(),
        dataset: warm.data.join("test.jsonl"),
        fields: vec!["id=id".into(), "difficulty=difficulty".into()],
        preset: None,
        task,
        cloud: cloud.to_owned(),
        cloud_model: "sim-oracle".into(),
        api_key_env: None,
        budget: config.eval.budget,
        seed: config.seed,
        temperature: config.eval.temperature,
        threads: config.threads,
        max_new_tokens: config.eval.max_new_tokens,
        limit: config.eval.limit,
        device: "cpu".into(),
        out: dir.to_owned(),
        router_from: None,
        // The router learns from the whole training split: every question the RL run may
        // sample, answered by this model without the help option.
        router_train: config.eval.router.then(|| warm.data.join("train.jsonl")),
        json: false,
    };
    let evaluation = eval::evaluate(&args)?;
    summary::evaluated(model, evaluation)
}
