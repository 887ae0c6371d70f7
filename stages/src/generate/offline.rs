//! `generate.offline`: samples taken from completions the dataset already holds (responses
//! produced elsewhere, e.g. by a vLLM batch job), so rewards, filters and analysis can run on
//! them with no model at all.

use serde::Deserialize;
use tandem_schemas::{FinishReason, Group, SampleRecord};

use crate::Result;
use crate::contract::{BuildContext, Built, Generator, StepContext};
use crate::help::HelpTags;
use crate::registry::StageConfig;

/// Parameters of `generate.offline`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineConfig {
    /// The tags that mark a call for help in a completion.
    #[serde(default)]
    pub help: HelpTags,
}

impl StageConfig for OfflineConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Generator(Box::new(OfflineGenerator {
            group_size: ctx.run.group_size,
            help: self.help,
        })))
    }
}

/// Takes the first G of each prompt's stored completions as its samples.
pub struct OfflineGenerator {
    group_size: usize,
    help: HelpTags,
}

impl Generator for OfflineGenerator {
    fn generate(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        for group in groups {
            let have = group.prompt.completions.len();
            if have < self.group_size {
                // Fewer than G would silently change the estimator's group size: an error row.
                group.push_error(
                    &ctx.stage_id,
                    None,
                    "too_few_completions",
                    format!("the dataset holds {have} completions for this prompt, the run needs group_size = {}", self.group_size),
                );
                continue;
            }
            group.samples = group.prompt.completions[..self.group_size]
                .iter()
                .enumerate()
                .map(|(i, text)| SampleRecord {
                    run_id: group.prompt.run_id.clone(),
                    step: group.prompt.step,
                    prompt_id: group.prompt.prompt_id.clone(),
                    sample_idx: i as u32,
                    policy_version: 0,
                    text: text.clone(),
                    token_ids: Vec::new(),
                    logprobs: Vec::new(),
                    finish_reason: FinishReason::External,
                    asked_help: self.help.asks_help(text),
                })
                .collect();
        }
        Ok(())
    }
}
