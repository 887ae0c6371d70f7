//! Scoring and learning: sequence log-probs with gradients, a per-token objective, AdamW with
//! weight-decay groups, gradient-norm clipping and a warm-up + constant/cosine schedule.
//!
//! A batch is laid out as verl does: prompts left-padded to the longest prompt `P`, completions
//! right-padded to the longest completion `C`, so the positions that predict completion tokens
//! are the same slice `[P-1, P-1+C)` in every row and only those get logits.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::model::{Attend, Transformer, positions_from_mask};
use super::{PolicyError, Result};

/// One (prompt, completion) pair to learn from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sequence {
    /// Prompt token ids.
    pub prompt_ids: Vec<u32>,
    /// Completion token ids (the only ones scored).
    pub completion_ids: Vec<u32>,
    /// The completion's advantage (every token of it gets this weight).
    pub advantage: f32,
    /// Per-token log-probs under the policy that sampled it, for importance ratios.
    pub old_logprobs: Option<Vec<f32>>,
    /// Per-token log-probs the generator reported for weights equal to the learner's, only
    /// measured against: the step reports their gap to its own (train/inference mismatch).
    pub sampled_logprobs: Option<Vec<f32>>,
}

/// Per-token log-probs `[B, C]` of each completion given its prompt, with gradients when the
/// model's parameters require them, and the mask `[B, C]` of real completion tokens. Logits are
/// divided by `temperature` first (use the sampling temperature, so the values match the
/// log-probs generation reported).
pub fn sequence_logprobs(
    model: &Transformer,
    batch: &[&Sequence],
    temperature: f64,
) -> Result<(Tensor, Tensor)> {
    if batch.iter().any(|s| s.prompt_ids.is_empty()) {
        return Err(PolicyError::Invalid(
            "a sequence has an empty prompt".into(),
        ));
    }
    let device = model.device();
    let p = batch.iter().map(|s| s.prompt_ids.len()).max().unwrap_or(0);
    let c = batch
        .iter()
        .map(|s| s.completion_ids.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let len = p + c;
    let rows = batch.len();
    let mut ids = vec![0i64; rows * len];
    let mut valid = vec![false; rows * len];
    for (r, s) in batch.iter().enumerate() {
        let row = r * len;
        let offset = p - s.prompt_ids.len();
        for (j, &t) in s.prompt_ids.iter().enumerate() {
            ids[row + offset + j] = i64::from(t);
            valid[row + offset + j] = true;
        }
        for (j, &t) in s.completion_ids.iter().enumerate() {
            ids[row + p + j] = i64::from(t);
            valid[row + p + j] = true;
        }
    }
    let (b, l) = (rows as i64, len as i64);
    let ids = Tensor::from_slice(&ids).view([b, l]).to_device(device);
    let valid = Tensor::from_slice(&valid).view([b, l]).to_device(device);
    let positions = positions_from_mask(&valid);
    let padded = batch
        .iter()
        .any(|s| s.prompt_ids.len() + s.completion_ids.len() != len);
    let attend = Attend::new(&valid, 0, l, padded);
    let hidden = model.forward(&ids, &positions, &attend, None);
    let logits = model.logits(&hidden.narrow(1, p as i64 - 1, c as i64));
    // `[B, C, V]` is the largest activation of a step: no copy of it when T = 1.
    let logits = if temperature == 1.0 {
        logits
    } else {
        logits / temperature
    };
    let targets = ids.narrow(1, p as i64, c as i64);
    // Cross-entropy = fused log-softmax + NLL: one saved `[B, C, V]` for backward, as PyTorch's
    // loss keeps, instead of the several temporaries of logsumexp − gather.
    let vocab = logits.size()[2];
    let logprobs = -logits
        .view([-1, vocab])
        .cross_entropy_loss::<Tensor>(
            &targets.reshape([-1]),
            None,
            tch::Reduction::None,
            -100,
            0.0,
        )
        .view([rows as i64, c as i64]);
    let completion_mask = valid.narrow(1, p as i64, c as i64).to_kind(Kind::Float);
    Ok((logprobs, completion_mask))
}

/// What a learning step sees of a micro-batch besides the current log-probs.
pub struct TokenBatch<'a> {
    /// The sequences.
    pub sequences: &'a [&'a Sequence],
    /// Advantages `[B, 1]`.
    pub advantages: Tensor,
    /// Log-probs under the sampling policy `[B, C]`, when every sequence carries them.
    pub old_logprobs: Option<Tensor>,
    /// Log-probs under the frozen reference model `[B, C]`, when there is one.
    pub ref_logprobs: Option<Tensor>,
    /// Real completion tokens `[B, C]` (1.0) and padding (0.0).
    pub mask: Tensor,
}

