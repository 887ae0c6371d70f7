//! What the demo shows: the call-for-help rate by difficulty and the accuracies at the budget,
//! before and after RL, against device-only and random offloading at the same call rate; the
//! table on the terminal and in `summary.md`, the numbers in `demo.json`, and the RL run's call
//! rate and accuracy per step as a plot.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::Seconds;
use super::config::DemoConfig;
use super::warm::Warm;
use crate::eval::Evaluation;
use tandem_pipeline::report::{self, Breakdown};

/// One difficulty level in an evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct Level {
    /// The label.
    pub difficulty: String,
    /// Test questions with it.
    pub questions: u64,
    /// Share of them the model asked for help on.
    pub help_rate: f64,
    /// Share it answered correctly without asking (the `tandem report` definition: an ask
    /// counts as not answered locally, unlike the overall `local_accuracy`, where asks past
    /// the budget are answered on the device).
    pub local_accuracy: f64,
}

/// One evaluation of a model on the test split.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluated {
    /// The model.
    pub model: PathBuf,
    /// The evaluation's run with the help option (its `eval/` holds `tandem eval`'s files).
    pub eval_run: PathBuf,
    /// Per difficulty.
    pub levels: Vec<Level>,
    /// Share of all questions it asked for help on.
    pub help_rate: f64,
    /// Share of questions it answered itself, correctly.
    pub local_accuracy: f64,
    /// Accuracy on the questions it answered itself.
    pub conditional_accuracy: f64,
    /// Share of questions sent to the cloud under the budget.
    pub call_rate: f64,
    /// Accuracy with its asks sent to the cloud up to the budget.
    pub overall_accuracy: f64,
    /// Every question answered on the device without the help option.
    pub local_only: f64,
    /// Random offloading at the same call rate (expected accuracy).
    pub random_offloading: f64,
    /// Every question answered by the cloud.
    pub cloud_only: f64,
    /// The device without the help option, plus a learned router trained on which training
    /// questions this model solved without it (PAPER.md's "Task-Tuning & router").
    pub router: Option<RouterBaseline>,
    /// Per test question, in prompt-id order.
    #[serde(skip)]
    pub per_question: Vec<Answered>,
}

/// How one test question went.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    /// Solved with the help option, without asking.
    pub solved_without_asking: bool,
    /// Solved without the help option.
    pub solved_device_only: bool,
}

/// The learned-router baseline of one evaluation.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RouterBaseline {
    /// ROC AUC of its `P(solved)` on the test split (0.5 is chance).
    pub auc: Option<f64>,
    /// Share of questions it sent to the cloud.
    pub call_rate: f64,
    /// Accuracy on the questions kept on the device.
    pub conditional_accuracy: f64,
    /// Accuracy with its choices sent to the cloud up to the budget.
    pub overall_accuracy: f64,
}

/// What RL kept of what the warm start could do, question by question on the test split.
#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    /// Questions the warm start solved without asking (with the help option).
    pub solved_before: usize,
    /// Share of those the trained model still solves without asking.
    pub still_solved: f64,
    /// Questions the warm start solved without the help option (device only).
    pub device_only_before: usize,
    /// Share of those the trained model still solves without the help option.
    pub device_only_still_solved: f64,
}

impl Kept {
    /// Compares two evaluations of the same questions.
    pub fn between(before: &Evaluated, after: &Evaluated) -> Kept {
        let pairs = || before.per_question.iter().zip(&after.per_question);
        let share = |kept: usize, of: usize| {
            if of == 0 {
                f64::NAN
            } else {
                kept as f64 / of as f64
            }
        };
        let count = |f: fn(&Answered) -> bool| {
            (
                pairs().filter(|(b, _)| f(b)).count(),
                pairs().filter(|(b, a)| f(b) && f(a)).count(),
            )
        };
        let (solved_before, still) = count(|q| q.solved_without_asking);
        let (device_before, device_still) = count(|q| q.solved_device_only);
        Kept {
            solved_before,
            still_solved: share(still, solved_before),
            device_only_before: device_before,
            device_only_still_solved: share(device_still, device_before),
        }
    }
}

