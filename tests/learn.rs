//! The learner: the weighted policy-gradient loss has the gradient it should (checked against
//! finite differences), a non-finite loss refuses the step, and `learn.pg` trains inside a
//! pipeline with the generator picking up each new version.

use std::path::{Path, PathBuf};

use tandem_stages::policy::{
    self, DeviceSpec, Gradients, Learner, LearnerConfig, PolicyGradient, Sequence, Transformer,
    sequence_logprobs,
};
use tch::{Kind, Tensor};

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tandem-init")
}

fn load() -> Transformer {
    policy::set_threads(1);
    Transformer::load(&model_dir(), &DeviceSpec::Cpu, None).expect("fixture loads")
}

fn sequences() -> Vec<Sequence> {
    vec![
        Sequence {
            prompt_ids: vec![5, 17, 40, 2],
            completion_ids: vec![33, 8, 91],
            advantage: 1.0,
            old_logprobs: None,
            sampled_logprobs: None,
        },
        Sequence {
            prompt_ids: vec![9, 3],
            completion_ids: vec![12, 7, 7, 64, 100],
            advantage: -0.5,
            old_logprobs: None,
            sampled_logprobs: None,
        },
    ]
}

/// `Σ_i scale_i · (−A_i) · Σ_t log p_it`: the on-policy surrogate's value has this gradient.
fn reference_loss(model: &Transformer, seqs: &[Sequence], scales: &[f64]) -> f64 {
    let refs: Vec<&Sequence> = seqs.iter().collect();
    let (logprobs, mask) = tch::no_grad(|| sequence_logprobs(model, &refs, 1.0)).expect("logprobs");
    let per_seq: Vec<f64> = Vec::<f64>::try_from((logprobs * mask).sum_dim_intlist(
        [1i64].as_slice(),
        false,
        Kind::Double,
    ))
    .expect("sums");
    per_seq
        .iter()
        .zip(seqs)
        .zip(scales)
        .map(|((lp, s), w)| w * -f64::from(s.advantage) * lp)
        .sum()
}

#[test]
fn the_weighted_loss_has_the_gradient_finite_differences_give() {
    let model = load();
    let learner = Learner::new(&model, LearnerConfig::default());
    let seqs = sequences();
    // The paper's aggregation over one prompt: sum over each sequence's tokens.
    for scales in [vec![1.0, 1.0], vec![1.0 / 3.0, 1.0 / 5.0]] {
        let objective = PolicyGradient {
            clip_eps: None,
            clip_eps_high: None,
            kl_coef: 0.0,
        };
        let mut grads = Gradients::default();
        learner
            .accumulate(&model, None, &seqs, &scales, &objective, &mut grads)
            .expect("backward");
        // The element of the output embedding with the largest gradient.
        let (name, param) = &model.named_parameters()[0];
        let grad = grads.get(0).expect("a gradient");
        let flat = grad.abs().flatten(0, -1);
        let index = flat.argmax(0, false).int64_value(&[]);
        let analytic = grad.flatten(0, -1).double_value(&[index]);
        assert!(
            analytic.abs() > 1e-4,
            "{name}: a gradient to check ({analytic})"
        );
        let h = 1e-2;
        let nudge = |delta: f64| {
            tch::no_grad(|| {
                let flat = param.flatten(0, -1);
                let value = flat.double_value(&[index]);
                let _ = flat.get(index).fill_(value + delta);
            });
        };
        nudge(h);
        let up = reference_loss(&model, &seqs, &scales);
        nudge(-2.0 * h);
        let down = reference_loss(&model, &seqs, &scales);
        nudge(h);
        let numeric = (up - down) / (2.0 * h);
        let rel = (numeric - analytic).abs() / analytic.abs();
        assert!(
            rel < 0.02,
            "{name}[{index}]: analytic {analytic}, numeric {numeric} ({rel})"
        );
    }
}

