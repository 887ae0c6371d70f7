//! The progress of a pipeline run: a bar on a terminal, log lines elsewhere.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use tandem_pipeline::{OnStep, StepReport};

/// A progress bar on a terminal (log lines elsewhere), and the callback that moves it.
pub fn progress(steps: u64, first_step: u64) -> (Option<ProgressBar>, OnStep) {
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