/// Reads an evaluation's numbers, with its per-difficulty help rates from its stored run.
pub fn evaluated(model: &Path, evaluation: Evaluation) -> Result<Evaluated> {
    let Evaluation {
        report: r,
        help_run,
        outcomes,
    } = evaluation;
    let per_question = outcomes
        .iter()
        .map(|(o, without_help)| Answered {
            solved_without_asking: !o.asked && o.local_correct,
            solved_device_only: *without_help,
        })
        .collect();
    let stored = report::summarise(&help_run, &help_run.join("report"), false, 64)?;
    let levels = stored
        .overall
        .iter()
        .filter_map(|(breakdown, tally)| match breakdown {
            Breakdown::Difficulty(d) => Some(Level {
                difficulty: d.clone(),
                questions: tally.samples,
                help_rate: tally.help_rate(),
                local_accuracy: tally.local_accuracy(),
            }),
            _ => None,
        })
        .collect();
    Ok(Evaluated {
        model: model.to_owned(),
        eval_run: help_run,
        levels,
        help_rate: r.policy.help_ratio,
        local_accuracy: r.policy.local_accuracy,
        conditional_accuracy: r.policy.conditional_accuracy,
        call_rate: r.policy.call_rate,
        overall_accuracy: r.policy.overall_accuracy,
        local_only: r.local_only,
        random_offloading: r.naive_offloading,
        cloud_only: r.cloud_only,
        router: r.router.as_ref().map(|q| RouterBaseline {
            auc: q.auc,
            call_rate: q.call_rate,
            conditional_accuracy: q.conditional_accuracy,
            overall_accuracy: q.overall_accuracy,
        }),
        per_question,
    })
}

/// `demo.json`.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// The demo's directory.
    pub dir: PathBuf,
    /// The settings it ran with.
    pub config: DemoConfig,
    /// The warm start.
    pub warm_start: Warm,
    /// Whether the warm start came from the cache.
    pub warm_start_reused: bool,
    /// The RL run.
    pub train_run: PathBuf,
    /// The warm-started model on the test split.
    pub before: Evaluated,
    /// The RL-trained model on the test split.
    pub after: Evaluated,
    /// What RL kept of the warm start's local skill.
    pub kept: Kept,
    /// Time per phase.
    pub seconds: Seconds,
    /// The summary table (Markdown).
    pub table: String,
    /// The plots of the RL run.
    pub plots: Vec<PathBuf>,
}

/// Writes `demo.json`, `summary.md` and the plots into `dir`, prints the table.
pub fn write(
    dir: &Path,
    config: &DemoConfig,
    warm: &Warm,
    train_run: &Path,
    before: Evaluated,
    after: Evaluated,
    seconds: Seconds,
) -> Result<DemoReport> {
    let plots = plot(dir, train_run)?;
    let kept = Kept::between(&before, &after);
    let table = table(config, &before, &after, &kept);
    let report = DemoReport {
        dir: dir.to_owned(),
        config: config.clone(),
        warm_start: warm.clone(),
        warm_start_reused: warm.reused,
        train_run: train_run.to_owned(),
        before,
        after,
        kept,
        seconds,
        table,
        plots,
    };
    std::fs::write(
        dir.join("demo.json"),
        format!("{}\n", serde_json::to_string_pretty(&report)?),
    )?;
    std::fs::write(dir.join("summary.md"), markdown(&report))?;
    Ok(report)
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}%", 100.0 * x)
    } else {
        "–".into()
    }
}

