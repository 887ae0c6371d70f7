//! `reward.collab`: the paper's hierarchical reward (PAPER.md, "Problem and reward"). Per
//! sample, mutually exclusive:
//!
//! | case | reward |
//! |---|---|
//! | did not ask for help, and its own answer is correct | `alpha_local` (αa) |
//! | asked for help, and the cloud's answer is correct | `alpha_cloud` (αc) |
//! | anything else: wrong local answer, wrong or missing cloud answer, no answer | 0 |
//!
//! plus, optionally, `alpha_format` (αf, paper v1) for a well-formed response. *Asked for help*
//! is the sample's `asked_help` flag, set by the generator from the help tags. *The cloud's
//! answer* is the group's cloud verdict (`target: cloud`, no `sample_idx`); a group without one
//! (no cloud stage ran, the call failed or was refused) is the paper's "no answer" case: 0.
//!
//! With `target_call_rate`, αc is not a constant: it is αa − γ, and γ is learned by dual ascent
//! toward that call rate (see [`super::dual`]). The stage then sees whole steps, and puts γ and
//! αc into the step's metrics (`<id>.gamma`, `<id>.alpha_cloud`).

use std::sync::Arc;

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group, Target};

use super::dual::{CallRates, DualAscent, stored_call_rates};
use super::{FormatTags, add_reward, non_negative, one, validate_help};
use crate::contract::{BuildContext, Built, GroupStage, Scope, StepContext, StepFigures};
use crate::help::{HelpTags, call_rate};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `reward.collab`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollabConfig {
    /// αa: reward of a correct answer given without asking for help (default 1.0).
    #[serde(default = "one")]
    pub alpha_local: f64,
    /// αc: reward of asking for help when the cloud's answer is correct (default 0.25, the
    /// paper's Countdown value; αc = αa teaches the policy to always ask). With
    /// `target_call_rate`, the starting value.
    #[serde(default = "default_alpha_cloud")]
    pub alpha_cloud: f64,
    /// Learn αc instead: a call rate (share of samples that ask for help, in [0, 1]) that dual
    /// ascent on γ = αa − αc steers toward. Off by default.
    #[serde(default)]
    pub target_call_rate: Option<f64>,
    /// η, the integral's step per unit of call rate above the target (default 0.05).
    #[serde(default = "default_dual_lr")]
    pub dual_lr: f64,
    /// Kp, γ's offset per unit of the latest call rate above the target (default 1.0; 0 is
    /// plain dual ascent).
    #[serde(default = "one")]
    pub dual_kp: f64,
    /// αf: added for a well-formed response (default 0.0 = off; paper v1 used 0.2).
    #[serde(default)]
    pub alpha_format: f64,
    /// Multiplier of this stage's contribution to the summed reward (default 1.0).
    #[serde(default = "one")]
    pub weight: f64,
    /// Tags of a well-formed response (only read when `alpha_format` > 0).
    #[serde(default)]
    pub format: FormatTags,
    /// Tags of a call for help, as an alternative to the answer block in a well-formed response
    /// (only read when `alpha_format` > 0; who asked for help is the samples' `asked_help`).
    #[serde(default)]
    pub help: HelpTags,
}

fn default_alpha_cloud() -> f64 {
    0.25
}

fn default_dual_lr() -> f64 {
    0.05
}

impl StageConfig for CollabConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        // αc > αa is legal (an experiment may want it) even though the paper needs αa > αc.
        non_negative("alpha_local", self.alpha_local)?;
        non_negative("alpha_cloud", self.alpha_cloud)?;
        non_negative("alpha_format", self.alpha_format)?;
        non_negative("weight", self.weight)?;
        non_negative("dual_lr", self.dual_lr)?;
        non_negative("dual_kp", self.dual_kp)?;
        self.format.validate("format")?;
        validate_help(&self.help)?;
        let dual = match self.target_call_rate {
            None => None,
            Some(target) => Some(Dual::build(&self, target, ctx)?),
        };
        Ok(Built::Group(Box::new(CollabReward { config: self, dual })))
    }
}

/// Computes the hierarchical collaboration reward of every sample.
pub struct CollabReward {
    config: CollabConfig,
    dual: Option<Dual>,
}

