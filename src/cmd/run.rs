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
    /// Worker threads (in each process); groups are spread over them by prompt id (default 1,
    /// or what the resumed run used).
    #[arg(long)]
    workers: Option<usize>,
    /// Run as N local processes on loopback (timely's cluster mode), for trying a cluster run
    /// on one machine: the same rows and checkpoints as one process with N workers.
    #[arg(long, value_name = "N", conflicts_with_all = ["processes", "process", "hostfile"])]
    local_cluster: Option<usize>,
    /// Processes in the cluster (checked against the hostfile); see docs/scale.md.
    #[arg(long, value_name = "N", requires = "hostfile")]
    processes: Option<usize>,
    /// This process's index in the cluster: its line in the hostfile, from 0.
    #[arg(long, value_name = "I", requires = "hostfile")]
    process: Option<usize>,
    /// One `host:port` per line, line I for process I; every process gets the same file.
    #[arg(long, value_name = "FILE", requires = "process")]
    hostfile: Option<PathBuf>,
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
    if let Some(processes) = args.local_cluster {
        // The same command line for every process, with its place in the cluster instead.
        let mut child_args = Vec::new();
        let mut given = std::env::args_os().skip(1);
        while let Some(arg) = given.next() {
            if arg == "--local-cluster" {
                given.next();
            } else if !arg.to_string_lossy().starts_with("--local-cluster=") {
                child_args.push(arg);
            }
        }
        return tandem_lab::cluster::run_local(processes, &child_args);
    }
    let cluster = match (&args.hostfile, args.process) {
        (Some(hostfile), Some(process)) => Some(
            tandem_pipeline::Cluster::from_hostfile(hostfile, process, args.processes)
                .map_err(anyhow::Error::msg)?,
        ),
        _ => None,
    };
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
    let leader = cluster.as_ref().is_none_or(|c| c.process == 0);
    let (bar, on_step) = if leader {
        let (bar, on_step) = progress(steps, first_step);
        (bar, Some(on_step))
    } else {
        (None, None)
    };
    let options = RunOptions {
        cluster,
        workers: args.workers.unwrap_or(match &start {
            Start::Fresh(_) => 1,
            Start::Resumed(resumed) => resumed.manifest.workers,
        }),
        out_dir: args.out,
        materialize: !args.no_materialize,
        // Process 0 reports the steps; the others run quietly.
        on_step,
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
    let (process, processes) = summary.process;
    if process > 0 {
        println!(
            "process {process} of {processes}: run {} complete: {} step(s) (process 0 reports the counts)",
            summary.run_id, summary.steps
        );
        return;
    }
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