/// A per-token loss. The learner averages it over every completion token of the step.
pub trait Objective {
    /// Loss per token `[B, C]` for the current log-probs `[B, C]` (padding is masked out by the
    /// caller). Also returns a per-token KL estimate when the objective has one, for reporting.
    fn token_loss(&self, logprobs: &Tensor, batch: &TokenBatch<'_>) -> (Tensor, Option<Tensor>);
}

/// The policy-gradient surrogate: `-min(ρA, clip(ρ, 1-ε, 1+ε_high)A)` with `ρ` the importance ratio
/// against the sampling policy (1, with the gradient of the log-prob, when on-policy), plus
/// `kl_coef` times the k3 estimate of KL to the reference model. With `A = 1`, no clip and no KL
/// it is maximum likelihood of the completions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyGradient {
    /// Clip range ε of the ratio (`None` = no clipping).
    pub clip_eps: Option<f64>,
    /// Upper clip range ε_high (DAPO's clip-higher; `None` = `clip_eps`).
    pub clip_eps_high: Option<f64>,
    /// Weight of the KL penalty (needs a reference model when > 0).
    pub kl_coef: f64,
}

impl Objective for PolicyGradient {
    #[allow(clippy::assign_op_pattern)] // out of place: tensors in the autograd graph
    fn token_loss(&self, logprobs: &Tensor, batch: &TokenBatch<'_>) -> (Tensor, Option<Tensor>) {
        let baseline = batch
            .old_logprobs
            .as_ref()
            .map_or_else(|| logprobs.detach(), Tensor::shallow_clone);
        let ratio = (logprobs - baseline).exp();
        let unclipped = &ratio * &batch.advantages;
        let surrogate = match self.clip_eps {
            Some(eps) => {
                let high = self.clip_eps_high.unwrap_or(eps);
                unclipped.minimum(&(ratio.clamp(1.0 - eps, 1.0 + high) * &batch.advantages))
            }
            None => unclipped,
        };
        let mut loss = -surrogate;
        let kl = batch.ref_logprobs.as_ref().map(|r| {
            let diff = r - logprobs;
            diff.exp() - diff - 1.0
        });
        if let Some(kl) = &kl
            && self.kl_coef > 0.0
        {
            loss = loss + kl * self.kl_coef;
        }
        (loss, kl)
    }
}

/// Maximum likelihood of the completions (supervised fine-tuning): the per-token loss is
/// `−log p`, so the learner's `loss` is the negative log-likelihood. Its gradient is that of
/// [`PolicyGradient`] with `A = 1`, no clip and no KL; its value is the NLL itself rather than
/// the surrogate's constant −1, which is what SFT reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Likelihood;

impl Objective for Likelihood {
    fn token_loss(&self, logprobs: &Tensor, _batch: &TokenBatch<'_>) -> (Tensor, Option<Tensor>) {
        (-logprobs, None)
    }
}

/// AdamW's hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not to biases or norm weights).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> AdamWConfig {
        AdamWConfig {
            lr: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Gradients of a parameter list, owned here rather than left in the parameters' `.grad()`.
/// Dropping them frees their memory between steps, as PyTorch's `zero_grad(set_to_none=True)`
/// does: tch can zero a `.grad()` but not unset it, and gradients kept allocated through the
/// next forward pass raised the peak memory of a 0.5B-parameter step by 1.5 GB.
#[derive(Default)]
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
}

