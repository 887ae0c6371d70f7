//! `tandem report`: metrics of stored runs as Markdown and plots.

use std::path::PathBuf;

use anyhow::{Result, bail};

use tandem_pipeline::report;

/// Arguments of `tandem report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directories (`runs/<run_id>`); with several, the first is the baseline of the
    /// comparison.
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
    /// Where to write `report.md` and the plots (default `<run_dir>/report/`; required with
    /// several runs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Ignore the stored per-step tallies and read every step again.
    #[arg(long)]
    from_scratch: bool,
    /// Steps read and computed at once: bounds memory to this many steps' rows.
    #[arg(long, default_value_t = 64)]
    batch_steps: usize,
    /// Also print the metrics, rows read and steps processed as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let out = match (&args.out, args.run_dirs.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [one]) => one.join("report"),
        (None, _) => bail!("several runs: say where the report goes with --out DIR"),
    };
    let mut runs = Vec::new();
    for run_dir in &args.run_dirs {
        // Each run keeps its own tallies, wherever the report is written.
        runs.push(report::summarise(
            run_dir,
            &run_dir.join("report"),
            args.from_scratch,
            args.batch_steps,
        )?);
    }
    let comparisons = report::compare(&runs)?;
    let plots = tandem_lab::plot::write_plots(&runs, &out)?;
    let markdown = report::write_markdown(&runs, &comparisons, &plots, &out)?;
    if args.json {
        let json = serde_json::json!({
            "runs": runs,
            "comparisons": comparisons,
            "report": markdown,
            "plots": plots,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for run in &runs {
            eprintln!(
                "{}: {} step(s), {} new, {} row(s) read",
                run.run_id, run.steps, run.steps_processed, run.rows_read
            );
        }
        println!("{}", markdown.display());
    }
    Ok(())
}
