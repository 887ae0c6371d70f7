//! `generate.policy`: G samples per prompt from a local HF model on tch (the policy engine).
//!
//! Each worker that runs the stage loads its own copy of the model; with a GPU, run one worker
//! per device. A learner (`learn.pg`) publishes new weights through the run's [`PolicyHub`]; each
//! instance copies them in before it samples and stamps its samples with their version.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tandem_schemas::{Group, SampleRecord};

use crate::contract::{BuildContext, Built, Generator, StepContext};
use crate::help::HelpTags;
use crate::policy::{
    self, DeviceSpec, GenerationRequest, Policy, PolicyHub, PromptFormat, SamplingParams,
    WeightDtype,
};
use crate::prompt::{NamedTemplate, PromptParams};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `generate.policy`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A local HF model directory (relative paths are from where `tandem` runs).
    pub model: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`; a list of them (`[cuda:0, cuda:1]`), one per worker of each
    /// process in turn; or `auto`: every visible CUDA device, else the CPU.
    #[serde(default = "default_device")]
    pub device: Devices,
    /// Compute dtype (`f32`, `bf16`, `f16`); default f32 on CPU, bf16 on CUDA.
    #[serde(default)]
    pub dtype: Option<String>,
    /// Torch intra-op threads per worker (0 = libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// Render the prompt with the model's chat template (as a user message).
    #[serde(default = "yes")]
    pub chat: bool,
    /// One of the paper's templates by name (`countdown`, `math`, and `countdown_task`,
    /// `math_task` without the help option): its system prompt and user turn, unless
    /// `system_prompt` or `prompt_template` is also given.
    #[serde(default)]
    pub template: Option<NamedTemplate>,
    /// A system message (with `chat`).
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// The user message; `{question}` is replaced by the prompt's question (default
    /// `{question}`, or the named template's user turn).
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
    /// Prompts generated per forward batch (all G samples of each).
    #[serde(default = "default_batch")]
    pub batch_prompts: usize,
    /// The tags that mark a call for help.
    #[serde(default)]
    pub help: HelpTags,
}

/// `device` of `generate.policy`: one device, or several shared out over the process's workers.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Devices {
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    One(String),
    /// A device per instance in turn.
    Many(Vec<String>),
}

impl Devices {
    /// The devices named, `auto` resolved to every visible CUDA device (or the CPU).
    pub fn resolve(&self) -> policy::Result<Vec<DeviceSpec>> {
        let names: Vec<&str> = match self {
            Devices::One(name) => vec![name.as_str()],
            Devices::Many(names) => names.iter().map(String::as_str).collect(),
        };
        if names.is_empty() {
            return Err(policy::PolicyError::Invalid(
                "device: the list is empty".into(),
            ));
        }
        let mut out = Vec::new();
        for name in names {
            if name == "auto" {
                out.extend(policy::visible_cuda_devices());
                if out.is_empty() {
                    out.push(DeviceSpec::Cpu);
                }
            } else {
                out.push(name.parse()?);
            }
        }
        Ok(out)
    }
}

fn default_device() -> Devices {
    Devices::One("cpu".into())
}
fn yes() -> bool {
    true
}
fn default_max_new_tokens() -> usize {
    512
}
fn one() -> f64 {
    1.0
}
fn default_batch() -> usize {
    16
}

impl StageConfig for PolicyConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        let params = |message: String| StageError::Params {
            path: String::new(),
            message,
        };
        let devices = self
            .device
            .resolve()
            .map_err(|e: policy::PolicyError| params(e.to_string()))?;
        // Each instance of the stage in this process (one per worker) takes the next device.
        let slot = ctx
            .shared
            .get_or_init(&format!("{}.device-slots", ctx.stage_id), || {
                std::sync::atomic::AtomicUsize::new(0)
            })
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let device = devices[slot % devices.len()];
        let dtype = match self.dtype.as_deref() {
            None => None,
            Some("f32") => Some(WeightDtype::F32),
            Some("bf16") => Some(WeightDtype::BF16),
            Some("f16") => Some(WeightDtype::F16),
            Some(other) => {
                return Err(params(format!(
                    "dtype `{other}`: expected f32, bf16 or f16"
                )));
            }
        };
        policy::set_threads(self.threads);
        let dir = ctx.resolve(&self.model);
        // A resumed run starts from its checkpoint's weights and version.
        let start = super::start_point(ctx, &dir)?;
        // With staleness s, the steps up to s sample the starting model (version 0), also
        // after a resume among them; later steps load the versions the checkpoint kept.
        let own = match &ctx.run.resume {
            Some(r) if ctx.run.max_staleness > 0 && r.step <= ctx.run.max_staleness => {
                (dir.clone(), 0)
            }
            _ => start.clone(),
        };
        let policy = Policy::load_start(&dir, &own.0, &device, dtype)
            .map_err(|e| params(format!("model: {e}")))?;
        let format = PromptParams {
            chat: self.chat,
            template: self.template,
            system_prompt: self.system_prompt.clone(),
            prompt_template: self.prompt_template.clone(),
        }
        .format(&policy.tokenizer, &dir)?;
        let sampling = SamplingParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            stop: self.stop.clone(),
            eos_token_ids: policy.eos_token_ids(),
        };
        let hub = super::shared_hub(
            ctx,
            &dir,
            &start,
            dtype.unwrap_or(policy.model.config.dtype),
            self.temperature,
            &format,
        )?;
        let version = own.1;
        Ok(Built::Generator(Box::new(PolicyGenerator {
            policy,
            sampling,
            group_size: ctx.run.group_size,
            seed: ctx.run.seed,
            format,
            hub,
            version,
            config: self,
        })))
    }
}

/// Samples G completions per prompt with the policy engine.
pub struct PolicyGenerator {
    policy: Policy,
    sampling: SamplingParams,
    group_size: usize,
    seed: u64,
    format: PromptFormat,
    /// Shared with the learner: where newer weights come from.
    hub: Arc<PolicyHub>,
    /// The version of the weights this instance holds.
    version: u64,
    config: PolicyConfig,
}

impl PolicyGenerator {
    fn prompt_ids(&self, question: &str) -> policy::Result<Vec<u32>> {
        self.format.encode(&self.policy.tokenizer, question)
    }

    fn seed(&self, step: u64, prompt_id: &str) -> u64 {
        super::group_seed(self.seed, step, prompt_id)
    }
}

impl Generator for PolicyGenerator {
    fn generate(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        // The learner may have published newer weights since the last batch.
        self.version = self
            .hub
            .refresh(&mut self.policy.model, self.version, ctx.step)
            .map_err(|e| StageError::Run(format!("step {}: new weights: {e}", ctx.step)))?;
        let mut pending: Vec<(usize, GenerationRequest)> = Vec::new();
        for (g, group) in groups.iter_mut().enumerate() {
            match self.prompt_ids(&group.prompt.question) {
                Ok(ids) if !ids.is_empty() => pending.push((
                    g,
                    GenerationRequest {
                        prompt_ids: ids,
                        num_samples: self.group_size,
                        seed: self.seed(ctx.step, &group.prompt.prompt_id),
                    },
                )),
                Ok(_) => group.push_error(
                    &ctx.stage_id,
                    None,
                    "empty_prompt",
                    "the prompt tokenises to no tokens",
                ),
                Err(e) => group.push_error(&ctx.stage_id, None, "prompt", e.to_string()),
            }
        }
        for chunk in pending.chunks(self.config.batch_prompts.max(1)) {
            let requests: Vec<GenerationRequest> = chunk.iter().map(|(_, r)| r.clone()).collect();
            let completions = policy::generate(
                &self.policy.model,
                &self.policy.tokenizer,
                &requests,
                &self.sampling,
            )
            .map_err(|e| StageError::Run(format!("generation failed: {e}")))?;
            for ((g, _), samples) in chunk.iter().zip(completions) {
                let group = &mut groups[*g];
                group.samples = samples
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| SampleRecord {
                        run_id: group.prompt.run_id.clone(),
                        step: group.prompt.step,
                        prompt_id: group.prompt.prompt_id.clone(),
                        sample_idx: i as u32,
                        policy_version: self.version,
                        asked_help: self.config.help.asks_help(&c.text),
                        text: c.text,
                        token_ids: c.token_ids,
                        logprobs: c.logprobs,
                        finish_reason: c.finish_reason,
                    })
                    .collect();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(json: serde_json::Value) -> policy::Result<Vec<DeviceSpec>> {
        serde_json::from_value::<Devices>(json)
            .expect("a string or a list")
            .resolve()
    }

    #[test]
    fn device_is_one_a_list_or_auto() {
        assert_eq!(
            devices(serde_json::json!("cuda:1")).unwrap(),
            [DeviceSpec::Cuda(1)]
        );
        assert_eq!(
            devices(serde_json::json!(["cuda:0", "cuda:1", "cpu"])).unwrap(),
            [DeviceSpec::Cuda(0), DeviceSpec::Cuda(1), DeviceSpec::Cpu]
        );
        // `auto` is every GPU libtorch sees, else the CPU (on this CPU build: the CPU).
        let gpus = policy::visible_cuda_devices();
        let auto = devices(serde_json::json!("auto")).unwrap();
        if gpus.is_empty() {
            assert_eq!(auto, [DeviceSpec::Cpu]);
        } else {
            assert_eq!(auto, gpus);
        }
        let err = devices(serde_json::json!(["cuda:0", "tpu"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tpu"), "{err}");
        assert!(devices(serde_json::json!([])).is_err());
    }
}
