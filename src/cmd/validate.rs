//! `tandem validate`: everything `run` checks before it starts, and nothing else.

use std::path::PathBuf;

use anyhow::Result;
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
    let plan = Plan::from_file(&file, &PlanOptions { sets: args.sets })?;
    println!("{}: ok", file.display());
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
    Ok(())
}
