//! `tandem demo`: the built-in default. A small model learns, on this machine's CPU, to solve
//! easy problems itself and to ask a simulated cloud for the hard ones (docs/demo.md).

use std::path::PathBuf;

use anyhow::Result;

use tandem_lab::demo;

/// Arguments of `tandem demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A demo file (default: the built-in `configs/demo.yaml`); `configs/demo-ci.yaml` is the
    /// CI-sized one.
    config: Option<PathBuf>,
    /// Override a value of the demo file: `--set train.set=[run.steps=20]`, `--set seed=1`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    sets: Vec<String>,
    /// Directory the demo's directory is created in.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Where warm starts are cached (default `$TANDEM_CACHE/demo`, else `~/.cache/tandem/demo`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Make the warm start again even if the cache has it.
    #[arg(long)]
    fresh: bool,
    /// Print `demo.json` on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (config, source) = demo::load(args.config.as_deref(), &args.sets)?;
    let cache = args.cache.unwrap_or_else(default_cache);
    let report = demo::run(
        &config,
        &source,
        &demo::Options {
            out: args.out,
            cache,
            fresh: args.fresh,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\n{}", report.table);
        println!(
            "demo complete in {:.0} s: {} (summary.md, demo.json, rl_steps.png)",
            report.seconds.total,
            report.dir.display()
        );
    }
    Ok(())
}

/// `$TANDEM_CACHE/demo`, else `$HOME/.cache/tandem/demo`, else `.tandem-cache/demo`.
pub(crate) fn default_cache() -> PathBuf {
    let root = std::env::var_os("TANDEM_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tandem")))
        .unwrap_or_else(|| PathBuf::from(".tandem-cache"));
    root.join("demo")
}
