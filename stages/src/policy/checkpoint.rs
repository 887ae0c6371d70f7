//! Checkpoints out: a HF model directory transformers loads unchanged, plus the learner's state.
//!
//! A checkpoint is written into a temporary sibling directory and renamed into place, so a
//! reader (or a resume after a crash) never sees half of one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::WeightDtype;
use super::lora::{self, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use super::model::Transformer;
use super::train::Learner;
use super::{PolicyError, Result, weights};

/// Tokenizer and generation files copied from the source model directory when present.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Optimiser moments, next to the model in a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Step counters and seeds, next to the model in a checkpoint; written last, so a checkpoint
/// that has it is whole.
pub const STATE_FILE: &str = "trainer_state.json";
/// The f32 weights a checkpoint keeps besides a lower-precision `model.safetensors`, so a
/// resumed run continues from exactly the weights the learner had.
pub const MASTER_FILE: &str = "master.safetensors";

/// Writes `model` as a HF directory at `out`: `config.json`, `model.safetensors` (HF tensor
/// names; a tied output projection is stored once, as the embedding) in `dtype`, and the
/// tokenizer files of `tokenizer_dir`. An existing `out` is replaced.
pub fn save_pretrained(
    model: &Transformer,
    tokenizer_dir: &Path,
    out: &Path,
    dtype: WeightDtype,
) -> Result<()> {
    write_dir(out, |tmp| {
        let config = serde_json::to_string_pretty(&model.config.to_json(dtype)).unwrap_or_default();
        let config_path = tmp.join("config.json");
        std::fs::write(&config_path, config + "\n")
            .map_err(|e| PolicyError::io(&config_path, e))?;
        weights::write(
            &tmp.join(weights::WEIGHTS),
            model.named_parameters(),
            dtype.kind(),
        )?;
        copy_tokenizer_files(tokenizer_dir, tmp)
    })
}

/// Writes the weights `model` computes as a HF directory a serving engine loads at `out`, as
/// [`save_pretrained`] does, but with any LoRA adapters folded in and, with `untie`, a tied
/// output projection stored as its own `lm_head.weight` (and `tie_word_embeddings: false`).
/// vLLM reloads an untied head in place correctly; a tied one it does not refresh (see
/// `docs/rollout-engines.md`). An existing `out` is replaced.
pub fn save_for_engine(
    model: &Transformer,
    tokenizer_dir: &Path,
    out: &Path,
    dtype: WeightDtype,
    untie: bool,
) -> Result<()> {
    write_dir(out, |tmp| {
        let mut config = model.config.to_json(dtype);
        if untie && let Some(map) = config.as_object_mut() {
            map.insert("tie_word_embeddings".into(), serde_json::json!(false));
        }
        let config = serde_json::to_string_pretty(&config).unwrap_or_default();
        let config_path = tmp.join("config.json");
        std::fs::write(&config_path, config + "\n")
            .map_err(|e| PolicyError::io(&config_path, e))?;
        weights::write(
            &tmp.join(weights::WEIGHTS),
            &model.serving_parameters(untie),
            dtype.kind(),
        )?;
        copy_tokenizer_files(tokenizer_dir, tmp)
    })
}

/// Copies the tokenizer files `tokenizer_dir` has into `dir`.
fn copy_tokenizer_files(tokenizer_dir: &Path, dir: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let from = tokenizer_dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, dir.join(name)).map_err(|e| PolicyError::io(&from, e))?;
        }
    }
    Ok(())
}

/// Writes the LoRA adapters of `model` as PEFT does at `out` (`adapter_config.json` naming
/// `base_model_name_or_path`, and `adapter_model.safetensors` in f32 with PEFT's key names),
/// with the tokenizer files of `tokenizer_dir` when given. An existing `out` is replaced.
pub fn save_adapter(
    model: &Transformer,
    base_model_name_or_path: &str,
    tokenizer_dir: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let Some(config) = model.lora() else {
        return Err(PolicyError::Invalid(
            "the model has no LoRA adapters to save".into(),
        ));
    };
    write_dir(out, |tmp| {
        let json = lora::peft_config_json(config, base_model_name_or_path);
        let path = tmp.join(ADAPTER_CONFIG);
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        std::fs::write(&path, text + "\n").map_err(|e| PolicyError::io(&path, e))?;
        let tensors: Vec<(String, tch::Tensor)> = model
            .adapter_parameters()
            .iter()
            .map(|(name, t)| (lora::peft_key(name), t.shallow_clone()))
            .collect();
        weights::write(&tmp.join(ADAPTER_WEIGHTS), &tensors, tch::Kind::Float)?;
        let Some(tokenizer_dir) = tokenizer_dir else {
            return Ok(());
        };
        copy_tokenizer_files(tokenizer_dir, tmp)
    })
}