impl Gradients {
    /// Adds the gradients of `loss` with respect to `params` (which must require gradients).
    /// The backward pass returns them instead of accumulating into `.grad()`.
    pub fn backward(&mut self, loss: &Tensor, params: &[(String, Tensor)]) -> Result<()> {
        let inputs: Vec<&Tensor> = params.iter().map(|(_, p)| p).collect();
        if self.grads.is_empty() {
            self.grads = (0..params.len()).map(|_| None).collect();
        } else if self.grads.len() != params.len() {
            return Err(PolicyError::Invalid(format!(
                "gradients of {} parameters cannot take a backward pass over {}",
                self.grads.len(),
                params.len()
            )));
        }
        let new = Tensor::f_run_backward(&[loss], &inputs, false, false)?;
        for (slot, g) in self.grads.iter_mut().zip(new) {
            if !g.defined() {
                continue;
            }
            match slot {
                Some(sum) => {
                    let _ = sum.g_add_(&g);
                }
                None => *slot = Some(g),
            }
        }
        Ok(())
    }

    /// The gradient of parameter `i`, if a backward pass reached it.
    pub fn get(&self, i: usize) -> Option<&Tensor> {
        self.grads.get(i).and_then(Option::as_ref)
    }

    /// The global L2 norm (0 without gradients).
    pub fn norm(&self) -> f64 {
        tch::no_grad(|| {
            let squares: Vec<Tensor> = self
                .grads
                .iter()
                .flatten()
                .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
                .collect();
            if squares.is_empty() {
                return 0.0;
            }
            Tensor::stack(&squares, 0)
                .sum(Kind::Float)
                .sqrt()
                .double_value(&[])
        })
    }

    /// Multiplies every gradient by `factor` in place.
    pub fn scale(&mut self, factor: f64) {
        tch::no_grad(|| {
            for g in self.grads.iter_mut().flatten() {
                let _ = g.g_mul_scalar_(factor);
            }
        });
    }
}

/// AdamW (decoupled weight decay) over named parameters, with its state exposed for checkpoints.
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    decay: Vec<bool>,
    /// Updates taken.
    pub steps: u64,
}

impl AdamW {
    /// An optimiser for `params`; biases and 1-D weights (norms) get no weight decay.
    pub fn new(params: &[(String, Tensor)], config: AdamWConfig) -> AdamW {
        let zeros = || {
            params
                .iter()
                .map(|(_, p)| p.zeros_like().to_kind(Kind::Float))
                .collect::<Vec<_>>()
        };
        AdamW {
            decay: params
                .iter()
                .map(|(name, p)| p.dim() > 1 && !name.ends_with(".bias"))
                .collect(),
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            params: params
                .iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect(),
            config,
            steps: 0,
        }
    }

