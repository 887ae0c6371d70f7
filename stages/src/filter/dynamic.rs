//! `filter.dynamic`: DAPO's dynamic sampling (Yu et al. 2025), the dropping half. A group whose
//! rewards are all equal (within `tolerance`) has zero advantage under any group-relative
//! estimator and only dilutes the batch, so it is dropped; the rest is kept.
//!
//! DAPO also fills the batch with groups that survive. Here, as verl does it with one
//! generation batch: the run samples more prompts a step than the learner should see
//! (`prompts_per_step`), and `keep_at_most` keeps a seeded draw of that many of the survivors;
//! the others are dropped as `surplus`.

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group};

use super::decision::{Decision, earlier_errors, reward_range, seeded_choice};
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
    /// Keep at most this many groups a step (DAPO's train batch, with `prompts_per_step` the
    /// larger generation batch); a seeded draw picks them among the survivors (default: all).
    #[serde(default)]
    pub keep_at_most: Option<usize>,
}

fn default_tolerance() -> f64 {
    1e-6
}

impl StageConfig for DynamicConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(StageError::Params {
                path: "tolerance".into(),
                message: format!("must be a finite number >= 0, got {}", self.tolerance),
            });
        }
        if self.keep_at_most == Some(0) {
            return Err(StageError::Params {
                path: "keep_at_most".into(),
                message: "must be at least 1 (leave it out to keep every surviving group)".into(),
            });
        }
        Ok(Built::Group(Box::new(DynamicFilter {
            config: self,
            seed: ctx.run.seed,
        })))
    }
}

/// Drops groups whose rewards are all equal, and survivors past `keep_at_most`.
pub struct DynamicFilter {
    config: DynamicConfig,
    seed: u64,
}

impl GroupStage for DynamicFilter {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples, Facet::Rewards])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Filter])
    }

    /// Whole steps: `keep_at_most` chooses among the step's survivors.
    fn scope(&self) -> Scope {
        Scope::Step
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let decisions: Vec<Decision> = groups
            .iter_mut()
            .map(|group| {
                let g = group.samples.len();
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
                })
            })
            .collect();
        let survivors: Vec<usize> = (0..groups.len()).filter(|&i| decisions[i].kept).collect();
        let n = survivors.len();
        let cap = self.config.keep_at_most.unwrap_or(n);
        let chosen = if n > cap {
            seeded_choice(
                "filter.dynamic",
                self.seed,
                ctx.step,
                groups,
                survivors,
                cap,
            )
        } else {
            survivors.into_iter().collect()
        };
        for (i, (group, decision)) in groups.iter_mut().zip(decisions).enumerate() {
            let decision = if decision.kept && !chosen.contains(&i) {
                Decision::drop(
                    "surplus",
                    format!(
                        "{}; {n} groups survived and keep_at_most is {cap} (seeded draw)",
                        decision.reason
                    ),
                )
            } else {
                decision
            };
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

    #[test]
    fn keep_at_most_keeps_a_seeded_draw_of_the_survivors_and_drops_the_rest_as_surplus() {
        // 10 survivors, 2 all-equal groups; keep 4.
        let groups = || -> Vec<Group> {
            (0..10)
                .map(|i| group(&format!("p{i}"), &[1.0, 0.0]))
                .chain([group("flat-a", &[1.0, 1.0]), group("flat-b", &[0.0, 0.0])])
                .collect()
        };
        let kept = |groups: &[Group]| -> Vec<String> {
            groups
                .iter()
                .filter(|g| g.kept())
                .map(|g| g.prompt_id().to_owned())
                .collect()
        };
        let params = serde_json::json!({ "keep_at_most": 4 });
        let first = run(params.clone(), groups()).expect("run");
        assert_eq!(kept(&first).len(), 4);
        let buckets: Vec<&str> = decisions(&first).iter().map(|d| d.0).collect();
        assert_eq!(buckets.iter().filter(|b| **b == "surplus").count(), 6);
        assert_eq!(buckets[10..], ["dropped", "dropped"]);
        let surplus = first
            .iter()
            .find(|g| g.filter.as_ref().is_some_and(|f| f.bucket == "surplus"))
            .expect("a surplus group");
        assert!(
            surplus
                .filter
                .as_ref()
                .unwrap()
                .reason
                .ends_with("10 groups survived and keep_at_most is 4 (seeded draw)"),
            "{surplus:?}"
        );
        // The same step and seed choose the same prompts in any input order.
        let mut reversed = groups();
        reversed.reverse();
        assert_eq!(kept(&run(params.clone(), reversed).expect("run")).len(), 4);
        let mut again = kept(&run(params.clone(), groups()).expect("run"));
        let mut reversed_kept = {
            let mut g = groups();
            g.reverse();
            kept(&run(params, g).expect("run"))
        };
        again.sort();
        reversed_kept.sort();
        let mut first_kept = kept(&first);
        first_kept.sort();
        assert_eq!(first_kept, again);
        assert_eq!(first_kept, reversed_kept);
        // Fewer survivors than the cap: all kept.
        let few = run(serde_json::json!({ "keep_at_most": 20 }), groups()).expect("run");
        assert_eq!(kept(&few).len(), 10);
        let zero = run(serde_json::json!({ "keep_at_most": 0 }), vec![]).expect_err("zero");
        assert!(zero.to_string().starts_with("keep_at_most: "), "{zero}");
    }
}
