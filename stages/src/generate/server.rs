//! The serving engine behind `generate.openai`, shared by the stage's instances on every
//! worker: the server (the user's, or one it launched), the HTTP client, the CPU copy of the
//! policy the server must match, and the weight sync with its probe.
//!
//! A step's generation holds the engine's read lock; a sync takes the write lock, so no
//! request is in flight while the server's weights change, and every sample carries the
//! version the server really served.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use tandem_schemas::FinishReason;

use crate::contract::StepFigures;
use crate::net::{self, Failure, RetryPolicy};
use crate::policy::{self, DeviceSpec, Policy, PolicyHub, Sequence, WeightDtype};
use crate::{Result, StageError};

/// How new weights reach the server.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Sync {
    /// vLLM: `POST /collective_rpc` `reload_weights` from the written directory, then
    /// `POST /reset_prefix_cache` (the server needs `VLLM_SERVER_DEV_MODE=1`).
    #[default]
    Vllm,
    /// SGLang: `POST /update_weights_from_disk`, then `POST /flush_cache`.
    Sglang,
    /// A command, run to completion: `{weights}` and `{version}` in its arguments are replaced
    /// (also set as `TANDEM_WEIGHTS` and `TANDEM_VERSION`).
    Command(Vec<String>),
    /// Never: the server keeps the weights it started with.
    None,
}

