//! `advantage.rloo`: REINFORCE Leave-One-Out (Ahmadian et al. 2024, "Back to Basics"; TRL's
//! `RLOOTrainer`). Each sample's baseline is the mean reward of the *other* G − 1 samples:
//!
//! ```text
//! A_i = r_i − 1/(G − 1) · Σ_{j≠i} r_j  =  G/(G − 1) · (r_i − r̄)
//! ```
//!
//! with no further scaling (TRL's optional `normalize_advantages`, off by default there, is not
//! offered). It is computed in the second form, about the group mean, so an all-equal group gets
//! exactly 0.
//!
//! Intended aggregation in the learner (`estimator: rloo`): the whole completion is one action,
//! its log-probability the sum over its tokens, averaged over the G samples and the prompts.
//! That is the same gradient as GAPG's: `1/G Σ_i A_i ∇ log π = 1/(G − 1) Σ_i (r_i − r̄) ∇ log π`.

use serde::Deserialize;

use super::rewards::{PerGroupAdvantage, mean};
use crate::Result;
use crate::contract::{BuildContext, Built};
use crate::registry::StageConfig;

/// Parameters of `advantage.rloo` (none).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlooConfig {}

impl StageConfig for RlooConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Group(Box::new(PerGroupAdvantage {
            estimator: RlooAdvantage::ESTIMATOR,
            advantages: RlooAdvantage::advantages,
        })))
    }
}

/// The leave-one-out estimator (its stage is the shared per-group one).
pub struct RlooAdvantage;

impl RlooAdvantage {
    /// The name written into `estimator`.
    pub const ESTIMATOR: &'static str = "rloo";

    /// The advantages of one group's rewards (at least two).
    ///
    /// ```
    /// use tandem_stages::advantage::RlooAdvantage;
    /// // sample 0: 1 − (0 + 0.5)/2 = 0.75; sample 1: 0 − (1 + 0.5)/2 = −0.75; sample 2: 0.5 − 0.5
    /// assert_eq!(RlooAdvantage::advantages(&[1.0, 0.0, 0.5]), vec![0.75, -0.75, 0.0]);
    /// ```
    pub fn advantages(rewards: &[f64]) -> Vec<f64> {
        let m = mean(rewards);
        let g = rewards.len() as f64;
        rewards.iter().map(|r| g / (g - 1.0) * (r - m)).collect()
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::Group;

    use super::super::rewards::tests::{advantages, error_kinds, group, rewarded};
    use super::*;

    fn run(groups: Vec<Group>) -> Vec<Group> {
        super::super::rewards::tests::run::<RlooConfig>(serde_json::Value::Null, groups)
    }

    #[test]
    fn hand_computed_g5_matches_the_mean_of_the_others() {
        // Sample 0: 1 − (1 + 0.25 + 0.25 + 0)/4 = 0.625; sample 2: 0.25 − (1 + 1 + 0.25 + 0)/4
        // = −0.3125; sample 4: 0 − 2.5/4 = −0.625.
        let rewards = [1.0, 1.0, 0.25, 0.25, 0.0];
        let groups = run(vec![rewarded("p", &rewards)]);
        assert_eq!(
            advantages(&groups[0]),
            vec![0.625, 0.625, -0.3125, -0.3125, -0.625]
        );
        let others: Vec<f64> = (0..5)
            .map(|i| {
                let rest: f64 = (0..5).filter(|&j| j != i).map(|j| rewards[j]).sum();
                rewards[i] - rest / 4.0
            })
            .collect();
        assert_eq!(advantages(&groups[0]), others);
        assert!(groups[0].advantages.iter().all(|a| a.estimator == "rloo"));
    }

    #[test]
    fn is_g_times_gapg() {
        // GAPG for the same group: (r − 0.5)/4 = [0.125, 0.125, −0.0625, −0.0625, −0.125].
        let groups = run(vec![rewarded("p", &[1.0, 1.0, 0.25, 0.25, 0.0])]);
        let gapg = [0.125, 0.125, -0.0625, -0.0625, -0.125];
        let scaled: Vec<f64> = gapg.iter().map(|a| 5.0 * a).collect();
        assert_eq!(advantages(&groups[0]), scaled);
    }

    #[test]
    fn equal_rewards_give_zero_and_errors_give_no_rows() {
        let groups = run(vec![
            rewarded("equal", &[0.1, 0.1, 0.1, 0.1]),
            rewarded("single", &[1.0]),
            group("missing", &[Some(1.0), None]),
        ]);
        assert_eq!(advantages(&groups[0]), vec![0.0; 4]);
        assert_eq!(error_kinds(&groups[1]), ["group_too_small"]);
        assert_eq!(error_kinds(&groups[2]), ["missing_reward"]);
        assert!(groups[1].advantages.is_empty() && groups[2].advantages.is_empty());
    }
}
