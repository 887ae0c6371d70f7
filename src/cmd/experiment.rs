//! `tandem experiment`: every method of a comparison on one task suite over seeds
//! (`tandem_lab::experiment`; docs/experiments.md).

use std::path::PathBuf;

use anyhow::Result;
use tandem_lab::experiment;

/// Arguments of `tandem experiment`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment file (`configs/experiments/paper-ci.yaml`).
    file: PathBuf,
    /// Override a value of the experiment file: `--set 'seeds=[0]'`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    sets: Vec<String>,
    /// The experiment's directory is `<out>/<name>`; the same command again resumes it.
    #[arg(long, default_value = "runs/experiments")]
    out: PathBuf,
    /// Where warm starts are cached (default: `tandem demo`'s cache).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Cells run at once (each with the suite's `threads` torch threads).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Print `experiment.json` on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (config, suite) = experiment::load(&args.file, &args.sets)?;
    let report = experiment::run(
        &config,
        &suite,
        &experiment::Options {
            out: args.out,
            cache: args.cache.unwrap_or_else(super::demo::default_cache),
            jobs: args.jobs,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\n{}", report.table);
        println!(
            "experiment: {} cell(s), {} computed now: {} (table.md, experiment.json, help_rate.png)",
            report.cells.len(),
            report.computed,
            report.dir.display()
        );
    }
    Ok(())
}
