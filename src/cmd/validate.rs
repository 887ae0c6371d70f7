//! `tandem validate`: everything `run` checks before it starts, and nothing else. Given a demo
//! file (`configs/demo.yaml`), everything `tandem demo` checks, and both of its pipelines.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tandem_pipeline::yaml::{Document, Seg};
use tandem_pipeline::{Plan, PlanOptions};

/// Arguments of `tandem validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pipeline: Option<PathBuf>,
    /// Override a value: `--set run.steps=10`, `--set stages.1.params.limit=5` (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    sets: Vec<String>,
    /// List the registered stage kinds instead.
    #[arg(long)]
    kinds: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.kinds || args.pipeline.is_none() {
        for kind in tandem_stages::Registry::builtin().kinds() {
            println!(
                "{:<18} {:<12} {}",
                kind.name,
                kind.role.to_string(),
                kind.summary
            );
        }
        return Ok(());
    }
    let file = args.pipeline.expect("checked above");
    if is_demo_file(&file)? {
        let (config, source) = tandem_lab::demo::load(Some(&file), &args.sets)?;
        let plans = tandem_lab::demo::validate(&config, &source)?;
        println!(
            "{}: ok (a demo file: {} train and {} test problems, levels {})",
            file.display(),
            config.data.train,
            config.data.test,
            config
                .data
                .resolve()?
                .levels
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (pipeline, plan) in &plans {
            println!("{}: ok", pipeline.display());
            print_plan(plan);
        }
        return Ok(());
    }
    let plan = Plan::from_file(&file, &PlanOptions { sets: args.sets })?;
    println!("{}: ok", file.display());
    print_plan(&plan);
    Ok(())
}

/// A demo file names its pipelines (`warm_start`, `train`) instead of listing `stages`.
fn is_demo_file(file: &Path) -> Result<bool> {
    let document = Document::read(file)?;
    let has = |key: &str| document.get(&[Seg::Key(key.into())]).is_some();
    Ok(!has("stages") && (has("warm_start") || has("train")))
}

fn print_plan(plan: &Plan) {
    println!(
        "  {} step(s) × {} prompt(s) × {} sample(s), seed {}",
        plan.steps, plan.settings.batch_size, plan.settings.group_size, plan.settings.seed
    );
    for stage in &plan.stages {
        let streams: Vec<String> = if stage.materialize {
            stage.streams().into_iter().map(|(n, _)| n).collect()
        } else {
            vec![]
        };
        println!(
            "  {:<16} {:<18} needs {:<22} provides {:<16} stores {}",
            stage.id.to_string(),
            stage.kind,
            stage.needs.to_string(),
            stage.provides.to_string(),
            if streams.is_empty() {
                "-".to_owned()
            } else {
                streams.join(", ")
            }
        );
    }
}
