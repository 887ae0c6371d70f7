//! LoRA adapters against PEFT, both ways: an adapter PEFT wrote gives PEFT's logits and
//! log-probs here, and the adapter `tandem model init-adapter` writes is the one PEFT loaded and
//! recorded (`scripts/parity/make_fixtures.py lora`). Then the oracles that need no Python
//! (merged = base + adapter, B = 0 = base), bad adapters, the learner and the pipeline.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus};
use tandem_stages::policy::{
    self, Attend, DeviceSpec, Learner, LearnerConfig, Likelihood, LoraConfig, LoraInit, Policy,
    Sequence, StepStats, TargetModule, Transformer, WeightDtype,
};
use tch::{Device, Kind, Tensor};

use crate::common::{floats, ids, max_abs_diff, tandem, torch_threads as threads};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn base_dir() -> PathBuf {
    root().join("tests/fixtures/models/qwen2-tiny")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/parity/lora-qwen2-tiny.json"))
        .expect("reference");
    serde_json::from_str(&text).expect("json")
}

fn base() -> Transformer {
    threads();
    Transformer::load(&base_dir(), &DeviceSpec::Cpu, None).expect("base")
}

/// Logits `[T * V]` of one unpadded sequence.
fn logits(model: &Transformer, input: &[u32]) -> Vec<f32> {
    let t = input.len() as i64;
    let ids: Vec<i64> = input.iter().map(|&i| i64::from(i)).collect();
    let ids = Tensor::from_slice(&ids).view([1, t]);
    let positions = Tensor::arange(t, (Kind::Int64, Device::Cpu)).view([1, t]);
    let out =
        tch::no_grad(|| model.logits(&model.forward(&ids, &positions, &Attend::Causal, None)));
    Vec::<f32>::try_from(out.flatten(0, -1)).expect("logits")
}

/// tandem's logits and log-probs with `model` equal those PEFT recorded in `side`.
fn assert_peft_numbers(model: &Transformer, side: &Value) {
    for case in side["logits"].as_array().expect("cases") {
        let want: Vec<f32> = case["logits"]
            .as_array()
            .expect("rows")
            .iter()
            .flat_map(floats)
            .collect();
        let got = logits(model, &ids(&case["input_ids"]));
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-4, "max |Δlogit| {diff}");
    }
    for case in side["logprobs"].as_array().expect("cases") {
        let seq = Sequence {
            prompt_ids: ids(&case["prompt_ids"]),
            completion_ids: ids(&case["completion_ids"]),
            ..Sequence::default()
        };
        let (lp, _) =
            tch::no_grad(|| policy::sequence_logprobs(model, &[&seq], 1.0)).expect("logprobs");
        let got = Vec::<f32>::try_from(lp.flatten(0, -1)).expect("lp");
        let diff = max_abs_diff(&got, &floats(&case["logprobs"]));
        assert!(diff < 1e-4, "max |Δlogprob| {diff}");
    }
}

#[test]
fn a_peft_adapter_gives_pefts_logits_and_logprobs() {
    let reference = reference();
    let side = &reference["peft"];
    let mut model = base();
    let base_logits = logits(&model, &ids(&side["logits"][0]["input_ids"]));
    let config = model
        .load_adapter(&root().join(side["adapter"].as_str().expect("dir")))
        .expect("PEFT's adapter loads");
    assert!(config.rslora && config.r == 4 && config.targets.len() == 5);
    // The adapter changes the model (B is not zero), and tandem changes it as PEFT does.
    let adapted = logits(&model, &ids(&side["logits"][0]["input_ids"]));
    assert!(max_abs_diff(&adapted, &base_logits) > 1e-2);
    assert_peft_numbers(&model, side);
}

