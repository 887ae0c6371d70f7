//! What the learner sinks share: the model being trained with its optimiser and version, its
//! checkpoints (`checkpoints/step-<n>/`, HF directory plus trainer state), resuming from one,
//! and the per-step `metrics` row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tandem_schemas::MetricsRecord;
use tandem_schemas::io::Rows;
use tandem_schemas::layout::RunLayout;

use crate::contract::{BuildContext, StepContext};
use crate::policy::{
    self, AdamWConfig, DeviceSpec, Learner, LearnerConfig, LoraConfig, LoraInit, StepStats,
    TrainerState, Transformer, WeightDtype,
};
use crate::{Result, StageError};

/// Serde default: a gradient-norm clip of 1.
pub(crate) fn one() -> f64 {
    1.0
}

/// Serde default: sequences per forward/backward pass.
pub(crate) fn eight() -> usize {
    8
}

/// Serde default: the learner's device.
pub(crate) fn cpu() -> String {
    "cpu".into()
}

/// A parameter error at `path` (relative to the stage's `params`).
pub(crate) fn params(path: &str, message: String) -> StageError {
    StageError::Params {
        path: path.into(),
        message,
    }
}

/// The learner's device, and a learning rate that can train.
pub(crate) fn check_common(device: &str, optimizer: &AdamWConfig) -> Result<DeviceSpec> {
    if !(optimizer.lr.is_finite() && optimizer.lr > 0.0) {
        return Err(params(
            "optimizer.lr",
            format!("must be a finite number > 0, got {}", optimizer.lr),
        ));
    }
    device
        .parse()
        .map_err(|e: policy::PolicyError| params("device", e.to_string()))
}

/// The f32 copy of the model in `dir` a learner trains (a checkpoint's f32 master weights when
/// it was saved below f32); `what` names it in errors.
pub(crate) fn load_f32(what: &str, dir: &Path, device: &DeviceSpec) -> Result<Transformer> {
    Transformer::load(dir, device, Some(WeightDtype::F32))
        .and_then(|m| policy::load_master_weights(dir, &m).map(|()| m))
        .map_err(|e| {
            params(
                "",
                format!("loading the {what} from {}: {e}", dir.display()),
            )
        })
}

/// A `lora` option that can train: its error names the field below `lora`.
pub(crate) fn check_lora(lora: Option<&LoraConfig>) -> Result<()> {
    match lora.map(LoraConfig::validate) {
        Some(Err((field, message))) => Err(params(&format!("lora.{field}"), message)),
        _ => Ok(()),
    }
}

/// The model a learner trains, starting from `start_dir` (`model_dir`, or the checkpoint a
/// resumed run continues from).
///
/// Without `lora`, the whole model in f32 (see [`load_f32`]). With `lora`, the base of
/// `model_dir` frozen in the device's dtype (f32 on CPU, bf16 on CUDA) with f32 adapters: new
/// ones (PEFT's init, seeded by `seed`), or a resumed checkpoint's, which must have the same
/// rank, alpha and targets.
pub(crate) fn load_trainable(
    model_dir: &Path,
    start_dir: &Path,
    device: &DeviceSpec,
    lora: Option<&LoraConfig>,
    seed: u64,
) -> Result<Transformer> {
    let resumed_adapter = policy::is_adapter_dir(start_dir);
    let Some(lora) = lora else {
        if resumed_adapter {
            return Err(params(
                "lora",
                format!(
                    "{} holds a LoRA adapter: resume it with the `lora` options it was trained with",
                    start_dir.display()
                ),
            ));
        }
        return load_f32("model", start_dir, device);
    };
    let fail = |e: policy::PolicyError| {
        params(
            "",
            format!("loading the model from {}: {e}", model_dir.display()),
        )
    };
    let mut model = Transformer::load(model_dir, device, None).map_err(fail)?;
    if resumed_adapter {
        let saved = model
            .load_adapter(start_dir)
            .map_err(|e| StageError::Run(format!("resuming from {}: {e}", start_dir.display())))?;
        if !saved.same_shape(lora) {
            return Err(params(
                "lora",
                format!(
                    "{} holds an adapter with r = {}, alpha = {}, rslora = {}, targets {:?}; the run asks for r = {}, alpha = {}, rslora = {}, targets {:?}",
                    start_dir.display(),
                    saved.r,
                    saved.alpha(),
                    saved.rslora,
                    saved.target_set(),
                    lora.r,
                    lora.alpha(),
                    lora.rslora,
                    lora.target_set()
                ),
            ));
        }
    } else if start_dir != model_dir {
        return Err(params(
            "lora",
            format!(
                "{} is a full checkpoint, not a LoRA adapter: a LoRA run cannot continue it",
                start_dir.display()
            ),
        ));
    } else {
        model
            .attach_lora(lora, LoraInit::Peft { seed })
            .map_err(fail)?;
    }
    Ok(model)
}

