//! `filter.dynamic`: DAPO's dynamic sampling (Yu et al. 2025), the dropping half. A group whose
//! rewards are all equal (within `tolerance`) has zero advantage under any group-relative
//! estimator and only dilutes the batch, so it is dropped; the rest is kept.
//!
//! DAPO also keeps sampling until the batch is full of groups that survive. That needs the
//! source and generator to over-sample a step, a `run:` setting tandem does not have yet; until
//! then a step trains on fewer groups than `prompts_per_step`, and the filter stream says how
//! many were dropped.

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group};

use super::decision::{Decision, earlier_errors, reward_range};
use crate::contract::{BuildContext, Built, GroupStage, Scope, StepContext};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `filter.dynamic`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    /// Rewards that differ by at most this count as equal (default 1e-6).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    1e-6
}

impl StageConfig for DynamicConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(StageError::Params {
                path: "tolerance".into(),
                message: format!("must be a finite number >= 0, got {}", self.tolerance),
            });
        }
        Ok(Built::Group(Box::new(DynamicFilter { config: self })))
    }
}

/// Drops groups whose rewards are all equal.
pub struct DynamicFilter {
    config: DynamicConfig,
}

impl GroupStage for DynamicFilter {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples, Facet::Rewards])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Filter])
    }

    /// Whole steps, as every filter: the decision is per group today, but refilling a step
    /// (over-sampling) will need the step.
    fn scope(&self) -> Scope {
        Scope::Step
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        for group in groups {
            let g = group.samples.len();
            let decision =
                earlier_errors(group).unwrap_or_else(|| match reward_range(group, &ctx.stage_id) {
                    Err(errors) => errors,
                    Ok((low, high)) if high - low <= self.config.tolerance => Decision::drop(
                        "dropped",
                        format!(
                            "all {g} rewards are equal ({low}, within {}): no gradient",
                            self.config.tolerance
                        ),
                    ),
                    Ok((low, high)) => {
                        Decision::keep("kept", format!("rewards range from {low} to {high}"))
                    }
                });
            decision.write(group);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::{PromptRecord, RewardRecord, SampleRecord};

    use super::*;

    fn group(prompt_id: &str, rewards: &[f64]) -> Group {
        let mut group = Group::new(PromptRecord {
            prompt_id: prompt_id.into(),
            ..Default::default()
        });
        for (i, reward) in rewards.iter().enumerate() {
            group.samples.push(SampleRecord {
                sample_idx: i as u32,
                ..Default::default()
            });
            group.rewards.push(RewardRecord {
                sample_idx: i as u32,
                reward: *reward,
                ..Default::default()
            });
        }
        group
    }

    fn run(params: serde_json::Value, mut groups: Vec<Group>) -> Result<Vec<Group>> {
        let Built::Group(mut stage) = crate::registry::build_with::<DynamicConfig>(
            &params,
            &BuildContext::new("dyn", crate::RunSettings::default()),
        )?
        else {
            panic!("filter.dynamic builds a group stage");
        };
        assert_eq!(stage.scope(), Scope::Step);
        stage.process(&mut groups, &StepContext::single_worker("r", "dyn", 0))?;
        Ok(groups)
    }

    fn decisions(groups: &[Group]) -> Vec<(&str, bool, &str)> {
        groups
            .iter()
            .map(|g| {
                let f = g.filter.as_ref().expect("decision");
                (f.bucket.as_str(), f.kept, f.reason.as_str())
            })
            .collect()
    }

    #[test]
    fn drops_equal_rewards_keeps_the_rest() {
        let mut failed = group("failed", &[1.0, 0.0]);
        failed.push_error("adv", None, "missing_reward", "x");
        let mut unrewarded = group("unrewarded", &[1.0, 0.0]);
        unrewarded.rewards.remove(0);
        let groups = run(
            serde_json::Value::Null,
            vec![
                group("mixed", &[1.0, 0.25, 0.0]),
                group("all-right", &[1.0, 1.0, 1.0, 1.0]),
                group("all-wrong", &[0.0, 0.0]),
                group("nearly", &[0.5, 0.5 + 1e-9]),
                failed,
                unrewarded,
            ],
        )
        .expect("run");
        assert_eq!(
            decisions(&groups),
            vec![
                ("kept", true, "rewards range from 0 to 1"),
                (
                    "dropped",
                    false,
                    "all 4 rewards are equal (1, within 0.000001): no gradient"
                ),
                (
                    "dropped",
                    false,
                    "all 2 rewards are equal (0, within 0.000001): no gradient"
                ),
                (
                    "dropped",
                    false,
                    "all 2 rewards are equal (0.5, within 0.000001): no gradient"
                ),
                (
                    "errors",
                    false,
                    "earlier stages failed on it: adv/missing_reward"
                ),
                ("errors", false, "sample(s) 0 of 2 have no reward row"),
            ]
        );
        assert_eq!(groups[5].errors[0].stage, "dyn");
    }

    #[test]
    fn tolerance_is_a_param_and_checked() {
        let groups = run(
            serde_json::json!({"tolerance": 0.3}),
            vec![group("p", &[0.5, 0.75]), group("q", &[0.0, 1.0])],
        )
        .expect("run");
        assert_eq!(
            decisions(&groups).iter().map(|d| d.0).collect::<Vec<_>>(),
            vec!["dropped", "kept"]
        );
        let err =
            run(serde_json::json!({"tolerance": f64::NAN}), vec![]).expect_err("bad tolerance");
        assert!(err.to_string().starts_with("tolerance: "), "{err}");
    }
}