    /// One update at learning rate `lr` from `grads` (of [`AdamW::params`], in that order); a
    /// parameter without a gradient is left as it is.
    pub fn step(&mut self, lr: f64, grads: &Gradients) {
        let c = &self.config;
        self.steps += 1;
        let bc1 = 1.0 - c.beta1.powi(self.steps as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.steps as i32)).sqrt();
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter().enumerate() {
                let Some(grad) = grads.get(i) else {
                    continue;
                };
                let g = grad.to_kind(Kind::Float);
                let mut p = p.shallow_clone();
                let (m, v) = (&mut self.exp_avg[i], &mut self.exp_avg_sq[i]);
                let _ = m.lerp_(&g, 1.0 - c.beta1);
                let _ = v
                    .g_mul_scalar_(c.beta2)
                    .addcmul_(&(&g * (1.0 - c.beta2)), &g);
                // One temporary for the update, modified in place from there.
                let mut update = v.sqrt();
                let _ = update.g_div_scalar_(bc2_sqrt).g_add_scalar_(c.eps);
                let _ = update.reciprocal_().g_mul_(m).g_mul_scalar_(lr / bc1);
                if self.decay[i] && c.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let _ = p.g_sub_(&update.to_kind(p.kind()));
            }
        });
    }

    /// The parameters it updates, by name.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The state to checkpoint: `exp_avg.<name>` and `exp_avg_sq.<name>` tensors.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 2);
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("exp_avg.{name}"), self.exp_avg[i].shallow_clone()));
            out.push((
                format!("exp_avg_sq.{name}"),
                self.exp_avg_sq[i].shallow_clone(),
            ));
        }
        out
    }

    /// Restores the moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        tensors: &std::collections::BTreeMap<String, Tensor>,
        steps: u64,
    ) -> Result<()> {
        for (i, (name, p)) in self.params.iter().enumerate() {
            for (prefix, slot) in [
                ("exp_avg", &mut self.exp_avg[i]),
                ("exp_avg_sq", &mut self.exp_avg_sq[i]),
            ] {
                let key = format!("{prefix}.{name}");
                let t = tensors.get(&key).ok_or_else(|| {
                    PolicyError::Invalid(format!("optimizer state has no `{key}`"))
                })?;
                if t.size() != p.size() {
                    return Err(PolicyError::Invalid(format!(
                        "optimizer state `{key}` has shape {:?}, the parameter {:?}",
                        t.size(),
                        p.size()
                    )));
                }
                *slot = t.to_device(p.device()).to_kind(Kind::Float);
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// The learning rate over optimiser steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// Linear warm-up to the peak, then constant.
    Constant {
        /// Steps of linear warm-up.
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Linear warm-up, then cosine decay to `min_ratio` × peak at `total_steps`.
    Cosine {
        /// Steps of linear warm-up.
        #[serde(default)]
        warmup_steps: u64,
        /// Steps at which the decay ends.
        total_steps: u64,
        /// Final learning rate as a fraction of the peak.
        #[serde(default)]
        min_ratio: f64,
    },
}

impl Default for LrSchedule {
    fn default() -> LrSchedule {
        LrSchedule::Constant { warmup_steps: 0 }
    }
}

impl LrSchedule {
    /// The learning rate of update number `step` (0-based); warm-up reaches the peak at its
    /// last step, so no update is taken at a rate of 0.
    pub fn lr(&self, peak: f64, step: u64) -> f64 {
        let (warmup, decay) = match *self {
            LrSchedule::Constant { warmup_steps } => (warmup_steps, None),
            LrSchedule::Cosine {
                warmup_steps,
                total_steps,
                min_ratio,
            } => (warmup_steps, Some((total_steps, min_ratio))),
        };
        if step < warmup {
            return peak * (step + 1) as f64 / warmup as f64;
        }
        match decay {
            None => peak,
            Some((total, min_ratio)) => {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((step - warmup) as f64 / span).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                peak * (min_ratio + (1.0 - min_ratio) * cosine)
            }
        }
    }
}

/// How a [`Learner`] steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// AdamW's hyper-parameters.
    pub optimizer: AdamWConfig,
    /// The learning-rate schedule.
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this (`0` = no clipping).
    pub max_grad_norm: f64,
    /// Sequences per forward/backward pass; gradients accumulate over the step's micro-batches.
    pub micro_batch_size: usize,
    /// Temperature the log-probs are computed at (the sampling temperature).
    pub temperature: f64,
}

impl Default for LearnerConfig {
    fn default() -> LearnerConfig {
        LearnerConfig {
            optimizer: AdamWConfig::default(),
            schedule: LrSchedule::default(),
            max_grad_norm: 1.0,
            micro_batch_size: 8,
            temperature: 1.0,
        }
    }
}

/// What one learning step did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StepStats {
    /// Mean per-token loss.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Completion tokens in the step.
    pub tokens: usize,
    /// Mean per-token log-prob of the completions before the update (the surrogate loss of an
    /// on-policy step is constant, so this is what shows learning).
    pub mean_logprob: f64,
    /// Mean per-token KL to the reference model, when there is one.
    pub kl: Option<f64>,
    /// The gap between the generator's log-probs and the learner's (`|Δ|` per token, before
    /// the update) over the sequences that carry `sampled_logprobs`: mean, max and tokens.
    pub logprob_gap: Option<LogprobGap>,
}

/// How far the log-probs a generator reported are from the learner's own, per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LogprobGap {
    /// Mean `|Δ|`.
    pub mean: f64,
    /// Largest `|Δ|`.
    pub max: f64,
    /// Tokens compared.
    pub tokens: usize,
}

/// Turns batches of scored sequences into AdamW updates of a model's parameters.
pub struct Learner {
    /// How it steps.
    pub config: LearnerConfig,
    /// The optimiser (its state is part of a checkpoint).
    pub optimizer: AdamW,
}

