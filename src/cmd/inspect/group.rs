//! `tandem inspect --prompt-id`: one prompt's group read from every stored stream of a run,
//! in the order a person follows it: the question, each sample with its verdict, reward and
//! advantage, the cloud answer and its verdict, the filter decision, and what failed.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout};
use tandem_schemas::{StreamKind, Target, VerdictRecord};

use super::cut;

/// One stored stream's rows of the prompt.
struct Stream {
    name: String,
    rows: Rows,
}

/// Prints the group of `prompt_id` at every stored step (or only `step`).
pub fn show(
    layout: &RunLayout,
    manifest: &Manifest,
    prompt_id: &str,
    step: Option<u64>,
    width: usize,
) -> Result<()> {
    let mut streams = Vec::new();
    for entry in &manifest.streams {
        if entry.kind == StreamKind::Metrics {
            continue;
        }
        let steps = match step {
            Some(step) => vec![step],
            None => layout.steps(&entry.name)?,
        };
        let mut rows = Rows::empty(entry.kind);
        for step in steps {
            for part in layout.parts(&entry.name, step)? {
                rows.append(
                    Rows::read_parquet(entry.kind, &part)
                        .with_context(|| part.display().to_string())?,
                );
            }
        }
        retain_prompt(&mut rows, prompt_id);
        rows.sort();
        streams.push(Stream {
            name: entry.name.clone(),
            rows,
        });
    }
    let steps: BTreeSet<u64> = streams
        .iter()
        .flat_map(|s| match &s.rows {
            Rows::Prompts(rows) => rows.iter().map(|r| r.step).collect(),
            _ => Vec::new(),
        })
        .collect();
    if steps.is_empty() {
        bail!(
            "run {} has no prompt `{prompt_id}`{}",
            manifest.run_id,
            step.map(|s| format!(" at step {s}")).unwrap_or_default()
        );
    }
    let mut out = String::new();
    for step in steps {
        group_at(&mut out, &streams, prompt_id, step, width);
    }
    print!("{out}");
    Ok(())
}

fn retain_prompt(rows: &mut Rows, id: &str) {
    match rows {
        Rows::Prompts(v) => v.retain(|r| r.prompt_id == id),
        Rows::Samples(v) => v.retain(|r| r.prompt_id == id),
        Rows::Cloud(v) => v.retain(|r| r.prompt_id == id),
        Rows::Verdicts(v) => v.retain(|r| r.prompt_id == id),
        Rows::Rewards(v) => v.retain(|r| r.prompt_id == id),
        Rows::Advantages(v) => v.retain(|r| r.prompt_id == id),
        Rows::Filter(v) => v.retain(|r| r.prompt_id == id),
        Rows::Errors(v) => v.retain(|r| r.prompt_id == id),
        Rows::Requests(v) => v.retain(|r| r.prompt_id == id),
        Rows::Metrics(v) => v.clear(),
    }
}

