//! What the group-relative estimators share: a group's rewards, checked before any arithmetic,
//! the statistics taken over them, and the rows written from the result.

use tandem_schemas::{AdvantageRecord, Facet, Facets, Group};

use crate::Result;
use crate::contract::{GroupStage, StepContext};

/// The rewards of `group`'s samples, in sample order, or `None` after an error row on the group.
///
/// Every estimator here compares a sample with the rest of its group, so one bad input turns
/// every advantage of the group wrong, not only its own. Refused, with no advantages:
/// - fewer than two samples (`group_too_small`): a group of one has no baseline. TRL refuses
///   `num_generations < 2` outright; verl falls back to the raw reward, which is no longer a
///   group-relative advantage. Here it is a record that failed, like any other.
/// - a sample without a reward row (`missing_reward`): a reward stage wrote an error row
///   instead; a 0 in its place would move the group's mean.
/// - a reward that is NaN or infinite (`bad_reward`).
pub(super) fn checked_rewards(group: &mut Group, stage_id: &str) -> Option<Vec<f64>> {
    let size = group.samples.len();
    if size < 2 {
        group.push_error(
            stage_id,
            None,
            "group_too_small",
            format!(
                "the group has {size} sample(s): a group-relative advantage needs at least 2 \
                 (run.group_size >= 2)"
            ),
        );
        return None;
    }
    let mut rewards = Vec::with_capacity(size);
    let mut missing = Vec::new();
    let mut non_finite = Vec::new();
    for sample in &group.samples {
        match group
            .rewards
            .iter()
            .find(|r| r.sample_idx == sample.sample_idx)
        {
            Some(row) if row.reward.is_finite() => rewards.push(row.reward),
            Some(row) => non_finite.push(format!("{} ({})", sample.sample_idx, row.reward)),
            None => missing.push(sample.sample_idx.to_string()),
        }
    }
    if !missing.is_empty() {
        group.push_error(
            stage_id,
            None,
            "missing_reward",
            format!(
                "sample(s) {} of {size} have no reward row (see the reward stages' error rows); \
                 the group gets no advantages, since its baseline would be wrong",
                missing.join(", ")
            ),
        );
        return None;
    }
    if !non_finite.is_empty() {
        group.push_error(
            stage_id,
            None,
            "bad_reward",
            format!(
                "sample(s) {} have a reward that is not a finite number; the group gets no \
                 advantages",
                non_finite.join(", ")
            ),
        );
        return None;
    }
    Some(rewards)
}

/// Replaces the group's advantages with one row per sample, in sample order, each with the
/// sample's `policy_version`. A later advantage stage replaces an earlier one's rows, so the
/// learner sees one estimator.
pub(super) fn write_advantages(group: &mut Group, estimator: &str, advantages: &[f64]) {
    debug_assert_eq!(advantages.len(), group.samples.len());
    group.advantages = group
        .samples
        .iter()
        .zip(advantages)
        .map(|(sample, &advantage)| AdvantageRecord {
            run_id: group.prompt.run_id.clone(),
            step: group.prompt.step,
            prompt_id: group.prompt.prompt_id.clone(),
            sample_idx: sample.sample_idx,
            policy_version: sample.policy_version,
            advantage,
            estimator: estimator.to_owned(),
        })
        .collect();
}

/// The stage of an estimator that needs nothing but each group's own rewards (`gapg`, `rloo`,
/// `dr_grpo`): only the estimator's name and formula differ between them.
pub(super) struct PerGroupAdvantage {
    /// The name written into `estimator`.
    pub(super) estimator: &'static str,
    /// One group's advantages from its rewards (at least two).
    pub(super) advantages: fn(&[f64]) -> Vec<f64>,
}

impl GroupStage for PerGroupAdvantage {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples, Facet::Rewards])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Advantages])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        each_group(groups, &ctx.stage_id, self.estimator, self.advantages);
        Ok(())
    }
}

/// Runs a per-group estimator over `groups`: checked rewards in, advantages out; a group whose
/// rewards are refused keeps no advantages (not even an earlier stage's).
pub(super) fn each_group(
    groups: &mut [Group],
    stage_id: &str,
    estimator: &str,
    advantages: impl Fn(&[f64]) -> Vec<f64>,
) {
    for group in groups {
        group.advantages.clear();
        if let Some(rewards) = checked_rewards(group, stage_id) {
            write_advantages(group, estimator, &advantages(&rewards));
        }
    }
}

/// The mean of `values` (not empty), taken about the first value: equal values give exactly that
/// value back, so an all-equal group gets advantages of exactly 0 rather than rounding noise.
pub(super) fn mean(values: &[f64]) -> f64 {
    let first = values[0];
    first + values.iter().map(|v| v - first).sum::<f64>() / values.len() as f64
}

/// The unbiased (Bessel-corrected, n − 1) standard deviation of `values` (at least two), as
/// `torch.Tensor.std()` computes it by default.
pub(super) fn unbiased_std(values: &[f64]) -> f64 {
    let m = mean(values);
    let squares: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    (squares / (values.len() - 1) as f64).sqrt()
}

#[cfg(test)]
pub(super) mod tests {
    use tandem_schemas::{PromptRecord, RewardRecord, SampleRecord};

