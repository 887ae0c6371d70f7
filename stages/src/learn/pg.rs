//! `learn.pg`: the learner. A sink that turns each step's kept groups into one policy-gradient
//! update of the policy that `generate.policy` samples from, publishes the new weights (the
//! generator picks them up before its next step), writes a `metrics` row per step, and saves
//! checkpoints.
//!
//! The loss of sample `i` of a kept prompt is `Σ_t ℓ_t` over its device tokens, with `ℓ_t` the
//! policy-gradient surrogate of [`PolicyGradient`] (−A·ratio, clipped when `clip_eps` is set,
//! plus `kl_coef`·k3 when a reference is used), and the step's loss aggregates them:
//!
//! | `loss` | aggregate | who uses it |
//! |---|---|---|
//! | `seq_sum_prompt_mean` | `Σ_i Σ_t ℓ_it / P` (P kept prompts) | the paper (GAPG) |
//! | `token_mean` | `Σ_i Σ_t ℓ_it / Σ_i T_i` | TRL's GRPO default, DAPO |
//! | `seq_mean_token_mean` | `(1/N) Σ_i (1/T_i) Σ_t ℓ_it` | the original GRPO |
//! | `constant` | `Σ_i Σ_t ℓ_it / (N · max_tokens_norm)` | Dr. GRPO |
//!
//! Only device tokens are scored: a sample's completion ids are what the policy generated;
//! the cloud's answer is a separate record and never enters the batch.

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group, StreamKind, Target};

use super::trained::{self, Saving, TrainedModel, params};
use crate::contract::{BuildContext, Built, Sink, StepContext, StepFigures};
use crate::policy::{
    AdamWConfig, LearnerConfig, LoraConfig, LrSchedule, PolicyGradient, PolicyHub, Sequence,
};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// How the per-token losses of a step are aggregated (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Sum over each sequence's tokens, mean over kept prompts (the paper).
    #[default]
    SeqSumPromptMean,
    /// Mean over all tokens of the step.
    TokenMean,
    /// Mean over sequences of each sequence's token mean.
    SeqMeanTokenMean,
    /// Sum over tokens divided by (sequences × `max_tokens_norm`).
    Constant,
}

/// Parameters of `learn.pg`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnConfig {
    /// AdamW: `lr` (default 1e-6), `beta1`, `beta2`, `eps`, `weight_decay` (default 0.01; none
    /// on biases and norms).
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// `{kind: constant, warmup_steps}` (default) or `{kind: cosine, warmup_steps,
    /// total_steps, min_ratio}`.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Clip the global gradient norm (default 1.0; 0 = off).
    #[serde(default = "trained::one")]
    pub max_grad_norm: f64,
    /// Sequences per forward/backward pass (default 8).
    #[serde(default = "trained::eight")]
    pub micro_batch_size: usize,
    /// Loss aggregation (default `seq_sum_prompt_mean`, the paper's).
    #[serde(default)]
    pub loss: Aggregation,
    /// The constant normaliser of `loss: constant` (Dr. GRPO: the generation budget).
    #[serde(default)]
    pub max_tokens_norm: Option<usize>,
    /// PPO clip range ε of the importance ratio against the sampling policy (default none:
    /// the ratio is 1 when strictly on-policy).
    #[serde(default)]
    pub clip_eps: Option<f64>,
    /// Upper clip range (DAPO's clip-higher, e.g. 0.28 with `clip_eps: 0.2`); needs
    /// `clip_eps` (default: `clip_eps`).
    #[serde(default)]
    pub clip_eps_high: Option<f64>,
    /// Weight of a k3 KL penalty to the frozen starting model (default 0 = no reference).
    #[serde(default)]
    pub kl_coef: f64,
    /// Optimiser steps on each step's batch (default 1). Later epochs are off-policy: the
    /// ratio is taken against the sampling log-probs, so set `clip_eps` with it (PPO's epochs,
    /// TRL's `num_iterations`).
    #[serde(default = "one_epoch")]
    pub epochs: usize,
    /// Device of the learner's copy of the model (default `cpu`).
    #[serde(default = "trained::cpu")]
    pub device: String,
    /// Save a checkpoint every N steps (default 0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Train LoRA adapters on the frozen model instead of every weight: `{r, alpha, rslora,
    /// dropout, targets}` (default: none, full fine-tuning). Checkpoints are then PEFT adapters
    /// (`adapter_config.json`, `adapter_model.safetensors`) plus the learner's state, and
    /// generation uses the base with the newest adapter.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

fn one_epoch() -> usize {
    1
}