impl Sync {
    pub(super) fn check(&self) -> Result<()> {
        match self {
            Sync::Command(argv) if argv.is_empty() => Err(StageError::Params {
                path: "sync.command".into(),
                message: "needs a program (and its arguments)".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// A server the stage starts for the run and stops at its end.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchConfig {
    /// The Python that has vLLM (`scripts/setup-vllm.sh` prints one), for the default command.
    #[serde(default = "default_python")]
    pub python: String,
    /// The command line instead of vLLM's: `{model}`, `{port}` and `{served_model}` in it are
    /// replaced (e.g. SGLang's `python -m sglang.launch_server --model-path {model} ...`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// More arguments for vLLM's server (`--max-model-len 2048`, `--gpu-memory-utilization 0.5`,
    /// `--enable-sleep-mode`, ...).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment for the server (added to tandem's own).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Port to listen on, on 127.0.0.1 (default: a free one).
    #[serde(default)]
    pub port: Option<u16>,
    /// Seconds the server may take to answer `/health`.
    #[serde(default = "default_startup")]
    pub startup_timeout_s: f64,
}

fn default_python() -> String {
    "python3".into()
}
fn default_startup() -> f64 {
    900.0
}

impl LaunchConfig {
    pub(super) fn check(&self) -> Result<()> {
        if matches!(&self.command, Some(argv) if argv.is_empty()) {
            return Err(StageError::Params {
                path: "launch.command".into(),
                message: "needs a program (and its arguments)".into(),
            });
        }
        if !(self.startup_timeout_s.is_finite() && self.startup_timeout_s > 0.0) {
            return Err(StageError::Params {
                path: "launch.startup_timeout_s".into(),
                message: "must be a number of seconds > 0".into(),
            });
        }
        Ok(())
    }
}

/// What the engine is built with (the stage's parameters, checked).
pub(super) struct EngineConfig {
    pub url: Option<String>,
    pub launch: Option<LaunchConfig>,
    pub served_model: Option<String>,
    pub api_key: Option<String>,
    pub sync: Sync,
    pub weights_dir: Option<PathBuf>,
    pub weights_dtype: WeightDtype,
    pub untie: bool,
    pub probe: String,
    pub probe_tokens: usize,
    pub tolerance: f64,
    pub sleep_level: u8,
    pub lora_max_rank: Option<usize>,
    pub temperature: f64,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub hub: Arc<PolicyHub>,
    pub figures: Arc<StepFigures>,
}

/// One returned completion.
#[derive(Debug)]
pub(super) struct Completion {
    pub index: u32,
    pub token_ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// The server, shared by the stage's instances.
pub(super) struct Engine {
    config: EngineConfig,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    headers: HeaderMap,
    /// The server's root URL, once started or reached.
    root: OnceLock<String>,
    state: Mutex<State>,
    /// Held (read) while a step's requests are out; taken (write) to change the weights.
    serving: RwLock<()>,
}

#[derive(Default)]
struct State {
    /// The model name requests carry.
    model: String,
    /// The launched server, stopped when the engine drops.
    process: Option<Process>,
    /// tandem's copy of the weights the server should serve (CPU, f32), and its version.
    shadow: Option<(Policy, u64)>,
    /// The version the probe last confirmed the server serves.
    served: Option<u64>,
    /// The server was put to sleep after the last step's requests.
    asleep: bool,
    /// Weight directories written, oldest first (all but the newest two are removed).
    written: VecDeque<PathBuf>,
}

/// A step's permission to sample: the version served and the model name, valid while held.
pub(super) struct Serving<'a> {
    pub version: u64,
    pub model: String,
    _guard: RwLockReadGuard<'a, ()>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Engine> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| StageError::Run(format!("starting the I/O runtime: {e}")))?;
        let client = net::client(Duration::from_secs(10), config.timeout)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            headers.insert(reqwest::header::AUTHORIZATION, net::bearer(key)?);
        }
        Ok(Engine {
            config,
            runtime,
            client,
            headers,
            root: OnceLock::new(),
            state: Mutex::new(State::default()),
            serving: RwLock::new(()),
        })
    }

    /// Runs `future` on the engine's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The server's root URL, for messages.
    pub fn url(&self) -> &str {
        self.root.get().map_or("(not started)", String::as_str)
    }

    /// For a message about a dead server: whether the launched process has exited, and where
    /// its log is.
    pub fn process_note(&self) -> String {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.process.as_mut() {
            Some(p) => p.note(),
            None => String::new(),
        }
    }

    /// Makes the server serve the weights step `step` samples from (starting it first if need
    /// be), and returns that version with a read lock that keeps it there.
    pub fn serve_step(&self, step: u64, run_dir: Option<&Path>) -> Result<Serving<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let hub = &self.config.hub;
        if state.shadow.is_none() {
            let policy = Policy::load_start(
                &hub.model_dir,
                &hub.start_dir,
                &DeviceSpec::Cpu,
                Some(WeightDtype::F32),
            )
            .map_err(|e| StageError::Run(format!("loading the policy's weights: {e}")))?;
            state.shadow = Some((policy, hub.start_version));
        }
        let wanted = {
            let (policy, have) = state.shadow.as_mut().expect("loaded above");
            *have = hub
                .refresh(&mut policy.model, *have, step)
                .map_err(|e| StageError::Run(format!("step {step}: new weights: {e}")))?;
            *have
        };
        if self.root.get().is_none() {
            self.start(&mut state, wanted, run_dir)?;
        }
        if state.asleep {
            let _exclusive = self.serving.write().unwrap_or_else(|e| e.into_inner());
            let started = Instant::now();
            self.admin(&format!("{}/wake_up", self.url()), &json!({}))?;
            state.asleep = false;
            if self.config.sleep_level >= 2 {
                // Level 2 discarded the weights: whatever version, they are loaded again.
                state.served = None;
            }
            self.config
                .figures
                .add(step, "engine.wake_seconds", started.elapsed().as_secs_f64());
        }
        if state.served != Some(wanted) {
            // No request may be out while the weights change.
            let _exclusive = self.serving.write().unwrap_or_else(|e| e.into_inner());
            self.sync_to(&mut state, wanted, step, run_dir)?;
        }
        let model = state.model.clone();
        let guard = self.serving.read().unwrap_or_else(|e| e.into_inner());
        Ok(Serving {
            version: wanted,
            model,
            _guard: guard,
        })
    }

    /// After a step's requests: with `sleep_level`, frees the server's memory for the learner
    /// (vLLM's `/sleep`: level 1 offloads the weights and drops the KV cache, level 2 drops
    /// both); the next step wakes it. Waits for other workers' requests of the step.
    pub fn rest(&self) -> Result<()> {
        if self.config.sleep_level == 0 {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.asleep {
            return Ok(());
        }
        let _exclusive = self.serving.write().unwrap_or_else(|e| e.into_inner());
        let url = format!("{}/sleep?level={}", self.url(), self.config.sleep_level);
        self.admin(&url, &json!({}))?;
        state.asleep = true;
        Ok(())
    }

    /// One POST to an administrative route (no retries: these change the server's state).
    fn admin(&self, url: &str, body: &Value) -> Result<String> {
        match self.block_on(net::post_json(&self.client, url, &self.headers, body)) {
            Ok(text) => Ok(text),
            Err(Failure::Status { status: 404, .. }) => Err(StageError::Run(format!(
                "{url}: 404; vLLM serves its weight and sleep routes only with VLLM_SERVER_DEV_MODE=1 in its environment"
            ))),
            Err(failure) => Err(StageError::Run(format!("{url}: {failure}"))),
        }
    }

    /// Launches the server from the starting weights, or reaches the user's.
    fn start(&self, state: &mut State, version: u64, run_dir: Option<&Path>) -> Result<()> {
        let Some(launch) = &self.config.launch else {
            let url = self.config.url.as_deref().unwrap_or_default();
            let root = url.trim_end_matches('/');
            let root = root.strip_suffix("/v1").unwrap_or(root).to_owned();
            state.model = match &self.config.served_model {
                Some(name) => name.clone(),
                None => self.first_model(&root)?,
            };
            let _ = self.root.set(root);
            return Ok(());
        };
        let dir = self.write_weights(state, version, run_dir)?;
        let port = match launch.port {
            Some(p) => p,
            None => free_port()?,
        };
        let model = self
            .config
            .served_model
            .clone()
            .unwrap_or_else(|| "tandem-policy".into());
        let log = self.engine_dir(run_dir).join("server.log");
        let process = Process::spawn(
            launch,
            &dir,
            self.config.weights_dtype,
            self.config.lora_max_rank,
            port,
            &model,
            &log,
        )?;
        let root = format!("http://127.0.0.1:{port}");
        state.process = Some(process);
        state.model = model;
        self.wait_healthy(state, &root, launch.startup_timeout_s)?;
        // The launched server serves `version` already; the probe confirms it.
        let _ = self.root.set(root);
        Ok(())
    }

    fn wait_healthy(&self, state: &mut State, root: &str, timeout_s: f64) -> Result<()> {
        let started = Instant::now();
        let health = format!("{root}/health");
        loop {
            let up = self.block_on(async {
                matches!(
                    self.client.get(&health).timeout(Duration::from_secs(5)).send().await,
                    Ok(r) if r.status().is_success()
                )
            });
            if up {
                tracing::info!(
                    url = root,
                    seconds = started.elapsed().as_secs_f64(),
                    "generate.openai: server up"
                );
                return Ok(());
            }
            let process = state.process.as_mut().expect("launched");
            if let Some(status) = process.exited() {
                return Err(StageError::Run(format!(
                    "the launched server exited ({status}) before it answered {health}; {}",
                    process.log_tail()
                )));
            }
            if started.elapsed().as_secs_f64() > timeout_s {
                let tail = process.log_tail();
                state.process = None;
                return Err(StageError::Run(format!(
                    "the launched server did not answer {health} within {timeout_s} s (launch.startup_timeout_s); it was stopped; {tail}"
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The first model `/v1/models` lists.
    fn first_model(&self, root: &str) -> Result<String> {
        let url = format!("{root}/v1/models");
        let text = self.block_on(async {
            let response = self
                .client
                .get(&url)
                .headers(self.headers.clone())
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(&e).to_string())?;
            let status = response.status();
            let text = response.text().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(text)
            } else {
                Err(format!("HTTP {status}: {}", net::excerpt(text.trim())))
            }
        });
        let text = text.map_err(|e| {
            StageError::Run(format!(
                "generate.openai: {url}: {e} (is the server up? `url` should be its root or /v1 URL)"
            ))
        })?;
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["data"][0]["id"].as_str().map(str::to_owned))
            .ok_or_else(|| {
                StageError::Run(format!(
                    "generate.openai: {url} lists no model; set served_model"
                ))
            })
    }

    /// Where this stage keeps the weights it writes and the launched server's log (absolute:
    /// the server resolves paths from its own working directory).
    fn engine_dir(&self, run_dir: Option<&Path>) -> PathBuf {
        let dir = match (&self.config.weights_dir, run_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(run)) => run.join("engine"),
            (None, None) => {
                std::env::temp_dir().join(format!("tandem-engine-{}", std::process::id()))
            }
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// Whether syncs send the LoRA adapters alone (vLLM's LoRA routes) rather than full weights:
    /// asked for with `lora_max_rank`, and the learner trains adapters.
    fn adapter_sync(&self, state: &State) -> bool {
        self.config.lora_max_rank.is_some()
            && self.config.sync == Sync::Vllm
            && state
                .shadow
                .as_ref()
                .is_some_and(|(p, _)| p.model.lora().is_some())
    }

    /// Writes the shadow's weights (version `version`) for the server: a HF model, or a PEFT
    /// adapter with [`Engine::adapter_sync`]. Returns the directory.
    fn write_weights(
        &self,
        state: &mut State,
        version: u64,
        run_dir: Option<&Path>,
    ) -> Result<PathBuf> {
        let dir = self.engine_dir(run_dir).join(format!("v{version}"));
        let (policy, _) = state.shadow.as_ref().expect("loaded");
        let model_dir = &self.config.hub.model_dir;
        if self.adapter_sync(state) {
            policy::save_adapter(&policy.model, &model_dir.to_string_lossy(), None, &dir)
        } else {
            policy::save_for_engine(
                &policy.model,
                model_dir,
                &dir,
                self.config.weights_dtype,
                self.config.untie,
            )
        }
        .map_err(|e| StageError::Run(format!("writing the weights for the server: {e}")))?;
        if state.written.back() != Some(&dir) {
            state.written.push_back(dir.clone());
        }
        while state.written.len() > 2 {
            if let Some(old) = state.written.pop_front() {
                let _ = std::fs::remove_dir_all(&old);
            }
        }
        Ok(dir)
    }

    /// Brings the server to `version` (the shadow's), and proves it with the probe.
    fn sync_to(
        &self,
        state: &mut State,
        version: u64,
        step: u64,
        run_dir: Option<&Path>,
    ) -> Result<()> {
        let started = Instant::now();
        // A server that was just started (or a user's) may serve the version already.
        let mut gap = match state.served {
            None => Some(self.probe(state)?),
            Some(_) => None,
        };
        let mut synced = None;
        if gap.is_none_or(|g| g.mean > self.config.tolerance) {
            if self.config.sync == Sync::None {
                return Err(self.stale(version, gap, None, "sync is none"));
            }
            let write = Instant::now();
            let dir = self.write_weights(state, version, run_dir)?;
            self.config
                .figures
                .add(step, "engine.write_seconds", write.elapsed().as_secs_f64());
            let reload = Instant::now();
            if self.adapter_sync(state) {
                self.load_adapter(&dir)?;
                state.model = LORA_NAME.into();
            } else {
                self.reload(&dir, version)?;
            }
            self.config.figures.add(
                step,
                "engine.reload_seconds",
                reload.elapsed().as_secs_f64(),
            );
            synced = Some(dir);
            gap = Some(self.probe(state)?);
        }
        let gap = gap.expect("probed");
        if gap.mean > self.config.tolerance {
            return Err(self.stale(version, Some(gap), synced.as_deref(), ""));
        }
        state.served = Some(version);
        let seconds = started.elapsed().as_secs_f64();
        let figures = &self.config.figures;
        figures.add(step, "engine.version", version as f64);
        figures.add(step, "engine.probe_gap_mean", gap.mean);
        figures.add(step, "engine.probe_gap_max", gap.max);
        if synced.is_some() {
            figures.add(step, "engine.sync_seconds", seconds);
        }
        tracing::info!(
            step,
            version,
            synced = synced.is_some(),
            seconds,
            probe_gap_mean = gap.mean,
            probe_gap_max = gap.max,
            "generate.openai: server serves the policy"
        );
        Ok(())
    }

    fn stale(&self, version: u64, gap: Option<Gap>, dir: Option<&Path>, why: &str) -> StageError {
        let gap = gap.map_or(String::new(), |g| {
            format!(
                ": its log-probs differ from tandem's by {:.3e} per token on average (max {:.3e}; tolerance {:.1e}, probe_tolerance)",
                g.mean, g.max, self.config.tolerance
            )
        });
        let written = dir.map_or(String::new(), |d| {
            format!("; the weights it was asked to load are in {}", d.display())
        });
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        StageError::Run(format!(
            "the server at {} does not serve policy version {version}{why}{gap}{written}. Either it did not load them (for vLLM: VLLM_SERVER_DEV_MODE=1, and a model with untied embeddings, as the written copies are), or its log-probs are not those of the sampling distribution (vLLM: --logprobs-mode processed_logprobs)",
            self.url()
        ))
    }

    /// Loads (or replaces in place) the PEFT adapter in `dir` as [`LORA_NAME`] (vLLM with
    /// `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`).
    fn load_adapter(&self, dir: &Path) -> Result<()> {
        let root = self.url().to_owned();
        let path = dir.to_string_lossy().into_owned();
        self.admin(
            &format!("{root}/v1/load_lora_adapter"),
            &json!({"lora_name": LORA_NAME, "lora_path": path, "load_inplace": true}),
        )
        .map_err(|e| {
            StageError::Run(format!(
                "loading the adapter in {path}: {e} (vLLM needs --enable-lora, a --max-lora-rank at least the adapter's, and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            ))
        })?;
        self.admin(&format!("{root}/reset_prefix_cache"), &json!({}))?;
        Ok(())
    }

    /// Asks the server to load the weights in `dir`.
    fn reload(&self, dir: &Path, version: u64) -> Result<()> {
        let root = self.url().to_owned();
        let path = dir.to_string_lossy().into_owned();
        let calls: Vec<(String, Value)> = match &self.config.sync {
            Sync::Vllm => vec![
                (
                    format!("{root}/collective_rpc"),
                    json!({"method": "reload_weights", "kwargs": {"weights_path": path}}),
                ),
                (format!("{root}/reset_prefix_cache"), json!({})),
            ],
            Sync::Sglang => vec![
                (
                    format!("{root}/update_weights_from_disk"),
                    json!({"model_path": path}),
                ),
                (format!("{root}/flush_cache"), json!({})),
            ],
            Sync::Command(argv) => return run_sync_command(argv, dir, version),
            Sync::None => return Ok(()),
        };
        for (url, body) in calls {
            let text = self
                .admin(&url, &body)
                .map_err(|e| StageError::Run(format!("loading the weights in {path}: {e}")))?;
            // SGLang answers 200 with `success: false` when the load failed.
            if let Ok(v) = serde_json::from_str::<Value>(&text)
                && v.get("success") == Some(&Value::Bool(false))
            {
                return Err(StageError::Run(format!(
                    "{url}: the server refused the weights in {path}: {}",
                    net::excerpt(&text)
                )));
            }
        }
        Ok(())
    }

    /// Samples the probe on the server and scores its tokens with the shadow.
    fn probe(&self, state: &State) -> Result<Gap> {
        let hub = &self.config.hub;
        let prompt_ids = hub
            .prompt_ids(&self.config.probe)
            .map_err(|e| StageError::Run(format!("encoding the probe: {e}")))?;
        let body = json!({
            "model": state.model,
            "prompt": prompt_ids,
            "n": 1,
            "max_tokens": self.config.probe_tokens,
            "temperature": self.config.temperature,
            "top_p": 1.0,
            "seed": 0,
            "logprobs": 0,
            "return_token_ids": true,
            "ignore_eos": true,
        });
        let completion = self
            .block_on(self.complete(&body, 1))
            .map_err(|f| StageError::Run(format!("{}: the probe: {f}", self.url())))?
            .pop()
            .expect("one completion");
        if completion.token_ids.is_empty() {
            return Err(StageError::Run(format!(
                "{}: the probe came back with no tokens",
                self.url()
            )));
        }
        let (policy, _) = state.shadow.as_ref().expect("loaded");
        let temperature = if self.config.temperature > 0.0 {
            self.config.temperature
        } else {
            1.0
        };
        let sequence = Sequence {
            prompt_ids,
            completion_ids: completion.token_ids.clone(),
            ..Sequence::default()
        };
        let ours: Vec<f32> = tch::no_grad(|| -> policy::Result<Vec<f32>> {
            let (logprobs, _) =
                policy::sequence_logprobs(&policy.model, &[&sequence], temperature)?;
            Ok(Vec::<f32>::try_from(logprobs.view([-1]))?)
        })
        .map_err(|e| StageError::Run(format!("scoring the probe: {e}")))?;
        tracing::debug!(
            prompt_ids = ?sequence.prompt_ids,
            tokens = ?completion.token_ids,
            server = ?completion.logprobs,
            tandem = ?ours,
            "generate.openai: probe"
        );
        let diffs: Vec<f64> = ours
            .iter()
            .zip(&completion.logprobs)
            .map(|(a, b)| f64::from((a - b).abs()))
            .collect();
        Ok(Gap {
            mean: diffs.iter().sum::<f64>() / diffs.len() as f64,
            max: diffs.iter().copied().fold(0.0, f64::max),
        })
    }

    /// One completions request (`n` choices) with retries.
    pub async fn complete(
        &self,
        body: &Value,
        n: usize,
    ) -> std::result::Result<Vec<Completion>, Failure> {
        let url = format!("{}/v1/completions", self.url());
        let (result, _attempts) = net::post_with_retries(
            &self.client,
            &url,
            &self.headers,
            body,
            self.config.retry,
            || async {},
            |text| parse_completions(text, n),
        )
        .await;
        result
    }
}

/// The name the learner's adapter is served under (`lora_max_rank`).
const LORA_NAME: &str = "tandem-policy-lora";

/// Probe log-prob gap per token.
#[derive(Clone, Copy, Debug)]
struct Gap {
    mean: f64,
    max: f64,
}

#[derive(Deserialize)]
struct CompletionsResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    index: u32,
    #[serde(default)]
    token_ids: Option<Vec<u32>>,
    #[serde(default)]
    logprobs: Option<ChoiceLogprobs>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    stop_reason: Option<Value>,
}

#[derive(Deserialize)]
struct ChoiceLogprobs {
    token_logprobs: Vec<Option<f32>>,
}

/// The `n` completions of a `/v1/completions` answer, by index. A body that is not one, or
/// whose choices are cut short, is `malformed` (retried); a server that does not return token
/// ids or log-probs is `unsupported` (it never will).
fn parse_completions(text: &str, n: usize) -> std::result::Result<Vec<Completion>, Failure> {
    let response: CompletionsResponse = serde_json::from_str(text)
        .map_err(|e| Failure::malformed(format!("not a completions response: {e}")))?;
    if response.choices.len() != n {
        return Err(Failure::malformed(format!(
            "{} choices for n = {n}",
            response.choices.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for choice in response.choices {
        let Some(token_ids) = choice.token_ids else {
            return Err(Failure::unsupported(
                "the server returned no token_ids (vLLM returns them for `return_token_ids: true`, from 0.10.2)",
            ));
        };
        let Some(logprobs) = choice.logprobs else {
            return Err(Failure::unsupported("the server returned no logprobs"));
        };
        if logprobs.token_logprobs.len() != token_ids.len() {
            return Err(Failure::malformed(format!(
                "choice {}: {} token ids but {} log-probs",
                choice.index,
                token_ids.len(),
                logprobs.token_logprobs.len()
            )));
        }
        let logprobs: Vec<f32> = logprobs
            .token_logprobs
            .into_iter()
            .map(|l| l.filter(|v| !v.is_nan()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Failure::malformed(format!("choice {}: a log-prob is missing", choice.index))
            })?;
        let finish_reason = match choice.finish_reason.as_deref() {
            Some("length") => FinishReason::Length,
            Some("stop") => match choice.stop_reason {
                Some(Value::String(_)) => FinishReason::Stop,
                _ => FinishReason::Eos,
            },
            other => {
                return Err(Failure::malformed(format!(
                    "choice {}: finish_reason {other:?}",
                    choice.index
                )));
            }
        };
        out.push(Completion {
            index: choice.index,
            token_ids,
            logprobs,
            finish_reason,
        });
    }
    out.sort_by_key(|c| c.index);
    if out.iter().enumerate().any(|(i, c)| c.index as usize != i) {
        return Err(Failure::malformed("choice indices are not 0..n"));
    }
    Ok(out)
}

/// Runs the user's sync command for `dir` at `version`.
fn run_sync_command(argv: &[String], dir: &Path, version: u64) -> Result<()> {
    let path = dir.to_string_lossy();
    let fill = |a: &String| {
        a.replace("{weights}", &path)
            .replace("{version}", &version.to_string())
    };
    let output = Command::new(fill(&argv[0]))
        .args(argv[1..].iter().map(fill))
        .env("TANDEM_WEIGHTS", dir)
        .env("TANDEM_VERSION", version.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StageError::Run(format!("sync.command `{}`: {e}", argv[0])))?;
    if output.status.success() {
        return Ok(());
    }
    Err(StageError::Run(format!(
        "sync.command `{}` failed ({}) for the weights in {path}: {}",
        argv[0],
        output.status,
        net::excerpt(String::from_utf8_lossy(&output.stderr).trim())
    )))
}

/// A free TCP port on 127.0.0.1 (the OS's pick; free when asked).
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StageError::Run(format!("finding a free port: {e}")))
}

/// A launched server. It stays in tandem's process group, so a Ctrl-C in the terminal stops it
/// too; otherwise it is stopped with SIGTERM when the run ends (vLLM's server then stops its
/// engine processes), and SIGKILL if it has not exited 20 s later.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(
        launch: &LaunchConfig,
        model: &Path,
        dtype: WeightDtype,
        lora_max_rank: Option<usize>,
        port: u16,
        served: &str,
        log: &Path,
    ) -> Result<Process> {
        let model = model.to_string_lossy();
        let port = port.to_string();
        let argv: Vec<String> = match &launch.command {
            Some(argv) => argv
                .iter()
                .map(|a| {
                    a.replace("{model}", &model)
                        .replace("{port}", &port)
                        .replace("{served_model}", served)
                })
                .collect(),
            None => {
                let mut argv: Vec<String> = [
                    launch.python.as_str(),
                    "-m",
                    "vllm.entrypoints.openai.api_server",
                    "--model",
                    &model,
                    "--served-model-name",
                    served,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--logprobs-mode",
                    "processed_logprobs",
                ]
                .map(str::to_owned)
                .to_vec();
                // vLLM's `auto` serves f32 weights in bf16; serve what was written.
                if !launch
                    .args
                    .iter()
                    .any(|a| a == "--dtype" || a.starts_with("--dtype="))
                {
                    argv.extend(["--dtype".into(), dtype.hf_name().into()]);
                }
                if let Some(rank) = lora_max_rank {
                    argv.extend(
                        ["--enable-lora", "--max-loras", "1", "--max-lora-rank"].map(str::to_owned),
                    );
                    argv.push(rank.to_string());
                }
                argv.extend(launch.args.iter().cloned());
                argv
            }
        };
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StageError::Run(format!("{}: {e}", parent.display())))?;
        }
        let file = std::fs::File::create(log)
            .map_err(|e| StageError::Run(format!("{}: {e}", log.display())))?;
        let err = file
            .try_clone()
            .map_err(|e| StageError::Run(format!("{}: {e}", log.display())))?;
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        if launch.command.is_none() {
            // The weight routes, and a KV cache that leaves the machine room (vLLM on CPU
            // otherwise takes most of RAM); the user's env wins.
            command.env("VLLM_SERVER_DEV_MODE", "1");
            if lora_max_rank.is_some() {
                command.env("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True");
            }
            if std::env::var_os("VLLM_CPU_KVCACHE_SPACE").is_none() {
                command.env("VLLM_CPU_KVCACHE_SPACE", "1");
            }
        }
        command.envs(&launch.env);
        let child = command.spawn().map_err(|e| {
            StageError::Run(format!(
                "launching `{}`: {e} (launch.python should be a Python with vLLM; scripts/setup-vllm.sh installs one)",
                argv[0]
            ))
        })?;
        tracing::info!(command = argv.join(" "), log = %log.display(), "generate.openai: launching the server");
        Ok(Process {
            child,
            log: log.to_path_buf(),
        })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn note(&mut self) -> String {
        match self.exited() {
            Some(status) => format!(
                "; the launched server exited ({status}); {}",
                self.log_tail()
            ),
            None => format!("; the launched server's log is {}", self.log.display()),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("{} ends: {}", self.log.display(), tail.join(" | "))
    }

    /// Sends `signal` to the server.
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.exited().is_none() {
            self.signal("-KILL");
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_are_read_with_their_ids_logprobs_and_reasons() {
        let body = r#"{"choices": [
            {"index": 1, "text": "ab", "token_ids": [5, 6], "finish_reason": "stop", "stop_reason": "</answer>",
             "logprobs": {"token_logprobs": [-0.5, -1.5], "tokens": ["a", "b"]}},
            {"index": 0, "text": "c", "token_ids": [7, 2], "finish_reason": "stop", "stop_reason": null,
             "logprobs": {"token_logprobs": [-0.25, -2.0]}},
            {"index": 2, "text": "d", "token_ids": [8], "finish_reason": "length",
             "logprobs": {"token_logprobs": [-3.0]}}
        ]}"#;
        let out = parse_completions(body, 3).expect("parses");
        assert_eq!(out[0].token_ids, vec![7, 2]);
        assert_eq!(out[0].finish_reason, FinishReason::Eos);
        assert_eq!(out[1].logprobs, vec![-0.5, -1.5]);
        assert_eq!(out[1].finish_reason, FinishReason::Stop);
        assert_eq!(out[2].finish_reason, FinishReason::Length);
    }

    #[test]
    fn answers_the_learner_cannot_use_are_failures_that_say_why() {
        let missing_ids = r#"{"choices": [{"index": 0, "text": "a", "finish_reason": "length",
            "logprobs": {"token_logprobs": [-1.0]}}]}"#;
        let failure = parse_completions(missing_ids, 1).expect_err("no ids");
        assert!(!failure.retryable(), "{failure}");
        assert!(failure.to_string().contains("token_ids"), "{failure}");
        let short = r#"{"choices": [{"index": 0, "token_ids": [1, 2], "finish_reason": "length",
            "logprobs": {"token_logprobs": [-1.0]}}]}"#;
        let failure = parse_completions(short, 1).expect_err("lengths differ");
        assert!(failure.retryable() && failure.to_string().contains("2 token ids but 1"));
        let fewer = r#"{"choices": []}"#;
        assert!(parse_completions(fewer, 2).is_err());
        let aborted = r#"{"choices": [{"index": 0, "token_ids": [1], "finish_reason": "abort",
            "logprobs": {"token_logprobs": [-1.0]}}]}"#;
        assert!(
            parse_completions(aborted, 1)
                .expect_err("aborted")
                .retryable()
        );
        assert!(
            parse_completions("<html>", 1)
                .expect_err("html")
                .retryable()
        );
    }

    #[test]
    fn sync_reads_as_a_name_or_a_command() {
        let sync: Sync = serde_json::from_str(r#""sglang""#).expect("name");
        assert_eq!(sync, Sync::Sglang);
        let sync: Sync =
            serde_json::from_str(r#"{"command": ["reload.sh", "{weights}"]}"#).expect("command");
        assert_eq!(
            sync,
            Sync::Command(vec!["reload.sh".into(), "{weights}".into()])
        );
        assert!(Sync::Command(vec![]).check().is_err());
        assert!(serde_json::from_str::<Sync>(r#""vlm""#).is_err());
    }

    #[test]
    fn a_sync_command_gets_the_directory_and_version() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("seen");
        let script = format!("echo \"$1 $2 $TANDEM_VERSION\" > {}", out.display());
        let argv: Vec<String> = ["sh", "-c", &script, "sh", "{weights}", "{version}"]
            .map(str::to_owned)
            .to_vec();
        run_sync_command(&argv, Path::new("/w/v3"), 3).expect("runs");
        assert_eq!(
            std::fs::read_to_string(&out).expect("written").trim(),
            "/w/v3 3 3"
        );
        let failing: Vec<String> = ["sh", "-c", "echo nope >&2; exit 3"]
            .map(str::to_owned)
            .to_vec();
        let e = run_sync_command(&failing, Path::new("/w"), 1).expect_err("fails");
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