/// How a [`TrainedModel`] saves itself.
pub(crate) struct Saving {
    /// Where the tokenizer files copied into each checkpoint come from; also the base model
    /// an adapter checkpoint names (`base_model_name_or_path`).
    pub tokenizer_dir: PathBuf,
    /// The dtype of `model.safetensors` (f32 master weights are kept besides a lower one).
    pub dtype: WeightDtype,
    /// Also checkpoint every N steps (0: only at the end).
    pub every: u64,
    /// With `max_staleness > 0`: the hub whose kept publications each checkpoint also stores
    /// (`published/step-<n>.safetensors`), because generation of the steps right after a resume
    /// samples from versions older than the checkpoint's.
    pub published: Option<std::sync::Arc<crate::policy::PolicyHub>>,
}

/// The model a learner sink trains, with its optimiser, version and checkpoints.
pub(crate) struct TrainedModel {
    pub model: Transformer,
    pub learner: Learner,
    /// Bumped by every update.
    pub version: u64,
    seed: u64,
    saving: Saving,
    last_step: Option<u64>,
    run_dir: Option<PathBuf>,
}

impl TrainedModel {
    /// A learner for `model` (holding weights of `version`); a resumed run restores the
    /// optimiser moments and counters of its checkpoint.
    pub fn new(
        model: Transformer,
        config: LearnerConfig,
        version: u64,
        saving: Saving,
        ctx: &BuildContext,
    ) -> Result<TrainedModel> {
        let mut learner = Learner::new(&model, config);
        if let Some(checkpoint) = ctx.run.resume.as_ref().and_then(|r| r.checkpoint.as_ref()) {
            policy::load_trainer_state(checkpoint, &mut learner).map_err(|e| {
                StageError::Run(format!("resuming from {}: {e}", checkpoint.display()))
            })?;
        }
        Ok(TrainedModel {
            model,
            learner,
            version,
            seed: ctx.run.seed,
            saving,
            last_step: None,
            run_dir: None,
        })
    }

    /// Writes `checkpoints/step-<step>` (nothing outside a run).
    fn checkpoint(&self, step: u64) -> Result<()> {
        let Some(run_dir) = &self.run_dir else {
            return Ok(());
        };
        let dir = RunLayout::new(run_dir.clone()).checkpoint(step);
        let fail = |e: policy::PolicyError| {
            StageError::Run(format!("writing checkpoint {}: {e}", dir.display()))
        };
        let dtype = if self.model.lora().is_some() {
            // A LoRA run's checkpoint is the adapter (f32) and the learner's state.
            let base = self.saving.tokenizer_dir.to_string_lossy();
            policy::save_adapter(&self.model, &base, Some(&self.saving.tokenizer_dir), &dir)
                .map_err(fail)?;
            WeightDtype::F32
        } else {
            policy::save_pretrained(
                &self.model,
                &self.saving.tokenizer_dir,
                &dir,
                self.saving.dtype,
            )
            .map_err(fail)?;
            self.saving.dtype
        };
        if let Some(hub) = &self.saving.published {
            let published = dir.join(policy::PUBLISHED_DIR);
            std::fs::create_dir_all(&published)
                .map_err(|e| fail(policy::PolicyError::io(&published, e)))?;
            for kept in hub.kept_steps() {
                if let Some(bytes) = hub.export(kept).map_err(fail)? {
                    let path = published.join(format!("step-{kept}.safetensors"));
                    let tmp = policy::tmp_name(&path);
                    std::fs::write(&tmp, bytes)
                        .and_then(|()| std::fs::rename(&tmp, &path))
                        .map_err(|e| fail(policy::PolicyError::io(&path, e)))?;
                }
            }
        }
        let state = TrainerState {
            optimizer_steps: self.learner.optimizer.steps,
            step: step + 1,
            policy_version: self.version,
            seed: self.seed,
        };
        policy::save_trainer_state(&dir, &self.model, dtype, &self.learner, &state).map_err(fail)
    }