impl StageConfig for LearnConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        if self.loss == Aggregation::Constant && self.max_tokens_norm.unwrap_or(0) == 0 {
            return Err(params(
                "max_tokens_norm",
                "loss: constant needs max_tokens_norm > 0 (e.g. the generation's max_new_tokens)"
                    .into(),
            ));
        }
        if let Some(eps) = self.clip_eps
            && !(eps.is_finite() && eps > 0.0)
        {
            return Err(params(
                "clip_eps",
                format!("must be a finite number > 0, got {eps}"),
            ));
        }
        match (self.clip_eps, self.clip_eps_high) {
            (None, Some(_)) => {
                return Err(params(
                    "clip_eps_high",
                    "needs clip_eps (the lower clip range) as well".into(),
                ));
            }
            (Some(_), Some(high)) if !(high.is_finite() && high > 0.0) => {
                return Err(params(
                    "clip_eps_high",
                    format!("must be a finite number > 0, got {high}"),
                ));
            }
            _ => {}
        }
        if self.epochs == 0 {
            return Err(params("epochs", "must be at least 1".into()));
        }
        if !(self.kl_coef.is_finite() && self.kl_coef >= 0.0) {
            return Err(params(
                "kl_coef",
                format!("must be a finite number >= 0, got {}", self.kl_coef),
            ));
        }
        let device = trained::check_common(&self.device, &self.optimizer)?;
        trained::check_lora(self.lora.as_ref())?;
        let Ok(hub) = ctx
            .shared
            .get_or_try_init::<PolicyHub, ()>(PolicyHub::KEY, || Err(()))
        else {
            return Err(params(
                "",
                "learn.pg learns the policy of a generate.policy or generate.openai stage; put one before it".into(),
            ));
        };
        // The policy continues from the hub's starting weights (a resumed run's checkpoint);
        // the KL reference is always the model the training began from.
        let model = trained::load_trainable(
            &hub.model_dir,
            &hub.start_dir,
            &device,
            self.lora.as_ref(),
            ctx.run.seed,
        )?;
        let reference = if self.kl_coef > 0.0 {
            Some(trained::load_f32("reference", &hub.model_dir, &device)?)
        } else {
            None
        };
        let trained = TrainedModel::new(
            model,
            LearnerConfig {
                optimizer: self.optimizer.clone(),
                schedule: self.schedule.clone(),
                max_grad_norm: self.max_grad_norm,
                micro_batch_size: self.micro_batch_size.max(1),
                temperature: hub.temperature,
            },
            hub.start_version,
            Saving {
                tokenizer_dir: hub.model_dir.clone(),
                dtype: hub.save_dtype,
                every: self.checkpoint_every,
                published: (ctx.run.max_staleness > 0).then(|| hub.clone()),
            },
            ctx,
        )?;
        Ok(Built::Sink(Box::new(PolicyLearner {
            figures: ctx
                .shared
                .get_or_init(StepFigures::KEY, StepFigures::default),
            hub,
            trained,
            reference,
            config: self,
        })))
    }
}

/// The learner.
pub struct PolicyLearner {
    config: LearnConfig,
    hub: Arc<PolicyHub>,
    /// What other stages measured for a step (the serving engine's sync), for its row.
    figures: Arc<StepFigures>,
    trained: TrainedModel,
    reference: Option<crate::policy::Transformer>,
}

impl PolicyLearner {
    /// The sequences of the kept groups and their loss scales; `Err` names a non-finite
    /// advantage (the step is refused).
    fn batch(&self, groups: &[&Group]) -> Result<(Vec<Sequence>, Vec<f64>)> {
        let mut sequences = Vec::new();
        for group in groups {
            let prompt_ids = self.hub.prompt_ids(&group.prompt.question).map_err(|e| {
                StageError::Run(format!("encoding the prompt of {}: {e}", group.prompt_id()))
            })?;
            for adv in &group.advantages {
                if !adv.advantage.is_finite() {
                    return Err(StageError::Run(format!(
                        "step {}: the advantage of prompt {} sample {} is {}; the step is refused (no update, no checkpoint)",
                        group.step(),
                        group.prompt_id(),
                        adv.sample_idx,
                        adv.advantage
                    )));
                }
                let Some(sample) = group
                    .samples
                    .iter()
                    .find(|s| s.sample_idx == adv.sample_idx)
                else {
                    continue;
                };
                if sample.token_ids.is_empty() {
                    continue;
                }
                sequences.push(Sequence {
                    prompt_ids: prompt_ids.clone(),
                    completion_ids: sample.token_ids.clone(),
                    advantage: adv.advantage as f32,
                    old_logprobs: ((self.config.clip_eps.is_some() || self.config.epochs > 1)
                        && sample.logprobs.len() == sample.token_ids.len())
                    .then(|| sample.logprobs.clone()),
                    // Measured against only: the generator's log-probs for the weights the
                    // learner holds now (a stale sample's gap is its staleness, not a mismatch).
                    sampled_logprobs: (sample.policy_version == self.trained.version
                        && sample.logprobs.len() == sample.token_ids.len())
                    .then(|| sample.logprobs.clone()),
                });
            }
        }
        let n = sequences.len().max(1) as f64;
        let tokens: usize = sequences.iter().map(|s| s.completion_ids.len()).sum();
        let prompts = groups.len().max(1) as f64;
        let scales = sequences
            .iter()
            .map(|s| match self.config.loss {
                Aggregation::SeqSumPromptMean => 1.0 / prompts,
                Aggregation::TokenMean => 1.0 / tokens.max(1) as f64,
                Aggregation::SeqMeanTokenMean => 1.0 / (n * s.completion_ids.len() as f64),
                Aggregation::Constant => {
                    1.0 / (n * self.config.max_tokens_norm.unwrap_or(1) as f64)
                }
            })
            .collect();
        Ok((sequences, scales))
    }
}