#[test]
fn a_non_finite_loss_refuses_the_step_and_keeps_the_weights() {
    let model = load();
    let mut learner = Learner::new(&model, LearnerConfig::default());
    let before: Vec<Tensor> = model
        .named_parameters()
        .iter()
        .map(|(_, p)| p.detach().copy())
        .collect();
    let mut seqs = sequences();
    seqs[1].advantage = f32::NAN;
    let objective = PolicyGradient {
        clip_eps: None,
        clip_eps_high: None,
        kl_coef: 0.0,
    };
    let err = learner
        .step_weighted(&model, None, &seqs, &[0.5, 0.5], &objective)
        .expect_err("refused");
    assert!(err.to_string().contains("the step is refused"), "{err}");
    assert_eq!(learner.optimizer.steps, 0, "no update counted");
    for ((name, p), b) in model.named_parameters().iter().zip(&before) {
        assert!(p.equal(b), "{name} changed");
    }
}

/// A training pipeline over generated arithmetic: the tiny model samples, the simulated cloud
/// answers the prompts that asked, rewards, GAPG advantages, the learner.
/// `steps` steps with a checkpoint every `every`.
fn training_pipeline(dir: &Path, cloud_base: &str, steps: u64, every: u64) -> PathBuf {
    let rollouts = format!(
        "kind: generate.policy\n    params: {{ model: '{}', chat: false, threads: 1, max_new_tokens: 12, temperature: 1.0, batch_prompts: 4 }}",
        model_dir().display()
    );
    training_pipeline_with(dir, cloud_base, steps, every, &rollouts)
}

/// [`training_pipeline`] with another generator: `rollouts` is the stage's YAML after its id
/// (`kind: ...` and `params: ...`, the second line indented by four spaces).
pub(crate) fn training_pipeline_with(
    dir: &Path,
    cloud_base: &str,
    steps: u64,
    every: u64,
    rollouts: &str,
) -> PathBuf {
    let data = dir.join("data.jsonl");
    crate::common::write_dataset(&data, 16, 0, 9);
    let yaml = format!(
        r#"run: {{ name: train, seed: 5, prompts_per_step: 4, group_size: 4, steps: {steps}, max_staleness: 0 }}
stages:
  - id: prompts
    kind: source.jsonl
    params:
      path: {data}
      fields: {{ id: uid, question: problem, answer: solution }}
  - id: rollouts
    {rollouts}
  - id: cloud
    kind: cloud.openai
    params: {{ base_url: '{cloud_base}', model: sim-oracle, cache_dir: null }}
  - {{ id: verdicts, kind: verify.exact, params: {{ extract: answer_tag }} }}
  - {{ id: reward, kind: reward.collab }}
  - id: length
    kind: reward.command
    params:
      # Distinct characters of the text: a reward a random tiny model's samples differ on.
      command: [python3, -c, "import json, sys\nfor line in sys.stdin:\n    g = json.loads(line)\n    print(json.dumps({{'scores': [len(set(s['text'])) / 10 for s in g['samples']]}}), flush=True)"]
  - {{ id: advantage, kind: advantage.gapg }}
  - id: learn
    kind: learn.pg
    params: {{ optimizer: {{ lr: 0.01 }}, checkpoint_every: {every} }}
"#,
        data = data.display(),
    );
    let path = dir.join("train.yaml");
    std::fs::write(&path, yaml).expect("write");
    path
}

/// `reward.collab` of [`training_pipeline`], and the same stage learning αc by dual ascent
/// toward a call rate of 0.1 (η 0.5, Kp 1, from αc = 0.25).
const COLLAB: &str = "{ id: reward, kind: reward.collab }";
const DUAL: &str = "{ id: reward, kind: reward.collab, params: { target_call_rate: 0.1, dual_lr: 0.5, dual_kp: 1.0 } }";

