//! `reward.format`: `weight` for a well-formed response, 0 otherwise (component `format`). A
//! response is well-formed when a complete think block is followed by a complete answer block
//! or a complete call for help ([`FormatTags::well_formed`]).

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group};

use super::{FormatTags, add_reward, non_negative, one, validate_help};
use crate::Result;
use crate::contract::{BuildContext, Built, GroupStage, StepContext};
use crate::help::HelpTags;
use crate::registry::StageConfig;

/// Parameters of `reward.format`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// Reward of a well-formed response (default 1.0); the component itself is 1 or 0.
    #[serde(default = "one")]
    pub weight: f64,
    /// Tags of a well-formed response.
    #[serde(default)]
    pub format: FormatTags,
    /// Tags of a call for help, accepted in place of the answer block.
    #[serde(default)]
    pub help: HelpTags,
}

impl StageConfig for FormatConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        non_negative("weight", self.weight)?;
        self.format.validate("format")?;
        validate_help(&self.help)?;
        Ok(Built::Group(Box::new(FormatReward { config: self })))
    }
}

/// Rewards well-formed responses.
pub struct FormatReward {
    config: FormatConfig,
}

impl GroupStage for FormatReward {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Rewards])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let c = &self.config;
        for group in groups {
            let formed: Vec<_> = group
                .samples
                .iter()
                .map(|s| (s.sample_idx, c.format.well_formed(&s.text, &c.help)))
                .collect();
            for (sample_idx, well_formed) in formed {
                let format = if well_formed { 1.0 } else { 0.0 };
                add_reward(
                    group,
                    &ctx.stage_id,
                    sample_idx,
                    c.weight,
                    &[("format", format)],
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::{PromptRecord, SampleRecord};

    use super::*;

    fn stage(params: serde_json::Value) -> crate::Result<Box<dyn GroupStage>> {
        let ctx = BuildContext::new("fmt", crate::RunSettings::default());
        match crate::registry::build_with::<FormatConfig>(&params, &ctx)? {
            Built::Group(stage) => Ok(stage),
            _ => panic!("not a group stage"),
        }
    }

    fn ctx(stage_id: &str) -> StepContext {
        StepContext::single_worker("r", stage_id, 0)
    }

    #[test]
    fn rewards_well_formed_responses_and_stacks_on_earlier_rewards() {
        let texts = [
            "<think>a</think>\n<answer>1</answer>",
            "<think>a</think> <unknown>I need external assistance</unknown>",
            "<answer>1</answer>",
            "<think>a</think>",
            "<think>a</think> <answer>cut off",
            "[think]a[/think] [answer]1[/answer]",
        ];
        let mut group = Group::new(PromptRecord {
            prompt_id: "p".into(),
            ..Default::default()
        });
        group.samples = texts
            .iter()
            .enumerate()
            .map(|(i, t)| SampleRecord {
                prompt_id: "p".into(),
                sample_idx: i as u32,
                text: (*t).into(),
                ..Default::default()
            })
            .collect();
        let mut groups = vec![group];
        stage(serde_json::json!({"weight": 0.5}))
            .expect("build")
            .process(&mut groups, &ctx("fmt"))
            .expect("process");
        let got: Vec<_> = groups[0]
            .rewards
            .iter()
            .map(|r| (r.reward, r.components["format"]))
            .collect();
        assert_eq!(
            got,
            vec![
                (0.5, 1.0),
                (0.5, 1.0),
                (0.0, 0.0),
                (0.0, 0.0),
                (0.0, 0.0),
                (0.0, 0.0)
            ]
        );
        // A second format stage with other tags adds to the same rows under its own key.
        let custom = serde_json::json!({
            "format": {"think": ["[think]", "[/think]"], "answer": ["[answer]", "[/answer]"]},
        });
        stage(custom)
            .expect("build")
            .process(&mut groups, &ctx("brackets"))
            .expect("process");
        assert_eq!(groups[0].rewards.len(), texts.len());
        let last = &groups[0].rewards[5];
        assert_eq!(last.reward, 1.0);
        assert_eq!(
            last.components.keys().collect::<Vec<_>>(),
            ["brackets.format", "format"]
        );
    }

    #[test]
    fn rejects_bad_params() {
        for (params, path) in [
            (serde_json::json!({"weight": -2.0}), "weight: "),
            (serde_json::json!({"help": {"open": ""}}), "help.open: "),
            (
                serde_json::json!({"format": {"answer": ["<a>", ""]}}),
                "format.answer[1]: ",
            ),
            (
                serde_json::json!({"format": {"thinking": ["<a>", "</a>"]}}),
                "format.thinking: unknown field",
            ),
        ] {
            let err = stage(params).err().expect("rejected");
            assert!(err.to_string().starts_with(path), "{err}");
        }
    }
}