    use super::*;
    use crate::contract::{BuildContext, Built};
    use crate::registry::StageConfig;

    /// Builds the stage of config `C` from `params` and runs it on `groups` (step 2).
    pub fn run<C: StageConfig>(params: serde_json::Value, mut groups: Vec<Group>) -> Vec<Group> {
        let ctx = BuildContext::new("adv", crate::RunSettings::default());
        let Ok(Built::Group(mut stage)) = crate::registry::build_with::<C>(&params, &ctx) else {
            panic!("an advantage kind builds a group stage");
        };
        stage
            .process(&mut groups, &StepContext::single_worker("r", "adv", 2))
            .expect("process");
        groups
    }

    /// A group `p` whose sample `i` has reward `rewards[i]` (`None`: no reward row) and
    /// policy version `10 + i`.
    pub fn group(prompt_id: &str, rewards: &[Option<f64>]) -> Group {
        let mut group = Group::new(PromptRecord {
            run_id: "r".into(),
            step: 2,
            prompt_id: prompt_id.into(),
            ..Default::default()
        });
        for (i, reward) in rewards.iter().enumerate() {
            let i = i as u32;
            group.samples.push(SampleRecord {
                prompt_id: prompt_id.into(),
                sample_idx: i,
                policy_version: 10 + u64::from(i),
                ..Default::default()
            });
            if let Some(reward) = reward {
                group.rewards.push(RewardRecord {
                    prompt_id: prompt_id.into(),
                    sample_idx: i,
                    reward: *reward,
                    ..Default::default()
                });
            }
        }
        group
    }

    /// A group with every reward present.
    pub fn rewarded(prompt_id: &str, rewards: &[f64]) -> Group {
        group(
            prompt_id,
            &rewards.iter().copied().map(Some).collect::<Vec<_>>(),
        )
    }

    /// The advantages of a group, in sample order.
    pub fn advantages(group: &Group) -> Vec<f64> {
        group.advantages.iter().map(|a| a.advantage).collect()
    }

    /// The (kind, sample_idx) of a group's error rows.
    pub fn error_kinds(group: &Group) -> Vec<&str> {
        group.errors.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn mean_of_equal_values_is_exact() {
        let values = [0.1, 0.1, 0.1];
        assert_eq!(mean(&values), 0.1);
        // The plain sum would not be: 0.1 + 0.1 + 0.1 = 0.30000000000000004.
        assert_ne!(values.iter().sum::<f64>() / 3.0, 0.1);
        assert_eq!(mean(&[1.0, 1.0, 0.25, 0.25, 0.0]), 0.5);
    }

    #[test]
    fn std_is_bessel_corrected() {
        // Σ(r − 0.5)² = 1, over n − 1 = 3: √(1/3), as torch's default std.
        let std = unbiased_std(&[1.0, 1.0, 0.0, 0.0]);
        assert!((std - (1.0f64 / 3.0).sqrt()).abs() < 1e-15, "{std}");
        assert_eq!(unbiased_std(&[0.25, 0.25]), 0.0);
    }

    #[test]
    fn refused_groups_get_an_error_row_and_no_advantages() {
        let mut single = rewarded("single", &[1.0]);
        assert_eq!(checked_rewards(&mut single, "adv"), None);
        assert_eq!(error_kinds(&single), ["group_too_small"]);

        let mut missing = group("missing", &[Some(1.0), None, Some(0.0), None]);
        assert_eq!(checked_rewards(&mut missing, "adv"), None);
        assert_eq!(error_kinds(&missing), ["missing_reward"]);
        let error = &missing.errors[0];
        assert_eq!((error.stage.as_str(), error.sample_idx), ("adv", None));
        assert!(
            error.reason.starts_with("sample(s) 1, 3 of 4 "),
            "{}",
            error.reason
        );

        let mut nan = rewarded("nan", &[1.0, f64::NAN]);
        assert_eq!(checked_rewards(&mut nan, "adv"), None);
        assert_eq!(error_kinds(&nan), ["bad_reward"]);

        let mut fine = rewarded("fine", &[1.0, 0.0]);
        assert_eq!(checked_rewards(&mut fine, "adv"), Some(vec![1.0, 0.0]));
        assert!(fine.errors.is_empty());
    }

    #[test]
    fn rows_copy_keys_and_policy_version_from_the_samples() {
        let mut groups = vec![rewarded("p", &[1.0, 0.0]), group("q", &[Some(1.0), None])];
        groups[1].advantages = vec![AdvantageRecord::default()];
        each_group(&mut groups, "adv", "test", |r| r.to_vec());
        let rows: Vec<_> = groups[0]
            .advantages
            .iter()
            .map(|a| {
                let key = (
                    a.run_id.as_str(),
                    a.step,
                    a.prompt_id.as_str(),
                    a.sample_idx,
                );
                (key, a.policy_version, a.advantage, a.estimator.as_str())
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (("r", 2, "p", 0), 10, 1.0, "test"),
                (("r", 2, "p", 1), 11, 0.0, "test")
            ]
        );
        assert!(
            groups[1].advantages.is_empty(),
            "a refused group keeps no earlier advantages"
        );
    }
}
