//! `advantage.grpo`: GRPO's group-normalised advantage, as TRL's `GRPOTrainer` computes it:
//!
//! ```text
//! A_i = (r_i − mean(group)) / (std + eps)
//! ```
//!
//! The mean is always the group's. `scale_rewards` picks the std (TRL's option of that name):
//! - `group`: the std of the group's rewards;
//! - `batch`: the std of every reward of the step (the stage then sees whole steps,
//!   `Scope::Step`; groups refused for their rewards are left out of it);
//! - `none`: no division at all, `A_i = r_i − mean(group)`.
//!
//! The std is the unbiased one (n − 1 in the denominator), which is what `torch.Tensor.std()`
//! returns and so what TRL uses; `eps` (default 1e-4, TRL's constant) is added to the std, not
//! under the square root, so an all-equal group gets advantages of 0.
//!
//! Intended token aggregation in the learner (`estimator: grpo`): the GRPO paper's
//! `1/G Σ_i 1/|o_i| Σ_t`, each sequence's token mean, then the mean over the samples.

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group};

use super::rewards::{checked_rewards, each_group, mean, unbiased_std, write_advantages};
use crate::contract::{BuildContext, Built, GroupStage, Scope, StepContext};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Which standard deviation divides GRPO's advantages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    /// The std of the group's own rewards (GRPO as published).
    #[default]
    Group,
    /// The std of every reward of the step.
    Batch,
    /// No division: `r_i − mean(group)`.
    None,
}

/// Parameters of `advantage.grpo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoConfig {
    /// Which std divides the advantages: `group` (default), `batch` or `none`.
    #[serde(default)]
    pub scale_rewards: ScaleRewards,
    /// Added to the std before dividing (default 1e-4, as TRL); must be > 0.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

fn default_eps() -> f64 {
    1e-4
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            scale_rewards: ScaleRewards::default(),
            eps: default_eps(),
        }
    }
}

impl StageConfig for GrpoConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        // eps = 0 would turn every all-equal group into 0 / 0.
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(StageError::Params {
                path: "eps".into(),
                message: format!("must be a finite number > 0, got {}", self.eps),
            });
        }
        Ok(Built::Group(Box::new(GrpoAdvantage { config: self })))
    }
}

/// Computes GRPO advantages.
pub struct GrpoAdvantage {
    config: GrpoConfig,
}

impl GrpoAdvantage {
    /// The name written into `estimator`.
    pub const ESTIMATOR: &'static str = "grpo";

    /// The advantages of one group's rewards (at least two), divided by `std + eps`, where `std`
    /// is the group's own unless `batch_std` gives the step's.
    ///
    /// ```
    /// use tandem_stages::advantage::{GrpoAdvantage, ScaleRewards};
    /// // mean 0.5, unbiased std √(1/3): ±0.5 / (0.57735 + 1e-4) = ±0.8659
    /// let a = GrpoAdvantage::advantages(&[1.0, 1.0, 0.0, 0.0], ScaleRewards::Group, 1e-4, None);
    /// assert!((a[0] - 0.8659).abs() < 1e-4 && (a[3] + 0.8659).abs() < 1e-4);
    /// let a = GrpoAdvantage::advantages(&[1.0, 1.0, 0.0, 0.0], ScaleRewards::None, 1e-4, None);
    /// assert_eq!(a, vec![0.5, 0.5, -0.5, -0.5]);
    /// ```
    pub fn advantages(
        rewards: &[f64],
        scale: ScaleRewards,
        eps: f64,
        batch_std: Option<f64>,
    ) -> Vec<f64> {
        let m = mean(rewards);
        let divisor = match scale {
            ScaleRewards::None => 1.0,
            ScaleRewards::Group => unbiased_std(rewards) + eps,
            ScaleRewards::Batch => batch_std.unwrap_or_else(|| unbiased_std(rewards)) + eps,
        };
        rewards.iter().map(|r| (r - m) / divisor).collect()
    }
}

