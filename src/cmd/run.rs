//! `tandem run`: plan, then run the dataflow with a progress bar (or log lines off a terminal).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use tandem_pipeline::{Plan, PlanOptions, RunOptions, StepReport};

/// Arguments of `tandem run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Override a value: `--set run.steps=10`, `--set stages.1.params.limit=5` (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    sets: Vec<String>,
    /// Worker threads; groups are spread over them by prompt id.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Directory that run directories are created in.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Store no stage streams (only the manifest and the errors stream); for measuring.
    #[arg(long)]
    no_materialize: bool,
}

pub fn run(args: Args) -> Result<()> {
    let plan = Plan::from_file(&args.pipeline, &PlanOptions { sets: args.sets })?;
    let steps = plan.steps;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} eta {eta} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar
    });
    let progress_bar = bar.clone();
    let on_step = Arc::new(move |report: &StepReport| {
        let line = format!(
            "{} groups, {} samples, {} errors",
            report.groups, report.samples, report.errors
        );
        match &progress_bar {
            Some(bar) => {
                bar.set_position(report.step + 1);
                bar.set_message(line);
            }
            None => tracing::info!("step {}/{}: {line}", report.step + 1, report.steps),
        }
    });
    let options = RunOptions {
        workers: args.workers,
        out_dir: args.out,
        materialize: !args.no_materialize,
        on_step: Some(on_step),
    };
    let result = tandem_pipeline::run(plan, options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = result?;
    println!(
        "run {} complete: {} step(s), {} groups, {} samples, {} error rows\nstored in {}",
        summary.run_id,
        summary.steps,
        summary.groups,
        summary.samples,
        summary.errors,
        summary.run_dir.display()
    );
    Ok(())
}
