//! Reading an evaluation's outcomes back from its stored runs.

use std::collections::BTreeMap;
use std::path::Path;

use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout};
use tandem_schemas::{StreamKind, Target};

use super::Outcome;

/// One stream of a stored run, by kind (the last of that kind in the manifest).
fn stream(run: &Path, kind: StreamKind) -> Result<Rows, String> {
    let layout = RunLayout::new(run);
    let manifest = Manifest::read(&layout)?;
    let Some(entry) = manifest.streams.iter().rev().find(|s| s.kind == kind) else {
        return Err(format!(
            "{}: the run stored no {kind:?} stream",
            run.display()
        ));
    };
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", run.display());
    let mut rows = Rows::empty(kind);
    for step in layout.steps(&entry.name).map_err(|e| fail(&e))? {
        for part in layout.parts(&entry.name, step).map_err(|e| fail(&e))? {
            rows.append(Rows::read_parquet(kind, &part).map_err(|e| fail(&e))?);
        }
    }
    Ok(rows)
}

/// Per prompt: whether sample 0 asked, and the verdicts on it and on the cloud's answer.
#[derive(Default)]
struct Seen {
    asked: bool,
    local: Option<bool>,
    cloud: Option<bool>,
}

fn seen(run: &Path) -> Result<BTreeMap<String, Seen>, String> {
    let mut by_prompt: BTreeMap<String, Seen> = BTreeMap::new();
    let Rows::Samples(samples) = stream(run, StreamKind::Samples)? else {
        unreachable!("read as samples")
    };
    for s in samples.iter().filter(|s| s.sample_idx == 0) {
        by_prompt.entry(s.prompt_id.clone()).or_default().asked = s.asked_help;
    }
    let Rows::Verdicts(verdicts) = stream(run, StreamKind::Verdicts)? else {
        unreachable!("read as verdicts")
    };
    for v in verdicts {
        let entry = by_prompt.entry(v.prompt_id.clone()).or_default();
        match (v.target, v.sample_idx) {
            (Target::Local, Some(0)) => entry.local = Some(v.correct),
            (Target::Cloud, _) => entry.cloud = Some(v.correct),
            _ => {}
        }
    }
    Ok(by_prompt)
}

/// Joins an evaluation's two stored runs on the prompt id: `help`, answers with the help option
/// and the cloud's answers; `local`, answers without it. Per question (in prompt-id order) the
/// [`Outcome`] (a question the policy asked about is judged locally by its answer without the
/// help option) and whether the answer without help is correct (the device-only baseline);
/// also how many questions have no judged cloud answer (a failed call, counted as wrong).
pub fn joined_outcomes(help: &Path, local: &Path) -> Result<(Vec<(Outcome, bool)>, usize), String> {
    let (help, local) = (seen(help)?, seen(local)?);
    let mut out = Vec::with_capacity(help.len());
    let mut failures = 0;
    for (prompt, h) in &help {
        let without_help = local.get(prompt).and_then(|l| l.local).unwrap_or(false);
        failures += usize::from(h.cloud.is_none());
        let outcome = Outcome {
            asked: h.asked,
            local_correct: if h.asked {
                without_help
            } else {
                h.local.unwrap_or(false)
            },
            cloud_correct: h.cloud.unwrap_or(false),
        };
        out.push((outcome, without_help));
    }
    Ok((out, failures))
}

/// The questions of a stored run by prompt id, and whether the device solved each: at least
/// half of its samples have a correct local verdict (the router's training labels).
pub fn solved_questions(run: &Path) -> Result<BTreeMap<String, (String, bool)>, String> {
    let Rows::Prompts(prompts) = stream(run, StreamKind::Prompts)? else {
        unreachable!("read as prompts")
    };
    let Rows::Verdicts(verdicts) = stream(run, StreamKind::Verdicts)? else {
        unreachable!("read as verdicts")
    };
    let mut tally: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for v in verdicts.iter().filter(|v| v.target == Target::Local) {
        let entry = tally.entry(v.prompt_id.as_str()).or_default();
        entry.0 += usize::from(v.correct);
        entry.1 += 1;
    }
    Ok(prompts
        .iter()
        .map(|p| {
            let (right, all) = tally.get(p.prompt_id.as_str()).copied().unwrap_or_default();
            let solved = all > 0 && 2 * right >= all;
            (p.prompt_id.clone(), (p.question.clone(), solved))
        })
        .collect())
}
