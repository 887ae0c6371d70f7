//! `report.md`: the overall metrics per breakdown, the per-step table, the comparison of runs,
//! and links to the plots.

use std::fmt::Write;
use std::path::Path;

use super::ReportError;
use super::compare::Comparison;
use super::metrics::{Breakdown, Tally};
use super::summary::RunReport;

/// Writes `report.md` into `dir`; `plots` are the plot files (linked by name).
pub fn write_markdown(
    runs: &[RunReport],
    comparisons: &[Comparison],
    plots: &[std::path::PathBuf],
    dir: &Path,
) -> Result<std::path::PathBuf, ReportError> {
    let mut md = String::new();
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    let _ = writeln!(md, "# Report: {}\n", ids.join(", "));
    let _ = writeln!(
        md,
        "Metrics as defined in `docs/report.md`: help rate = samples that asked / samples; local \
         accuracy = correct local answers / samples; conditional accuracy = correct local answers \
         / samples that did not ask; overall accuracy = (kept and locally correct + asked and cloud \
         correct) / samples.\n"
    );
    for run in runs {
        let _ = writeln!(md, "## Run `{}`\n", run.run_id);
        let _ = writeln!(
            md,
            "{} final step(s); this report read {} row(s) of {} new step(s). Streams: samples \
             `{}`, verdicts `{}`, rewards `{}`, cloud `{}`, prompts `{}`.\n",
            run.steps,
            run.rows_read,
            run.steps_processed,
            run.sources.samples,
            run.sources.verdicts.as_deref().unwrap_or("–"),
            run.sources.rewards.as_deref().unwrap_or("–"),
            run.sources.cloud.as_deref().unwrap_or("–"),
            run.sources.prompts.as_deref().unwrap_or("–"),
        );
        let _ = writeln!(md, "### Overall\n");
        header(&mut md, "breakdown");
        for (breakdown, tally) in &run.overall {
            row(&mut md, &breakdown.to_string(), tally);
        }
        let _ = writeln!(md, "\n### Per step\n");
        header(&mut md, "step");
        for (step, tally) in run.steps_of(&Breakdown::All) {
            row(&mut md, &step.to_string(), &tally);
        }
        md.push('\n');
    }
    if !comparisons.is_empty() {
        let _ = writeln!(
            md,
            "## Comparison with `{}` (joined on `prompt_id`)\n",
            runs[0].run_id
        );
        let _ = writeln!(
            md,
            "A prompt's outcome is taken at the last step that evaluated it: routed to the cloud \
             when more than half its samples asked, correct when more than half were correct \
             overall.\n"
        );
        let _ = writeln!(
            md,
            "| run | common | only baseline | only run | change | prompts | examples |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---|---:|---|");
        for c in comparisons {
            let changes = [
                ("local → cloud", &c.to_cloud),
                ("cloud → local", &c.to_local),
                ("wrong → correct", &c.fixed),
                ("correct → wrong", &c.broken),
            ];
            for (label, ids) in changes {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {} | {label} | {} | {} |",
                    c.run,
                    c.common,
                    c.only_baseline,
                    c.only_run,
                    ids.len(),
                    Comparison::examples(ids)
                );
            }
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Plots\n");
    for plot in plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
    {
        let name = plot
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let _ = writeln!(md, "![{name}]({name})\n");
    }
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(|e| ReportError::Write {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(path)
}

fn header(md: &mut String, first: &str) {
    let _ = writeln!(
        md,
        "| {first} | samples | help rate | local acc. | cond. acc. | overall acc. | mean reward | cloud calls | cloud tokens | cloud cost ($) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn row(md: &mut String, first: &str, t: &Tally) {
    let _ = writeln!(
        md,
        "| {first} | {} | {} | {} | {} | {} | {} | {} | {} | {:.4} |",
        t.samples,
        number(t.help_rate()),
        number(t.local_accuracy()),
        number(t.conditional_accuracy()),
        number(t.overall_accuracy()),
        number(t.mean_reward()),
        t.cloud_calls,
        t.cloud_tokens,
        t.cloud_cost_usd,
    );
}

fn number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "–".to_owned()
    }
}
