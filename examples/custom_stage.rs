//! A user-defined stage kind, registered by name and used from YAML, on the shipped data.
//!
//!     cargo run --example custom_stage
//!
//! It flags samples shorter than `min_words` as error rows (data, not a crash) and prints how
//! many it flagged.

use tandem_pipeline::{Plan, PlanOptions, RunOptions};
use tandem_schemas::{Facet, Facets, Group};
use tandem_stages::registry::{KindSpec, StageConfig, build_with};
use tandem_stages::{BuildContext, Built, GroupStage, Registry, Role, StepContext};

/// Parameters of `my.count_words`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CountWords {
    /// Samples with fewer words than this become error rows.
    min_words: usize,
}

impl StageConfig for CountWords {
    fn build(self, _ctx: &BuildContext) -> tandem_stages::Result<Built> {
        Ok(Built::Group(Box::new(self)))
    }
}

impl GroupStage for CountWords {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::NONE
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> tandem_stages::Result<()> {
        for group in groups {
            let short: Vec<u32> = group
                .samples
                .iter()
                .filter(|s| s.text.split_whitespace().count() < self.min_words)
                .map(|s| s.sample_idx)
                .collect();
            for idx in short {
                group.push_error(
                    &ctx.stage_id,
                    Some(idx),
                    "too_short",
                    "fewer words than min_words",
                );
            }
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let mut registry = Registry::builtin();
    registry.register(KindSpec {
        name: "my.count_words",
        role: Role::Group,
        summary: "flags short samples",
        build: build_with::<CountWords>,
    });
    let dir = tempfile::tempdir()?;
    let pipeline = dir.path().join("custom.yaml");
    std::fs::write(
        &pipeline,
        r#"run: { prompts_per_step: 32, group_size: 4, steps: 2 }
stages:
  - id: prompts
    kind: source.jsonl
    params:
      path: datasets/data/offline-arithmetic.jsonl
      fields: { id: id, completions: completions }
  - { id: rollouts, kind: generate.offline }
  - { id: short, kind: my.count_words, params: { min_words: 5 } }
"#,
    )?;
    let plan = Plan::from_file_with(&pipeline, &PlanOptions::default(), registry)?;
    let options = RunOptions {
        cluster: None,
        out_dir: dir.path().join("runs"),
        ..RunOptions::default()
    };
    let summary = tandem_pipeline::run(plan, options)?;
    println!(
        "{} samples, {} flagged as too short (see the `errors` stream)",
        summary.samples, summary.errors
    );
    Ok(())
}