impl GroupStage for GrpoAdvantage {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples, Facet::Rewards])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Advantages])
    }

    fn scope(&self) -> Scope {
        match self.config.scale_rewards {
            ScaleRewards::Batch => Scope::Step,
            ScaleRewards::Group | ScaleRewards::None => Scope::Group,
        }
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let GrpoConfig { scale_rewards, eps } = self.config;
        if scale_rewards != ScaleRewards::Batch {
            each_group(groups, &ctx.stage_id, Self::ESTIMATOR, |rewards| {
                GrpoAdvantage::advantages(rewards, scale_rewards, eps, None)
            });
            return Ok(());
        }
        // The step's std needs every group's rewards first.
        let checked: Vec<Option<Vec<f64>>> = groups
            .iter_mut()
            .map(|group| {
                group.advantages.clear();
                checked_rewards(group, &ctx.stage_id)
            })
            .collect();
        let all: Vec<f64> = checked.iter().flatten().flatten().copied().collect();
        if all.is_empty() {
            return Ok(());
        }
        // Every accepted group holds at least two rewards, so the step's std is defined.
        let batch_std = unbiased_std(&all);
        for (group, rewards) in groups.iter_mut().zip(checked) {
            if let Some(rewards) = rewards {
                let advantages =
                    GrpoAdvantage::advantages(&rewards, scale_rewards, eps, Some(batch_std));
                write_advantages(group, Self::ESTIMATOR, &advantages);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::rewards::tests::{advantages, error_kinds, group, rewarded};
    use super::*;

    fn stage(params: serde_json::Value) -> Result<Box<dyn GroupStage>> {
        match crate::registry::build_with::<GrpoConfig>(
            &params,
            &BuildContext::new("adv", crate::RunSettings::default()),
        )? {
            Built::Group(stage) => Ok(stage),
            _ => panic!("advantage.grpo builds a group stage"),
        }
    }

    fn run(params: serde_json::Value, mut groups: Vec<Group>) -> Vec<Group> {
        stage(params)
            .expect("build")
            .process(&mut groups, &StepContext::single_worker("r", "adv", 2))
            .expect("process");
        groups
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn group_scale_hand_computed_g4() {
        // [1, 0, 0, 0]: mean 0.25, Σ(r − mean)² = 0.5625 + 3 × 0.0625 = 0.75, std = √(0.75/3) = 0.5.
        let groups = run(
            serde_json::Value::Null,
            vec![rewarded("p", &[1.0, 0.0, 0.0, 0.0])],
        );
        let d = 0.5 + 1e-4;
        assert_close(
            &advantages(&groups[0]),
            &[0.75 / d, -0.25 / d, -0.25 / d, -0.25 / d],
        );
        assert!(groups[0].advantages.iter().all(|a| a.estimator == "grpo"));
    }

    #[test]
    fn group_scale_erases_the_reward_hierarchy() {
        // PAPER.md's reason for GAPG: [αa, 0, 0, 0] and [αc, 0, 0, 0] come out nearly the same.
        let groups = run(
            serde_json::Value::Null,
            vec![
                rewarded("local", &[1.0, 0.0, 0.0, 0.0]),
                rewarded("cloud", &[0.25, 0.0, 0.0, 0.0]),
            ],
        );
        // std 0.5 and 0.125: 0.75 / 0.5001 = 1.49970 and 0.1875 / 0.1251 = 1.49880.
        assert_close(&advantages(&groups[0])[..1], &[0.75 / 0.5001]);
        assert_close(&advantages(&groups[1])[..1], &[0.1875 / 0.1251]);
        assert!((advantages(&groups[0])[0] - advantages(&groups[1])[0]).abs() < 1e-3);
    }

    #[test]
    fn batch_scale_uses_the_std_of_the_whole_step() {
        // All 8 rewards: mean 0.5, Σ(r − 0.5)² = 8 × 0.25 = 2, std = √(2/7). Means stay per group.
        let groups = run(
            serde_json::json!({"scale_rewards": "batch"}),
            vec![
                rewarded("a", &[1.0, 0.0, 0.0, 0.0]),
                rewarded("b", &[1.0, 1.0, 1.0, 0.0]),
                group("broken", &[Some(1.0), None]),
            ],
        );
        let d = (2.0f64 / 7.0).sqrt() + 1e-4;
        assert_close(
            &advantages(&groups[0]),
            &[0.75 / d, -0.25 / d, -0.25 / d, -0.25 / d],
        );
        assert_close(
            &advantages(&groups[1]),
            &[0.25 / d, 0.25 / d, 0.25 / d, -0.75 / d],
        );
        assert_eq!(error_kinds(&groups[2]), ["missing_reward"]);
        assert!(groups[2].advantages.is_empty());
        assert_eq!(
            stage(serde_json::json!({"scale_rewards": "batch"}))
                .expect("build")
                .scope(),
            Scope::Step
        );
        assert_eq!(
            stage(serde_json::Value::Null).expect("build").scope(),
            Scope::Group
        );
    }

    #[test]
    fn no_scale_is_the_difference_from_the_group_mean() {
        let groups = run(
            serde_json::json!({"scale_rewards": "none"}),
            vec![rewarded("p", &[1.0, 1.0, 0.25, 0.25, 0.0])],
        );
        assert_eq!(advantages(&groups[0]), vec![0.5, 0.5, -0.25, -0.25, -0.5]);
    }

    #[test]
    fn equal_rewards_give_zero_in_every_scale() {
        for scale in ["group", "batch", "none"] {
            let groups = run(
                serde_json::json!({"scale_rewards": scale}),
                vec![rewarded("p", &[0.1, 0.1, 0.1])],
            );
            assert_eq!(advantages(&groups[0]), vec![0.0, 0.0, 0.0], "{scale}");
        }
    }

    #[test]
    fn single_sample_and_missing_reward_are_error_rows() {
        let groups = run(
            serde_json::Value::Null,
            vec![
                rewarded("single", &[1.0]),
                group("missing", &[None, Some(0.0)]),
            ],
        );
        assert_eq!(error_kinds(&groups[0]), ["group_too_small"]);
        assert_eq!(error_kinds(&groups[1]), ["missing_reward"]);
        assert!(groups.iter().all(|g| g.advantages.is_empty()));
    }

    #[test]
    fn params_are_checked_by_name() {
        for eps in [0.0, -1.0] {
            let err = stage(serde_json::json!({"eps": eps}))
                .err()
                .expect("bad eps");
            assert!(
                err.to_string()
                    .starts_with("eps: must be a finite number > 0"),
                "{err}"
            );
        }
        let err = stage(serde_json::json!({"scale_rewards": "global"}))
            .err()
            .expect("unknown scale");
        assert!(
            err.to_string()
                .starts_with("scale_rewards: unknown variant `global`"),
            "{err}"
        );
    }
}
