//! `reward.length`: a penalty for responses past a length budget,
//! `−min(max_penalty, penalty_per_token × max(0, length − max_tokens))` (component `length`).
//! The length is the number of token ids when the sample has them, else the number of
//! whitespace-separated words (samples taken from a dataset carry no token ids).

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group, SampleRecord};

use super::{add_reward, non_negative, one};
use crate::Result;
use crate::contract::{BuildContext, Built, GroupStage, StepContext};
use crate::registry::StageConfig;

/// Parameters of `reward.length`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthConfig {
    /// The budget: responses up to this length are not penalised. Counted in token ids, or in
    /// whitespace-separated words for samples without token ids.
    pub max_tokens: usize,
    /// Penalty per token past the budget (default 0.001).
    #[serde(default = "default_penalty_per_token")]
    pub penalty_per_token: f64,
    /// The largest penalty (default 1.0).
    #[serde(default = "one")]
    pub max_penalty: f64,
    /// Multiplier of this stage's contribution to the summed reward (default 1.0).
    #[serde(default = "one")]
    pub weight: f64,
}

fn default_penalty_per_token() -> f64 {
    0.001
}

impl StageConfig for LengthConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        non_negative("penalty_per_token", self.penalty_per_token)?;
        non_negative("max_penalty", self.max_penalty)?;
        non_negative("weight", self.weight)?;
        Ok(Built::Group(Box::new(LengthReward { config: self })))
    }
}

/// Penalises responses past a length budget.
pub struct LengthReward {
    config: LengthConfig,
}

impl LengthReward {
    /// The length of a sample: its token ids, or its words when it has none.
    pub fn length(sample: &SampleRecord) -> usize {
        if sample.token_ids.is_empty() {
            sample.text.split_whitespace().count()
        } else {
            sample.token_ids.len()
        }
    }

    /// The (non-positive) `length` component of a sample of `length` tokens.
    pub fn penalty(&self, length: usize) -> f64 {
        let c = &self.config;
        let over = length.saturating_sub(c.max_tokens) as f64;
        let penalty = (c.penalty_per_token * over).min(c.max_penalty);
        // Written as 0.0, not -0.0, when within budget.
        if penalty > 0.0 { -penalty } else { 0.0 }
    }
}

impl GroupStage for LengthReward {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Rewards])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        for group in groups {
            let penalties: Vec<_> = group
                .samples
                .iter()
                .map(|s| (s.sample_idx, self.penalty(LengthReward::length(s))))
                .collect();
            for (sample_idx, length) in penalties {
                add_reward(
                    group,
                    &ctx.stage_id,
                    sample_idx,
                    self.config.weight,
                    &[("length", length)],
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::PromptRecord;

    use super::*;

    fn stage(params: serde_json::Value) -> Result<LengthReward> {
        let config = crate::params::parse::<LengthConfig>(&params)?;
        let ctx = BuildContext::new("len", crate::RunSettings::default());
        // Build through the config so its checks run, then keep the concrete type.
        config.clone().build(&ctx)?;
        Ok(LengthReward { config })
    }

    #[test]
    fn penalty_grows_past_the_budget_and_is_capped() {
        let s = stage(serde_json::json!({
            "max_tokens": 10, "penalty_per_token": 0.125, "max_penalty": 0.5,
        }))
        .expect("build");
        let got: Vec<_> = [0, 10, 11, 12, 14, 15, 1000].map(|n| s.penalty(n)).to_vec();
        assert_eq!(got, vec![0.0, 0.0, -0.125, -0.25, -0.5, -0.5, -0.5]);
        assert!(s.penalty(3).is_sign_positive(), "no -0.0 within budget");
    }

    #[test]
    fn counts_token_ids_else_words_and_applies_the_weight() {
        let sample = |i, text: &str, token_ids: Vec<u32>| SampleRecord {
            prompt_id: "p".into(),
            sample_idx: i,
            text: text.into(),
            token_ids,
            ..Default::default()
        };
        let mut group = Group::new(PromptRecord {
            prompt_id: "p".into(),
            ..Default::default()
        });
        group.samples = vec![
            sample(0, "one two three four", vec![]),
            sample(1, "one two", vec![7; 6]),
            sample(2, "one\ttwo\n three", vec![]),
        ];
        let mut groups = vec![group];
        let mut s = stage(serde_json::json!({
            "max_tokens": 3, "penalty_per_token": 0.25, "weight": 2.0,
        }))
        .expect("build");
        let ctx = StepContext::single_worker("r", "len", 0);
        s.process(&mut groups, &ctx).expect("process");
        let got: Vec<_> = groups[0]
            .rewards
            .iter()
            .map(|r| (r.reward, r.components["length"]))
            .collect();
        assert_eq!(got, vec![(-0.5, -0.25), (-1.5, -0.75), (0.0, 0.0)]);
    }

    #[test]
    fn budget_is_required_and_penalties_non_negative() {
        let err = stage(serde_json::json!({})).err().expect("no budget");
        assert!(err.to_string().contains("max_tokens"), "{err}");
        let err = stage(serde_json::json!({"max_tokens": 1, "max_penalty": -1.0}))
            .err()
            .expect("negative");
        assert!(err.to_string().starts_with("max_penalty: "), "{err}");
    }
}