/// `tests/fixtures/adapters/qwen2-tiny-tandem` was written by the command the fixture records,
/// then loaded in PEFT, which recorded its numbers: re-running the command writes the same
/// tensors, and tandem computes PEFT's numbers with them.
#[test]
fn the_adapter_tandem_writes_is_the_one_peft_loaded_and_gives_pefts_numbers() {
    let reference = reference();
    let side = &reference["tandem"];
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("adapter");
    let mut args: Vec<String> = side["command"]
        .as_array()
        .expect("command")
        .iter()
        .skip(1)
        .map(|v| v.as_str().expect("arg").to_owned())
        .collect();
    let committed = root().join(&args[3]);
    args[3] = out.display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = tandem(&args, &root());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for file in [policy::ADAPTER_WEIGHTS, policy::ADAPTER_CONFIG] {
        let a = std::fs::read(out.join(file)).expect("written");
        let b = std::fs::read(committed.join(file)).expect("committed");
        assert!(a == b, "{file} differs from the adapter PEFT loaded");
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join(policy::ADAPTER_CONFIG)).expect("config"))
            .expect("json");
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(
        config["base_model_name_or_path"],
        "tests/fixtures/models/qwen2-tiny"
    );
    let mut model = base();
    model.load_adapter(&out).expect("loads");
    assert_peft_numbers(&model, side);
}

#[test]
fn an_adapter_with_zero_b_gives_the_base_models_logits() {
    let input: Vec<u32> = (0..17).map(|i| (i * 37 + 5) % 400).collect();
    let want = logits(&base(), &input);
    for (seed, r, targets) in [
        (1, 1, vec![TargetModule::QProj]),
        (2, 8, TargetModule::ALL.to_vec()),
        (3, 3, vec![TargetModule::DownProj, TargetModule::KProj]),
    ] {
        let mut model = base();
        let config = LoraConfig {
            r,
            alpha: Some(2.0 * r as f64),
            rslora: seed % 2 == 0,
            dropout: 0.0,
            targets,
        };
        model
            .attach_lora(&config, LoraInit::Peft { seed })
            .expect("attach");
        assert_eq!(
            logits(&model, &input),
            want,
            "seed {seed}: B = 0 adds exactly 0"
        );
    }
}

#[test]
fn merged_weights_give_the_logits_of_base_plus_adapter() {
    let input: Vec<u32> = (0..13).map(|i| (i * 53 + 11) % 400).collect();
    for (seed, r, rslora, targets) in [
        (4, 2, false, vec![TargetModule::VProj, TargetModule::UpProj]),
        (5, 8, true, TargetModule::ALL.to_vec()),
        (
            6,
            5,
            false,
            vec![TargetModule::OProj, TargetModule::GateProj],
        ),
    ] {
        let mut model = base();
        let config = LoraConfig {
            r,
            alpha: Some(3.0),
            rslora,
            dropout: 0.0,
            targets,
        };
        model
            .attach_lora(&config, LoraInit::Random { seed })
            .expect("attach");
        let adapted = logits(&model, &input);
        assert!(max_abs_diff(&adapted, &logits(&base(), &input)) > 1e-3);
        // What generate.openai hands a serving engine: adapters folded in, the head untied.
        let tmp = tempfile::tempdir().expect("tmp");
        let served_dir = tmp.path().join("served");
        policy::save_for_engine(&model, &base_dir(), &served_dir, WeightDtype::F32, true)
            .expect("write");
        let served = Transformer::load(&served_dir, &DeviceSpec::Cpu, None).expect("load");
        assert!(!served.config.tie_word_embeddings && served.lora().is_none());
        let diff = max_abs_diff(&logits(&served, &input), &adapted);
        assert!(diff < 1e-4, "seed {seed}: served copy vs adapted {diff}");
        model.merge_lora();
        assert!(model.lora().is_none() && model.adapter_parameters().is_empty());
        let diff = max_abs_diff(&logits(&model, &input), &adapted);
        assert!(diff < 1e-4, "seed {seed}: merged vs adapted {diff}");
    }
}

