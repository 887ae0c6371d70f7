//! `tandem run`: plan, then run the dataflow with a progress bar (or log lines off a terminal).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use tandem_pipeline::{OnStep, Plan, PlanOptions, RunOptions, RunSummary, StepReport};
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

/// A progress bar on a terminal (log lines elsewhere), and the callback that moves it.
pub(crate) fn progress(steps: u64, first_step: u64) -> (Option<ProgressBar>, OnStep) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} eta {eta} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_position(first_step);
        bar
    });
    let progress_bar = bar.clone();
    let on_step: OnStep = Arc::new(move |report: &StepReport| {
        let line = format!(
            "{} groups, {} samples, {} errors{}",
            report.groups,
            report.samples,
            report.errors,
            time_line(&report.seconds)
        );
        match &progress_bar {
            Some(bar) => {
                bar.set_position(report.step + 1);
                bar.set_message(line);
            }
            None => tracing::info!("step {}/{}: {line}", report.step + 1, report.steps),
        }
    });
    (bar, on_step)
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

/// `, 2.1 s (rollouts 1.5, learn 0.4)`: the step's wall time and its two slowest stages.
fn time_line(seconds: &[(String, f64)]) -> String {
    let Some((_, step)) = seconds.iter().find(|(name, _)| name == "step") else {
        return String::new();
    };
    let mut stages: Vec<&(String, f64)> = seconds.iter().filter(|(n, _)| n != "step").collect();
    stages.sort_by(|a, b| b.1.total_cmp(&a.1));
    let slowest: Vec<String> = stages
        .iter()
        .take(2)
        .map(|(name, s)| format!("{name} {s:.1}"))
        .collect();
    format!(", {step:.1} s ({})", slowest.join(", "))
}
