//! Reward stages: the scalar each sample is trained on, with every component kept.
//!
//! Reward stages stack. A pipeline may hold several stages that provide `rewards`; each one adds
//! to the sample's single [`RewardRecord`] through [`add_reward`] instead of pushing another row:
//! `reward` is the sum over the stages of `weight × (sum of that stage's components)`, and each
//! component keeps its own key in `components` (its value before the stage's `weight`). A key
//! that an earlier stage already wrote is stored as `"{stage_id}.{key}"`, so nothing is
//! overwritten and every part of the sum stays visible.
//!
//! The helpers shared by the kinds ([`add_reward`], [`FormatTags`]) live here so that no reward
//! stage imports another.

mod collab;
mod command;
pub mod dual;
mod format;
mod http;
mod length;
pub mod plugin;

pub use collab::{CollabConfig, CollabReward};
pub use command::{CommandConfig, CommandReward};
pub use format::{FormatConfig, FormatReward};
pub use http::{HttpConfig, HttpReward};
pub use length::{LengthConfig, LengthReward};

use serde::Deserialize;
use tandem_schemas::{Group, RewardRecord};

use crate::help::HelpTags;
use crate::{Result, StageError};

/// Adds one stage's contribution to the reward of sample `sample_idx`: `weight × Σ value` goes
/// into `reward`, and each `(key, value)` into `components` (as `"{stage_id}.{key}"` when the key
/// is taken). Creates the sample's row if no reward stage wrote one yet, with the sample's
/// `policy_version` (0 if the group holds no such sample).
///
/// ```
/// use tandem_schemas::{Group, PromptRecord};
/// use tandem_stages::reward::add_reward;
/// let mut group = Group::new(PromptRecord::default());
/// add_reward(&mut group, "collab", 0, 1.0, &[("accuracy_local", 1.0), ("format", 0.25)]);
/// add_reward(&mut group, "fmt", 0, 0.5, &[("format", 1.0)]);
/// let row = &group.rewards[0];
/// assert_eq!(row.reward, 1.75);
/// assert_eq!(row.components["format"], 0.25);
/// assert_eq!(row.components["fmt.format"], 1.0);
/// ```
pub fn add_reward(
    group: &mut Group,
    stage_id: &str,
    sample_idx: u32,
    weight: f64,
    components: &[(&str, f64)],
) {
    let index = match group
        .rewards
        .iter()
        .position(|r| r.sample_idx == sample_idx)
    {
        Some(index) => index,
        None => {
            let policy_version = group
                .samples
                .iter()
                .find(|s| s.sample_idx == sample_idx)
                .map_or(0, |s| s.policy_version);
            group.rewards.push(RewardRecord {
                run_id: group.prompt.run_id.clone(),
                step: group.prompt.step,
                prompt_id: group.prompt.prompt_id.clone(),
                sample_idx,
                policy_version,
                reward: 0.0,
                components: Default::default(),
            });
            group.rewards.len() - 1
        }
    };
    let record = &mut group.rewards[index];
    for &(key, value) in components {
        record.reward += weight * value;
        let key = if record.components.contains_key(key) {
            format!("{stage_id}.{key}")
        } else {
            key.to_owned()
        };
        // Stage ids are unique, so the prefixed key is normally free; adding (not replacing)
        // keeps `reward` equal to the weighted components even if a stage writes a key twice.
        *record.components.entry(key).or_insert(0.0) += value;
    }
}

/// The tags of a well-formed response: a reasoning block, then an answer block or a call for
/// help (PAPER.md, Template I).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormatTags {
    /// The reasoning block's tags, `[open, close]` (default `["<think>", "</think>"]`).
    pub think: [String; 2],
    /// The answer block's tags, `[open, close]` (default `["<answer>", "</answer>"]`).
    pub answer: [String; 2],
}

impl Default for FormatTags {
    fn default() -> Self {
        FormatTags {
            think: ["<think>".into(), "</think>".into()],
            answer: ["<answer>".into(), "</answer>".into()],
        }
    }
}

