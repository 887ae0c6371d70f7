//! Runs compared prompt by prompt: the first run is the baseline, every other run is joined with
//! it on `prompt_id`, and prompts whose routing (asked the cloud or not) or correctness changed are
//! counted and listed.
//!
//! A prompt's outcome in a run is taken at the last final step that evaluated it: it is *routed to
//! the cloud* when more than half of its samples asked for help, and *correct* when more than half
//! of its samples were correct as a system (kept and locally correct, or asked and the cloud
//! correct). With one sample per prompt, as in an evaluation, that is the sample itself.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tandem_schemas::layout::RunLayout;

use super::ReportError;
use super::load::{self, Sources};
use super::summary::RunReport;

/// At most this many example prompts are listed per kind of change.
const EXAMPLES: usize = 5;

/// One prompt's outcome in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The step it was last evaluated at.
    pub step: u64,
    /// Routed to the cloud.
    pub asked: bool,
    /// Correct as a system.
    pub correct: bool,
}

/// A run compared with the baseline.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    /// The baseline run's id.
    pub baseline: String,
    /// The other run's id.
    pub run: String,
    /// Prompts evaluated in both runs.
    pub common: usize,
    /// Prompts only the baseline evaluated.
    pub only_baseline: usize,
    /// Prompts only the other run evaluated.
    pub only_run: usize,
    /// Kept on-device in the baseline, routed to the cloud in the run.
    pub to_cloud: Vec<String>,
    /// Routed to the cloud in the baseline, kept on-device in the run.
    pub to_local: Vec<String>,
    /// Wrong in the baseline, correct in the run.
    pub fixed: Vec<String>,
    /// Correct in the baseline, wrong in the run.
    pub broken: Vec<String>,
}

impl Comparison {
    /// Up to a few example prompt ids of a list.
    pub fn examples(ids: &[String]) -> String {
        let mut shown: Vec<&str> = ids.iter().take(EXAMPLES).map(String::as_str).collect();
        if ids.len() > EXAMPLES {
            shown.push("…");
        }
        shown.join(", ")
    }
}

/// Compares every run after the first with the first.
pub fn compare(runs: &[RunReport]) -> Result<Vec<Comparison>, ReportError> {
    let Some((baseline, others)) = runs.split_first() else {
        return Ok(Vec::new());
    };
    let base = outcomes(baseline)?;
    let mut out = Vec::new();
    for run in others {
        let other = outcomes(run)?;
        let mut c = Comparison {
            baseline: baseline.run_id.clone(),
            run: run.run_id.clone(),
            only_baseline: base.keys().filter(|p| !other.contains_key(*p)).count(),
            only_run: other.keys().filter(|p| !base.contains_key(*p)).count(),
            ..Comparison::default()
        };
        for (prompt, a) in &base {
            let Some(b) = other.get(prompt) else { continue };
            c.common += 1;
            match (a.asked, b.asked) {
                (false, true) => c.to_cloud.push(prompt.clone()),
                (true, false) => c.to_local.push(prompt.clone()),
                _ => {}
            }
            match (a.correct, b.correct) {
                (false, true) => c.fixed.push(prompt.clone()),
                (true, false) => c.broken.push(prompt.clone()),
                _ => {}
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// Each prompt's outcome at the last final step that evaluated it.
pub fn outcomes(run: &RunReport) -> Result<BTreeMap<String, Outcome>, ReportError> {
    let layout = RunLayout::new(&run.run_dir);
    let sources = Sources {
        prompts: None,
        rewards: None,
        cloud: None,
        ..run.sources.clone()
    };
    let steps: Vec<u64> = (0..run.steps).collect();
    let rows = load::read_steps(&layout, &sources, &steps)?;
    let mut local_ok = BTreeSet::new();
    let mut cloud_ok = BTreeSet::new();
    for v in rows.verdicts.iter().filter(|v| v.correct) {
        match v.sample_idx {
            Some(idx) => local_ok.insert((v.step, v.prompt_id.as_str(), idx)),
            None => cloud_ok.insert((v.step, v.prompt_id.as_str(), 0)),
        };
    }
    // (step, prompt) → (samples, asked, correct)
    let mut groups: BTreeMap<(&str, u64), (u64, u64, u64)> = BTreeMap::new();
    for s in &rows.samples {
        let correct = if s.asked_help {
            cloud_ok.contains(&(s.step, s.prompt_id.as_str(), 0))
        } else {
            local_ok.contains(&(s.step, s.prompt_id.as_str(), s.sample_idx))
        };
        let g = groups.entry((s.prompt_id.as_str(), s.step)).or_default();
        g.0 += 1;
        g.1 += u64::from(s.asked_help);
        g.2 += u64::from(correct);
    }
    let mut out = BTreeMap::new();
    // Keys iterate by prompt then step: the last insert of a prompt is its last step.
    for ((prompt, step), (n, asked, correct)) in groups {
        out.insert(
            prompt.to_owned(),
            Outcome {
                step,
                asked: asked * 2 > n,
                correct: correct * 2 > n,
            },
        );
    }
    Ok(out)
}