/// Counters and seeds a resumed run needs besides weights and optimiser moments.
///
/// Generation draws from streams seeded by `(seed, prompt, sample)`, so the seed is the whole
/// random state: a resumed run samples exactly what the uninterrupted run would have.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser updates taken.
    pub optimizer_steps: u64,
    /// Training steps completed (the data cursor).
    pub step: u64,
    /// Version of the weights (bumped by every update).
    pub policy_version: u64,
    /// The run's seed.
    pub seed: u64,
}

/// Writes the learner's AdamW moments and `state` into checkpoint directory `dir` (which
/// [`save_pretrained`] or [`save_adapter`] created). When the model was saved below f32
/// (`saved`), the f32 weights of `model` are kept too, as [`MASTER_FILE`] (an adapter is always
/// saved in f32).
pub fn save_trainer_state(
    dir: &Path,
    model: &Transformer,
    saved: WeightDtype,
    learner: &Learner,
    state: &TrainerState,
) -> Result<()> {
    if saved != WeightDtype::F32 && model.lora().is_none() {
        weights::write(
            &dir.join(MASTER_FILE),
            model.named_parameters(),
            tch::Kind::Float,
        )?;
    }
    weights::write(
        &dir.join(OPTIMIZER_FILE),
        &learner.optimizer.state_tensors(),
        tch::Kind::Float,
    )?;
    let path = dir.join(STATE_FILE);
    let tmp = weights::tmp_name(&path);
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    std::fs::write(&tmp, text + "\n").map_err(|e| PolicyError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| PolicyError::io(&path, e))
}

/// The [`TrainerState`] of checkpoint `dir`.
pub fn read_trainer_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::missing(&path, e))?;
    serde_json::from_str(&text).map_err(|e| PolicyError::Config {
        path: path.clone(),
        message: format!("line {}, column {}: {e}", e.line(), e.column()),
    })
}

/// Copies the f32 master weights of checkpoint `dir` into `model` when the checkpoint has them
/// (it was saved below f32); `model.safetensors` already holds the exact weights otherwise.
pub fn load_master_weights(dir: &Path, model: &Transformer) -> Result<()> {
    let path = dir.join(MASTER_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let master = weights::read_file(&path)?;
    tch::no_grad(|| {
        for (name, param) in model.named_parameters() {
            let Some(value) = master.get(name) else {
                return Err(PolicyError::Config {
                    path: path.clone(),
                    message: format!("no tensor `{name}`"),
                });
            };
            let mut param = param.shallow_clone();
            param.copy_(&value.to_kind(param.kind()).to_device(param.device()));
        }
        Ok(())
    })
}

/// Where a run's weights start: the checkpoint a resumed run continues from, with the version
/// it holds, else `model_dir` at version 0.
pub fn start_point(model_dir: &Path, checkpoint: Option<&Path>) -> Result<(PathBuf, u64)> {
    match checkpoint {
        Some(dir) => Ok((dir.to_path_buf(), read_trainer_state(dir)?.policy_version)),
        None => Ok((model_dir.to_path_buf(), 0)),
    }
}

/// Restores the learner's moments from checkpoint `dir` and returns its [`TrainerState`].
pub fn load_trainer_state(dir: &Path, learner: &mut Learner) -> Result<TrainerState> {
    let state = read_trainer_state(dir)?;
    let moments = weights::read_file(&dir.join(OPTIMIZER_FILE))?;
    learner
        .optimizer
        .load_state(&moments, state.optimizer_steps)?;
    Ok(state)
}

/// Runs `fill` on a fresh temporary sibling of `out`, then renames it to `out`.
fn write_dir(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| PolicyError::io(parent, e))?;
    let tmp: PathBuf = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| PolicyError::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| PolicyError::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| PolicyError::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| PolicyError::io(out, e))
}

/// Writes at `out` the HF model that base `base` with the adapter in `adapter` computes: the
/// adapters folded into the weights (`W + s·B·A`, in f32) and saved in `dtype` (default: the
/// base's stored dtype), with the base's tokenizer files. Transformers loads `out` unchanged.
pub fn merge_adapter(
    base: &Path,
    adapter: &Path,
    out: &Path,
    dtype: Option<WeightDtype>,
) -> Result<()> {
    let mut model = Transformer::load(base, &super::DeviceSpec::Cpu, Some(WeightDtype::F32))?;
    model.load_adapter(adapter)?;
    model.merge_lora();
    let dtype = dtype.unwrap_or(model.config.dtype);
    save_pretrained(&model, base, out, dtype)
}

/// Writes a new adapter for base `base` at `out` (PEFT's format, `base_model_name_or_path` as
/// `base` is spelled), started as `init` says.
pub fn init_adapter(
    base: &Path,
    out: &Path,
    config: &super::LoraConfig,
    init: super::LoraInit,
) -> Result<()> {
    let mut model = Transformer::load(base, &super::DeviceSpec::Cpu, Some(WeightDtype::F32))?;
    model.attach_lora(config, init)?;
    save_adapter(&model, &base.to_string_lossy(), None, out)
}