#[test]
fn model_merge_writes_a_model_that_computes_pefts_numbers() {
    let reference = reference();
    let side = &reference["peft"];
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("merged");
    let adapter = root().join(side["adapter"].as_str().expect("dir"));
    let run = tandem(
        &[
            "model",
            "merge",
            base_dir().to_str().expect("utf-8"),
            adapter.to_str().expect("utf-8"),
            out.to_str().expect("utf-8"),
        ],
        tmp.path(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    threads();
    let merged = Policy::load(&out, &DeviceSpec::Cpu, None).expect("a plain HF model");
    assert!(merged.model.lora().is_none());
    assert_peft_numbers(&merged.model, side);
}

#[test]
fn model_logprobs_and_generate_take_an_adapter() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reference = reference();
    let adapter = root().join(reference["peft"]["adapter"].as_str().expect("dir"));
    let base = base_dir();
    let args = |with: bool| {
        let mut a = vec![
            "model",
            "logprobs",
            base.to_str().expect("utf-8"),
            "--prompt",
            "What is 12 + 30?",
            "--completion",
            " <answer>42</answer>",
            "--json",
            "--threads",
            "1",
        ];
        if with {
            a.extend(["--adapter", adapter.to_str().expect("utf-8")]);
        }
        let run = tandem(&a, tmp.path());
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        serde_json::from_slice::<Value>(&run.stdout).expect("json")
    };
    let (plain, adapted) = (args(false), args(true));
    // The CLI's numbers are the library's with the adapter attached.
    threads();
    let policy = Policy::load_with_adapter(&base, &adapter, &DeviceSpec::Cpu, None).expect("load");
    let seq = Sequence {
        prompt_ids: ids(&adapted["prompt_ids"]),
        completion_ids: ids(&adapted["completion_ids"]),
        ..Sequence::default()
    };
    let (lp, _) =
        tch::no_grad(|| policy::sequence_logprobs(&policy.model, &[&seq], 1.0)).expect("lp");
    let want = Vec::<f32>::try_from(lp.flatten(0, -1)).expect("lp");
    assert!(max_abs_diff(&floats(&adapted["logprobs"]), &want) < 1e-6);
    assert!(max_abs_diff(&floats(&plain["logprobs"]), &want) > 1e-3);
    let run = tandem(
        &[
            "model",
            "generate",
            base.to_str().expect("utf-8"),
            "--adapter",
            adapter.to_str().expect("utf-8"),
            "--prompt",
            "What is",
            "--greedy",
            "--max-new-tokens",
            "4",
            "--json",
        ],
        tmp.path(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// Copies the PEFT fixture adapter into a temp dir, lets `edit` break it, and returns the
/// error of loading it onto the base.
fn load_error(edit: impl FnOnce(&Path)) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("adapter");
    std::fs::create_dir(&dir).expect("dir");
    let from = root().join("tests/fixtures/adapters/qwen2-tiny-peft");
    for f in [policy::ADAPTER_CONFIG, policy::ADAPTER_WEIGHTS] {
        std::fs::copy(from.join(f), dir.join(f)).expect("copy");
    }
    edit(&dir);
    let mut model = base();
    model
        .load_adapter(&dir)
        .expect_err("a bad adapter")
        .to_string()
}

fn edit_config(dir: &Path, key: &str, value: Value) {
    let path = dir.join(policy::ADAPTER_CONFIG);
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    config[key] = value;
    std::fs::write(&path, config.to_string()).expect("write");
}

#[test]
fn bad_adapters_name_the_file_and_the_field_or_tensor() {
    let err = load_error(|d| std::fs::remove_file(d.join(policy::ADAPTER_WEIGHTS)).expect("rm"));
    assert!(err.contains(policy::ADAPTER_WEIGHTS), "{err}");
    let err = load_error(|d| std::fs::remove_file(d.join(policy::ADAPTER_CONFIG)).expect("rm"));
    assert!(err.contains(policy::ADAPTER_CONFIG), "{err}");
    let err =
        load_error(|d| edit_config(d, "target_modules", serde_json::json!(["q_proj", "qkv"])));
    assert!(
        err.contains(policy::ADAPTER_CONFIG)
            && err.contains("`target_modules`")
            && err.contains("qkv"),
        "{err}"
    );
    // A target the weights do not hold.
    let err =
        load_error(|d| edit_config(d, "target_modules", serde_json::json!(["q_proj", "k_proj"])));
    assert!(
        err.contains(policy::ADAPTER_WEIGHTS)
            && err.contains("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight")
            && err.contains("missing"),
        "{err}"
    );
    // A rank the weights do not have: a shape mismatch named by tensor.
    let err = load_error(|d| edit_config(d, "r", serde_json::json!(8)));
    assert!(
        err.contains(policy::ADAPTER_WEIGHTS)
            && err.contains("lora_A.weight")
            && err.contains("shape"),
        "{err}"
    );
    // Weights for a projection the config does not target are not silently dropped.
    let err = load_error(|d| {
        edit_config(
            d,
            "target_modules",
            serde_json::json!(["q_proj", "v_proj", "o_proj", "gate_proj"]),
        )
    });
    assert!(
        err.contains("down_proj") && err.contains("not an adapter"),
        "{err}"
    );
    // An adapter for another base (llama-tiny has other widths).
    let mut llama = Transformer::load(
        &root().join("tests/fixtures/models/llama-tiny"),
        &DeviceSpec::Cpu,
        None,
    )
    .expect("llama");
    let err = llama
        .load_adapter(&root().join("tests/fixtures/adapters/qwen2-tiny-peft"))
        .expect_err("another base")
        .to_string();
    assert!(err.contains("shape") || err.contains("missing"), "{err}");
    // The CLI says which file when a model directory is an adapter.
    let tmp = tempfile::tempdir().expect("tmp");
    let adapter = root().join("tests/fixtures/adapters/qwen2-tiny-peft");
    let run = tandem(
        &["model", "info", adapter.to_str().expect("utf-8")],
        tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("config.json") && stderr.contains("--adapter"),
        "{stderr}"
    );
}

#[test]
fn a_lora_learner_updates_only_the_adapters_and_learns() {
    let mut model = base();
    let mut config = LoraConfig::new(4);
    config.alpha = Some(8.0);
    model
        .attach_lora(&config, LoraInit::Peft { seed: 3 })
        .expect("attach");
    let before: Vec<Tensor> = model
        .named_parameters()
        .iter()
        .map(|(_, p)| p.detach().copy())
        .collect();
    let mut learner_config = LearnerConfig::default();
    learner_config.optimizer.lr = 1e-2;
    learner_config.optimizer.weight_decay = 0.0;
    let mut learner = Learner::new(&model, learner_config);
    // Moments only for the adapters: 2 matrices × 7 projections × 2 layers.
    assert_eq!(learner.optimizer.params().len(), 28);
    let (first, last) = likelihood_steps(&mut learner, &model, &[40, 41, 42, 43], 10);
    assert!(
        last.mean_logprob > first.mean_logprob + 0.5,
        "{} -> {}",
        first.mean_logprob,
        last.mean_logprob
    );
    for ((name, p), b) in model.named_parameters().iter().zip(&before) {
        assert!(p.equal(b), "{name} is frozen");
    }
}

/// One likelihood step on a single sequence, then `more` more: the first and the last
/// step's stats.
fn likelihood_steps(
    learner: &mut Learner,
    model: &Transformer,
    completion: &[u32],
    more: usize,
) -> (StepStats, StepStats) {
    let batch = vec![Sequence {
        prompt_ids: vec![5, 17, 99],
        completion_ids: completion.to_vec(),
        advantage: 1.0,
        old_logprobs: None,
        sampled_logprobs: None,
    }];
    let mut step = || {
        learner
            .step(model, None, &batch, &Likelihood)
            .expect("step")
    };
    let first = step();
    let last = (0..more)
        .map(|_| step())
        .last()
        .unwrap_or_else(|| first.clone());
    (first, last)
}

/// A GRPO pipeline whose learner trains LoRA adapters (`reward.command` scores distinct
/// characters, so the tiny model's samples differ).
pub(crate) fn lora_pipeline(dir: &Path, steps: u64, every: u64) -> PathBuf {
    let data = dir.join("data.jsonl");
    crate::common::write_dataset(&data, 16, 0, 9);
    let yaml = format!(
        r#"run: {{ name: lora, seed: 5, prompts_per_step: 4, group_size: 4, steps: {steps}, max_staleness: 0 }}
stages:
  - id: prompts
    kind: source.jsonl
    params:
      path: {data}
      fields: {{ id: uid, question: problem, answer: solution }}
  - id: rollouts
    kind: generate.policy
    params: {{ model: '{model}', chat: false, threads: 1, max_new_tokens: 8, temperature: 1.0 }}
  - id: length
    kind: reward.command
    params:
      command: [python3, -c, "import json, sys\nfor line in sys.stdin:\n    g = json.loads(line)\n    print(json.dumps({{'scores': [len(set(s['text'])) / 10 for s in g['samples']]}}), flush=True)"]
  - {{ id: advantage, kind: advantage.grpo }}
  - id: learn
    kind: learn.pg
    params:
      optimizer: {{ lr: 0.01 }}
      checkpoint_every: {every}
      lora: {{ r: 4, alpha: 8, targets: [q_proj, v_proj, down_proj] }}
"#,
        data = data.display(),
        model = base_dir().display(),
    );
    let path = dir.join("lora.yaml");
    std::fs::write(&path, yaml).expect("write");
    path
}

#[test]
fn a_lora_pg_run_checkpoints_peft_adapters_samples_with_them_and_resumes_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let steps = 4;
    let pipeline = lora_pipeline(dir.path(), steps, 2);
    let whole = crate::common::run_in_process(&pipeline, 1, &dir.path().join("whole"));
    let checkpoint = RunLayout::new(&whole.run_dir).checkpoint(steps - 1);
    for file in [
        policy::ADAPTER_CONFIG,
        policy::ADAPTER_WEIGHTS,
        policy::OPTIMIZER_FILE,
        policy::STATE_FILE,
        "tokenizer.json",
    ] {
        assert!(
            checkpoint.join(file).is_file(),
            "{file} in {}",
            checkpoint.display()
        );
    }
    assert!(
        !checkpoint.join("model.safetensors").exists(),
        "an adapter, not a model"
    );
    // The checkpoint is an adapter of the base that changed the model.
    threads();
    let mut model = base();
    let config = model.load_adapter(&checkpoint).expect("a PEFT adapter");
    assert_eq!(
        config.target_set(),
        [
            TargetModule::QProj,
            TargetModule::VProj,
            TargetModule::DownProj
        ]
    );
    let input: Vec<u32> = (0..9).collect();
    assert!(max_abs_diff(&logits(&model, &input), &logits(&base(), &input)) > 1e-4);
    // Generation used the learner's adapters: samples after step 0 carry newer versions.
    let streams = crate::common::stored_streams(&whole.run_dir);
    let tandem_schemas::io::Rows::Samples(samples) = &streams["rollouts"] else {
        panic!("samples")
    };
    assert!(samples.iter().any(|s| s.step == 3 && s.policy_version == 3));

    // Stopped during step 3 (after checkpoint step-1), resumed: the same adapter and moments.
    let stopped = crate::common::run_in_process(&pipeline, 1, &dir.path().join("stopped"));
    let layout = RunLayout::new(&stopped.run_dir);
    let mut manifest = Manifest::read(&layout).expect("manifest");
    manifest.status = RunStatus::Running;
    manifest.steps_completed = 3;
    manifest.write(&layout).expect("rewind");
    std::fs::remove_dir_all(layout.checkpoint(3)).expect("drop the last checkpoint");
    let resumed = tandem(
        &["run", "--resume", &stopped.run_dir.display().to_string()],
        dir.path(),
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        Manifest::read(&layout).expect("manifest").resumed_at,
        vec![2]
    );
    for file in [
        policy::ADAPTER_WEIGHTS,
        policy::OPTIMIZER_FILE,
        policy::STATE_FILE,
    ] {
        assert_eq!(
            std::fs::read(layout.checkpoint(3).join(file)).expect("resumed"),
            std::fs::read(checkpoint.join(file)).expect("whole"),
            "{file}: resumed vs uninterrupted"
        );
    }
}

#[test]
fn bad_lora_options_are_params_errors_before_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = lora_pipeline(dir.path(), 1, 0);
    let yaml = std::fs::read_to_string(&pipeline).expect("read");
    for (from, to, field) in [
        (
            "targets: [q_proj, v_proj, down_proj]",
            "targets: [q_proj, dense]",
            "dense",
        ),
        ("r: 4,", "r: 0,", "lora.r"),
    ] {
        std::fs::write(&pipeline, yaml.replace(from, to)).expect("write");
        let run = tandem(&["validate", pipeline.to_str().expect("utf-8")], dir.path());
        let run = if run.status.success() {
            tandem(
                &["run", pipeline.to_str().expect("utf-8"), "--out", "runs"],
                dir.path(),
            )
        } else {
            run
        };
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(field),
            "{field}: {stderr}"
        );
    }
}