impl Sink for PolicyLearner {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples, Facet::Advantages])
    }

    fn updates_policy(&self) -> bool {
        true
    }

    fn streams(&self) -> Vec<(String, StreamKind)> {
        vec![("metrics".into(), StreamKind::Metrics)]
    }

    fn consume(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let kept: Vec<&Group> = groups
            .iter()
            .filter(|g| g.kept() && g.errors.is_empty() && !g.advantages.is_empty())
            .collect();
        let (sequences, scales) = self.batch(&kept)?;
        let started = Instant::now();
        // Sequences with a zero advantage add nothing without a KL term: skip their passes.
        let (sequences, scales): (Vec<Sequence>, Vec<f64>) = sequences
            .into_iter()
            .zip(scales)
            .filter(|(s, _)| self.config.kl_coef > 0.0 || s.advantage != 0.0)
            .unzip();
        let objective = PolicyGradient {
            clip_eps: self.config.clip_eps,
            clip_eps_high: self.config.clip_eps_high,
            kl_coef: self.config.kl_coef,
        };
        let mut values = std::collections::BTreeMap::new();
        if sequences.is_empty() {
            values.insert("updated".into(), 0.0);
        } else {
            // The first epoch's figures are the step's (the on-policy loss); later epochs
            // report their last loss.
            let mut first = None;
            let trained = &mut self.trained;
            for epoch in 0..self.config.epochs {
                let stats = trained
                    .learner
                    .step_weighted(
                        &trained.model,
                        self.reference.as_ref(),
                        &sequences,
                        &scales,
                        &objective,
                    )
                    .map_err(|e| {
                        StageError::Run(format!("step {}, epoch {}: {e}", ctx.step, epoch + 1))
                    })?;
                if epoch > 0 {
                    values.insert("loss_last_epoch".into(), stats.loss);
                }
                first.get_or_insert(stats);
            }
            let stats = first.expect("epochs >= 1");
            trained.version += 1;
            self.hub.publish(ctx.step, trained.version, &trained.model);
            let seconds = started.elapsed().as_secs_f64();
            values.insert("epochs".to_owned(), self.config.epochs as f64);
            values.extend(trained::update_figures(&stats, seconds, self.config.epochs));
        }
        values.extend(step_figures(groups, kept.len()));
        values.extend(self.figures.take(ctx.step));
        if let Some(wall) = trained::add_stage_seconds(&mut values, ctx, started) {
            let sampled: usize = groups
                .iter()
                .flat_map(|g| &g.samples)
                .map(|s| s.token_ids.len())
                .sum();
            values.insert(
                "sampled_tokens_per_second".into(),
                sampled as f64 / wall.max(1e-9),
            );
        }
        let record = self.trained.end_step(ctx, values)?;
        tracing::info!(
            step = ctx.step,
            version = record.policy_version,
            loss = record.values.get("loss").copied().unwrap_or(f64::NAN),
            help_rate = record.values["help_rate"],
            mean_reward = record
                .values
                .get("mean_reward")
                .copied()
                .unwrap_or(f64::NAN),
            "learn"
        );
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.trained.finish()
    }
}

/// The step's figures that do not depend on the update: prompts kept and dropped, the
/// call-for-help rate, local and cloud accuracy, the mean reward.
fn step_figures(groups: &[Group], kept: usize) -> Vec<(String, f64)> {
    let samples: usize = groups.iter().map(|g| g.samples.len()).sum();
    let verdicts = |target: Target| {
        let all: Vec<bool> = groups
            .iter()
            .flat_map(|g| &g.verdicts)
            .filter(|v| v.target == target)
            .map(|v| v.correct)
            .collect();
        (all.iter().filter(|c| **c).count(), all.len())
    };
    let rewards: Vec<f64> = groups
        .iter()
        .flat_map(|g| &g.rewards)
        .map(|r| r.reward)
        .collect();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (local_right, local) = verdicts(Target::Local);
    let (cloud_right, cloud) = verdicts(Target::Cloud);
    let mut out = vec![
        ("prompts".to_owned(), groups.len() as f64),
        ("kept_prompts".to_owned(), kept as f64),
        ("dropped_prompts".to_owned(), (groups.len() - kept) as f64),
        ("samples".to_owned(), samples as f64),
        ("help_rate".to_owned(), crate::help::call_rate(groups)),
        ("local_accuracy".to_owned(), ratio(local_right, local)),
    ];
    if cloud > 0 {
        out.push(("cloud_accuracy".to_owned(), ratio(cloud_right, cloud)));
    }
    if !rewards.is_empty() {
        out.push((
            "mean_reward".to_owned(),
            rewards.iter().sum::<f64>() / rewards.len() as f64,
        ));
    }
    out
}
