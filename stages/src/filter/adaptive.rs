//! `filter.adaptive`: the paper's adaptive prompt filtering (PAPER.md, "Adaptive prompt
//! filtering"), which keeps training from collapsing to always-local or always-cloud. Over the
//! whole step:
//!
//! - **D1** (kept): at least one sample answered correctly on the device — it did not ask for
//!   help and its local verdict is correct — and the G rewards are not all equal (within
//!   `tolerance`; an all-equal group has zero gradient, PAPER.md's own reading of Algorithm 1's
//!   "both positive and negative responses").
//! - **D2** (kept): up to `⌊ρ · |D1|⌋` of the *candidates*: prompts where no sample answered
//!   correctly on the device, some sample asked for help, and the cloud's answer is correct.
//!   When there are more candidates than that, which ones are kept is a uniform draw seeded by
//!   the run's seed and the step, so it is the same for any worker count and differs by step.
//! - everything else is `dropped`, and a group that an earlier stage failed on goes to `errors`.
//!
//! *Answered correctly on the device* reads as `reward.collab` does: the sample's `asked_help`
//! is false and its last `target: local` verdict says `correct`. *The cloud's answer* is the
//! group's last `target: cloud` verdict; no such verdict is no answer.

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group, Target};

use super::decision::{Decision, earlier_errors, reward_range, seeded_choice};
use super::rho::Rho;
use crate::contract::{BuildContext, Built, GroupStage, Scope, StepContext};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `filter.adaptive`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// ρ, D2 prompts allowed per D1 prompt: a fraction (`"3/7"`, the default and the paper's
    /// value, a 30% cloud budget) or a decimal, ≥ 0. The cap is `⌊ρ · |D1|⌋`.
    #[serde(default = "paper_rho")]
    pub rho: Rho,
    /// Rewards that differ by at most this count as equal (default 1e-6).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn paper_rho() -> Rho {
    Rho::PAPER
}

fn default_tolerance() -> f64 {
    1e-6
}

impl StageConfig for AdaptiveConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(StageError::Params {
                path: "tolerance".into(),
                message: format!("must be a finite number >= 0, got {}", self.tolerance),
            });
        }
        Ok(Built::Group(Box::new(AdaptiveFilter {
            config: self,
            seed: ctx.run.seed,
        })))
    }
}

/// Keeps D1 and a seeded, ρ-capped draw of D2; drops the rest.
pub struct AdaptiveFilter {
    config: AdaptiveConfig,
    seed: u64,
}

/// Where a group stands before the D2 draw.
enum Standing {
    /// Decided on its own (D1, dropped, errors).
    Settled(Decision),
    /// A D2 candidate, waiting for the draw.
    Candidate,
}

const CANDIDATE: &str = "no correct local answer, and the cloud's answer is correct";

impl AdaptiveFilter {
    /// Everything about a group that does not depend on the rest of the step.
    fn standing(&self, group: &mut Group, stage_id: &str) -> Standing {
        if let Some(errors) = earlier_errors(group) {
            return Standing::Settled(errors);
        }
        let (low, high) = match reward_range(group, stage_id) {
            Ok(range) => range,
            Err(errors) => return Standing::Settled(errors),
        };
        let g = group.samples.len();
        let solved = group
            .samples
            .iter()
            .filter(|s| {
                !s.asked_help
                    && group
                        .verdicts
                        .iter()
                        .rev()
                        .find(|v| v.target == Target::Local && v.sample_idx == Some(s.sample_idx))
                        .is_some_and(|v| v.correct)
            })
            .count();
        if solved > 0 {
            let said = format!("{solved} of {g} samples answered correctly on the device");
            return Standing::Settled(if high - low <= self.config.tolerance {
                Decision::drop(
                    "dropped",
                    format!("{said}, but all {g} rewards are equal ({low}): no gradient"),
                )
            } else {
                Decision::keep("D1", said)
            });
        }
        if !group.samples.iter().any(|s| s.asked_help) {
            return Standing::Settled(Decision::drop(
                "dropped",
                "no correct local answer and no sample asked for help",
            ));
        }
        let cloud = group
            .verdicts
            .iter()
            .rev()
            .find(|v| v.target == Target::Cloud && v.sample_idx.is_none());
        match cloud {
            Some(v) if v.correct => Standing::Candidate,
            Some(_) => Standing::Settled(Decision::drop(
                "dropped",
                "no correct local answer and the cloud's answer is wrong",
            )),
            None => Standing::Settled(Decision::drop(
                "dropped",
                "no correct local answer and no judged cloud answer (no cloud stage ran, or \
                 its call failed)",
            )),
        }
    }
}