    /// Ends step `ctx.step`: adds where the step's time went to `values` (`seconds.<stage>` for
    /// every earlier stage, `seconds.step` from feeding the step until now), writes the metrics
    /// row, and checkpoints when one is due. Returns the row.
    pub fn end_step(
        &mut self,
        ctx: &StepContext,
        values: BTreeMap<String, f64>,
    ) -> Result<MetricsRecord> {
        self.run_dir = ctx.run_dir.as_deref().map(Path::to_path_buf);
        let record = MetricsRecord {
            run_id: ctx.run_id.to_string(),
            step: ctx.step,
            policy_version: self.version,
            values,
        };
        if let Some(run_dir) = &ctx.run_dir {
            let path = RunLayout::new(run_dir.to_path_buf()).part("metrics", ctx.step, 0);
            Rows::Metrics(vec![record.clone()])
                .write_part(&path)
                .map_err(|e| StageError::Run(format!("writing {}: {e}", path.display())))?;
        }
        self.last_step = Some(ctx.step);
        let every = self.saving.every;
        if every > 0 && (ctx.step + 1).is_multiple_of(every) {
            self.checkpoint(ctx.step)?;
        }
        Ok(record)
    }

    /// The final checkpoint, unless the last step already wrote it.
    pub fn finish(&mut self) -> Result<()> {
        let every = self.saving.every;
        match self.last_step {
            Some(step) if every == 0 || !(step + 1).is_multiple_of(every) => self.checkpoint(step),
            _ => Ok(()),
        }
    }
}

/// The figures of an update that took `seconds` for `epochs` passes over the batch.
pub(crate) fn update_figures(stats: &StepStats, seconds: f64, epochs: usize) -> Vec<(String, f64)> {
    let mut out = vec![
        ("updated".to_owned(), 1.0),
        ("loss".to_owned(), stats.loss),
        ("grad_norm".to_owned(), stats.grad_norm),
        ("lr".to_owned(), stats.lr),
        ("tokens".to_owned(), stats.tokens as f64),
        ("mean_logprob".to_owned(), stats.mean_logprob),
        ("learn_seconds".to_owned(), seconds),
        (
            "learn_tokens_per_second".to_owned(),
            (stats.tokens * epochs) as f64 / seconds.max(1e-9),
        ),
    ];
    if let Some(kl) = stats.kl {
        out.push(("kl".into(), kl));
    }
    if let Some(gap) = stats.logprob_gap {
        out.push(("logprob_gap_mean".into(), gap.mean));
        out.push(("logprob_gap_max".into(), gap.max));
        out.push(("logprob_gap_tokens".into(), gap.tokens as f64));
    }
    out
}

/// Where the step's time went: `seconds.<stage>` for each earlier stage, and `seconds.step`,
/// the wall time from feeding the step until now (the learner started at `started`). Returns
/// that wall time.
pub(crate) fn add_stage_seconds(
    values: &mut BTreeMap<String, f64>,
    ctx: &StepContext,
    started: Instant,
) -> Option<f64> {
    let mut wall = None;
    for (stage, seconds) in &ctx.stage_seconds {
        if stage == "step" {
            let step = seconds + started.elapsed().as_secs_f64();
            values.insert("seconds.step".into(), step);
            wall = Some(step);
        } else {
            values.insert(format!("seconds.{stage}"), *seconds);
        }
    }
    wall
}
