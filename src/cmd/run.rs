//! `tandem run`: plan, then run the dataflow with a progress bar (or log lines off a terminal).

use std::path::PathBuf;

use anyhow::Result;
use tandem_lab::progress::progress;
use tandem_pipeline::{Plan, PlanOptions, RunOptions, RunSummary};
use tandem_stages::Registry;

/// Arguments of `tandem run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    #[arg(required_unless_present = "resume")]
    pipeline: Option<PathBuf>,
    /// Continue a stopped run (`runs/<id>`) from its newest complete checkpoint, with the
    /// pipeline its manifest recorded; what it stored after that point is discarded first.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["pipeline", "sets"])]
    resume: Option<PathBuf>,
    /// Override a value: `--set run.steps=10`, `--set stages.1.params.limit=5` (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    sets: Vec<String>,
    /// Worker threads; groups are spread over them by prompt id (default 1, or what the
    /// resumed run used).
    #[arg(long)]
    workers: Option<usize>,
    /// Directory that run directories are created in.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Store no stage streams (only the manifest and the errors stream); for measuring.
    #[arg(long)]
    no_materialize: bool,
}

/// A run to start: a new one from a pipeline file, or a stored one to continue.
#[allow(
    clippy::large_enum_variant,
    reason = "one value per command, never moved in a loop"
)]
enum Start {
    Fresh(Plan),
    Resumed(tandem_pipeline::Resumed),
}

impl Start {
    fn plan(&self) -> &Plan {
        match self {
            Start::Fresh(plan) => plan,
            Start::Resumed(resumed) => &resumed.plan,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let start = match (&args.resume, &args.pipeline) {
        (Some(run_dir), _) => {
            let resumed = tandem_pipeline::resume(run_dir, Registry::builtin())?;
            let from = match &resumed.point.checkpoint {
                Some(checkpoint) => format!(" from {}", checkpoint.display()),
                None => String::new(),
            };
            eprintln!(
                "resuming run {} at step {}{from}",
                resumed.manifest.run_id, resumed.point.step
            );
            Start::Resumed(resumed)
        }
        (None, Some(file)) => {
            Start::Fresh(Plan::from_file(file, &PlanOptions { sets: args.sets })?)
        }
        (None, None) => anyhow::bail!("give a pipeline file, or --resume RUN_DIR"),
    };
    let steps = start.plan().steps;
    let first_step = start.plan().settings.resume.as_ref().map_or(0, |r| r.step);
    let (bar, on_step) = progress(steps, first_step);
    let options = RunOptions {
        workers: args.workers.unwrap_or(match &start {
            Start::Fresh(_) => 1,
            Start::Resumed(resumed) => resumed.manifest.workers,
        }),
        out_dir: args.out,
        materialize: !args.no_materialize,
        on_step: Some(on_step),
        parent: None,
    };
    let result = match start {
        Start::Fresh(plan) => tandem_pipeline::run(plan, options),
        Start::Resumed(resumed) => tandem_pipeline::run_resumed(resumed, options),
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print_summary(&result?);
    Ok(())
}

/// The lines a finished run ends with.
pub(crate) fn print_summary(summary: &RunSummary) {
    println!(
        "run {} complete: {} step(s), {} groups, {} samples, {} error rows\nstored in {}",
        summary.run_id,
        summary.steps,
        summary.groups,
        summary.samples,
        summary.errors,
        summary.run_dir.display()
    );
}
