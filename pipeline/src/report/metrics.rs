//! What the report counts, and the ratios it derives (the paper's metric definitions).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// The slice of a run a tally covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Breakdown {
    /// Every sample.
    All,
    /// Samples of prompts with this difficulty label (`(none)` for prompts without one).
    Difficulty(String),
    /// Samples of prompts from this source (the row number cut).
    Source(String),
}

impl std::fmt::Display for Breakdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Breakdown::All => f.write_str("all"),
            Breakdown::Difficulty(d) => write!(f, "difficulty={d}"),
            Breakdown::Source(s) => write!(f, "source={s}"),
        }
    }
}

/// Counts and sums over some samples: everything else the report shows is a ratio of these,
/// so tallies of disjoint steps add up exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Samples.
    pub samples: u64,
    /// Samples that asked the cloud for help.
    pub asked: u64,
    /// Samples whose own (local) answer was judged correct.
    pub local_correct: u64,
    /// Samples that did not ask and whose local answer was correct.
    pub kept_correct: u64,
    /// Samples that asked and whose group's cloud answer was correct.
    pub cloud_correct: u64,
    /// Reward rows.
    pub rewards: u64,
    /// Sum of rewards.
    pub reward_sum: f64,
    /// Rows of the cloud ledger (answers, cache hits and refused calls).
    pub cloud_calls: u64,
    /// Tokens billed (prompt + completion).
    pub cloud_tokens: u64,
    /// Cost in US dollars.
    pub cloud_cost_usd: f64,
}

impl Tally {
    /// The sum of two tallies.
    pub fn add(&self, other: &Tally) -> Tally {
        Tally {
            samples: self.samples + other.samples,
            asked: self.asked + other.asked,
            local_correct: self.local_correct + other.local_correct,
            kept_correct: self.kept_correct + other.kept_correct,
            cloud_correct: self.cloud_correct + other.cloud_correct,
            rewards: self.rewards + other.rewards,
            reward_sum: self.reward_sum + other.reward_sum,
            cloud_calls: self.cloud_calls + other.cloud_calls,
            cloud_tokens: self.cloud_tokens + other.cloud_tokens,
            cloud_cost_usd: self.cloud_cost_usd + other.cloud_cost_usd,
        }
    }

    /// `times` copies of this tally (a differential update's multiplicity).
    pub fn times(&self, times: u64) -> Tally {
        let n = times as f64;
        Tally {
            samples: self.samples * times,
            asked: self.asked * times,
            local_correct: self.local_correct * times,
            kept_correct: self.kept_correct * times,
            cloud_correct: self.cloud_correct * times,
            rewards: self.rewards * times,
            reward_sum: self.reward_sum * n,
            cloud_calls: self.cloud_calls * times,
            cloud_tokens: self.cloud_tokens * times,
            cloud_cost_usd: self.cloud_cost_usd * n,
        }
    }

    /// Share of samples that asked for help.
    pub fn help_rate(&self) -> f64 {
        ratio(self.asked, self.samples)
    }

    /// Correct local answers / all samples.
    pub fn local_accuracy(&self) -> f64 {
        ratio(self.local_correct, self.samples)
    }

    /// Correct local answers / samples that did not ask.
    pub fn conditional_accuracy(&self) -> f64 {
        ratio(self.kept_correct, self.samples - self.asked)
    }

    /// Samples correct as a system (kept and correct, or asked and the cloud correct) / samples.
    pub fn overall_accuracy(&self) -> f64 {
        ratio(self.kept_correct + self.cloud_correct, self.samples)
    }

    /// Mean reward; NaN without rewards.
    pub fn mean_reward(&self) -> f64 {
        if self.rewards == 0 {
            f64::NAN
        } else {
            self.reward_sum / self.rewards as f64
        }
    }

    fn key(&self) -> [u64; 10] {
        [
            self.samples,
            self.asked,
            self.local_correct,
            self.kept_correct,
            self.cloud_correct,
            self.rewards,
            self.reward_sum.to_bits(),
            self.cloud_calls,
            self.cloud_tokens,
            self.cloud_cost_usd.to_bits(),
        ]
    }
}

// Differential needs totally ordered data; tallies compare by their bits (floats included), which
// is all a collection needs: equal tallies are equal, and the order is deterministic.
impl Eq for Tally {}

impl PartialOrd for Tally {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tally {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// `num / den`, NaN when there is nothing to divide (shown as `–`).
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn accuracies_follow_the_paper() {
        // 10 samples: 3 asked (2 of them with a correct cloud answer), 5 local answers correct
        // of which 4 were kept on-device.
        let t = Tally {
            samples: 10,
            asked: 3,
            local_correct: 5,
            kept_correct: 4,
            cloud_correct: 2,
            ..Tally::default()
        };
        assert_eq!(t.help_rate(), 0.3);
        assert_eq!(t.local_accuracy(), 0.5);
        assert_eq!(t.conditional_accuracy(), 4.0 / 7.0);
        assert_eq!(t.overall_accuracy(), 0.6);
        assert!(t.mean_reward().is_nan());
        assert_eq!(t.add(&t), t.times(2));
    }
}
