//! [`PolicyHub`]: what the generator and the learner of one pipeline share in a process: how a
//! question becomes prompt tokens, the sampling temperature, and the newest weights.
//!
//! The generator makes the hub when it is built (the key is [`PolicyHub::KEY`] in the run's
//! [`crate::SharedState`]); the learner finds it there, so both encode prompts with the same code
//! and settings. After each update the learner publishes a copy of its parameters with a new
//! version; each generator instance copies them into its own model before it samples, and stamps
//! its samples with the version it used.

use std::path::PathBuf;
use std::sync::Mutex;

use tch::Tensor;

use super::{ChatMessage, Result, Tokenizer, Transformer, WeightDtype};

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

/// Weights published by the learner.
struct Published {
    version: u64,
    params: Vec<(String, Tensor)>,
}

/// Shared by the generator and the learner of a pipeline.
pub struct PolicyHub {
    /// The model directory the policy started from (tokenizer files for checkpoints).
    pub model_dir: PathBuf,
    /// The dtype checkpoints are written in.
    pub save_dtype: WeightDtype,
    /// The sampling temperature (the learner scores log-probs at it).
    pub temperature: f64,
    format: PromptFormat,
    tokenizer: Mutex<Tokenizer>,
    published: Mutex<Published>,
}

impl PolicyHub {
    /// The key of the hub in the run's shared state.
    pub const KEY: &'static str = "policy";

    /// A hub at version `version` (0 for a fresh run).
    pub fn new(
        model_dir: PathBuf,
        save_dtype: WeightDtype,
        temperature: f64,
        format: PromptFormat,
        tokenizer: Tokenizer,
        version: u64,
    ) -> PolicyHub {
        PolicyHub {
            model_dir,
            save_dtype,
            temperature,
            format,
            tokenizer: Mutex::new(tokenizer),
            published: Mutex::new(Published {
                version,
                params: Vec::new(),
            }),
        }
    }

    /// The prompt tokens of `question`, exactly as the generator encodes them.
    pub fn prompt_ids(&self, question: &str) -> Result<Vec<u32>> {
        let tokenizer = self.tokenizer.lock().unwrap_or_else(|e| e.into_inner());
        self.format.encode(&tokenizer, question)
    }

    /// The newest version.
    pub fn version(&self) -> u64 {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .version
    }

    /// Publishes a copy of `params` as `version`.
    pub fn publish(&self, version: u64, params: &[(String, Tensor)]) {
        let copies = tch::no_grad(|| {
            params
                .iter()
                .map(|(name, p)| (name.clone(), p.detach().copy()))
                .collect()
        });
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        *published = Published {
            version,
            params: copies,
        };
    }

    /// Copies the newest weights into `model` when they are newer than `have`; returns the
    /// version `model` holds afterwards.
    pub fn refresh(&self, model: &Transformer, have: u64) -> u64 {
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if published.version <= have || published.params.is_empty() {
            return have;
        }
        tch::no_grad(|| {
            for ((name, dst), (src_name, src)) in
                model.named_parameters().iter().zip(&published.params)
            {
                debug_assert_eq!(name, src_name, "the same architecture, the same order");
                let mut dst = dst.shallow_clone();
                dst.copy_(src);
            }
        });
        published.version
    }
}
