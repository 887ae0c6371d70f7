//! `tandem`: post-train small on-device LLMs with RL to solve locally and ask a cloud LLM only
//! when that pays. A thin CLI: each subcommand is a small module calling the libraries.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Post-train small on-device LLMs to solve what they can and ask a cloud LLM when it pays.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about, max_term_width = 100)]
struct Cli {
    /// Log filter (e.g. `info`, `tandem_pipeline=debug`); also read from `TANDEM_LOG`.
    #[arg(long, global = true, env = "TANDEM_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The built-in demo: a small model learns on this CPU to solve easy problems itself and to
    /// ask a simulated cloud for the hard ones; prints what RL changed.
    Demo(cmd::demo::Args),
    /// Run a pipeline: every stage's stream is stored under `<out>/<run_id>/streams/`.
    Run(cmd::run::Args),
    /// Re-run a stored run's downstream stages with a new pipeline (`--from <stage>`), reading
    /// the stored streams before it: no generation, no cloud call; the new run records its parent.
    Replay(cmd::replay::Args),
    /// Check a pipeline without running it: kinds, parameters, datasets, stage order.
    Validate(cmd::validate::Args),
    /// Show a stored run: its manifest, or the rows of one of its streams.
    Inspect(cmd::inspect::Args),
    /// Load, inspect, sample from, score with, or create a HF-format model.
    Model(cmd::model::Args),
    /// Judge a JSON Lines file of cases with a verifier (math, countdown, choice) and summarise.
    Verify(cmd::verify::Args),
    /// Per-step and overall metrics of stored runs (incremental), compared on `prompt_id`,
    /// written as `report.md` with PNG and SVG plots.
    Report(cmd::report::Args),
    /// Serve a simulated OpenAI-compatible cloud (oracle answers, seeded latency and faults).
    CloudSim(cmd::cloud_sim::Args),
    /// Make datasets: generate a synthetic task's splits with worked solutions.
    Data(cmd::data::Args),
    /// Evaluate a model's routing against a cloud budget, with the paper's baselines.
    Eval(cmd::eval::Args),
    /// Train and evaluate every method of a comparison on one task suite over seeds, at the same
    /// budget and test split: the paper's table, with the spread over seeds (resumable).
    Experiment(cmd::experiment::Args),
    /// Serve a trained model behind an OpenAI-compatible endpoint; it answers, and the cloud is
    /// called only when it asks for help, within a budget.
    Serve(cmd::serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: CI logs and files get plain lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Replay(args) => cmd::replay::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Experiment(args) => cmd::experiment::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Model(args) => cmd::model::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::CloudSim(args) => cmd::cloud_sim::run(args),
        Command::Data(args) => cmd::data::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
