//! Advantage stages: how much better than its group each sample did, the weight of its
//! log-probability in the learner. Each kind writes one [`tandem_schemas::AdvantageRecord`] per
//! sample, with `estimator` set to the kind's name (the learner picks its token aggregation
//! from it) and the sample's `policy_version`. G is the number of samples in the group.
//!
//! | kind | `A_i` | learner aggregation (intended) |
//! |---|---|---|
//! | `advantage.gapg` | `(r_i − r̄) / (G − 1)` | sequence log-prob (token sum), summed over the group, mean over kept prompts |
//! | `advantage.grpo` | `(r_i − r̄) / (std + eps)`, std of the group, the step, or none | token mean per sequence, mean over samples |
//! | `advantage.rloo` | `r_i − mean of the other G − 1` | sequence log-prob (token sum), mean over samples |
//! | `advantage.dr_grpo` | `r_i − r̄` | token sum divided by a constant |
//!
//! A group with fewer than two samples, a sample without a reward row, or a reward that is not
//! finite gets an error row (`group_too_small`, `missing_reward`, `bad_reward`) and no
//! advantages, never a silent 0.

mod dr_grpo;
mod gapg;
mod grpo;
mod rewards;
mod rloo;

pub use dr_grpo::{DrGrpoAdvantage, DrGrpoConfig};
pub use gapg::{GapgAdvantage, GapgConfig};
pub use grpo::{GrpoAdvantage, GrpoConfig, ScaleRewards};
pub use rloo::{RlooAdvantage, RlooConfig};
