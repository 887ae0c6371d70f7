//! [`PolicyHub`]: what the generator and the learner of one pipeline share in a process: how a
//! question becomes prompt tokens, the sampling temperature, and the newest weights.
//!
//! The generator makes the hub when it is built (the key is [`PolicyHub::KEY`] in the run's
//! [`crate::SharedState`]); the learner finds it there, so both encode prompts with the same code
//! and settings. After each update the learner publishes a copy of its trainable parameters (all
//! of them, or only the LoRA adapters when it trains adapters) with a new version; each
//! generator instance copies them into its own model before it samples (attaching adapters of the
//! same shape to its base the first time), and stamps its samples with the version it used.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use tch::Tensor;

use super::{ChatMessage, LoraConfig, LoraInit, Result, Tokenizer, Transformer, WeightDtype};

/// How a question becomes the prompt the policy sees.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptFormat {
    /// Render through the tokenizer's chat template (else plain text).
    pub chat: bool,
    /// A system message first (chat only).
    pub system_prompt: Option<String>,
    /// The user text; `{question}` is replaced by the question.
    pub template: String,
}

impl PromptFormat {
    /// The prompt's token ids.
    pub fn encode(&self, tokenizer: &Tokenizer, question: &str) -> Result<Vec<u32>> {
        let text = self.template.replace("{question}", question);
        if !self.chat {
            return tokenizer.encode(&text, true);
        }
        let mut messages = Vec::new();
        if let Some(system) = &self.system_prompt {
            messages.push(ChatMessage {
                role: "system".into(),
                content: system.clone(),
            });
        }
        messages.push(ChatMessage::user(text));
        tokenizer.encode_chat(&messages)
    }
}

/// Where a checkpoint keeps the publications generation after a resume still samples from.
pub const PUBLISHED_DIR: &str = "published";

/// Weights the learner published after one step.
struct Published {
    step: u64,
    version: u64,
    /// The LoRA options when `params` are adapters.
    lora: Option<LoraConfig>,
    params: Vec<(String, Tensor)>,
}

/// Shared by the generator and the learner of a pipeline.
pub struct PolicyHub {
    /// The model directory the policy started from (tokenizer files for checkpoints, and the
    /// frozen reference of a KL term).
    pub model_dir: PathBuf,
    /// Where this run's starting weights are: `model_dir`, or the checkpoint a resumed run
    /// continues from.
    pub start_dir: PathBuf,
    /// The version of the starting weights (0, or the resumed checkpoint's).
    pub start_version: u64,
    /// The dtype checkpoints are written in.
    pub save_dtype: WeightDtype,
    /// The sampling temperature (the learner scores log-probs at it).
    pub temperature: f64,
    format: PromptFormat,
    tokenizer: Mutex<Tokenizer>,
    /// The newest publications, oldest first: `max_staleness + 1` of them, enough for the
    /// generator of every step that may still be running.
    published: Mutex<VecDeque<Published>>,
    max_staleness: u64,
}

impl PolicyHub {
    /// The key of the hub in the run's shared state.
    pub const KEY: &'static str = "policy";

    /// A hub whose weights start as those in `start_dir` at version `version` (`model_dir` and
    /// 0 for a fresh run), for a run whose generation may be `max_staleness` steps ahead of
    /// the learner.
    pub fn new(
        model_dir: PathBuf,
        (start_dir, version): (PathBuf, u64),
        save_dtype: WeightDtype,
        temperature: f64,
        format: PromptFormat,
        tokenizer: Tokenizer,
        max_staleness: u64,
    ) -> PolicyHub {
        PolicyHub {
            model_dir,
            start_dir,
            start_version: version,
            save_dtype,
            temperature,
            format,
            tokenizer: Mutex::new(tokenizer),
            published: Mutex::new(VecDeque::new()),
            max_staleness,
        }
    }

    /// The prompt tokens of `question`, exactly as the generator encodes them.
    pub fn prompt_ids(&self, question: &str) -> Result<Vec<u32>> {
        let tokenizer = self.tokenizer.lock().unwrap_or_else(|e| e.into_inner());
        self.format.encode(&tokenizer, question)
    }

    /// Publishes a copy of `model`'s trainable parameters (its adapters, with their options,
    /// when it has LoRA adapters), the weights after the learner's step `step`, as `version`.
    pub fn publish(&self, step: u64, version: u64, model: &Transformer) {
        let copies = tch::no_grad(|| {
            model
                .trainable_parameters()
                .iter()
                .map(|(name, p)| (name.clone(), p.detach().copy()))
                .collect()
        });
        self.push(Published {
            step,
            version,
            lora: model.lora().cloned(),
            params: copies,
        });
    }

