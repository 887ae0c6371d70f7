//! The policy engine: the on-device model that generates rollouts and learns, on tch (libtorch).
//!
//! A policy is a HF model directory (`config.json`, `*.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json`) loaded into a [`Transformer`] with its [`Tokenizer`]. From there:
//! - [`generate()`] samples G completions per prompt, batched, with a KV cache;
//! - [`sequence_logprobs`] scores completions with gradients, and a [`Learner`] turns a
//!   per-token objective into AdamW updates;
//! - [`save_pretrained`] writes a directory transformers' `from_pretrained` loads unchanged.
//!
//! Qwen2/Qwen2.5 and Llama 3.x are supported. CPU runs in f32; CUDA in bf16 when asked.

/// The examples of `docs/policy.md` are compiled as doc-tests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/policy.md")]
pub struct PolicyDocs;

mod checkpoint;
mod config;
mod device;
mod generate;
mod hub;
mod init;
mod lora;
mod model;
mod tokenizer;
mod tokenizer_train;
mod train;
mod weights;

use std::path::{Path, PathBuf};

pub use checkpoint::{
    MASTER_FILE, OPTIMIZER_FILE, STATE_FILE, TrainerState, init_adapter, load_master_weights,
    load_trainer_state, merge_adapter, read_trainer_state, save_adapter, save_for_engine,
    save_pretrained, save_trainer_state, start_point,
};
pub use config::{Arch, ModelConfig, RopeScaling, Shape, WeightDtype};
pub use device::{DeviceSpec, describe_device, set_threads, visible_cuda_devices};
pub use generate::{Completion, GenerationRequest, SamplingParams, cut_after_stop, generate};
pub use hub::{PUBLISHED_DIR, PolicyHub, PromptFormat};
pub use init::{InitOptions, init_model};
pub use lora::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraConfig, LoraInit, PEFT_PREFIX, TargetModule,
    is_adapter_dir, peft_config_json, read_adapter_config,
};
pub use model::{Attend, KvCache, Transformer, positions_from_mask};
pub use tokenizer::{ChatMessage, Tokenizer};
pub use tokenizer_train::{
    CHATML_TEMPLATE, MIN_VOCAB_SIZE, QWEN2_PATTERN, SPECIAL_TOKENS, TokenizerTrainOptions,
    train_tokenizer,
};
pub use train::{
    AdamW, AdamWConfig, Gradients, Learner, LearnerConfig, Likelihood, LogprobGap, LrSchedule,
    Objective, PolicyGradient, Sequence, StepStats, sequence_logprobs,
};
pub use weights::tmp_name;

/// Errors of the policy engine. Each names the file, field or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file the model directory needs is missing or unreadable.
    #[error("{path}: {message}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `config.json` names an architecture the engine does not run.
    #[error("{path}: model_type `{model_type}` is not supported (supported: qwen2, llama)")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// The `model_type` found.
        model_type: String,
    },
    /// A field of `config.json` (or another JSON file of the directory) is wrong.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The field and the problem.
        message: String,
    },
    /// A weight tensor is missing, has the wrong shape or an unsupported dtype.
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        /// The safetensors file (or index) searched.
        path: PathBuf,
        /// The HF tensor name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer or its chat template failed.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The requested device is not usable.
    #[error("device `{device}`: {message}")]
    Device {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        message: String,
    },
    /// Bad arguments to a policy call (empty prompt, zero samples, …).
    #[error("{0}")]
    Invalid(String),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Writing a checkpoint failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl PolicyError {
    pub(crate) fn missing(path: &Path, e: impl std::fmt::Display) -> PolicyError {
        PolicyError::Missing {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> PolicyError {
        PolicyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result of the policy engine.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;

/// A loaded model directory: weights on a device, the tokenizer, and where it came from.
pub struct Policy {
    /// The network.
    pub model: Transformer,
    /// Its tokenizer and chat template.
    pub tokenizer: Tokenizer,
    /// The directory it was loaded from.
    pub dir: PathBuf,
}

impl Policy {
    /// Loads `dir` onto `device` in `dtype` (weights are converted from their stored dtype).
    pub fn load(dir: &Path, device: &DeviceSpec, dtype: Option<WeightDtype>) -> Result<Policy> {
        // An adapter directory has tokenizer files but no model: say so, not "no config.json".
        ModelConfig::from_dir(dir)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        let model = Transformer::load(dir, device, dtype)?;
        Ok(Policy {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
        })
    }

    /// Loads the base model `base` with the PEFT adapter in `adapter` attached (the adapter's
    /// matrices stay f32 whatever `dtype` the base gets).
    pub fn load_with_adapter(
        base: &Path,
        adapter: &Path,
        device: &DeviceSpec,
        dtype: Option<WeightDtype>,
    ) -> Result<Policy> {
        let mut policy = Policy::load(base, device, dtype)?;
        policy.model.load_adapter(adapter)?;
        Ok(policy)
    }

    /// The weights a run starts from: `model_dir`, or the checkpoint `start_dir` a resumed
    /// run continues from; a LoRA run's checkpoint holds only the adapter, which is attached
    /// to `model_dir`'s base. A checkpoint's f32 master weights are put back.
    pub fn load_start(
        model_dir: &Path,
        start_dir: &Path,
        device: &DeviceSpec,
        dtype: Option<WeightDtype>,
    ) -> Result<Policy> {
        if is_adapter_dir(start_dir) {
            return Policy::load_with_adapter(model_dir, start_dir, device, dtype);
        }
        let policy = Policy::load(start_dir, device, dtype)?;
        load_master_weights(start_dir, &policy.model)?;
        Ok(policy)
    }

    /// The token ids that end a completion: the union of those `config.json`,
    /// `generation_config.json` and the tokenizer name.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        eos_token_ids(&self.tokenizer, &self.model.config)
    }
}

/// The token ids that end a completion: the union of those `config.json`,
/// `generation_config.json` (both in `config`) and the tokenizer name.
pub fn eos_token_ids(tokenizer: &Tokenizer, config: &ModelConfig) -> Vec<u32> {
    let mut ids = tokenizer.eos_token_ids().to_vec();
    ids.extend(&config.eos_token_ids);
    ids.sort_unstable();
    ids.dedup();
    ids
}
