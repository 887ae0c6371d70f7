//! `advantage.dr_grpo`: Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"),
//! GRPO without its two biases:
//!
//! ```text
//! A_i = r_i − mean(group)
//! ```
//!
//! no division by the group's std (which up-weights groups that are nearly all right or all
//! wrong), and, in the learner, no division by each response's own length. The learner reads
//! `estimator: dr_grpo` and then sums each sequence's token losses and divides by a *constant*
//! (TRL's `loss_type: dr_grpo`: batch size × the longest allowed completion,
//! `max_new_tokens`), never by |o_i|. This is the paper's "collaboration-aware tuning"
//! baseline (hierarchical rewards, Dr. GRPO, no filtering: `filter.none`).
//!
//! The advantage equals `advantage.grpo` with `scale_rewards: none`; it is its own kind so that
//! the learner knows which aggregation goes with it.

use serde::Deserialize;

use super::rewards::{PerGroupAdvantage, mean};
use crate::Result;
use crate::contract::{BuildContext, Built};
use crate::registry::StageConfig;

/// Parameters of `advantage.dr_grpo` (none).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrGrpoConfig {}

impl StageConfig for DrGrpoConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Group(Box::new(PerGroupAdvantage {
            estimator: DrGrpoAdvantage::ESTIMATOR,
            advantages: DrGrpoAdvantage::advantages,
        })))
    }
}

/// The Dr. GRPO estimator (its stage is the shared per-group one).
pub struct DrGrpoAdvantage;

impl DrGrpoAdvantage {
    /// The name written into `estimator`; it also names the learner's token aggregation.
    pub const ESTIMATOR: &'static str = "dr_grpo";

    /// The advantages of one group's rewards (at least two).
    ///
    /// ```
    /// use tandem_stages::advantage::DrGrpoAdvantage;
    /// assert_eq!(DrGrpoAdvantage::advantages(&[1.0, 0.25, 0.25, 0.0]), vec![0.625, -0.125, -0.125, -0.375]);
    /// ```
    pub fn advantages(rewards: &[f64]) -> Vec<f64> {
        let m = mean(rewards);
        rewards.iter().map(|r| r - m).collect()
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::Group;

    use super::super::rewards::tests::{advantages, error_kinds, group, rewarded};
    use super::*;

    fn run(groups: Vec<Group>) -> Vec<Group> {
        super::super::rewards::tests::run::<DrGrpoConfig>(serde_json::Value::Null, groups)
    }

    #[test]
    fn hand_computed_g5_and_g2() {
        // r̄ = 0.5; and for [1, 0.25]: r̄ = 0.625.
        let groups = run(vec![
            rewarded("p", &[1.0, 1.0, 0.25, 0.25, 0.0]),
            rewarded("q", &[1.0, 0.25]),
        ]);
        assert_eq!(advantages(&groups[0]), vec![0.5, 0.5, -0.25, -0.25, -0.5]);
        assert_eq!(advantages(&groups[1]), vec![0.375, -0.375]);
        assert!(
            groups[0]
                .advantages
                .iter()
                .all(|a| a.estimator == "dr_grpo")
        );
    }

    #[test]
    fn equal_rewards_give_zero_and_errors_give_no_rows() {
        let groups = run(vec![
            rewarded("equal", &[0.1, 0.1, 0.1]),
            rewarded("single", &[1.0]),
            group("missing", &[None, None]),
        ]);
        assert_eq!(advantages(&groups[0]), vec![0.0; 3]);
        assert_eq!(error_kinds(&groups[1]), ["group_too_small"]);
        assert_eq!(error_kinds(&groups[2]), ["missing_reward"]);
        assert!(groups[1].advantages.is_empty() && groups[2].advantages.is_empty());
    }
}