/// γ of [`DUAL`] after steps with call rates `rates`, written out from the rule in
/// docs/pipelines.md: the oracle of the stage's figures.
fn dual_gamma(rates: &[f64]) -> f64 {
    let (target, lr, kp) = (0.1, 0.5, 1.0);
    let mut integral: f64 = 1.0 - 0.25;
    for rate in rates {
        integral = (integral + lr * (rate - target)).clamp(0.0, 1.0);
    }
    match rates.last() {
        Some(rate) => (integral + kp * (rate - target)).clamp(0.0, 1.0),
        None => integral,
    }
}

fn metrics(
    streams: &std::collections::BTreeMap<String, tandem_schemas::io::Rows>,
) -> Vec<tandem_schemas::MetricsRecord> {
    match &streams["metrics"] {
        tandem_schemas::io::Rows::Metrics(rows) => rows.clone(),
        other => panic!("metrics holds {:?}", other.kind()),
    }
}

#[test]
fn a_pipeline_trains_the_policy_on_policy_and_twice_the_same() {
    use tandem_schemas::io::Rows;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let pipeline = training_pipeline(dir.path(), &sim.base, 3, 2);
    let mut runs = Vec::new();
    for attempt in 0..2 {
        let out = dir.path().join(format!("runs-{attempt}"));
        let summary = crate::common::run_in_process(&pipeline, 1, &out);
        runs.push((
            summary.run_dir.clone(),
            crate::common::stored_streams(&summary.run_dir),
        ));
    }
    sim.stop();
    let (run_dir, streams) = &runs[0];
    for (name, rows) in [
        ("rollouts", 48),
        ("verdicts", 48),
        ("reward", 48),
        ("length", 48),
        ("advantage", 48),
        ("metrics", 3),
    ] {
        assert_eq!(streams[name].len(), rows, "{name}");
    }
    let Rows::Samples(samples) = &streams["rollouts"] else {
        panic!("samples")
    };
    let Rows::Rewards(rewards) = &streams["length"] else {
        panic!("rewards")
    };
    let metrics = metrics(streams);
    // On-policy: step t samples with the version the learner published after step t - 1.
    for s in samples {
        let expected = if s.step == 0 {
            0
        } else {
            metrics[s.step as usize - 1].policy_version
        };
        assert_eq!(s.policy_version, expected, "step {} sample", s.step);
    }
    assert!(
        metrics.iter().all(|m| m.values["updated"] == 1.0),
        "{metrics:?}"
    );
    assert_eq!(
        metrics.iter().map(|m| m.policy_version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // The metrics agree with the stored rewards and samples.
    for m in &metrics {
        let step_rewards: Vec<f64> = rewards
            .iter()
            .filter(|r| r.step == m.step)
            .map(|r| r.reward)
            .collect();
        let mean = step_rewards.iter().sum::<f64>() / step_rewards.len() as f64;
        assert!(
            (m.values["mean_reward"] - mean).abs() < 1e-9,
            "step {}",
            m.step
        );
        let step_samples: Vec<_> = samples.iter().filter(|s| s.step == m.step).collect();
        let asked = step_samples.iter().filter(|s| s.asked_help).count() as f64;
        assert!((m.values["help_rate"] - asked / step_samples.len() as f64).abs() < 1e-12);
        assert_eq!(m.values["kept_prompts"], 4.0);
        assert!(m.values["loss"].is_finite() && m.values["grad_norm"] > 0.0);
        // Time per stage: every stage before the learner, and the step; on one worker the
        // stages run one after another inside the step (the cloud's time is wall time).
        let busy: f64 = [
            "prompts",
            "rollouts",
            "verdicts",
            "reward",
            "length",
            "advantage",
        ]
        .iter()
        .map(|stage| {
            let s = m.values[&format!("seconds.{stage}")];
            assert!(s >= 0.0, "seconds.{stage}");
            s
        })
        .sum::<f64>()
            + m.values["learn_seconds"];
        assert!(m.values.contains_key("seconds.cloud"), "{:?}", m.values);
        assert!(
            m.values["seconds.rollouts"] > 0.0 && m.values["seconds.step"] >= busy,
            "{:?}",
            m.values
        );
    }
    // Checkpoints after step 1 (every 2) and at the end; the weights moved.
    let ckpt = |step: u64| run_dir.join(format!("checkpoints/step-{step}"));
    for step in [1, 2] {
        for file in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "optimizer.safetensors",
            "trainer_state.json",
        ] {
            assert!(ckpt(step).join(file).is_file(), "step-{step}/{file}");
        }
    }
    let start = std::fs::read(model_dir().join("model.safetensors")).expect("start");
    let end = std::fs::read(ckpt(2).join("model.safetensors")).expect("end");
    assert_ne!(start, end, "the learner changed the weights");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ckpt(2).join("trainer_state.json")).expect("state"),
    )
    .expect("json");
    assert_eq!(
        (state["step"].as_u64(), state["policy_version"].as_u64()),
        (Some(3), Some(3))
    );

    // Determinism: the same seed and threads give the same streams and checkpoint bytes.
    let (other_dir, other) = &runs[1];
    for name in ["rollouts", "verdicts", "reward", "length", "advantage"] {
        assert_eq!(
            streams[name], other[name],
            "{name} differs between two runs"
        );
    }
    let losses = |m: &[tandem_schemas::MetricsRecord]| -> Vec<(f64, f64)> {
        m.iter()
            .map(|m| (m.values["loss"], m.values["grad_norm"]))
            .collect()
    };
    assert_eq!(losses(&metrics), losses(&self::metrics(other)));
    assert_eq!(
        std::fs::read(ckpt(2).join("model.safetensors")).expect("a"),
        std::fs::read(other_dir.join("checkpoints/step-2/model.safetensors")).expect("b"),
        "checkpoints differ between two runs"
    );
}