/// One step's group. Writing to a `String` cannot fail, hence the ignored results.
fn group_at(out: &mut String, streams: &[Stream], prompt_id: &str, step: u64, width: usize) {
    let _ = writeln!(out, "── step {step} · prompt {prompt_id} ──");
    for s in streams {
        if let Rows::Prompts(rows) = &s.rows {
            for p in rows.iter().filter(|p| p.step == step) {
                let _ = writeln!(out, "question    {}", cut(&p.question, width));
                let _ = writeln!(out, "answer      {}", opt(&p.answer));
                if let Some(difficulty) = &p.difficulty {
                    let _ = writeln!(out, "difficulty  {difficulty}");
                }
            }
        }
    }
    let sample_idx: BTreeSet<u32> = streams
        .iter()
        .flat_map(|s| match &s.rows {
            Rows::Samples(rows) => rows
                .iter()
                .filter(|r| r.step == step)
                .map(|r| r.sample_idx)
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    for idx in sample_idx {
        for s in streams {
            if let Rows::Samples(rows) = &s.rows {
                for r in rows
                    .iter()
                    .filter(|r| r.step == step && r.sample_idx == idx)
                {
                    let _ = writeln!(
                        out,
                        "sample {idx}    asked_help: {}, finish: {}, policy_version: {}  [{}]",
                        r.asked_help,
                        // One-word variants, stored in snake_case: as the rows table shows them.
                        format!("{:?}", r.finish_reason).to_lowercase(),
                        r.policy_version,
                        s.name
                    );
                    let _ = writeln!(out, "  text      {}", cut(&r.text, width));
                }
            }
        }
        for s in streams {
            match &s.rows {
                Rows::Verdicts(rows) => {
                    for v in rows
                        .iter()
                        .filter(|v| v.step == step && v.sample_idx == Some(idx))
                    {
                        let _ = writeln!(out, "  verdict   {}  [{}]", verdict(v, width), s.name);
                    }
                }
                Rows::Rewards(rows) => {
                    for r in rows
                        .iter()
                        .filter(|r| r.step == step && r.sample_idx == idx)
                    {
                        let parts: Vec<String> = r
                            .components
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect();
                        let _ = writeln!(
                            out,
                            "  reward    {} ({})  [{}]",
                            r.reward,
                            parts.join(", "),
                            s.name
                        );
                    }
                }
                Rows::Advantages(rows) => {
                    for a in rows
                        .iter()
                        .filter(|a| a.step == step && a.sample_idx == idx)
                    {
                        let _ = writeln!(
                            out,
                            "  advantage {} ({})  [{}]",
                            a.advantage, a.estimator, s.name
                        );
                    }
                }
                Rows::Errors(rows) => {
                    for e in rows
                        .iter()
                        .filter(|e| e.step == step && e.sample_idx == Some(idx))
                    {
                        let _ = writeln!(
                            out,
                            "  error     {} in `{}`: {}",
                            e.kind,
                            e.stage,
                            cut(&e.reason, width)
                        );
                    }
                }
                _ => {}
            }
        }
    }
    for s in streams {
        if let Rows::Cloud(rows) = &s.rows {
            for c in rows.iter().filter(|c| c.step == step) {
                let _ = writeln!(
                    out,
                    "cloud       model: {}, attempts: {}, cache_hit: {}, latency_ms: {}, cost_usd: {}, error: {}  [{}]",
                    c.model,
                    c.attempts,
                    c.cache_hit,
                    c.latency_ms,
                    c.cost_usd,
                    opt(&c.error_kind),
                    s.name
                );
                let _ = writeln!(
                    out,
                    "  answer    {}",
                    cut(c.answer.as_deref().unwrap_or("∅"), width)
                );
            }
        }
    }
    for s in streams {
        if let Rows::Verdicts(rows) = &s.rows {
            for v in rows
                .iter()
                .filter(|v| v.step == step && v.sample_idx.is_none())
            {
                let _ = writeln!(out, "  verdict   {}  [{}]", verdict(v, width), s.name);
            }
        }
    }
    for s in streams {
        match &s.rows {
            Rows::Filter(rows) => {
                for f in rows.iter().filter(|f| f.step == step) {
                    let _ = writeln!(
                        out,
                        "filter      kept: {}, bucket: {}, reason: {}  [{}]",
                        f.kept, f.bucket, f.reason, s.name
                    );
                }
            }
            Rows::Errors(rows) => {
                for e in rows
                    .iter()
                    .filter(|e| e.step == step && e.sample_idx.is_none())
                {
                    let _ = writeln!(
                        out,
                        "error       {} in `{}`: {}",
                        e.kind,
                        e.stage,
                        cut(&e.reason, width)
                    );
                }
            }
            _ => {}
        }
    }
    out.push('\n');
}

fn verdict(v: &VerdictRecord, width: usize) -> String {
    let target = match v.target {
        Target::Local => "local",
        Target::Cloud => "cloud",
    };
    format!(
        "{target} correct: {}, extracted: {}, method: {}",
        v.correct,
        cut(v.extracted.as_deref().unwrap_or("∅"), width),
        v.method
    )
}

fn opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("∅")
}