impl Learner {
    /// A learner for `model`, whose trainable parameters start requiring gradients: its LoRA
    /// adapters when it has them (the base stays frozen: no gradients, no moments), else every
    /// parameter.
    pub fn new(model: &Transformer, config: LearnerConfig) -> Learner {
        for (_, p) in model.trainable_parameters() {
            let _ = p.set_requires_grad(true);
        }
        let optimizer = AdamW::new(model.trainable_parameters(), config.optimizer.clone());
        Learner { config, optimizer }
    }

    /// One optimiser step over `sequences`: the objective's per-token loss averaged over all
    /// completion tokens of the step, accumulated over micro-batches, clipped, applied.
    pub fn step(
        &mut self,
        model: &Transformer,
        reference: Option<&Transformer>,
        sequences: &[Sequence],
        objective: &dyn Objective,
    ) -> Result<StepStats> {
        let tokens: usize = sequences.iter().map(|s| s.completion_ids.len()).sum();
        let scale = 1.0 / tokens.max(1) as f64;
        self.step_weighted(
            model,
            reference,
            sequences,
            &vec![scale; sequences.len()],
            objective,
        )
    }

    /// One optimiser step where the loss of each token of sequence `i` is multiplied by
    /// `scales[i]` and everything is summed: the aggregation (token mean, per-sequence sums
    /// over prompts, a constant normaliser) is the caller's choice. A loss or gradient that is
    /// not finite refuses the step: the gradients are dropped and the weights stay as they were.
    pub fn step_weighted(
        &mut self,
        model: &Transformer,
        reference: Option<&Transformer>,
        sequences: &[Sequence],
        scales: &[f64],
        objective: &dyn Objective,
    ) -> Result<StepStats> {
        let mut grads = Gradients::default();
        let mut stats =
            self.accumulate(model, reference, sequences, scales, objective, &mut grads)?;
        let grad_norm = grads.norm();
        if !stats.loss.is_finite() || !grad_norm.is_finite() {
            return Err(PolicyError::Invalid(format!(
                "the step is refused: loss {}, gradient norm {grad_norm} (not finite); the weights are unchanged",
                stats.loss
            )));
        }
        let max = self.config.max_grad_norm;
        if max > 0.0 && grad_norm > max {
            grads.scale(max / (grad_norm + 1e-6));
        }
        let lr = self
            .config
            .schedule
            .lr(self.config.optimizer.lr, self.optimizer.steps);
        self.optimizer.step(lr, &grads);
        stats.grad_norm = grad_norm;
        stats.lr = lr;
        Ok(stats)
    }