#[test]
fn a_run_killed_at_a_random_point_resumes_to_what_an_uninterrupted_run_stores() {
    use std::process::Command;
    use std::time::Duration;
    use tandem_schemas::layout::{Manifest, RunLayout, RunStatus};

    let dir = tempfile::tempdir().expect("tempdir");
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let steps = 5;
    let pipeline = training_pipeline(dir.path(), &sim.base, steps, 2);
    // With αc learned by dual ascent, whose γ a resumed run rebuilds from the stored samples.
    let yaml = std::fs::read_to_string(&pipeline).expect("read");
    std::fs::write(&pipeline, yaml.replace(COLLAB, DUAL)).expect("write");
    // Where to kill: once `wait_for` steps are stored, plus up to 60 ms (a step takes about
    // 100 ms here), so the kill lands anywhere from loading the model to step 3's checkpoint.
    // The seed is in every message.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos() as u64;
    let wait_for = seed % (steps - 1);
    let extra = Duration::from_millis(seed / 7 % 60);
    let why = format!("kill seed {seed}: after {wait_for} stored steps + {extra:?}");

    let out = dir.path().join("killed");
    let mut child = crate::common::spawn_tandem(
        &[
            "run",
            &pipeline.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        dir.path(),
    );
    let run = crate::common::wait_for_stored_steps(&out, wait_for, &why);
    std::thread::sleep(extra);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let layout = RunLayout::new(&run);
    let killed = Manifest::read(&layout).expect("manifest");
    assert_eq!(killed.status, RunStatus::Running, "{why}: killed mid-run");
    assert!(
        killed.checkpointed,
        "{why}: the learner's run keeps checkpoints"
    );

    let resumed = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["run", "--resume"])
        .arg(&run)
        .env("TANDEM_LOG", "warn")
        .output()
        .expect("resume");
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{why}: {stderr}");
    assert!(stderr.contains("resuming run"), "{why}: {stderr}");
    let manifest = Manifest::read(&layout).expect("manifest");
    assert_eq!(
        (manifest.status, manifest.steps_completed),
        (RunStatus::Complete, steps),
        "{why}"
    );
    assert_eq!(manifest.resumed_at.len(), 1, "{why}");
    eprintln!(
        "{why}: {} steps were stored, resumed at step {}",
        killed.steps_completed, manifest.resumed_at[0]
    );
    assert!(manifest.resumed_at[0] <= killed.steps_completed, "{why}");

    let whole = crate::common::run_in_process(&pipeline, 1, &dir.path().join("whole"));
    sim.stop();
    let (a, b) = (
        crate::common::stored_streams(&run),
        crate::common::stored_streams(&whole.run_dir),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, rows) in &a {
        match name.as_str() {
            // The resumed run's memo starts with the answers stored before the resume point,
            // so the same asks are calls and cache hits, with the same tokens, as without a kill.
            "cloud" => assert_eq!(
                crate::common::without_latency(rows),
                crate::common::without_latency(&b[name]),
                "{why}"
            ),
            "metrics" => assert_eq!(
                crate::common::without_timings(&metrics(&a)),
                crate::common::without_timings(&metrics(&b)),
                "{why}"
            ),
            _ => assert_eq!(*rows, b[name], "{why}: stream {name}"),
        }
        let stored_steps = layout.steps(name).expect("steps");
        assert!(
            stored_steps.is_empty() || stored_steps == (0..steps).collect::<Vec<_>>(),
            "{why}: {name} has steps {stored_steps:?}"
        );
    }
    crate::common::assert_same_checkpoint(&run, &whole.run_dir, steps - 1, &why);
    crate::bad_input::assert_only_complete_parquet(&run.join("streams"));
    let leftovers: Vec<_> = crate::common::files_under(&run)
        .into_iter()
        .filter(|p| tandem_schemas::io::is_temporary(p))
        .collect();
    assert!(leftovers.is_empty(), "{why}: {leftovers:?}");

    // A finished run has nothing to resume: a clear refusal, and nothing is touched.
    let before = crate::common::files_under(&run);
    let again = crate::common::tandem(&["run", "--resume", &run.display().to_string()], dir.path());
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("is complete (5 steps); there is nothing to resume"),
        "{stderr}"
    );
    assert_eq!(crate::common::files_under(&run), before);
}

