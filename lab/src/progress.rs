//! The progress of a pipeline run: a bar on a terminal, log lines elsewhere.

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tandem_pipeline::{OnStep, StepReport};

/// A progress bar on a terminal (log lines elsewhere), and the callback that moves it.
pub fn progress(steps: u64, first_step: u64) -> (Option<ProgressBar>, OnStep) {
    bar_and_callback(steps, first_step, None)
}

/// As [`progress`], for one of several runs going at once (an experiment's cells): on a
/// terminal the bars stack, one line per run, each starting with `label`; elsewhere the log
/// lines start with it.
pub fn progress_labelled(
    steps: u64,
    first_step: u64,
    label: &str,
) -> (Option<ProgressBar>, OnStep) {
    bar_and_callback(steps, first_step, Some(label))
}

/// The terminal's stack of labelled bars.
static STACK: OnceLock<MultiProgress> = OnceLock::new();

fn bar_and_callback(
    steps: u64,
    first_step: u64,
    label: Option<&str>,
) -> (Option<ProgressBar>, OnStep) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let mut bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix}{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} eta {eta} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        if let Some(label) = label {
            bar.set_prefix(format!("{label}: "));
            bar = STACK.get_or_init(MultiProgress::new).add(bar);
        }
        bar.set_position(first_step);
        bar
    });
    let prefix = label.map_or(String::new(), |l| format!("{l}: "));
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
            None => tracing::info!("{prefix}step {}/{}: {line}", report.step + 1, report.steps),
        }
    });
    (bar, on_step)
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
