//! What the filter kinds share: the decision written per group, the `errors` bucket for groups
//! an earlier stage failed on, and the rewards' range with its own check.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tandem_schemas::{FilterRecord, Group};

/// A filter's decision about one group.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Decision {
    /// Whether the learner uses the group.
    pub kept: bool,
    /// The set the group fell in.
    pub bucket: &'static str,
    /// Why, in words.
    pub reason: String,
}

impl Decision {
    /// The learner uses the group.
    pub fn keep(bucket: &'static str, reason: impl Into<String>) -> Decision {
        Decision {
            kept: true,
            bucket,
            reason: reason.into(),
        }
    }

    /// The learner skips the group.
    pub fn drop(bucket: &'static str, reason: impl Into<String>) -> Decision {
        Decision {
            kept: false,
            bucket,
            reason: reason.into(),
        }
    }

    /// Writes the decision as the group's filter row (replacing an earlier filter's).
    pub fn write(self, group: &mut Group) {
        group.filter = Some(FilterRecord {
            run_id: group.prompt.run_id.clone(),
            step: group.prompt.step,
            prompt_id: group.prompt.prompt_id.clone(),
            kept: self.kept,
            bucket: self.bucket.to_owned(),
            reason: self.reason,
        });
    }
}

/// The bucket of groups that some stage failed on.
pub(super) const ERRORS: &str = "errors";

/// Drops a group that holds error rows: whatever failed (a missing verdict, reward or
/// advantage, a cloud call that gave up) leaves the group's numbers incomplete, so it teaches
/// nothing reliable. The reason names each failing stage and kind, with a count.
pub(super) fn earlier_errors(group: &Group) -> Option<Decision> {
    if group.errors.is_empty() {
        return None;
    }
    let mut seen: Vec<(String, usize)> = Vec::new();
    for error in &group.errors {
        let key = format!("{}/{}", error.stage, error.kind);
        match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => *count += 1,
            None => seen.push((key, 1)),
        }
    }
    let list: Vec<String> = seen
        .into_iter()
        .map(|(key, count)| {
            if count == 1 {
                key
            } else {
                format!("{key} ×{count}")
            }
        })
        .collect();
    Some(Decision::drop(
        ERRORS,
        format!("earlier stages failed on it: {}", list.join(", ")),
    ))
}

/// The smallest and largest reward over the group's samples. A group with no samples, or with a
/// sample that has no reward row, gets an error row (`no_samples`, `missing_reward`) and an
/// `errors` decision: deciding on part of a group would be deciding on the wrong numbers.
pub(super) fn reward_range(group: &mut Group, stage_id: &str) -> Result<(f64, f64), Decision> {
    if group.samples.is_empty() {
        let reason = "the group has no samples to decide on";
        group.push_error(stage_id, None, "no_samples", reason);
        return Err(Decision::drop(ERRORS, reason));
    }
    let mut range = (f64::INFINITY, f64::NEG_INFINITY);
    let mut missing = Vec::new();
    for sample in &group.samples {
        match group
            .rewards
            .iter()
            .find(|r| r.sample_idx == sample.sample_idx)
        {
            Some(row) => range = (range.0.min(row.reward), range.1.max(row.reward)),
            None => missing.push(sample.sample_idx.to_string()),
        }
    }
    if !missing.is_empty() {
        let reason = format!(
            "sample(s) {} of {} have no reward row",
            missing.join(", "),
            group.samples.len()
        );
        group.push_error(stage_id, None, "missing_reward", reason.clone());
        return Err(Decision::drop(ERRORS, reason));
    }
    Ok(range)
}

/// A seeded choice of `k` of the groups at `indices`: the same for the same filter kind, seed
/// and step whatever the worker count (the indices are put in prompt-id order first), and
/// unrelated between nearby seeds and steps (FNV-1a of kind, seed and step seeds ChaCha8).
pub(super) fn seeded_choice(
    kind: &str,
    seed: u64,
    step: u64,
    groups: &[Group],
    mut indices: Vec<usize>,
    k: usize,
) -> BTreeSet<usize> {
    indices.sort_by(|&a, &b| groups[a].prompt_id().cmp(groups[b].prompt_id()));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind
        .as_bytes()
        .iter()
        .chain(&seed.to_le_bytes())
        .chain(&step.to_le_bytes())
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(h);
    let n = indices.len();
    rand::seq::index::sample(&mut rng, n, k.min(n))
        .into_iter()
        .map(|position| indices[position])
        .collect()
}

#[cfg(test)]
mod tests {
    use tandem_schemas::{PromptRecord, RewardRecord, SampleRecord};

    use super::*;

    fn group(rewards: &[Option<f64>]) -> Group {
        let mut group = Group::new(PromptRecord {
            prompt_id: "p".into(),
            ..Default::default()
        });
        for (i, reward) in rewards.iter().enumerate() {
            group.samples.push(SampleRecord {
                sample_idx: i as u32,
                ..Default::default()
            });
            if let Some(reward) = reward {
                group.rewards.push(RewardRecord {
                    sample_idx: i as u32,
                    reward: *reward,
                    ..Default::default()
                });
            }
        }
        group
    }

    #[test]
    fn errors_are_listed_by_stage_and_kind() {
        let mut g = group(&[Some(1.0)]);
        assert_eq!(earlier_errors(&g), None);
        g.push_error("verdicts", None, "no_reference", "x");
        g.push_error("reward", Some(0), "missing_verdict", "x");
        g.push_error("reward", Some(1), "missing_verdict", "x");
        let decision = earlier_errors(&g).expect("errors");
        assert_eq!(
            decision,
            Decision::drop(
                "errors",
                "earlier stages failed on it: verdicts/no_reference, reward/missing_verdict ×2"
            )
        );
    }

    #[test]
    fn reward_range_needs_every_reward() {
        let mut g = group(&[Some(0.25), Some(1.0), Some(0.0)]);
        assert_eq!(reward_range(&mut g, "f"), Ok((0.0, 1.0)));
        let mut g = group(&[Some(0.25), None, None]);
        let decision = reward_range(&mut g, "f").expect_err("missing");
        assert_eq!(decision.bucket, "errors");
        assert_eq!(decision.reason, "sample(s) 1, 2 of 3 have no reward row");
        assert_eq!(g.errors[0].kind, "missing_reward");
        let mut g = group(&[]);
        assert!(reward_range(&mut g, "f").is_err());
        assert_eq!(g.errors[0].kind, "no_samples");
    }
}
