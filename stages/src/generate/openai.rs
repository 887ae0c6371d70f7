//! `generate.openai`: G samples per prompt from a serving engine (vLLM, SGLang, or any server
//! with OpenAI's `/v1/completions`) that serves the policy, kept in step with the learner.
//!
//! - Prompts are rendered with tandem's own template and tokenizer and sent as token ids, so
//!   the ids the learner scores are exactly those the server saw. The server returns the
//!   sampled token ids and their log-probs (vLLM: `return_token_ids`, `logprobs`).
//! - The learner (`learn.pg`) publishes new weights through the run's [`PolicyHub`], as for
//!   `generate.policy`. Before a step samples, the stage copies the weights it should use into
//!   its own CPU copy of the model, writes them in HF layout and has the server load them
//!   ([`Sync`]). It then checks with a probe that the server's log-probs equal its copy's: a
//!   server still on old weights stops the run, it never yields a silently off-policy one.
//! - Requests run concurrently, with `cloud.openai`'s retries. A request that fails for good
//!   becomes an error row of its group; a server that answers no request of a step stops the
//!   run (`tandem run --resume` continues it from the last checkpoint).
//!
//! The server itself is the user's (`url`), or one the stage starts and stops (`launch`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tandem_schemas::{FinishReason, Group, SampleRecord};

use super::server::{Completion, Engine, EngineConfig, LaunchConfig, Sync};
use crate::contract::{BuildContext, Built, Generator, StepContext, StepFigures};
use crate::help::HelpTags;
use crate::net::{self, Failure, RetryPolicy};
use crate::policy::{self, ModelConfig, PolicyHub, Tokenizer, WeightDtype};
use crate::prompt::{NamedTemplate, PromptParams};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `generate.openai`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiGenConfig {
    /// The local HF model directory the server serves at the start: tandem renders prompts
    /// with its tokenizer and template, and the learner starts from its weights.
    pub model: PathBuf,
    /// The server: its root (`http://host:8000`) or its `/v1` URL. Needed unless `launch`.
    #[serde(default)]
    pub url: Option<String>,
    /// Start a server for the run, and stop it at the end (instead of `url`).
    #[serde(default)]
    pub launch: Option<LaunchConfig>,
    /// The model name requests carry (default: the first one `/v1/models` lists).
    #[serde(default)]
    pub served_model: Option<String>,
    /// Environment variable holding the server's API key, if it wants one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File whose first line is the server's API key.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// How new weights reach the server: `vllm` (default), `sglang`, `{command: [...]}`, or
    /// `none` (generation only: any learner update then fails the probe).
    #[serde(default)]
    pub sync: Sync,
    /// Where the weights handed to the server are written (default: `engine/` in the run
    /// directory). The server must see this path.
    #[serde(default)]
    pub weights_dir: Option<PathBuf>,
    /// dtype of the written weights (`f32`, `bf16`, `f16`; default: the model's).
    #[serde(default)]
    pub weights_dtype: Option<String>,
    /// Write a tied output projection as its own `lm_head.weight` (default true: vLLM's
    /// in-place reload does not refresh a tied one).
    #[serde(default = "yes")]
    pub untie: bool,
    /// The question whose sampled tokens the server and tandem score after each sync.
    #[serde(default = "default_probe")]
    pub probe: String,
    /// Tokens the probe samples.
    #[serde(default = "default_probe_tokens")]
    pub probe_tokens: usize,
    /// Largest mean |Δ log-prob| per probe token between server and tandem that counts as the
    /// same weights (default 1e-3 with f32 weights, 0.05 with bf16/f16).
    #[serde(default)]
    pub probe_tolerance: Option<f64>,
    /// Put the server to sleep after each step's requests, so the learner has its memory
    /// (vLLM `/sleep`; 1: weights offloaded, KV cache dropped; 2: both dropped, the weights
    /// are reloaded on waking; 0: never). A GPU server needs `--enable-sleep-mode`.
    #[serde(default)]
    pub sleep_level: u8,
    /// Sync a LoRA learner's adapters alone, through vLLM's LoRA routes, instead of full
    /// weights: the largest adapter rank the server must take (a launched server gets
    /// `--enable-lora --max-lora-rank N`). Default: full weights, adapters folded in.
    #[serde(default)]
    pub lora_max_rank: Option<usize>,
    /// Requests in flight at once (one request asks for a prompt's G samples).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Retries of a request that failed in a way that heals.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff between retries, in seconds (doubling, with jitter).
    #[serde(default = "default_backoff")]
    pub backoff_s: f64,
    /// Extra fields for every completions request (e.g. `repetition_penalty`, `min_p`).
    #[serde(default)]
    pub extra_body: BTreeMap<String, Value>,
    /// Render the prompt with the model's chat template (as a user message).
    #[serde(default = "yes")]
    pub chat: bool,
    /// One of the paper's templates by name (see `generate.policy`).
    #[serde(default)]
    pub template: Option<NamedTemplate>,
    /// A system message (with `chat`).
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// The user message; `{question}` is replaced by the prompt's question.
    #[serde(default)]
    pub prompt_template: Option<String>,
    /// Most tokens per sample.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[serde(default = "one")]
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[serde(default = "one")]
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = all).
    #[serde(default)]
    pub top_k: usize,
    /// Texts that end a sample (kept in its text), e.g. `</answer>`, `</unknown>`.
    #[serde(default)]
    pub stop: Vec<String>,
    /// The tags that mark a call for help.
    #[serde(default)]
    pub help: HelpTags,
}

fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}
fn default_probe() -> String {
    "What is 2 + 2?".into()
}
fn default_probe_tokens() -> usize {
    16
}
fn default_concurrency() -> usize {
    16
}
fn default_timeout() -> f64 {
    600.0
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> f64 {
    1.0
}
fn default_max_new_tokens() -> usize {
    512
}

fn params(path: &str, message: impl Into<String>) -> StageError {
    StageError::Params {
        path: path.into(),
        message: message.into(),
    }
}

impl StageConfig for OpenAiGenConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        match (&self.url, &self.launch) {
            (None, None) => {
                return Err(params(
                    "url",
                    "give the server's url, or `launch` to start one",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(params("launch", "give url or launch, not both"));
            }
            _ => {}
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(params("temperature", "must be a finite number >= 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(params("top_p", "must be in (0, 1]"));
        }
        if self.concurrency == 0 {
            return Err(params("concurrency", "must be at least 1"));
        }
        if self.lora_max_rank == Some(0) {
            return Err(params("lora_max_rank", "must be at least 1"));
        }
        if self.sleep_level > 2 {
            return Err(params("sleep_level", "must be 0, 1 or 2"));
        }
        if self.probe_tokens == 0 {
            return Err(params("probe_tokens", "must be at least 1"));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(params("timeout_s", "must be a number of seconds > 0"));
        }
        if !(self.backoff_s.is_finite() && self.backoff_s >= 0.0) {
            return Err(params("backoff_s", "must be a number of seconds >= 0"));
        }
        for key in self.extra_body.keys() {
            if RESERVED.contains(&key.as_str()) {
                return Err(params(
                    &format!("extra_body.{key}"),
                    "is set by the stage (from its own parameters)",
                ));
            }
        }
        if let Some(launch) = &self.launch {
            launch.check()?;
        }
        self.sync.check()?;
        let dir = ctx.resolve(&self.model);
        let model_config =
            ModelConfig::from_dir(&dir).map_err(|e| params("model", e.to_string()))?;
        let weights_dtype = match self.weights_dtype.as_deref() {
            None => model_config.dtype,
            Some("f32") => WeightDtype::F32,
            Some("bf16") => WeightDtype::BF16,
            Some("f16") => WeightDtype::F16,
            Some(other) => {
                return Err(params(
                    "weights_dtype",
                    format!("`{other}`: expected f32, bf16 or f16"),
                ));
            }
        };
        let tolerance = self.probe_tolerance.unwrap_or(match weights_dtype {
            WeightDtype::F32 => 1e-3,
            _ => 0.05,
        });
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return Err(params("probe_tolerance", "must be a number > 0"));
        }
        let tokenizer = Tokenizer::from_dir(&dir).map_err(|e| params("model", e.to_string()))?;
        let format = PromptParams {
            chat: self.chat,
            template: self.template,
            system_prompt: self.system_prompt.clone(),
            prompt_template: self.prompt_template.clone(),
        }
        .format(&tokenizer, &dir)?;
        // The hub is the run's meeting point with the learner, exactly as generate.policy's.
        let start = super::start_point(ctx, &dir)?;
        let hub = super::shared_hub(
            ctx,
            &dir,
            &start,
            model_config.dtype,
            self.temperature,
            &format,
        )?;
        let key_source = net::KeySource {
            api_key_env: self.api_key_env.clone(),
            api_key_file: self.api_key_file.clone(),
        };
        let api_key = key_source.read(ctx)?;
        let weights_dir = self.weights_dir.as_ref().map(|d| ctx.resolve(d));
        // (Shared values are made outside one another's init: the map is locked meanwhile.)
        let figures = ctx
            .shared
            .get_or_init(StepFigures::KEY, StepFigures::default);
        // One engine per stage, whatever the number of workers: one server, one sync per
        // version.
        let engine = ctx.shared.get_or_try_init(
            &format!("generate.openai:{}", ctx.stage_id),
            || -> Result<Engine> {
                Engine::new(EngineConfig {
                    url: self.url.clone(),
                    launch: self.launch.clone(),
                    served_model: self.served_model.clone(),
                    api_key,
                    sync: self.sync.clone(),
                    weights_dir,
                    weights_dtype,
                    untie: self.untie,
                    probe: self.probe.clone(),
                    probe_tokens: self.probe_tokens,
                    tolerance,
                    sleep_level: self.sleep_level,
                    lora_max_rank: self.lora_max_rank,
                    temperature: self.temperature,
                    timeout: std::time::Duration::from_secs_f64(self.timeout_s),
                    retry: RetryPolicy {
                        retries: self.retries,
                        backoff: std::time::Duration::from_secs_f64(self.backoff_s),
                    },
                    hub: hub.clone(),
                    figures,
                })
            },
        )?;
        let eos_token_ids = policy::eos_token_ids(&tokenizer, &model_config);
        Ok(Built::Generator(Box::new(OpenAiGenerator {
            engine,
            hub,
            tokenizer,
            eos_token_ids,
            group_size: ctx.run.group_size,
            seed: ctx.run.seed,
            config: self,
        })))
    }
}

/// Request fields the stage sets itself; `extra_body` may not override them.
const RESERVED: &[&str] = &[
    "model",
    "prompt",
    "n",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stop_token_ids",
    "logprobs",
    "return_token_ids",
    "include_stop_str_in_output",
    "stream",
];

/// Samples G completions per prompt from the server.
pub struct OpenAiGenerator {
    engine: Arc<Engine>,
    hub: Arc<PolicyHub>,
    tokenizer: Tokenizer,
    eos_token_ids: Vec<u32>,
    group_size: usize,
    seed: u64,
    config: OpenAiGenConfig,
}

impl OpenAiGenerator {
    /// The completions request for one prompt's G samples.
    fn body(&self, model: &str, prompt_ids: &[u32], seed: u64) -> Value {
        let mut body = json!({
            "model": model,
            "prompt": prompt_ids,
            "n": self.group_size,
            "max_tokens": self.config.max_new_tokens,
            "temperature": self.config.temperature,
            "top_p": self.config.top_p,
            "seed": seed,
            "logprobs": 0,
            "return_token_ids": true,
            "stop_token_ids": self.eos_token_ids,
            "include_stop_str_in_output": true,
        });
        let map = body.as_object_mut().expect("an object");
        if self.config.top_k > 0 {
            map.insert("top_k".into(), json!(self.config.top_k));
        }
        if !self.config.stop.is_empty() {
            map.insert("stop".into(), json!(self.config.stop));
        }
        for (k, v) in &self.config.extra_body {
            map.insert(k.clone(), v.clone());
        }
        body
    }

    /// A sample record from one returned completion.
    fn record(&self, group: &Group, version: u64, c: Completion) -> Result<SampleRecord> {
        let mut text = self
            .tokenizer
            .decode(&c.token_ids, true)
            .map_err(|e| StageError::Run(format!("decoding a completion: {e}")))?;
        if c.finish_reason == FinishReason::Stop {
            policy::cut_after_stop(&mut text, &self.config.stop);
        }
        Ok(SampleRecord {
            run_id: group.prompt.run_id.clone(),
            step: group.prompt.step,
            prompt_id: group.prompt.prompt_id.clone(),
            sample_idx: c.index,
            policy_version: version,
            asked_help: self.config.help.asks_help(&text),
            text,
            token_ids: c.token_ids,
            logprobs: c.logprobs,
            finish_reason: c.finish_reason,
        })
    }
}

impl Generator for OpenAiGenerator {
    fn generate(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        // The server must serve the weights this step samples from before any request goes.
        let serving = self.engine.serve_step(ctx.step, ctx.run_dir.as_deref())?;
        let version = serving.version;
        let mut pending = Vec::new();
        for (g, group) in groups.iter_mut().enumerate() {
            match self.hub.prompt_ids(&group.prompt.question) {
                Ok(ids) if !ids.is_empty() => {
                    let seed = super::group_seed(self.seed, ctx.step, &group.prompt.prompt_id);
                    // vLLM seeds sample i with seed + i; keep it inside an i64.
                    pending.push((g, self.body(&serving.model, &ids, seed >> 2)));
                }
                Ok(_) => group.push_error(
                    &ctx.stage_id,
                    None,
                    "empty_prompt",
                    "the prompt tokenises to no tokens",
                ),
                Err(e) => group.push_error(&ctx.stage_id, None, "prompt", e.to_string()),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let engine = &self.engine;
        let n = self.group_size;
        let answers: Vec<(usize, std::result::Result<Vec<Completion>, Failure>)> = engine.block_on(
            futures_util::stream::iter(
                pending
                    .iter()
                    .map(|(g, body)| async move { (*g, engine.complete(body, n).await) }),
            )
            .buffer_unordered(self.config.concurrency)
            .collect(),
        );
        drop(serving);
        let failed = answers.iter().filter(|(_, a)| a.is_err()).count();
        if failed == answers.len() {
            let last = answers
                .iter()
                .find_map(|(_, a)| a.as_ref().err())
                .map(ToString::to_string)
                .unwrap_or_default();
            return Err(StageError::Run(format!(
                "step {}: the server at {} answered none of {} requests (last: {last}){}; the run stops here (`tandem run --resume` continues it from its last checkpoint)",
                ctx.step,
                engine.url(),
                answers.len(),
                engine.process_note(),
            )));
        }
        // The server sleeps only once it has answered: a dead one is reported as such above.
        self.engine.rest()?;
        for (g, answer) in answers {
            let group = &mut groups[g];
            match answer {
                Ok(completions) => {
                    let mut samples = Vec::with_capacity(completions.len());
                    for c in completions {
                        samples.push(self.record(group, version, c)?);
                    }
                    group.samples = samples;
                }
                Err(failure) => group.push_error(
                    &ctx.stage_id,
                    None,
                    &failure.kind(),
                    format!("{}: {failure}", engine.url()),
                ),
            }
        }
        Ok(())
    }
}