/// The before/after table.
fn table(config: &DemoConfig, before: &Evaluated, after: &Evaluated, kept: &Kept) -> String {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let level = |e: &Evaluated, d: &str| e.levels.iter().find(|l| l.difficulty == d).cloned();
    for l in &after.levels {
        let b = level(before, &l.difficulty);
        rows.push((
            format!("help rate, {} ({} questions)", l.difficulty, l.questions),
            b.as_ref().map_or("–".into(), |b| pct(b.help_rate)),
            pct(l.help_rate),
        ));
    }
    for l in &after.levels {
        let b = level(before, &l.difficulty);
        rows.push((
            format!("solved without asking, {}", l.difficulty),
            b.as_ref().map_or("–".into(), |b| pct(b.local_accuracy)),
            pct(l.local_accuracy),
        ));
    }
    let budget = pct(config.eval.budget);
    let both = |name: String, f: fn(&Evaluated) -> f64| (name, pct(f(before)), pct(f(after)));
    rows.extend([
        both("help rate, all".into(), |e| e.help_rate),
        both(
            "local accuracy (asks past the budget answered on the device)".into(),
            |e| e.local_accuracy,
        ),
        both("conditional accuracy (answered locally)".into(), |e| {
            e.conditional_accuracy
        }),
        both(format!("call rate (budget {budget})"), |e| e.call_rate),
        both(
            format!("**overall accuracy at the {budget} budget**"),
            |e| e.overall_accuracy,
        ),
        both("device only (no help option)".into(), |e| e.local_only),
        both("random offloading at the same call rate".into(), |e| {
            e.random_offloading
        }),
    ]);
    let router = |e: &Evaluated, f: fn(&RouterBaseline) -> f64| {
        e.router.as_ref().map_or("–".into(), |r| pct(f(r)))
    };
    let auc = |e: &Evaluated| {
        e.router
            .as_ref()
            .and_then(|r| r.auc)
            .map_or("–".into(), |a| format!("{a:.3}"))
    };
    if before.router.is_some() || after.router.is_some() {
        rows.extend([
            (
                format!("device + learned router at the {budget} budget"),
                router(before, |r| r.overall_accuracy),
                router(after, |r| r.overall_accuracy),
            ),
            (
                "learned router's AUC (solved on the device)".into(),
                auc(before),
                auc(after),
            ),
        ]);
    }
    rows.extend([
        both("cloud only".into(), |e| e.cloud_only),
        (
            format!(
                "warm start's solved-without-asking ({}) still solved so",
                kept.solved_before
            ),
            "100.0%".into(),
            pct(kept.still_solved),
        ),
        (
            format!(
                "warm start's device-only solved ({}) still solved",
                kept.device_only_before
            ),
            "100.0%".into(),
            pct(kept.device_only_still_solved),
        ),
    ]);
    let mut out = String::from("| test split | before RL | after RL |\n|---|---:|---:|\n");
    for (name, b, a) in rows {
        out.push_str(&format!("| {name} | {b} | {a} |\n"));
    }
    out
}

fn markdown(r: &DemoReport) -> String {
    let plots: String = r
        .plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .filter_map(|p| p.strip_prefix(&r.dir).ok())
        .map(|p| format!("![call rate and accuracy per RL step]({})\n", p.display()))
        .collect();
    format!(
        "# tandem demo\n\nWarm start: {warm}{reused}. RL run: {train}.\n\n{table}\n{plots}\n\
         Time: warm start {w:.0} s, RL {t:.0} s, evaluations {e:.0} s, total {total:.0} s.\n",
        warm = r.warm_start.dir.display(),
        reused = if r.warm_start_reused { " (cached)" } else { "" },
        train = r.train_run.display(),
        table = r.table,
        w = r.seconds.warm_start,
        t = r.seconds.train,
        e = r.seconds.eval,
        total = r.seconds.total,
    )
}

/// The RL run's call rate per difficulty and its accuracy, per step.
fn plot(dir: &Path, train_run: &Path) -> Result<Vec<PathBuf>> {
    let run = report::summarise(train_run, &train_run.join("report"), false, 64)?;
    let per_step = |breakdown: &Breakdown, f: fn(&report::Tally) -> f64| -> Vec<(f64, f64)> {
        run.steps_of(breakdown)
            .iter()
            .map(|(step, tally)| (*step as f64, f(tally)))
            .collect()
    };
    let mut series = Vec::new();
    for breakdown in run.overall.keys() {
        if let Breakdown::Difficulty(d) = breakdown {
            series.push((
                format!("help rate, {d}"),
                per_step(breakdown, report::Tally::help_rate),
            ));
        }
    }
    series.push((
        "overall accuracy".into(),
        per_step(&Breakdown::All, report::Tally::overall_accuracy),
    ));
    series.push((
        "local accuracy".into(),
        per_step(&Breakdown::All, report::Tally::local_accuracy),
    ));
    Ok(crate::plot::write_rate_lines(
        dir,
        "rl_steps",
        "Call-for-help rate and accuracy per RL step (training samples)",
        ("step", "share of samples"),
        series,
    )?)
}
