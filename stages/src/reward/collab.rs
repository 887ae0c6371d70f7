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

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group, Target};

use super::{FormatTags, add_reward, non_negative, one, validate_help};
use crate::Result;
use crate::contract::{BuildContext, Built, GroupStage, StepContext};
use crate::help::HelpTags;
use crate::registry::StageConfig;

/// Parameters of `reward.collab`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollabConfig {
    /// αa: reward of a correct answer given without asking for help (default 1.0).
    #[serde(default = "one")]
    pub alpha_local: f64,
    /// αc: reward of asking for help when the cloud's answer is correct (default 0.25, the
    /// paper's Countdown value; αc = αa teaches the policy to always ask).
    #[serde(default = "default_alpha_cloud")]
    pub alpha_cloud: f64,
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

impl StageConfig for CollabConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        // αc > αa is legal (an experiment may want it) even though the paper needs αa > αc.
        non_negative("alpha_local", self.alpha_local)?;
        non_negative("alpha_cloud", self.alpha_cloud)?;
        non_negative("alpha_format", self.alpha_format)?;
        non_negative("weight", self.weight)?;
        self.format.validate("format")?;
        validate_help(&self.help)?;
        Ok(Built::Group(Box::new(CollabReward { config: self })))
    }
}

/// Computes the hierarchical collaboration reward of every sample.
pub struct CollabReward {
    config: CollabConfig,
}

impl GroupStage for CollabReward {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples, Facet::Verdicts])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Rewards])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let c = &self.config;
        for group in groups {
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
                    c.alpha_cloud
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