impl FormatTags {
    /// Whether `text` has a complete think block followed, anywhere after its close, by a
    /// complete answer block or a complete help block. Text before, between and after is
    /// allowed.
    ///
    /// ```
    /// use tandem_stages::{help::HelpTags, reward::FormatTags};
    /// let (tags, help) = (FormatTags::default(), HelpTags::default());
    /// assert!(tags.well_formed("<think>a</think> <answer>1</answer>", &help));
    /// assert!(tags.well_formed("<think>a</think> <unknown>help</unknown>", &help));
    /// assert!(!tags.well_formed("<answer>1</answer> <think>a</think>", &help));
    /// assert!(!tags.well_formed("<think>a <answer>1</answer>", &help));
    /// ```
    pub fn well_formed(&self, text: &str, help: &HelpTags) -> bool {
        let Some(rest) = after_block(text, &self.think) else {
            return false;
        };
        after_block(rest, &self.answer).is_some() || help.asks_help(rest)
    }

    /// Rejects empty tags (they would match everywhere); `path` names the `format` params.
    fn validate(&self, path: &str) -> Result<()> {
        for (name, tags) in [("think", &self.think), ("answer", &self.answer)] {
            for (i, tag) in tags.iter().enumerate() {
                if tag.is_empty() {
                    return Err(StageError::Params {
                        path: format!("{path}.{name}[{i}]"),
                        message: "tags must not be empty".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The text after the first complete `open … close` block, if there is one.
fn after_block<'t>(text: &'t str, [open, close]: &[String; 2]) -> Option<&'t str> {
    let body = text.find(open.as_str())? + open.len();
    let end = body + text[body..].find(close.as_str())?;
    Some(&text[end + close.len()..])
}

/// Rejects empty help tags: an empty opening tag would make every response a call for help.
fn validate_help(help: &HelpTags) -> Result<()> {
    for (name, tag) in [("open", &help.open), ("close", &help.close)] {
        if tag.is_empty() {
            return Err(StageError::Params {
                path: format!("help.{name}"),
                message: "tags must not be empty".into(),
            });
        }
    }
    Ok(())
}

/// A weight, alpha or penalty must be a finite number ≥ 0; `path` names it in the params.
fn non_negative(path: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(StageError::Params {
            path: path.to_owned(),
            message: format!("must be a finite number >= 0, got {value}"),
        })
    }
}

/// The default `weight` of every reward kind.
fn one() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use tandem_schemas::{PromptRecord, SampleRecord};

    use super::*;

    #[test]
    fn stacking_sums_rewards_and_prefixes_taken_keys() {
        let mut group = Group::new(PromptRecord {
            prompt_id: "p".into(),
            ..Default::default()
        });
        group.samples = (0..2)
            .map(|i| SampleRecord {
                prompt_id: "p".into(),
                sample_idx: i,
                policy_version: 3,
                ..Default::default()
            })
            .collect();
        add_reward(
            &mut group,
            "collab",
            0,
            1.0,
            &[("accuracy_local", 1.0), ("format", 0.25)],
        );
        add_reward(
            &mut group,
            "collab",
            1,
            1.0,
            &[("accuracy_local", 0.0), ("format", 0.0)],
        );
        add_reward(&mut group, "fmt", 1, 2.0, &[("format", 1.0)]);
        add_reward(&mut group, "len", 0, 1.0, &[("length", -0.5)]);
        assert_eq!(
            group.rewards.len(),
            2,
            "one row per sample, never a duplicate"
        );
        let rows: Vec<_> = group
            .rewards
            .iter()
            .map(|r| {
                let keys: Vec<_> = r.components.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                (r.sample_idx, r.policy_version, r.reward, keys)
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    0,
                    3,
                    0.75,
                    vec![("accuracy_local", 1.0), ("format", 0.25), ("length", -0.5)]
                ),
                (
                    1,
                    3,
                    2.0,
                    vec![
                        ("accuracy_local", 0.0),
                        ("fmt.format", 1.0),
                        ("format", 0.0)
                    ]
                ),
            ]
        );
    }

    #[test]
    fn validation_names_the_param() {
        let err = non_negative("alpha_cloud", -0.1).expect_err("negative");
        assert_eq!(
            err.to_string(),
            "alpha_cloud: must be a finite number >= 0, got -0.1"
        );
        assert!(non_negative("weight", f64::NAN).is_err());
        assert!(non_negative("weight", 0.0).is_ok());
        let tags = FormatTags {
            think: ["<think>".into(), String::new()],
            ..Default::default()
        };
        let err = tags.validate("format").expect_err("empty tag");
        assert_eq!(err.to_string(), "format.think[1]: tags must not be empty");
        let help = HelpTags {
            open: String::new(),
            ..Default::default()
        };
        let err = validate_help(&help).expect_err("empty help tag");
        assert_eq!(err.to_string(), "help.open: tags must not be empty");
    }
}