/// What a stage with `target_call_rate` keeps: the schedule, every step's call rate (shared by
/// the workers' instances), and where γ goes in the metrics.
struct Dual {
    schedule: DualAscent,
    rates: Arc<CallRates>,
    /// The run's `max_staleness`: step t's γ includes the call rates of steps before t − s.
    staleness: u64,
    figures: Arc<StepFigures>,
}

impl Dual {
    fn build(config: &CollabConfig, target: f64, ctx: &BuildContext) -> Result<Dual> {
        if !(0.0..=1.0).contains(&target) {
            return Err(StageError::Params {
                path: "target_call_rate".into(),
                message: format!("must be a share of samples in [0, 1], got {target}"),
            });
        }
        if config.alpha_cloud > config.alpha_local {
            return Err(StageError::Params {
                path: "alpha_cloud".into(),
                message: format!(
                    "the starting αc ({}) must not exceed alpha_local ({}) when \
                     target_call_rate learns it (αc = αa − γ, γ ≥ 0)",
                    config.alpha_cloud, config.alpha_local
                ),
            });
        }
        // One set of rates per stage and run, filled from the stored steps on resume.
        let rates = ctx
            .shared
            .get_or_try_init(&format!("{}.call-rates", ctx.stage_id), || {
                let rates = CallRates::default();
                if let Some(resume) = &ctx.run.resume {
                    for (step, rate) in stored_call_rates(&resume.run_dir, resume.step)? {
                        rates.record(step, rate);
                    }
                }
                Ok::<_, StageError>(rates)
            })?;
        Ok(Dual {
            schedule: DualAscent {
                target,
                lr: config.dual_lr,
                kp: config.dual_kp,
                initial: config.alpha_local - config.alpha_cloud,
                max: config.alpha_local,
            },
            rates,
            staleness: ctx.run.max_staleness,
            figures: ctx
                .shared
                .get_or_init(StepFigures::KEY, StepFigures::default),
        })
    }

    /// αc for `step`'s rewards, after recording the step's own call rate.
    fn alpha_cloud(&self, groups: &[Group], ctx: &StepContext) -> Result<f64> {
        self.rates.record(ctx.step, call_rate(groups));
        let known = self.rates.upto(ctx.step.saturating_sub(self.staleness))?;
        let gamma = self.schedule.gamma(&known);
        let alpha_cloud = self.schedule.max - gamma;
        self.figures
            .add(ctx.step, &format!("{}.gamma", ctx.stage_id), gamma);
        self.figures.add(
            ctx.step,
            &format!("{}.alpha_cloud", ctx.stage_id),
            alpha_cloud,
        );
        Ok(alpha_cloud)
    }
}