    /// The publication after the learner's step `step` as bytes (safetensors, each tensor in
    /// its own dtype, with the step, version, tensor order and LoRA options as metadata).
    /// `None` when the learner published nothing for `step` (or it is no longer kept).
    pub fn export(&self, step: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .export_chunks(step, usize::MAX)?
            .map(|mut chunks| chunks.pop().unwrap_or_default()))
    }

    /// [`PolicyHub::export`] in consecutive pieces of at most `chunk` bytes, each tensor copied
    /// once into them: what a cluster run sends to the generators of other processes.
    pub fn export_chunks(&self, step: u64, chunk: usize) -> Result<Option<Vec<Vec<u8>>>> {
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = published.iter().find(|p| p.step == step) else {
            return Ok(None);
        };
        let order: Vec<&str> = p.params.iter().map(|(name, _)| name.as_str()).collect();
        let mut metadata = std::collections::HashMap::from([
            ("tandem.step".to_owned(), p.step.to_string()),
            ("tandem.version".to_owned(), p.version.to_string()),
            (
                "tandem.order".to_owned(),
                serde_json::to_string(&order).map_err(json_error)?,
            ),
        ]);
        if let Some(lora) = &p.lora {
            metadata.insert(
                "tandem.lora".to_owned(),
                serde_json::to_string(lora).map_err(json_error)?,
            );
        }
        super::weights::serialize_chunks(&p.params, None, metadata, chunk).map(Some)
    }

    /// Adds a publication made by [`PolicyHub::export`] on another process, as if this
    /// process's learner had published it. Returns its step.
    pub fn import(&self, bytes: &[u8]) -> Result<u64> {
        self.import_chunks(&[bytes])
    }

    /// [`PolicyHub::import`] of the pieces [`PolicyHub::export_chunks`] made, without joining
    /// them first.
    pub fn import_chunks(&self, chunks: &[&[u8]]) -> Result<u64> {
        let what = "published weights";
        let (mut tensors, metadata) = super::weights::deserialize_chunks(chunks, what)?;
        let field = |key: &str| {
            metadata.get(key).ok_or_else(|| {
                super::PolicyError::Invalid(format!("{what}: no `{key}` in the metadata"))
            })
        };
        let number = |key: &str| -> Result<u64> {
            field(key)?.parse().map_err(|e| {
                super::PolicyError::Invalid(format!("{what}: `{key}` is not a number: {e}"))
            })
        };
        let step = number("tandem.step")?;
        let version = number("tandem.version")?;
        let order: Vec<String> =
            serde_json::from_str(field("tandem.order")?).map_err(json_error)?;
        let lora = match metadata.get("tandem.lora") {
            Some(json) => Some(serde_json::from_str::<LoraConfig>(json).map_err(json_error)?),
            None => None,
        };
        let params = order
            .into_iter()
            .map(|name| match tensors.remove(&name) {
                Some(tensor) => Ok((name, tensor)),
                None => Err(super::PolicyError::Invalid(format!(
                    "{what}: tensor `{name}` is listed but missing"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        self.push(Published {
            step,
            version,
            lora,
            params,
        });
        Ok(step)
    }

    /// The steps whose publications are kept, oldest first.
    pub fn kept_steps(&self) -> Vec<u64> {
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        published.iter().map(|p| p.step).collect()
    }

    /// Imports the publications a checkpoint stored beside its weights (in
    /// [`PUBLISHED_DIR`], by a run with `max_staleness > 0`), oldest first. Returns how many.
    pub fn import_dir(&self, checkpoint: &std::path::Path) -> Result<usize> {
        let dir = checkpoint.join(PUBLISHED_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|path| {
                let step = path
                    .file_name()?
                    .to_str()?
                    .strip_prefix("step-")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()?;
                Some((step, path))
            })
            .collect();
        files.sort();
        for (_, path) in &files {
            let bytes = std::fs::read(path).map_err(|e| super::PolicyError::io(path, e))?;
            self.import(&bytes)?;
        }
        Ok(files.len())
    }

    /// Keeps `publication`, and the `max_staleness` before it.
    fn push(&self, publication: Published) {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        published.push_back(publication);
        while published.len() as u64 > self.max_staleness + 1 {
            published.pop_front();
        }
    }

    /// Loads into `model` (which holds version `have`) the weights that generation of step
    /// `step` uses: the newest published after a step `<= step - 1 - max_staleness`. The
    /// pipeline feeds step `step` only once the learner has finished that step, so the choice
    /// never depends on timing: a run is reproducible with any staleness. Returns the version
    /// `model` holds afterwards. Adapters are attached to `model` when the learner publishes
    /// adapters and `model` has none yet.
    pub fn refresh(&self, model: &mut Transformer, have: u64, step: u64) -> Result<u64> {
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let newest_allowed = step.checked_sub(1 + self.max_staleness);
        let Some(chosen) = published
            .iter()
            .rev()
            .find(|p| newest_allowed.is_some_and(|limit| p.step <= limit))
        else {
            return Ok(have);
        };
        if chosen.version == have {
            return Ok(have);
        }
        if let Some(lora) = &chosen.lora
            && model.lora().is_none()
        {
            // The values are overwritten below; the init only gives the shapes.
            model.attach_lora(lora, LoraInit::Peft { seed: 0 })?;
        }
        let dst_params = model.trainable_parameters();
        if dst_params.len() != chosen.params.len() {
            return Err(super::PolicyError::Invalid(format!(
                "the learner published {} tensors, the generator's model has {} to update",
                chosen.params.len(),
                dst_params.len()
            )));
        }
        tch::no_grad(|| {
            for ((name, dst), (src_name, src)) in dst_params.iter().zip(&chosen.params) {
                debug_assert_eq!(name, src_name, "the same architecture, the same order");
                let mut dst = dst.shallow_clone();
                dst.copy_(src);
            }
        });
        Ok(chosen.version)
    }
}

/// The metadata of published weights is JSON that tandem wrote itself.
fn json_error(e: serde_json::Error) -> super::PolicyError {
    super::PolicyError::Invalid(format!("published weights: metadata: {e}"))
}
