//! `tandem replay`: a stored run's streams feed a new pipeline from one of its stages on, into
//! a new run directory that records its parent; nothing upstream is generated or called again.

use std::path::PathBuf;

use anyhow::Result;
use tandem_pipeline::{PlanOptions, RunOptions, plan_replay};
use tandem_stages::Registry;

use crate::cmd::run::print_summary;
use tandem_lab::progress::progress;

/// Arguments of `tandem replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stored run (`runs/<run_id>`).
    run_dir: PathBuf,
    /// The first stage of the new pipeline to recompute (its id); the stages before it are
    /// read back from the stored run's streams of the same ids.
    #[arg(long)]
    from: String,
    /// The new pipeline: a full pipeline of the same shape (typically a copy of the stored
    /// run's with other parameters from `--from` on).
    #[arg(long)]
    pipeline: PathBuf,
    /// Override a value of the new pipeline: `--set stages.4.params.alpha_cloud=0.6`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    sets: Vec<String>,
    /// Show the stored streams that would be read and the stages that would run; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Directory that the new run directory is created in.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let replay = plan_replay(
        &args.run_dir,
        &args.pipeline,
        &args.from,
        &PlanOptions { sets: args.sets },
        Registry::builtin(),
    )?;
    for warning in &replay.warnings {
        eprintln!("warning: {warning}");
    }
    if args.dry_run {
        println!(
            "replay of run {} ({}), {} step(s)",
            replay.parent,
            args.run_dir.display(),
            replay.plan.steps
        );
        println!("not run (read back): {}", replay.skipped.join(", "));
        println!("streams read:");
        for read in &replay.reads {
            println!(
                "  {:<16} {:<10} {} step(s) {} row(s)   (stage {})",
                read.entry.name,
                read.entry.kind.to_string(),
                read.steps.len(),
                read.rows,
                read.entry.stage
            );
        }
        println!("stages run:");
        for stage in &replay.plan.stages {
            println!(
                "  {:<16} {:<18} provides {}{}",
                stage.id,
                stage.kind,
                stage.provides,
                if stage.materialize {
                    ""
                } else {
                    " (not stored)"
                }
            );
        }
        return Ok(());
    }
    let (bar, on_step) = progress(replay.plan.steps, 0);
    let options = RunOptions {
        cluster: None,
        workers: args.workers,
        out_dir: args.out,
        materialize: true,
        on_step: Some(on_step),
        parent: Some(replay.parent),
    };
    let result = tandem_pipeline::run(replay.plan, options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print_summary(&result?);
    Ok(())
}