    /// The forward and backward passes of [`Learner::step_weighted`] without the update: the
    /// gradients of the weighted loss with respect to the optimiser's parameters are added to
    /// `grads`. Returns the loss, token count, mean log-prob and KL (`grad_norm` and `lr` 0).
    pub fn accumulate(
        &self,
        model: &Transformer,
        reference: Option<&Transformer>,
        sequences: &[Sequence],
        scales: &[f64],
        objective: &dyn Objective,
        grads: &mut Gradients,
    ) -> Result<StepStats> {
        let tokens: usize = sequences.iter().map(|s| s.completion_ids.len()).sum();
        if tokens == 0 {
            return Err(PolicyError::Invalid(
                "a learning step needs at least one completion token".into(),
            ));
        }
        if scales.len() != sequences.len() || scales.iter().any(|s| !s.is_finite()) {
            return Err(PolicyError::Invalid(format!(
                "{} loss scales for {} sequences, or one is not finite",
                scales.len(),
                sequences.len()
            )));
        }
        let device = model.device();
        let micro = self.config.micro_batch_size.max(1);
        // Micro-batches of similar lengths: each is padded to its longest prompt and longest
        // completion, so grouping by length cuts the padded positions (a third of a step on the
        // search demo's mixed lengths) without changing the sum the gradient is of.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        if micro < sequences.len() {
            order.sort_by_key(|&i| {
                let s = &sequences[i];
                (s.prompt_ids.len() + s.completion_ids.len(), i)
            });
        }
        // Adapter dropout applies to the learner's passes only, and is off again afterwards
        // (also when a pass fails).
        struct Training<'a>(&'a Transformer);
        impl Drop for Training<'_> {
            fn drop(&mut self) {
                self.0.set_training(false);
            }
        }
        model.set_training(true);
        let _training = Training(model);
        let (mut loss_sum, mut logprob_sum, mut kl_sum, mut has_kl) = (0.0, 0.0, 0.0, false);
        let mut gap: Option<LogprobGap> = None;
        for indices in order.chunks(micro) {
            let refs: Vec<&Sequence> = indices.iter().map(|&i| &sequences[i]).collect();
            let chunk_scales: Vec<f64> = indices.iter().map(|&i| scales[i]).collect();
            let (logprobs, mask) = sequence_logprobs(model, &refs, self.config.temperature)?;
            let c = mask.size()[1];
            let batch = TokenBatch {
                advantages: Tensor::from_slice(
                    &refs.iter().map(|s| s.advantage).collect::<Vec<_>>(),
                )
                .view([refs.len() as i64, 1])
                .to_device(device),
                old_logprobs: old_logprobs(&refs, c)?.map(|t| t.to_device(device)),
                ref_logprobs: match reference {
                    Some(r) => Some(
                        tch::no_grad(|| sequence_logprobs(r, &refs, self.config.temperature))?
                            .0
                            .to_device(device),
                    ),
                    None => None,
                },
                mask,
                sequences: &refs,
            };
            let (token_loss, kl) = objective.token_loss(&logprobs, &batch);
            let weights =
                Tensor::from_slice(&chunk_scales.iter().map(|&w| w as f32).collect::<Vec<_>>())
                    .view([refs.len() as i64, 1])
                    .to_device(device);
            let loss = (token_loss * &batch.mask * weights).sum(Kind::Float);
            grads.backward(&loss, self.optimizer.params())?;
            loss_sum += loss.double_value(&[]);
            logprob_sum += (logprobs.detach() * &batch.mask)
                .sum(Kind::Float)
                .double_value(&[]);
            if let Some((sum, max, tokens)) = sampled_gap(&logprobs, &refs, c)? {
                let g = gap.get_or_insert_with(LogprobGap::default);
                g.mean += sum;
                g.max = g.max.max(max);
                g.tokens += tokens;
            }
            if let Some(kl) = kl {
                has_kl = true;
                kl_sum += (kl.detach() * &batch.mask)
                    .sum(Kind::Float)
                    .double_value(&[]);
            }
        }
        Ok(StepStats {
            loss: loss_sum,
            grad_norm: 0.0,
            lr: 0.0,
            tokens,
            mean_logprob: logprob_sum / tokens as f64,
            kl: has_kl.then(|| kl_sum / tokens as f64),
            logprob_gap: gap.map(|g| LogprobGap {
                mean: g.mean / g.tokens.max(1) as f64,
                ..g
            }),
        })
    }
}

/// The sum and max of `|logprobs − sampled|` over the tokens of the sequences of `chunk` that
/// carry `sampled_logprobs`, and how many tokens that is (`None` when none does).
fn sampled_gap(
    logprobs: &Tensor,
    chunk: &[&Sequence],
    c: i64,
) -> Result<Option<(f64, f64, usize)>> {
    if chunk.iter().all(|s| s.sampled_logprobs.is_none()) {
        return Ok(None);
    }
    let mut sampled = vec![0f32; chunk.len() * c as usize];
    let mut mask = vec![0f32; chunk.len() * c as usize];
    let mut tokens = 0;
    for (r, s) in chunk.iter().enumerate() {
        let Some(values) = s.sampled_logprobs.as_deref() else {
            continue;
        };
        if values.len() != s.completion_ids.len() {
            return Err(PolicyError::Invalid(format!(
                "a sequence has {} completion tokens but {} sampled log-probs",
                s.completion_ids.len(),
                values.len()
            )));
        }
        let row = r * c as usize;
        sampled[row..row + values.len()].copy_from_slice(values);
        mask[row..row + values.len()].fill(1.0);
        tokens += values.len();
    }
    let shape = [chunk.len() as i64, c];
    let device = logprobs.device();
    let sampled = Tensor::from_slice(&sampled).view(shape).to_device(device);
    let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
    let diff =
        ((logprobs.detach().to_kind(Kind::Float) - sampled).abs() * mask).to_device(Device::Cpu);
    Ok(Some((
        diff.sum(Kind::Double).double_value(&[]),
        diff.max().double_value(&[]),
        tokens,
    )))
}

