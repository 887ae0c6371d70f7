//! `advantage.gapg`: the paper's group-adaptive policy gradient (PAPER.md, "GAPG"). For a group
//! of G samples with rewards r_1 … r_G and mean r̄:
//!
//! ```text
//! A_i = (r_i − r̄) / (G − 1)
//! ```
//!
//! so that `Σ_i A_i · ∇ log πθ(y_i | x)` is the paper's `∇R(θ, x)`. No division by the group's
//! standard deviation: that would make `[αa, 0, …]` and `[αc, 0, …]` groups look the same and
//! erase the reward hierarchy.
//!
//! The 1/(G − 1) is already in the advantage, so the learner *sums* `A_i` times the whole
//! device sequence's log-probability (sum over its tokens, no 1/|y|) over the group's samples,
//! and averages over the prompts the filter kept (`estimator: gapg`). This equals RLOO's
//! estimator (`r_i − mean of the others`, averaged over the G samples): RLOO's advantage is
//! G × this one.

use serde::Deserialize;

use super::rewards::{PerGroupAdvantage, mean};
use crate::Result;
use crate::contract::{BuildContext, Built};
use crate::registry::StageConfig;

/// Parameters of `advantage.gapg` (none).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapgConfig {}

impl StageConfig for GapgConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Group(Box::new(PerGroupAdvantage {
            estimator: GapgAdvantage::ESTIMATOR,
            advantages: GapgAdvantage::advantages,
        })))
    }
}

/// The GAPG estimator (its stage is the shared per-group one).
pub struct GapgAdvantage;

impl GapgAdvantage {
    /// The name written into `estimator`.
    pub const ESTIMATOR: &'static str = "gapg";

    /// The advantages of one group's rewards (at least two).
    ///
    /// ```
    /// use tandem_stages::advantage::GapgAdvantage;
    /// // r̄ = 0.5, G − 1 = 3
    /// let a = GapgAdvantage::advantages(&[1.0, 1.0, 0.0, 0.0]);
    /// assert_eq!(a, vec![1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0]);
    /// ```
    pub fn advantages(rewards: &[f64]) -> Vec<f64> {
        let m = mean(rewards);
        let g = rewards.len() as f64;
        rewards.iter().map(|r| (r - m) / (g - 1.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::Group;

    use super::super::rewards::tests::{advantages, error_kinds, group, rewarded};
    use super::*;

    fn run(groups: Vec<Group>) -> Vec<Group> {
        super::super::rewards::tests::run::<GapgConfig>(serde_json::Value::Null, groups)
    }

    #[test]
    fn hand_computed_g5_hierarchical_rewards() {
        // αa = 1 twice, αc = 0.25 twice, one 0: r̄ = 2.5 / 5 = 0.5, G − 1 = 4.
        let groups = run(vec![rewarded("p", &[1.0, 1.0, 0.25, 0.25, 0.0])]);
        assert_eq!(
            advantages(&groups[0]),
            vec![0.125, 0.125, -0.0625, -0.0625, -0.125]
        );
        assert!(groups[0].advantages.iter().all(|a| a.estimator == "gapg"));
        assert_eq!(
            groups[0]
                .advantages
                .iter()
                .map(|a| a.policy_version)
                .collect::<Vec<_>>(),
            vec![10, 11, 12, 13, 14]
        );
    }

    #[test]
    fn keeps_the_reward_hierarchy_that_std_scaling_erases() {
        // [αa, 0, 0, 0] against [αc, 0, 0, 0]: r̄ = 0.25 and 0.0625, G − 1 = 3.
        let groups = run(vec![
            rewarded("local", &[1.0, 0.0, 0.0, 0.0]),
            rewarded("cloud", &[0.25, 0.0, 0.0, 0.0]),
        ]);
        assert_eq!(
            advantages(&groups[0]),
            vec![0.25, -1.0 / 12.0, -1.0 / 12.0, -1.0 / 12.0]
        );
        assert_eq!(
            advantages(&groups[1]),
            vec![0.0625, -1.0 / 48.0, -1.0 / 48.0, -1.0 / 48.0]
        );
    }

    #[test]
    fn equal_rewards_give_zero_and_g2_is_half_the_difference() {
        let groups = run(vec![
            rewarded("equal", &[0.1, 0.1, 0.1]),
            rewarded("pair", &[1.0, 0.25]),
        ]);
        assert_eq!(advantages(&groups[0]), vec![0.0, 0.0, 0.0]);
        assert_eq!(advantages(&groups[1]), vec![0.375, -0.375]);
    }

    #[test]
    fn single_samples_and_missing_rewards_are_error_rows() {
        let groups = run(vec![
            rewarded("single", &[1.0]),
            group("missing", &[Some(1.0), None, Some(0.0)]),
            rewarded("fine", &[1.0, 0.0]),
        ]);
        assert_eq!(error_kinds(&groups[0]), ["group_too_small"]);
        assert_eq!(error_kinds(&groups[1]), ["missing_reward"]);
        assert!(groups[0].advantages.is_empty() && groups[1].advantages.is_empty());
        assert_eq!(advantages(&groups[2]), vec![0.5, -0.5]);
    }

    #[test]
    fn takes_no_params() {
        let err = crate::registry::build_with::<GapgConfig>(
            &serde_json::json!({"scale_rewards": "none"}),
            &BuildContext::new("adv", crate::RunSettings::default()),
        )
        .err()
        .expect("unknown field");
        assert!(
            err.to_string().contains("unknown field `scale_rewards`"),
            "{err}"
        );
    }
}