impl GroupStage for CollabReward {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples, Facet::Verdicts])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Rewards])
    }

    fn scope(&self) -> Scope {
        // The call rate is the whole step's.
        if self.dual.is_some() {
            Scope::Step
        } else {
            Scope::Group
        }
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let c = &self.config;
        let alpha_cloud = match &self.dual {
            Some(dual) => dual.alpha_cloud(groups, ctx)?,
            None => c.alpha_cloud,
        };
        for group in groups.iter_mut() {
            // The last verdict wins, so a second verify stage overrides the first.
            let cloud_correct = group
                .verdicts
                .iter()
                .rev()
                .find(|v| v.target == Target::Cloud && v.sample_idx.is_none())
                .is_some_and(|v| v.correct);
            let judged: Vec<_> = group
                .samples
                .iter()
                .map(|s| {
                    let local = group
                        .verdicts
                        .iter()
                        .rev()
                        .find(|v| v.target == Target::Local && v.sample_idx == Some(s.sample_idx))
                        .map(|v| v.correct);
                    let well_formed =
                        c.alpha_format > 0.0 && c.format.well_formed(&s.text, &c.help);
                    (s.sample_idx, s.asked_help, local, well_formed)
                })
                .collect();
            for (sample_idx, asked_help, local, well_formed) in judged {
                // Required even for samples that asked for help: a missing local verdict means
                // the verifier did not judge this group, and a 0 would hide that.
                let Some(local_correct) = local else {
                    group.push_error(
                        &ctx.stage_id,
                        Some(sample_idx),
                        "missing_verdict",
                        "the sample has no local verdict (is a verify stage before this one, \
                         and did it judge this prompt?); it gets no reward",
                    );
                    continue;
                };
                let accuracy_local = if !asked_help && local_correct {
                    c.alpha_local
                } else {
                    0.0
                };
                let accuracy_cloud = if asked_help && cloud_correct {
                    alpha_cloud
                } else {
                    0.0
                };
                let mut components = vec![
                    ("accuracy_local", accuracy_local),
                    ("accuracy_cloud", accuracy_cloud),
                ];
                // Off by default; leaving the key out then keeps `format` free for a
                // `reward.format` stage stacked after this one.
                if c.alpha_format > 0.0 {
                    let format = if well_formed { c.alpha_format } else { 0.0 };
                    components.push(("format", format));
                }
                add_reward(group, &ctx.stage_id, sample_idx, c.weight, &components);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::{PromptRecord, SampleRecord, VerdictRecord};

    use super::*;

    fn ctx() -> StepContext {
        StepContext::single_worker("r", "reward", 0)
    }

    fn build_ctx() -> BuildContext {
        BuildContext {
            stage_id: "reward".into(),
            base_dir: ".".into(),
            run: crate::RunSettings {
                batch_size: 4,
                group_size: 4,
                steps: None,
                seed: 0,
                ..Default::default()
            },
            shared: Default::default(),
        }
    }

    fn stage(params: serde_json::Value) -> Box<dyn GroupStage> {
        match crate::registry::build_with::<CollabConfig>(&params, &build_ctx()) {
            Ok(Built::Group(stage)) => stage,
            Ok(_) => panic!("not a group stage"),
            Err(e) => panic!("build: {e}"),
        }
    }

    fn sample(i: u32, text: &str, asked_help: bool) -> SampleRecord {
        SampleRecord {
            prompt_id: "p".into(),
            sample_idx: i,
            text: text.into(),
            asked_help,
            ..Default::default()
        }
    }

    fn verdict(sample_idx: Option<u32>, correct: bool) -> VerdictRecord {
        VerdictRecord {
            prompt_id: "p".into(),
            sample_idx,
            target: if sample_idx.is_some() {
                Target::Local
            } else {
                Target::Cloud
            },
            correct,
            ..Default::default()
        }
    }

    fn group(samples: Vec<SampleRecord>, verdicts: Vec<VerdictRecord>) -> Group {
        Group {
            samples,
            verdicts,
            ..Group::new(PromptRecord {
                prompt_id: "p".into(),
                ..Default::default()
            })
        }
    }

    /// (reward, accuracy_local, accuracy_cloud) per reward row.
    fn rewards(group: &Group) -> Vec<(u32, f64, f64, f64)> {
        group
            .rewards
            .iter()
            .map(|r| {
                (
                    r.sample_idx,
                    r.reward,
                    r.components["accuracy_local"],
                    r.components["accuracy_cloud"],
                )
            })
            .collect()
    }

    #[test]
    fn hierarchical_rewards_g4_cloud_correct_and_cloud_wrong() {
        const HELP: &str = "<think>…</think><unknown>I need external assistance</unknown>";
        let samples = || {
            vec![
                sample(0, "<think>…</think><answer>ok</answer>", false),
                sample(1, HELP, true),
                sample(2, HELP, true),
                sample(3, "<think>…</think><answer>bad</answer>", false),
            ]
        };
        // Help-asking samples have local verdicts too (no_answer): a verifier judges every
        // sample. A correct local verdict on a sample that asked for help does not count.
        let locals = || {
            vec![
                verdict(Some(0), true),
                verdict(Some(1), false),
                verdict(Some(2), true),
                verdict(Some(3), false),
            ]
        };
        let mut cloud_right = locals();
        cloud_right.push(verdict(None, true));
        let mut cloud_wrong = locals();
        cloud_wrong.push(verdict(None, false));
        let mut groups = vec![
            group(samples(), cloud_right),
            group(samples(), cloud_wrong),
            group(samples(), locals()),
        ];
        stage(serde_json::Value::Null)
            .process(&mut groups, &ctx())
            .expect("process");
        assert_eq!(
            rewards(&groups[0]),
            vec![
                (0, 1.0, 1.0, 0.0),
                (1, 0.25, 0.0, 0.25),
                (2, 0.25, 0.0, 0.25),
                (3, 0.0, 0.0, 0.0)
            ]
        );
        let nothing_for_help = vec![
            (0, 1.0, 1.0, 0.0),
            (1, 0.0, 0.0, 0.0),
            (2, 0.0, 0.0, 0.0),
            (3, 0.0, 0.0, 0.0),
        ];
        // Wrong cloud answer, and no cloud answer at all: both 0, neither an error.
        assert_eq!(rewards(&groups[1]), nothing_for_help);
        assert_eq!(rewards(&groups[2]), nothing_for_help);
        for g in &groups {
            assert!(g.errors.is_empty());
            assert!(g.rewards.iter().all(|r| r.components.len() == 2));
        }
    }

    #[test]
    fn format_bonus_and_weight() {
        let mut groups = vec![group(
            vec![
                sample(0, "<think>a</think><answer>1</answer>", false),
                sample(1, "<answer>1</answer>", false),
                sample(2, "<think>a</think> <unknown>help</unknown>", true),
                sample(3, "<think>a</think><answer>2</answer>", false),
            ],
            vec![
                verdict(Some(0), true),
                verdict(Some(1), true),
                verdict(Some(2), false),
                verdict(Some(3), false),
                verdict(None, true),
            ],
        )];
        let params = serde_json::json!({
            "alpha_local": 2.0, "alpha_cloud": 0.5, "alpha_format": 0.25, "weight": 0.5,
        });
        stage(params).process(&mut groups, &ctx()).expect("process");
        let got: Vec<_> = groups[0]
            .rewards
            .iter()
            .map(|r| (r.reward, r.components["format"]))
            .collect();
        assert_eq!(
            got,
            vec![(1.125, 0.25), (1.0, 0.0), (0.375, 0.25), (0.125, 0.25)],
            "weight × (accuracy + format); components before the weight"
        );
    }

    #[test]
    fn a_sample_without_a_local_verdict_is_an_error_row_not_a_zero() {
        let mut groups = vec![group(
            vec![sample(0, "", false), sample(1, "", true)],
            vec![verdict(Some(0), true), verdict(None, true)],
        )];
        stage(serde_json::Value::Null)
            .process(&mut groups, &ctx())
            .expect("process");
        assert_eq!(rewards(&groups[0]), vec![(0, 1.0, 1.0, 0.0)]);
        let errors = &groups[0].errors;
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (
                errors[0].sample_idx,
                errors[0].kind.as_str(),
                errors[0].stage.as_str()
            ),
            (Some(1), "missing_verdict", "reward")
        );
    }

    /// A step of one group: `asked` of 4 samples asked for help, the cloud answered correctly,
    /// the others answered correctly on the device.
    fn step_group(asked: usize) -> Group {
        let samples = (0..4)
            .map(|i| sample(i, "", (i as usize) < asked))
            .collect();
        let mut verdicts: Vec<_> = (0..4).map(|i| verdict(Some(i), true)).collect();
        verdicts.push(verdict(None, true));
        group(samples, verdicts)
    }

    fn dual_stage(staleness: u64, shared: &crate::SharedState) -> Box<dyn GroupStage> {
        let ctx = BuildContext {
            run: crate::RunSettings {
                max_staleness: staleness,
                ..build_ctx().run
            },
            shared: shared.clone(),
            ..build_ctx()
        };
        let params = serde_json::json!({
            "alpha_cloud": 0.5, "target_call_rate": 0.25, "dual_lr": 1.0, "dual_kp": 0.0,
        });
        match crate::registry::build_with::<CollabConfig>(&params, &ctx) {
            Ok(Built::Group(stage)) => stage,
            _ => panic!("build"),
        }
    }

    /// Runs steps with `asked` calls for help out of 4 each; returns αc per step (the reward of a
    /// sample that asked) and the figures the learner would write.
    fn dual_run(staleness: u64, asked: &[usize]) -> Vec<(f64, f64, f64)> {
        let shared = crate::SharedState::default();
        let mut stage = dual_stage(staleness, &shared);
        assert_eq!(
            stage.scope(),
            Scope::Step,
            "the call rate is the whole step's"
        );
        let figures = shared.get_or_init(StepFigures::KEY, StepFigures::default);
        asked
            .iter()
            .enumerate()
            .map(|(step, &asked)| {
                let mut groups = vec![step_group(asked)];
                stage
                    .process(&mut groups, &ctx_at(step as u64))
                    .expect("process");
                let paid = groups[0].rewards[0].components["accuracy_cloud"];
                let figures: std::collections::BTreeMap<_, _> =
                    figures.take(step as u64).into_iter().collect();
                (paid, figures["reward.gamma"], figures["reward.alpha_cloud"])
            })
            .collect()
    }

    fn ctx_at(step: u64) -> StepContext {
        StepContext::single_worker("r", "reward", step)
    }

    #[test]
    fn dual_ascent_prices_a_call_by_the_earlier_steps_call_rates() {
        // γ0 = 1 − 0.5. Step 0 asks 3 of 4 (0.75 > 0.25): γ rises by 0.5 to αa, and step 1's
        // calls earn nothing. Step 1 asks none: γ falls by 0.25. Step 2 asks 1 of 4: at the
        // target, γ stays.
        let got = dual_run(0, &[3, 0, 1, 2]);
        let want = [
            (0.5, 0.5, 0.5),
            (0.0, 1.0, 0.0),
            (0.25, 0.75, 0.25),
            (0.25, 0.75, 0.25),
        ];
        for ((paid, gamma, alpha), (w_paid, w_gamma, w_alpha)) in got.iter().zip(want) {
            assert!((paid - w_paid).abs() < 1e-12, "{got:?}");
            assert!((gamma - w_gamma).abs() < 1e-12, "{got:?}");
            assert!((alpha - w_alpha).abs() < 1e-12, "{got:?}");
        }
        // A sample answered correctly on the device still earns αa.
        let shared = crate::SharedState::default();
        let mut groups = vec![step_group(3)];
        dual_stage(0, &shared)
            .process(&mut groups, &ctx_at(0))
            .expect("process");
        assert_eq!(groups[0].rewards[3].reward, 1.0);
    }

    #[test]
    fn with_staleness_s_step_t_uses_the_rates_of_the_steps_before_t_minus_s() {
        // The policy of step t was trained on steps before t − s: γ lags by s more steps.
        let got: Vec<f64> = dual_run(1, &[3, 0, 1, 2]).iter().map(|g| g.1).collect();
        assert_eq!(got, vec![0.5, 0.5, 1.0, 0.75]);
    }

    #[test]
    fn bad_dual_ascent_params_are_refused_by_path() {
        for (params, field) in [
            (
                serde_json::json!({"target_call_rate": 1.5}),
                "target_call_rate",
            ),
            (
                serde_json::json!({"target_call_rate": -0.1}),
                "target_call_rate",
            ),
            (
                serde_json::json!({"target_call_rate": 0.3, "dual_lr": -1.0}),
                "dual_lr",
            ),
            (
                serde_json::json!({"target_call_rate": 0.3, "alpha_cloud": 2.0}),
                "alpha_cloud",
            ),
        ] {
            let err = crate::registry::build_with::<CollabConfig>(&params, &build_ctx())
                .err()
                .expect("refused");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
    }

    #[test]
    fn negative_alphas_are_rejected_by_path() {
        for field in ["alpha_local", "alpha_cloud", "alpha_format", "weight"] {
            let params = serde_json::json!({ field: -1.0 });
            let err = crate::registry::build_with::<CollabConfig>(&params, &build_ctx())
                .err()
                .expect("negative");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
        // αc above αa is allowed.
        stage(serde_json::json!({"alpha_local": 0.1, "alpha_cloud": 1.0}));
        let err = crate::registry::build_with::<CollabConfig>(
            &serde_json::json!({"format": {"think": ["", "</think>"]}}),
            &build_ctx(),
        )
        .err()
        .expect("empty tag");
        assert!(err.to_string().starts_with("format.think[0]: "), "{err}");
        assert!(
            crate::registry::build_with::<CollabConfig>(
                &serde_json::json!({"alpha": 1.0}),
                &build_ctx()
            )
            .is_err()
        );
    }
}
