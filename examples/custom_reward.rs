//! A reward written in Rust: registered by name, used from YAML next to the built-in rewards.
//!
//!     cargo run --example custom_reward
//!
//! `my.majority` rewards a sample whose answer agrees with the most common answer of its group
//! (self-consistency, a reward that needs no reference answer). It adds its component through
//! `tandem_stages::reward::add_reward`, so it stacks with the other reward stages: the stored
//! `rewards` stream holds `accuracy_local` (from `reward.collab`) and `majority` side by side.

use std::collections::BTreeMap;

use tandem_pipeline::{Plan, PlanOptions, RunOptions};
use tandem_schemas::{Facet, Facets, Group};
use tandem_stages::registry::{KindSpec, StageConfig, build_with};
use tandem_stages::reward::add_reward;
use tandem_stages::{BuildContext, Built, GroupStage, Registry, Role, StepContext};

/// Parameters of `my.majority`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Majority {
    /// Multiplier of the `majority` component (default 1.0).
    #[serde(default = "one")]
    weight: f64,
}

fn one() -> f64 {
    1.0
}

impl StageConfig for Majority {
    fn build(self, _ctx: &BuildContext) -> tandem_stages::Result<Built> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(tandem_stages::StageError::Params {
                path: "weight".into(),
                message: format!("must be a finite number >= 0, got {}", self.weight),
            });
        }
        Ok(Built::Group(Box::new(self)))
    }
}

/// The text of the last `<answer>…</answer>`, trimmed.
pub fn answer(text: &str) -> Option<&str> {
    let start = text.rfind("<answer>")? + "<answer>".len();
    let end = start + text[start..].find("</answer>")?;
    Some(text[start..end].trim())
}

impl GroupStage for Majority {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Rewards])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> tandem_stages::Result<()> {
        for group in groups {
            let answers: Vec<(u32, Option<String>)> = group
                .samples
                .iter()
                .map(|s| (s.sample_idx, answer(&s.text).map(str::to_owned)))
                .collect();
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for a in answers.iter().filter_map(|(_, a)| a.as_deref()) {
                *counts.entry(a).or_default() += 1;
            }
            // The most common answer; ties go to the smallest, so the result is deterministic.
            let top = counts
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(a, _)| (*a).to_owned());
            for (sample_idx, a) in &answers {
                let agrees = a.is_some() && a.as_deref() == top.as_deref();
                let value = if agrees { 1.0 } else { 0.0 };
                add_reward(
                    group,
                    &ctx.stage_id,
                    *sample_idx,
                    self.weight,
                    &[("majority", value)],
                );
            }
        }
        Ok(())
    }
}

/// The built-in kinds plus `my.majority`.
pub fn registry() -> Registry {
    let mut registry = Registry::builtin();
    registry.register(KindSpec {
        name: "my.majority",
        role: Role::Group,
        summary: "1 for a sample that agrees with its group's most common answer",
        build: build_with::<Majority>,
    });
    registry
}

/// The pipeline this example runs: the shipped arithmetic set, judged, with two rewards.
pub const PIPELINE: &str = r#"run: { prompts_per_step: 32, group_size: 4, steps: 2 }
stages:
  - id: prompts
    kind: source.jsonl
    params:
      path: datasets/data/offline-arithmetic.jsonl
      fields: { id: id, question: question, answer: answer, completions: completions }
  - { id: rollouts, kind: generate.offline }
  - { id: verdicts, kind: verify.exact, params: { extract: answer_tag } }
  - { id: collab, kind: reward.collab }
  - { id: majority, kind: my.majority, params: { weight: 0.5 } }
"#;

#[allow(dead_code)] // the tests include this file for `registry` and `PIPELINE` only
fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pipeline = dir.path().join("custom-reward.yaml");
    std::fs::write(&pipeline, PIPELINE)?;
    let plan = Plan::from_file_with(&pipeline, &PlanOptions::default(), registry())?;
    // Into ./runs, like `tandem run`: look at it with `tandem inspect <dir> --stream rewards`.
    let summary = tandem_pipeline::run(plan, RunOptions::default())?;
    println!(
        "{} samples rewarded by reward.collab + 0.5 × my.majority: {}",
        summary.samples,
        summary.run_dir.display()
    );
    Ok(())
}