/// `[B, C]` old log-probs, zero-padded, when every sequence carries them.
fn old_logprobs(chunk: &[&Sequence], c: i64) -> Result<Option<Tensor>> {
    if !chunk.iter().all(|s| s.old_logprobs.is_some()) {
        return Ok(None);
    }
    let mut flat = vec![0f32; chunk.len() * c as usize];
    for (r, s) in chunk.iter().enumerate() {
        let old = s.old_logprobs.as_deref().unwrap_or_default();
        if old.len() != s.completion_ids.len() {
            return Err(PolicyError::Invalid(format!(
                "a sequence has {} completion tokens but {} old log-probs",
                s.completion_ids.len(),
                old.len()
            )));
        }
        flat[r * c as usize..r * c as usize + old.len()].copy_from_slice(old);
    }
    Ok(Some(
        Tensor::from_slice(&flat)
            .view([chunk.len() as i64, c])
            .to_device(Device::Cpu),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_holds_or_decays() {
        let constant = LrSchedule::Constant { warmup_steps: 4 };
        assert_eq!(constant.lr(1.0, 0), 0.25);
        assert_eq!(constant.lr(1.0, 3), 1.0);
        assert_eq!(constant.lr(1.0, 100), 1.0);
        let cosine = LrSchedule::Cosine {
            warmup_steps: 2,
            total_steps: 12,
            min_ratio: 0.1,
        };
        assert_eq!(cosine.lr(2.0, 1), 2.0);
        assert!((cosine.lr(2.0, 2) - 2.0).abs() < 1e-12);
        assert!((cosine.lr(2.0, 7) - 2.0 * (0.1 + 0.9 * 0.5)).abs() < 1e-12);
        assert!((cosine.lr(2.0, 12) - 0.2).abs() < 1e-12);
        assert!((cosine.lr(2.0, 50) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_step() {
        // After one step Adam moves every coordinate by lr·sign(g) (up to eps), and decoupled
        // decay shrinks matrices but not biases.
        let w = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 4.0])
            .view([2, 2])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32, 0.5]).set_requires_grad(true);
        let params = vec![
            ("m.weight".to_string(), w.shallow_clone()),
            ("m.bias".to_string(), b.shallow_clone()),
        ];
        let mut opt = AdamW::new(
            &params,
            AdamWConfig {
                lr: 0.1,
                weight_decay: 0.5,
                ..AdamWConfig::default()
            },
        );
        let loss = || {
            (&w * Tensor::from_slice(&[1.0f32, -1.0, 2.0, 0.0]).view([2, 2])).sum(Kind::Float)
                + (&b * 3.0).sum(Kind::Float)
        };
        let mut grads = Gradients::default();
        grads.backward(&loss(), &params).unwrap();
        // A second backward pass adds to the first, and `.grad()` is left untouched.
        grads.backward(&loss(), &params).unwrap();
        let g = Vec::<f32>::try_from(grads.get(0).unwrap().flatten(0, -1)).unwrap();
        assert_eq!(g, [2.0, -2.0, 4.0, 0.0]);
        assert!(!w.grad().defined());
        // Another parameter list cannot add to these.
        let err = grads.backward(&loss(), &params[..1]).unwrap_err();
        assert!(err.to_string().contains("2 parameters"), "{err}");
        opt.step(0.1, &grads);
        let w_after = Vec::<f32>::try_from(w.detach().flatten(0, -1)).unwrap();
        let decay = 1.0 - 0.1 * 0.5;
        let expect = [
            1.0 * decay - 0.1,
            -2.0 * decay + 0.1,
            3.0 * decay - 0.1,
            4.0 * decay,
        ];
        for (got, want) in w_after.iter().zip(expect) {
            assert!((got - want).abs() < 1e-5, "{w_after:?} vs {expect:?}");
        }
        let b_after = Vec::<f32>::try_from(b.detach()).unwrap();
        assert!(
            b_after.iter().all(|v| (v - 0.4).abs() < 1e-5),
            "{b_after:?}"
        );
        assert_eq!(opt.steps, 1);
    }

    #[test]
    fn clipped_surrogate_and_k3_kl() {
        let lp = Tensor::from_slice(&[0.0f32, 0.0]).view([1, 2]);
        let seq = Sequence::default();
        let refs = [&seq];
        let batch = TokenBatch {
            sequences: &refs,
            advantages: Tensor::from_slice(&[2.0f32]).view([1, 1]),
            // ratios e^{0.5} and e^{-0.5}
            old_logprobs: Some(Tensor::from_slice(&[-0.5f32, 0.5]).view([1, 2])),
            ref_logprobs: Some(Tensor::from_slice(&[0.0f32, 1.0]).view([1, 2])),
            mask: Tensor::ones([1, 2], (Kind::Float, Device::Cpu)),
        };
        let pg = PolicyGradient {
            clip_eps: Some(0.2),
            clip_eps_high: None,
            kl_coef: 0.0,
        };
        let (loss, kl) = pg.token_loss(&lp, &batch);
        let loss = Vec::<f32>::try_from(loss.flatten(0, -1)).unwrap();
        // A > 0: min(ρA, clip(ρ)A) = 1.2·2 for ρ = e^0.5, e^-0.5·2 for the other.
        assert!(
            (loss[0] + 2.4).abs() < 1e-5 && (loss[1] + 2.0 * (-0.5f32).exp()).abs() < 1e-5,
            "{loss:?}"
        );
        let kl = Vec::<f32>::try_from(kl.unwrap().flatten(0, -1)).unwrap();
        assert!(
            kl[0].abs() < 1e-7 && (kl[1] - (1f32.exp() - 2.0)).abs() < 1e-5,
            "{kl:?}"
        );
        // Clip-higher: the ratio e^0.5 ≈ 1.65 is cut at 1 + 0.28 instead of 1.2; with A < 0
        // the lower side is what binds: max(ρ, 1 - ε) for ρ = e^-0.5 ≈ 0.61 is 0.8.
        let dapo = PolicyGradient {
            clip_eps_high: Some(0.28),
            ..pg
        };
        let (loss, _) = dapo.token_loss(&lp, &batch);
        let loss = Vec::<f32>::try_from(loss.flatten(0, -1)).unwrap();
        assert!((loss[0] + 1.28 * 2.0).abs() < 1e-5, "{loss:?}");
        let negative = TokenBatch {
            advantages: Tensor::from_slice(&[-1.0f32]).view([1, 1]),
            ..batch
        };
        let (loss, _) = dapo.token_loss(&lp, &negative);
        let loss = Vec::<f32>::try_from(loss.flatten(0, -1)).unwrap();
        assert!(
            (loss[0] - 0.5f32.exp()).abs() < 1e-5 && (loss[1] - 0.8).abs() < 1e-5,
            "{loss:?}"
        );
    }

    #[test]
    fn likelihood_has_the_gradient_of_the_surrogate_with_unit_advantage() {
        let values = [-0.3f32, -2.0, -0.01, -5.5, -1.2, -0.7];
        let seq = Sequence::default();
        let refs = [&seq, &seq];
        let batch = TokenBatch {
            sequences: &refs,
            advantages: Tensor::ones([2, 1], (Kind::Float, Device::Cpu)),
            old_logprobs: None,
            ref_logprobs: None,
            mask: Tensor::ones([2, 3], (Kind::Float, Device::Cpu)),
        };
        let gradient = |objective: &dyn Objective| {
            let lp = Tensor::from_slice(&values)
                .view([2, 3])
                .set_requires_grad(true);
            let (loss, kl) = objective.token_loss(&lp, &batch);
            assert!(kl.is_none());
            let total = (loss * &batch.mask).sum(Kind::Float);
            total.backward();
            (
                total.double_value(&[]),
                Vec::<f32>::try_from(lp.grad().flatten(0, -1)).unwrap(),
            )
        };
        let (nll, nll_grad) = gradient(&Likelihood);
        let (surrogate, pg_grad) = gradient(&PolicyGradient::default());
        assert_eq!(nll_grad, pg_grad);
        assert!(nll_grad.iter().all(|g| *g == -1.0), "{nll_grad:?}");
        // The values differ: the NLL is reported, the on-policy surrogate is −(tokens).
        let sum: f64 = values.iter().map(|v| -f64::from(*v)).sum();
        assert!(
            (nll - sum).abs() < 1e-5 && surrogate == -6.0,
            "{nll} {surrogate}"
        );
    }
}
