//! `learn.sft`: supervised fine-tuning, a warm start before RL. A sink that turns each step's
//! samples (the dataset's stored responses, from `generate.offline`) into one AdamW update of
//! the likelihood of each response given its prompt, writes a `metrics` row per step and saves
//! checkpoints exactly as `learn.pg` does, so `generate.policy` loads the result and
//! `tandem run --resume` continues a stopped run.
//!
//! The prompt is encoded from the same parameters and by the same code as `generate.policy`'s,
//! so the model learns to answer token-for-token the prompts it is sampled from later. The
//! target is the response's tokens followed by the tokenizer's EOS (`<|im_end|>` for ChatML), so
//! generation learns to stop. The loss is the mean over the step's response tokens of −log p
//! (TRL's SFTTrainer on completions only): prompt tokens are never scored.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Deserializer};
use tandem_schemas::{Facet, Facets, Group, StreamKind};

use super::trained::{self, Saving, TrainedModel, params};
use crate::contract::{BuildContext, Built, Sink, StepContext};
use crate::policy::{
    self, AdamWConfig, LearnerConfig, Likelihood, LoraConfig, LrSchedule, PromptFormat, Sequence,
    Tokenizer,
};
use crate::prompt::{NamedTemplate, PromptParams};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `learn.sft`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// The HF model directory to fine-tune (relative paths are from where `tandem` runs).
    pub model: PathBuf,
    /// Device of the model (default `cpu`).
    #[serde(default = "trained::cpu")]
    pub device: String,
    /// Torch intra-op threads (0 = libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// Render the prompt with the model's chat template, as `generate.policy` does (default
    /// true).
    #[serde(default = "yes")]
    pub chat: bool,
    /// One of the paper's templates by name, as in `generate.policy`.
    #[serde(default)]
    pub template: Option<NamedTemplate>,
    /// A system message (with `chat`), as in `generate.policy`.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// The user message; `{question}` is replaced by the question, as in `generate.policy`.
    #[serde(default)]
    pub prompt_template: Option<String>,
    /// End each target with the tokenizer's EOS token, so generation learns to stop (default
    /// true).
    #[serde(default = "yes")]
    pub append_eos: bool,
    /// AdamW: `lr` (default 1e-4 here, a fine-tuning rate), `beta1`, `beta2`, `eps`,
    /// `weight_decay` (default 0.01; none on biases and norms).
    #[serde(default = "sft_optimizer", deserialize_with = "sft_optimizer_from")]
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
    /// Save a checkpoint every N steps (default 0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Train LoRA adapters on the frozen model instead of every weight: `{r, alpha, rslora,
    /// dropout, targets}` (default: none). Checkpoints are then PEFT adapters plus the
    /// learner's state (`tandem model merge` makes a whole model of one).
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

fn yes() -> bool {
    true
}

/// The default learning rate of fine-tuning.
const SFT_LR: f64 = 1e-4;

fn sft_optimizer() -> AdamWConfig {
    AdamWConfig {
        lr: SFT_LR,
        ..AdamWConfig::default()
    }
}

/// An `optimizer` mapping whose missing `lr` is SFT's default, not `learn.pg`'s.
fn sft_optimizer_from<'de, D: Deserializer<'de>>(deserializer: D) -> Result<AdamWConfig, D::Error> {
    let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
    map.entry("lr").or_insert(SFT_LR.into());
    AdamWConfig::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)
}

impl SftConfig {
    /// The learner, loaded and checked: what [`StageConfig::build`] wraps.
    pub fn learner(self, ctx: &BuildContext) -> Result<SftLearner> {
        let device = trained::check_common(&self.device, &self.optimizer)?;
        trained::check_lora(self.lora.as_ref())?;
        policy::set_threads(self.threads);
        let model_dir = ctx.resolve(&self.model);
        let tokenizer =
            Tokenizer::from_dir(&model_dir).map_err(|e| params("model", e.to_string()))?;
        let format = PromptParams {
            chat: self.chat,
            template: self.template,
            system_prompt: self.system_prompt.clone(),
            prompt_template: self.prompt_template.clone(),
        }
        .format(&tokenizer, &model_dir)?;
        let checkpoint = ctx
            .run
            .resume
            .as_ref()
            .and_then(|r| r.checkpoint.as_deref());
        let (start_dir, version) = policy::start_point(&model_dir, checkpoint)
            .map_err(|e| StageError::Run(format!("resuming: {e}")))?;
        let model = trained::load_trainable(
            &model_dir,
            &start_dir,
            &device,
            self.lora.as_ref(),
            ctx.run.seed,
        )?;
        let eos = match self.append_eos {
            false => None,
            true => Some(
                tokenizer
                    .eos_token_id()
                    .or_else(|| model.config.eos_token_ids.first().copied())
                    .ok_or_else(|| {
                        params(
                            "append_eos",
                            format!(
                                "{} names no EOS token; set `append_eos: false`",
                                model_dir.display()
                            ),
                        )
                    })?,
            ),
        };
        let saving = Saving {
            tokenizer_dir: model_dir,
            dtype: model.config.dtype,
            every: self.checkpoint_every,
            published: None,
        };
        let config = LearnerConfig {
            optimizer: self.optimizer,
            schedule: self.schedule,
            max_grad_norm: self.max_grad_norm,
            micro_batch_size: self.micro_batch_size.max(1),
            temperature: 1.0,
        };
        Ok(SftLearner {
            trained: TrainedModel::new(model, config, version, saving, ctx)?,
            tokenizer,
            format,
            eos,
        })
    }
}