#[test]
fn learn_sft_with_lora_fits_its_pairs_and_checkpoints_an_adapter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pairs.jsonl");
    let pairs = [
        ("What is 2 + 3?", "<answer>5</answer>"),
        ("What is 7 * 6?", "<answer>42</answer>"),
        ("Say hello.", "hello there"),
    ];
    crate::common::write_pairs(&data, &pairs);
    let model = root().join("tests/fixtures/models/tandem-init");
    let pipeline = crate::common::sft_pipeline(
        dir.path(),
        &data,
        &model,
        "name: sft-lora, seed: 3, prompts_per_step: 3, group_size: 1, steps: 12",
        &[
            "optimizer: { lr: 0.02, weight_decay: 0.0 }",
            "lora: { r: 8, alpha: 16, rslora: true, dropout: 0.05 }",
        ],
    );
    let run = crate::common::run_in_process(&pipeline, 1, &dir.path().join("runs"));
    let tandem_schemas::io::Rows::Metrics(metrics) =
        &crate::common::stored_streams(&run.run_dir)["metrics"]
    else {
        panic!("metrics")
    };
    let (first, last) = (metrics[0].values["loss"], metrics[11].values["loss"]);
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let checkpoint = RunLayout::new(&run.run_dir).checkpoint(11);
    let (config, base) = policy::read_adapter_config(&checkpoint).expect("an adapter");
    assert!(config.rslora && config.r == 8 && config.dropout == 0.05);
    assert_eq!(base.map(PathBuf::from), Some(model.clone()));
    // The merged model computes what base + adapter computes.
    threads();
    let adapted =
        Policy::load_with_adapter(&model, &checkpoint, &DeviceSpec::Cpu, None).expect("load");
    let merged_dir = dir.path().join("merged");
    policy::merge_adapter(&model, &checkpoint, &merged_dir, None).expect("merge");
    let merged = Policy::load(&merged_dir, &DeviceSpec::Cpu, None).expect("merged");
    let input: Vec<u32> = (1..20).collect();
    let diff = max_abs_diff(
        &logits(&merged.model, &input),
        &logits(&adapted.model, &input),
    );
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn a_bf16_base_keeps_f32_adapters_that_learn() {
    threads();
    let mut model = Transformer::load(
        &base_dir(),
        &DeviceSpec::Cpu,
        Some(policy::WeightDtype::BF16),
    )
    .expect("bf16 base");
    let adapter = root().join("tests/fixtures/adapters/qwen2-tiny-peft");
    model.load_adapter(&adapter).expect("adapter");
    assert!(
        model
            .adapter_parameters()
            .iter()
            .all(|(_, t)| t.kind() == Kind::Float)
    );
    assert_eq!(model.kind(), Kind::BFloat16);
    // As close to the f32 model with the same adapter as the bf16 base is to the f32 base: the
    // adapter adds no error of its own beyond the base's rounding.
    let input: Vec<u32> = (3..15).collect();
    let bf16_base = Transformer::load(
        &base_dir(),
        &DeviceSpec::Cpu,
        Some(policy::WeightDtype::BF16),
    )
    .expect("bf16 base");
    let rounding = max_abs_diff(&logits(&bf16_base, &input), &logits(&base(), &input));
    let mut f32_model = base();
    f32_model.load_adapter(&adapter).expect("adapter");
    let diff = max_abs_diff(&logits(&model, &input), &logits(&f32_model, &input));
    assert!(
        diff < 3.0 * rounding + 1e-3,
        "bf16 vs f32 base with the adapter: {diff}, without: {rounding}"
    );
    let base_before: Vec<Tensor> = model
        .named_parameters()
        .iter()
        .map(|(_, p)| p.detach().copy())
        .collect();
    let mut config = LearnerConfig::default();
    config.optimizer.lr = 1e-2;
    let mut learner = Learner::new(&model, config);
    let (first, last) = likelihood_steps(&mut learner, &model, &[40, 41, 42], 5);
    assert!(
        last.mean_logprob > first.mean_logprob,
        "{first:?} -> {last:?}"
    );
    for ((name, p), b) in model.named_parameters().iter().zip(&base_before) {
        assert!(
            p.kind() == Kind::BFloat16 && p.equal(b),
            "{name} stays frozen bf16"
        );
    }
}