#[test]
fn with_staleness_1_step_t_samples_the_weights_after_step_t_minus_2_in_every_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let pipeline = training_pipeline(dir.path(), &sim.base, 4, 0);
    let yaml = std::fs::read_to_string(&pipeline).expect("read");
    let yaml = yaml
        .replace("max_staleness: 0", "max_staleness: 1")
        .replace("lr: 0.01 }", "lr: 0.01 }, clip_eps: 0.2")
        .replace(COLLAB, DUAL)
        // One prompt per forward batch: the batches are then the same on any worker count.
        .replace("batch_prompts: 4", "batch_prompts: 1");
    std::fs::write(&pipeline, yaml).expect("write");
    // Twice on one worker, then on two: the same rows either way (the dual ascent's rates are
    // shared by the workers' instances).
    let runs: Vec<_> = [1, 1, 2]
        .iter()
        .enumerate()
        .map(|(i, &workers)| {
            let out = dir.path().join(format!("runs-{i}"));
            let summary = crate::common::run_in_process(&pipeline, workers, &out);
            crate::common::stored_streams(&summary.run_dir)
        })
        .collect();
    sim.stop();
    let tandem_schemas::io::Rows::Samples(samples) = &runs[0]["rollouts"] else {
        panic!("samples")
    };
    let metrics = metrics(&runs[0]);
    assert_eq!(
        metrics.iter().map(|m| m.policy_version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for s in samples {
        let expected = match s.step {
            0 | 1 => 0,
            t => metrics[t as usize - 2].policy_version,
        };
        assert_eq!(s.policy_version, expected, "step {} sample", s.step);
    }
    for name in ["rollouts", "verdicts", "reward", "length", "advantage"] {
        assert_eq!(
            runs[0][name], runs[1][name],
            "{name} differs between two runs"
        );
        assert_eq!(
            runs[0][name], runs[2][name],
            "{name} differs between one and two workers"
        );
    }
    let losses = |m: &[tandem_schemas::MetricsRecord]| -> Vec<f64> {
        m.iter().map(|m| m.values["loss"]).collect()
    };
    assert_eq!(losses(&metrics), losses(&self::metrics(&runs[1])));
    assert_eq!(losses(&metrics), losses(&self::metrics(&runs[2])));
    // Step t's γ comes from the call rates of the steps before t − 1: those the policy that
    // generated step t was trained on.
    let rates: Vec<f64> = metrics.iter().map(|m| m.values["help_rate"]).collect();
    for (m, other) in metrics.iter().zip(self::metrics(&runs[2])) {
        let t = m.step as usize;
        let want = dual_gamma(&rates[..t.saturating_sub(1)]);
        let gamma = m.values["reward.gamma"];
        assert!(
            (gamma - want).abs() < 1e-12,
            "step {t}: γ {gamma}, want {want}"
        );
        assert!((m.values["reward.alpha_cloud"] - (1.0 - gamma)).abs() < 1e-12);
        assert_eq!(other.values["reward.gamma"], gamma, "step {t}, two workers");
    }
}

/// The weights `learn.pg` saves after one update on `groups` (step 0), written under `run_dir`.
fn weights_after_one_update(groups: &[tandem_schemas::Group], run_dir: &Path) -> Vec<u8> {
    use tandem_stages::{BuildContext, Built, Registry, RunSettings, SharedState, StepContext};
    let registry = Registry::builtin();
    let shared = SharedState::default();
    let ctx = |id: &str| BuildContext {
        stage_id: id.into(),
        base_dir: PathBuf::from("."),
        run: RunSettings {
            group_size: 2,
            ..Default::default()
        },
        shared: shared.clone(),
    };
    let generator = serde_json::json!({ "model": model_dir(), "chat": false, "threads": 1 });
    registry
        .build("generate.policy", &generator, &ctx("rollouts"))
        .expect("generator");
    let learn = serde_json::json!({ "optimizer": { "lr": 0.01 } });
    let Ok(Built::Sink(mut learner)) = registry.build("learn.pg", &learn, &ctx("learn")) else {
        panic!("learn.pg builds a sink")
    };
    let step = StepContext {
        run_dir: Some(run_dir.into()),
        ..StepContext::single_worker("r", "learn", 0)
    };
    learner
        .consume(&mut groups.to_vec(), &step)
        .expect("update");
    learner.finish().expect("checkpoint");
    std::fs::read(run_dir.join("checkpoints/step-0/model.safetensors")).expect("weights")
}

#[test]
fn the_cloud_answer_gets_no_gradient_only_the_device_tokens_do() {
    use tandem_schemas::{AdvantageRecord, CloudRecord, Group, PromptRecord, SampleRecord};
    let tokenizer = policy::Tokenizer::from_dir(&model_dir()).expect("tokenizer");
    let sample = |i: u32, text: &str| SampleRecord {
        prompt_id: "p".into(),
        sample_idx: i,
        text: text.into(),
        token_ids: tokenizer.encode(text, false).expect("encode"),
        asked_help: text.contains("unknown"),
        ..Default::default()
    };
    let mut group = Group::new(PromptRecord {
        prompt_id: "p".into(),
        question: "What is 2 + 3?".into(),
        answer: Some("5".into()),
        ..Default::default()
    });
    group.samples = vec![
        sample(0, "<answer>5</answer>"),
        sample(1, "<unknown>I need external assistance</unknown>"),
    ];
    group.advantages = [1.0, -1.0]
        .into_iter()
        .enumerate()
        .map(|(i, advantage)| AdvantageRecord {
            prompt_id: "p".into(),
            sample_idx: i as u32,
            advantage,
            ..Default::default()
        })
        .collect();
    let mut helped = group.clone();
    helped.cloud = Some(CloudRecord {
        prompt_id: "p".into(),
        answer: Some("Add them: 2 + 3 = 5, so <answer>5</answer>. ".repeat(20)),
        tokens_out: 400,
        ..Default::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let alone = weights_after_one_update(&[group], &dir.path().join("a"));
    let with_cloud = weights_after_one_update(&[helped], &dir.path().join("b"));
    let start = std::fs::read(model_dir().join("model.safetensors")).expect("start");
    assert_ne!(alone, start, "the update moved the weights");
    assert_eq!(
        alone, with_cloud,
        "a long cloud answer in the group changed the update"
    );
}

#[test]
fn the_papers_named_templates_reach_the_prompt_the_policy_and_the_learner_see() {
    use tandem_stages::policy::PolicyHub;
    use tandem_stages::{BuildContext, Registry, RunSettings, SharedState};
    let prompt = |params: serde_json::Value| -> Result<String, String> {
        let shared = SharedState::default();
        let ctx = BuildContext {
            stage_id: "rollouts".into(),
            base_dir: PathBuf::from("."),
            run: RunSettings::default(),
            shared: shared.clone(),
        };
        let mut params = params;
        params["model"] = serde_json::json!(model_dir());
        Registry::builtin()
            .build("generate.policy", &params, &ctx)
            .map_err(|e| e.to_string())?;
        let hub = shared
            .get_or_try_init::<PolicyHub, ()>(PolicyHub::KEY, || Err(()))
            .expect("the generator made the hub");
        let ids = hub
            .prompt_ids("Using the numbers [1, 2], create an equation that equals 3")
            .expect("ids");
        let tokenizer = policy::Tokenizer::from_dir(&model_dir()).expect("tokenizer");
        Ok(tokenizer.decode(&ids, false).expect("decode"))
    };
    let countdown = prompt(serde_json::json!({ "template": "countdown" })).expect("countdown");
    assert!(
        countdown.contains("Show all your reasoning in <think> </think> tags"),
        "{countdown}"
    );
    assert!(
        countdown.contains("<unknown> I need external assistance </unknown>."),
        "{countdown}"
    );
    assert!(
        countdown.contains("equals 3. Let me solve this step by step."),
        "{countdown}"
    );
    let task = prompt(serde_json::json!({ "template": "countdown_task" })).expect("task");
    assert!(
        !task.contains("<unknown>") && task.contains("<answer> </answer> tags"),
        "{task}"
    );
    let math = prompt(serde_json::json!({ "template": "math" })).expect("math");
    assert!(math.contains("after 6 reasoning steps") && math.contains("Let's think step by step."));
    // An explicit user turn wins over the template's; a system prompt needs the chat template.
    let own = prompt(serde_json::json!({ "template": "math", "prompt_template": "Q: {question}" }))
        .expect("own");
    assert!(own.contains("Q: Using the numbers") && own.contains("after 6 reasoning steps"));
    let plain =
        prompt(serde_json::json!({ "template": "math", "chat": false })).expect_err("plain");
    assert!(plain.contains("needs `chat: true`"), "{plain}");
}

#[test]
fn several_epochs_per_batch_take_as_many_clipped_optimizer_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let pipeline = training_pipeline(dir.path(), &sim.base, 2, 0);
    let yaml = std::fs::read_to_string(&pipeline).expect("read");
    std::fs::write(
        &pipeline,
        yaml.replace("lr: 0.01 }", "lr: 0.01 }, clip_eps: 0.2, epochs: 3"),
    )
    .expect("write");
    let run = crate::common::run_in_process(&pipeline, 1, &dir.path().join("runs"));
    sim.stop();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.run_dir.join("checkpoints/step-1/trainer_state.json"))
            .expect("state"),
    )
    .expect("json");
    assert_eq!(
        (
            state["optimizer_steps"].as_u64(),
            state["policy_version"].as_u64()
        ),
        (Some(6), Some(2)),
        "3 optimizer steps per step, one new version per step"
    );
    let streams = crate::common::stored_streams(&run.run_dir);
    for m in metrics(&streams) {
        assert_eq!(m.values["epochs"], 3.0);
        let (first, last) = (m.values["loss"], m.values["loss_last_epoch"]);
        assert!(
            first.is_finite() && last.is_finite() && first != last,
            "{m:?}"
        );
    }
}