impl StageConfig for SftConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Sink(Box::new(self.learner(ctx)?)))
    }
}

/// The fine-tuner.
pub struct SftLearner {
    trained: TrainedModel,
    tokenizer: Tokenizer,
    format: PromptFormat,
    eos: Option<u32>,
}

impl SftLearner {
    /// The prompt tokens of `question`: those `generate.policy` encodes with the same params.
    pub fn prompt_ids(&self, question: &str) -> policy::Result<Vec<u32>> {
        self.format.encode(&self.tokenizer, question)
    }

    /// The target tokens of a response: its text's tokens, then EOS (with `append_eos`).
    pub fn response_ids(&self, text: &str) -> policy::Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode(text, false)?;
        ids.extend(self.eos);
        Ok(ids)
    }

    /// The sequences of the step's usable samples; a sample that cannot be learned from (no
    /// text, a prompt or response the tokenizer fails on) gets an error row on its group.
    fn batch(&self, groups: &mut [Group], stage: &str) -> Vec<Sequence> {
        let mut sequences = Vec::new();
        for group in groups.iter_mut().filter(|g| g.errors.is_empty()) {
            let prompt_ids = match self.prompt_ids(&group.prompt.question) {
                Ok(ids) if !ids.is_empty() => ids,
                Ok(_) => {
                    group.push_error(stage, None, "empty_prompt", "the prompt has no tokens");
                    continue;
                }
                Err(e) => {
                    group.push_error(stage, None, "prompt", e.to_string());
                    continue;
                }
            };
            let mut failed = Vec::new();
            for sample in &group.samples {
                if sample.text.is_empty() {
                    failed.push((
                        sample.sample_idx,
                        "empty_response",
                        "the response is empty".into(),
                    ));
                    continue;
                }
                match self.response_ids(&sample.text) {
                    Ok(completion_ids) => sequences.push(Sequence {
                        prompt_ids: prompt_ids.clone(),
                        completion_ids,
                        advantage: 1.0,
                        old_logprobs: None,
                        sampled_logprobs: None,
                    }),
                    Err(e) => failed.push((sample.sample_idx, "response", e.to_string())),
                }
            }
            for (sample_idx, kind, reason) in failed {
                group.push_error(stage, Some(sample_idx), kind, reason);
            }
        }
        sequences
    }
}

impl Sink for SftLearner {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }

    fn updates_policy(&self) -> bool {
        true
    }

    fn streams(&self) -> Vec<(String, StreamKind)> {
        vec![("metrics".into(), StreamKind::Metrics)]
    }

    fn consume(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let errors_before: usize = groups.iter().map(|g| g.errors.len()).sum();
        let sequences = self.batch(groups, &ctx.stage_id);
        let started = Instant::now();
        let mut values = std::collections::BTreeMap::new();
        if sequences.is_empty() {
            values.insert("updated".into(), 0.0);
        } else {
            let trained = &mut self.trained;
            let stats = trained
                .learner
                .step(&trained.model, None, &sequences, &Likelihood)
                .map_err(|e| StageError::Run(format!("step {}: {e}", ctx.step)))?;
            trained.version += 1;
            let seconds = started.elapsed().as_secs_f64();
            values.extend(trained::update_figures(&stats, seconds, 1));
        }
        let errors: usize = groups.iter().map(|g| g.errors.len()).sum();
        values.extend([
            ("prompts".to_owned(), groups.len() as f64),
            ("sequences".to_owned(), sequences.len() as f64),
            (
                "skipped_samples".to_owned(),
                (errors - errors_before) as f64,
            ),
        ]);
        trained::add_stage_seconds(&mut values, ctx, started);
        let record = self.trained.end_step(ctx, values)?;
        tracing::info!(
            step = ctx.step,
            version = record.policy_version,
            loss = record.values.get("loss").copied().unwrap_or(f64::NAN),
            "sft"
        );
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.trained.finish()
    }
}