impl GroupStage for AdaptiveFilter {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples, Facet::Verdicts, Facet::Rewards])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Filter])
    }

    fn scope(&self) -> Scope {
        Scope::Step
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let standings: Vec<Standing> = groups
            .iter_mut()
            .map(|group| self.standing(group, &ctx.stage_id))
            .collect();
        let d1 = standings
            .iter()
            .filter(|s| matches!(s, Standing::Settled(d) if d.bucket == "D1"))
            .count();
        let cap = self.config.rho.cap(d1);
        let candidates: Vec<usize> = (0..groups.len())
            .filter(|&i| matches!(standings[i], Standing::Candidate))
            .collect();
        let n = candidates.len();
        let k = cap.min(n);
        let chosen = seeded_choice(
            "filter.adaptive",
            self.seed,
            ctx.step,
            groups,
            candidates,
            k,
        );
        let rho = self.config.rho;
        let under_cap = format!("⌊ρ · |D1|⌋ = ⌊{rho} × {d1}⌋ = {cap}");
        for (i, (group, standing)) in groups.iter_mut().zip(standings).enumerate() {
            let decision = match standing {
                Standing::Settled(decision) => decision,
                Standing::Candidate if chosen.contains(&i) => Decision::keep(
                    "D2",
                    format!("{CANDIDATE}: chosen for D2, {k} of {n} candidates ({under_cap})"),
                ),
                Standing::Candidate => Decision::drop(
                    "dropped",
                    format!(
                        "{CANDIDATE}, but D2 is over the ρ cap: {k} of {n} chosen ({under_cap})"
                    ),
                ),
            };
            decision.write(group);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use tandem_schemas::{PromptRecord, RewardRecord, SampleRecord, VerdictRecord};

    use super::*;

    /// One sample: whether it asked for help, and whether its local verdict is correct.
    #[derive(Clone, Copy, Debug)]
    struct Sample {
        asked: bool,
        correct: bool,
    }

    const SOLVED: Sample = Sample {
        asked: false,
        correct: true,
    };
    const WRONG: Sample = Sample {
        asked: false,
        correct: false,
    };
    const HELP: Sample = Sample {
        asked: true,
        correct: false,
    };

    /// A group as `verify.*` and `reward.collab` (αa = 1, αc = 0.25) leave it; `cloud` is the
    /// cloud verdict, if any.
    fn group(prompt_id: &str, samples: &[Sample], cloud: Option<bool>) -> Group {
        let mut group = Group::new(PromptRecord {
            prompt_id: prompt_id.into(),
            step: 5,
            ..Default::default()
        });
        for (i, s) in samples.iter().enumerate() {
            let i = i as u32;
            group.samples.push(SampleRecord {
                sample_idx: i,
                asked_help: s.asked,
                ..Default::default()
            });
            group.verdicts.push(VerdictRecord {
                sample_idx: Some(i),
                target: Target::Local,
                correct: s.correct,
                ..Default::default()
            });
            let reward = match (s.asked, s.correct, cloud) {
                (false, true, _) => 1.0,
                (true, _, Some(true)) => 0.25,
                _ => 0.0,
            };
            group.rewards.push(RewardRecord {
                sample_idx: i,
                reward,
                ..Default::default()
            });
        }
        if let Some(correct) = cloud {
            group.verdicts.push(VerdictRecord {
                sample_idx: None,
                target: Target::Cloud,
                correct,
                ..Default::default()
            });
        }
        group
    }

    fn filter(params: serde_json::Value, seed: u64) -> Result<Box<dyn GroupStage>> {
        let run = crate::RunSettings {
            seed,
            ..Default::default()
        };
        match crate::registry::build_with::<AdaptiveConfig>(
            &params,
            &BuildContext::new("filter", run),
        )? {
            Built::Group(stage) => Ok(stage),
            _ => panic!("filter.adaptive builds a group stage"),
        }
    }

    fn run(params: serde_json::Value, seed: u64, step: u64, mut groups: Vec<Group>) -> Vec<Group> {
        filter(params, seed)
            .expect("build")
            .process(
                &mut groups,
                &StepContext::single_worker("r", "filter", step),
            )
            .expect("process");
        groups
    }

    /// prompt id → (bucket, kept).
    fn buckets(groups: &[Group]) -> BTreeMap<String, (String, bool)> {
        groups
            .iter()
            .map(|g| {
                let f = g.filter.as_ref().expect("every group gets a decision");
                (g.prompt.prompt_id.clone(), (f.bucket.clone(), f.kept))
            })
            .collect()
    }

    fn in_bucket(groups: &[Group], bucket: &str) -> Vec<String> {
        buckets(groups)
            .into_iter()
            .filter(|(_, (b, _))| b == bucket)
            .map(|(id, _)| id)
            .collect()
    }

    fn reason<'g>(groups: &'g [Group], prompt_id: &str) -> &'g str {
        let group = groups
            .iter()
            .find(|g| g.prompt.prompt_id == prompt_id)
            .expect("prompt");
        &group.filter.as_ref().expect("decision").reason
    }

    /// `d1` D1 groups, `candidates` D2 candidates, in shuffled id order.
    fn step_of(d1: usize, candidates: usize) -> Vec<Group> {
        let mut groups: Vec<Group> = (0..d1)
            .map(|i| {
                group(
                    &format!("d1-{i:02}"),
                    &[SOLVED, WRONG, HELP, WRONG],
                    Some(true),
                )
            })
            .chain((0..candidates).map(|i| {
                group(
                    &format!("d2-{i:02}"),
                    &[HELP, WRONG, HELP, WRONG],
                    Some(true),
                )
            }))
            .collect();
        groups.reverse();
        groups
    }

    #[test]
    fn every_case_lands_in_its_bucket_with_its_reason() {
        let groups = run(
            serde_json::Value::Null,
            0,
            5,
            vec![
                group("a-d1", &[SOLVED, WRONG, HELP, WRONG], None),
                group("b-all-solved", &[SOLVED, SOLVED, SOLVED], None),
                group("c-cloud-wrong", &[HELP, WRONG, HELP], Some(false)),
                group("d-no-cloud", &[HELP, WRONG], None),
                group("e-no-help", &[WRONG, WRONG], Some(true)),
                // A correct local answer on a sample that asked for help does not count.
                group(
                    "f-candidate",
                    &[
                        Sample {
                            asked: true,
                            correct: true,
                        },
                        WRONG,
                    ],
                    Some(true),
                ),
                group("g-d1", &[WRONG, SOLVED], Some(false)),
                group("h-d1", &[SOLVED, HELP], Some(true)),
            ],
        );
        let got = buckets(&groups);
        let want: BTreeMap<String, (String, bool)> = [
            ("a-d1", "D1", true),
            ("b-all-solved", "dropped", false),
            ("c-cloud-wrong", "dropped", false),
            ("d-no-cloud", "dropped", false),
            ("e-no-help", "dropped", false),
            ("f-candidate", "D2", true),
            ("g-d1", "D1", true),
            ("h-d1", "D1", true),
        ]
        .into_iter()
        .map(|(id, b, k)| (id.to_owned(), (b.to_owned(), k)))
        .collect();
        assert_eq!(got, want);
        assert_eq!(
            reason(&groups, "a-d1"),
            "1 of 4 samples answered correctly on the device"
        );
        assert_eq!(
            reason(&groups, "b-all-solved"),
            "3 of 3 samples answered correctly on the device, but all 3 rewards are equal (1): \
             no gradient"
        );
        assert_eq!(
            reason(&groups, "c-cloud-wrong"),
            "no correct local answer and the cloud's answer is wrong"
        );
        assert!(
            reason(&groups, "d-no-cloud")
                .starts_with("no correct local answer and no judged cloud answer")
        );
        assert_eq!(
            reason(&groups, "e-no-help"),
            "no correct local answer and no sample asked for help"
        );
        // |D1| = 3, ρ = 3/7: ⌊9/7⌋ = 1 slot for 1 candidate.
        assert_eq!(
            reason(&groups, "f-candidate"),
            "no correct local answer, and the cloud's answer is correct: chosen for D2, 1 of 1 \
             candidates (⌊ρ · |D1|⌋ = ⌊3/7 × 3⌋ = 1)"
        );
        let rows: Vec<_> = groups.iter().filter_map(|g| g.filter.as_ref()).collect();
        assert!(rows.iter().all(|f| f.step == 5 && f.run_id.is_empty()));
    }

    #[test]
    fn d2_is_capped_at_rho_times_d1_7_d1_5_candidates() {
        // |D1| = 7, ρ = 3/7: 3 of the 5 candidates.
        let groups = run(serde_json::Value::Null, 11, 4, step_of(7, 5));
        assert_eq!(in_bucket(&groups, "D1").len(), 7);
        let d2 = in_bucket(&groups, "D2");
        assert_eq!(d2.len(), 3);
        let over: Vec<_> = in_bucket(&groups, "dropped");
        assert_eq!(over.len(), 2);
        assert!(d2.iter().chain(&over).all(|id| id.starts_with("d2-")));
        assert!(
            reason(&groups, &over[0]).ends_with(
                ", but D2 is over the ρ cap: 3 of 5 chosen (⌊ρ · |D1|⌋ = ⌊3/7 × 7⌋ = 3)"
            ),
            "{}",
            reason(&groups, &over[0])
        );
        assert!(groups.iter().all(|g| g.errors.is_empty()));
    }

    #[test]
    fn the_draw_is_reproducible_varies_with_the_step_and_ignores_input_order() {
        let draw = |seed, step, reverse: bool| {
            let mut groups = step_of(7, 12);
            if reverse {
                groups.reverse();
            }
            in_bucket(&run(serde_json::Value::Null, seed, step, groups), "D2")
        };
        let first = draw(11, 4, false);
        assert_eq!(first.len(), 3);
        assert_eq!(draw(11, 4, false), first, "same seed and step, same choice");
        assert_eq!(draw(11, 4, true), first, "input order does not matter");
        // 220 ways to choose 3 of 12: some of 8 other steps, and of 8 other seeds, must differ.
        assert!(
            (5..13).any(|step| draw(11, step, false) != first),
            "varies with the step"
        );
        assert!(
            (12..20).any(|seed| draw(seed, 4, false) != first),
            "varies with the seed"
        );
    }

    #[test]
    fn rho_zero_and_empty_d1_keep_no_d2() {
        let groups = run(serde_json::json!({"rho": 0}), 0, 0, step_of(7, 5));
        assert_eq!(
            (
                in_bucket(&groups, "D1").len(),
                in_bucket(&groups, "D2").len()
            ),
            (7, 0)
        );
        // ρ · 0 = 0, however large ρ is.
        let groups = run(serde_json::json!({"rho": 100}), 0, 0, step_of(0, 5));
        assert!(in_bucket(&groups, "D2").is_empty());
        assert_eq!(in_bucket(&groups, "dropped").len(), 5);
        assert!(reason(&groups, "d2-00").ends_with("0 of 5 chosen (⌊ρ · |D1|⌋ = ⌊100/1 × 0⌋ = 0)"));
        // A decimal ρ, and a large one: every candidate fits.
        let groups = run(serde_json::json!({"rho": 1.5}), 0, 0, step_of(2, 5));
        assert_eq!(in_bucket(&groups, "D2").len(), 3);
    }

    #[test]
    fn groups_with_errors_or_missing_rewards_go_to_errors() {
        let mut failed = group("a-failed", &[SOLVED, WRONG], None);
        failed.push_error("reward", Some(1), "missing_verdict", "no verdict");
        let mut unrewarded = group("b-unrewarded", &[SOLVED, WRONG], None);
        unrewarded.rewards.pop();
        let groups = run(
            serde_json::Value::Null,
            0,
            0,
            vec![failed, unrewarded, group("c-d1", &[SOLVED, WRONG], None)],
        );
        assert_eq!(
            in_bucket(&groups, "errors"),
            vec!["a-failed", "b-unrewarded"]
        );
        assert_eq!(
            reason(&groups, "a-failed"),
            "earlier stages failed on it: reward/missing_verdict"
        );
        assert_eq!(groups[1].errors[0].kind, "missing_reward");
        assert_eq!(groups[1].errors[0].stage, "filter");
        assert_eq!(in_bucket(&groups, "D1"), vec!["c-d1"]);
    }

    #[test]
    fn tolerance_decides_equal_rewards() {
        let mut nearly = group("p", &[SOLVED, SOLVED], None);
        nearly.rewards[1].reward = 1.0 + 1e-9;
        let groups = run(serde_json::Value::Null, 0, 0, vec![nearly.clone()]);
        assert_eq!(in_bucket(&groups, "dropped"), vec!["p"]);
        let groups = run(serde_json::json!({"tolerance": 0.0}), 0, 0, vec![nearly]);
        assert_eq!(in_bucket(&groups, "D1"), vec!["p"]);
    }

    #[test]
    fn params_are_checked_by_name() {
        let err = filter(serde_json::json!({"rho": "3/0"}), 0)
            .err()
            .expect("bad rho");
        assert_eq!(err.to_string(), "rho: `3/0` divides by zero");
        let err = filter(serde_json::json!({"rho": -0.1}), 0)
            .err()
            .expect("bad rho");
        assert!(
            err.to_string()
                .starts_with("rho: must be a finite number >= 0"),
            "{err}"
        );
        let err = filter(serde_json::json!({"tolerance": -1.0}), 0)
            .err()
            .expect("bad tolerance");
        assert!(err.to_string().starts_with("tolerance: "), "{err}");
        assert!(filter(serde_json::json!({"ratio": 0.5}), 0).is_err());
    }

    fn sample_strategy() -> impl Strategy<Value = Sample> {
        (any::<bool>(), any::<bool>()).prop_map(|(asked, correct)| Sample { asked, correct })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn d2_never_exceeds_the_cap_and_every_kept_prompt_meets_its_condition(
            step_groups in prop::collection::vec(
                (prop::collection::vec(sample_strategy(), 2..6), prop::option::of(any::<bool>())),
                0..40,
            ),
            numerator in 0u64..8,
            denominator in 1u64..8,
            seed in any::<u64>(),
            step in 0u64..1000,
        ) {
            let groups: Vec<Group> = step_groups
                .iter()
                .enumerate()
                .map(|(i, (samples, cloud))| group(&format!("p{i:03}"), samples, *cloud))
                .collect();
            let rho = format!("{numerator}/{denominator}");
            let groups = run(serde_json::json!({"rho": rho}), seed, step, groups);
            let solved_locally = |g: &Group, i: usize| !g.samples[i].asked_help
                && g.verdicts[i].correct;
            let mut d1 = 0;
            let mut d2 = 0;
            let mut candidates = 0;
            for (g, (samples, cloud)) in groups.iter().zip(&step_groups) {
                let f = g.filter.as_ref().expect("decision");
                let any_solved = (0..samples.len()).any(|i| solved_locally(g, i));
                let rewards: Vec<f64> = g.rewards.iter().map(|r| r.reward).collect();
                let spread = rewards.iter().any(|r| *r != rewards[0]);
                let candidate = !any_solved
                    && samples.iter().any(|s| s.asked)
                    && *cloud == Some(true);
                prop_assert_eq!(f.kept, f.bucket == "D1" || f.bucket == "D2");
                match f.bucket.as_str() {
                    "D1" => {
                        prop_assert!(any_solved && spread);
                        d1 += 1;
                    }
                    "D2" => {
                        prop_assert!(candidate);
                        d2 += 1;
                    }
                    "dropped" => prop_assert!(!(any_solved && spread)),
                    other => prop_assert!(false, "unexpected bucket {}", other),
                }
                candidates += usize::from(candidate);
            }
            let cap = (d1 as u64 * numerator / denominator) as usize;
            prop_assert!(d2 <= cap);
            prop_assert_eq!(d2, cap.min(candidates), "as many as fit, no fewer");
        }
    }
}
