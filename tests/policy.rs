//! The policy engine against HF transformers: numbers recorded by
//! `scripts/parity/make_fixtures.py` from tiny random Qwen2 and Llama models (f32, CPU).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_schemas::FinishReason;
use tandem_stages::policy::{
    self, Attend, ChatMessage, DeviceSpec, GenerationRequest, Learner, LearnerConfig, Policy,
    PolicyGradient, SamplingParams, Sequence, Transformer,
};
use tch::{Device, Kind, Tensor};

use crate::common::{floats, ids, max_abs_diff, tandem, torch_threads as threads};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> (Policy, Value) {
    threads();
    let dir = fixtures().join("models").join(name);
    let policy = Policy::load(&dir, &DeviceSpec::Cpu, None).expect("fixture loads");
    let text = std::fs::read_to_string(fixtures().join("parity").join(format!("{name}.json")))
        .expect("reference");
    (policy, serde_json::from_str(&text).expect("reference json"))
}

/// Full logits `[T, V]` of one unpadded sequence.
fn logits_of(model: &Transformer, input: &[u32]) -> Vec<Vec<f32>> {
    let t = input.len() as i64;
    let ids: Vec<i64> = input.iter().map(|&i| i64::from(i)).collect();
    let ids = Tensor::from_slice(&ids).view([1, t]);
    let positions = Tensor::arange(t, (Kind::Int64, Device::Cpu)).view([1, t]);
    // An explicit mask, not the causal fast path, so both kernels are checked against transformers
    // (the batched cases below take the fast path).
    let mask = Attend::Mask(Tensor::ones([1, 1, t, t], (Kind::Bool, Device::Cpu)).tril(0));
    let logits = tch::no_grad(|| model.logits(&model.forward(&ids, &positions, &mask, None)));
    let flat = Vec::<f32>::try_from(logits.flatten(0, -1)).expect("logits");
    flat.chunks(model.config.vocab_size)
        .map(<[f32]>::to_vec)
        .collect()
}

fn check_parity(name: &str) {
    let (policy, reference) = load(name);
    // Logits at every position.
    for case in reference["logits"].as_array().expect("logits cases") {
        let got = logits_of(&policy.model, &ids(&case["input_ids"]));
        let want: Vec<Vec<f32>> = case["logits"]
            .as_array()
            .expect("rows")
            .iter()
            .map(floats)
            .collect();
        assert_eq!(got.len(), want.len());
        for (pos, (g, w)) in got.iter().zip(&want).enumerate() {
            let d = max_abs_diff(g, w);
            assert!(d < 1e-4, "{name}: position {pos}: max |Δlogit| = {d}");
        }
    }
    // Log-probs of completions, batched together (left-padded prompts, right-padded completions).
    let sequences: Vec<Sequence> = reference["logprobs"]
        .as_array()
        .expect("logprob cases")
        .iter()
        .map(|c| Sequence {
            prompt_ids: ids(&c["prompt_ids"]),
            completion_ids: ids(&c["completion_ids"]),
            ..Sequence::default()
        })
        .collect();
    let refs: Vec<&Sequence> = sequences.iter().collect();
    let (lp, mask) =
        tch::no_grad(|| policy::sequence_logprobs(&policy.model, &refs, 1.0)).expect("logprobs");
    for (r, case) in reference["logprobs"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let want = floats(&case["logprobs"]);
        let row =
            Vec::<f32>::try_from(lp.get(r as i64).narrow(0, 0, want.len() as i64)).expect("row");
        let d = max_abs_diff(&row, &want);
        assert!(d < 1e-4, "{name}: logprobs case {r}: max |Δ| = {d}");
        let m = Vec::<f32>::try_from(mask.get(r as i64)).expect("mask");
        assert_eq!(m.iter().filter(|&&x| x == 1.0).count(), want.len());
    }
    // Greedy continuations, one prompt at a time.
    let max_new = reference["batched_greedy"]["max_new_tokens"]
        .as_u64()
        .expect("max") as usize;
    let params = SamplingParams {
        max_new_tokens: max_new,
        temperature: 0.0,
        eos_token_ids: policy.eos_token_ids(),
        ..SamplingParams::default()
    };
    let mut want_eos = ids(&reference["eos_token_ids"]);
    want_eos.sort_unstable();
    assert_eq!(
        params.eos_token_ids, want_eos,
        "{name}: EOS ids read from the config files"
    );
    for case in reference["greedy"].as_array().expect("greedy cases") {
        let request = GenerationRequest {
            prompt_ids: ids(&case["prompt_ids"]),
            num_samples: 1,
            seed: 0,
        };
        let out = policy::generate(&policy.model, &policy.tokenizer, &[request], &params)
            .expect("generate");
        assert_eq!(
            out[0][0].token_ids,
            ids(&case["output_ids"]),
            "{name}: greedy from {:?}",
            case["prompt_ids"]
        );
    }
    // The same prompts in one left-padded batch: identical to transformers' batch and to the
    // unbatched runs.
    let batch = &reference["batched_greedy"];
    let requests: Vec<GenerationRequest> = batch["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| GenerationRequest {
            prompt_ids: ids(p),
            num_samples: 1,
            seed: 0,
        })
        .collect();
    let out =
        policy::generate(&policy.model, &policy.tokenizer, &requests, &params).expect("batched");
    for (r, want) in batch["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .enumerate()
    {
        let got = &out[r][0];
        assert_eq!(got.token_ids, ids(want), "{name}: batched greedy row {r}");
        let eos = params
            .eos_token_ids
            .contains(got.token_ids.last().expect("a token"));
        let expected = if eos {
            FinishReason::Eos
        } else {
            FinishReason::Length
        };
        assert_eq!(got.finish_reason, expected);
        assert_eq!(got.logprobs.len(), got.token_ids.len());
    }
}

#[test]
fn qwen2_matches_transformers() {
    check_parity("qwen2-tiny");
}

#[test]
fn llama3_sharded_bf16_matches_transformers() {
    check_parity("llama-tiny");
}

fn check_tokenizer(name: &str) {
    let (policy, reference) = load(name);
    for case in reference["tokenize"].as_array().expect("tokenize") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(
            policy.tokenizer.encode(text, false).expect("encode"),
            ids(&case["ids"]),
            "{name}: {text:?}"
        );
        if let Some(with) = case.get("ids_with_special_tokens") {
            assert_eq!(
                policy.tokenizer.encode(text, true).expect("encode"),
                ids(with),
                "{name}: {text:?} + specials"
            );
        }
    }
    for case in reference["chat"].as_array().expect("chat") {
        let add = case["add_generation_prompt"].as_bool().expect("flag");
        let text = policy
            .tokenizer
            .render_chat(&case["messages"], case.get("tools"), add)
            .expect("render");
        if case.get("tools").is_none()
            && let Ok(messages) =
                serde_json::from_value::<Vec<ChatMessage>>(case["messages"].clone())
        {
            assert_eq!(
                policy
                    .tokenizer
                    .apply_chat_template(&messages, add)
                    .expect("render"),
                text
            );
        }
        assert_eq!(
            text,
            case["text"].as_str().expect("text"),
            "{name}: chat template"
        );
        assert_eq!(
            policy.tokenizer.encode(&text, false).expect("encode"),
            ids(&case["ids"])
        );
    }
}

#[test]
fn qwen2_tokenizer_and_chat_template_match_transformers() {
    check_tokenizer("qwen2-tiny");
}

#[test]
fn llama3_tokenizer_and_chat_template_match_transformers() {
    check_tokenizer("llama-tiny");
}

#[test]
fn samples_are_seeded_per_prompt_and_share_nothing_with_their_batch() {
    let (policy, _) = load("qwen2-tiny");
    let params = SamplingParams {
        max_new_tokens: 12,
        temperature: 1.0,
        top_p: 0.9,
        top_k: 50,
        eos_token_ids: policy.eos_token_ids(),
        ..SamplingParams::default()
    };
    let a = GenerationRequest {
        prompt_ids: policy.tokenizer.encode("What is 2 + 2?", true).expect("a"),
        num_samples: 3,
        seed: 11,
    };
    let b = GenerationRequest {
        prompt_ids: policy.tokenizer.encode("Hi", true).expect("b"),
        num_samples: 2,
        seed: 12,
    };
    let together = policy::generate(
        &policy.model,
        &policy.tokenizer,
        &[a.clone(), b.clone()],
        &params,
    )
    .expect("batch");
    let alone = policy::generate(
        &policy.model,
        &policy.tokenizer,
        std::slice::from_ref(&a),
        &params,
    )
    .expect("alone");
    let again = policy::generate(&policy.model, &policy.tokenizer, &[b.clone(), a], &params)
        .expect("reordered");
    assert_eq!(together[0].len(), 3);
    assert_eq!(together[1].len(), 2);
    for i in 0..3 {
        assert_eq!(
            together[0][i].token_ids, alone[0][i].token_ids,
            "sample {i} depends on its batch"
        );
        assert_eq!(together[0][i].token_ids, again[1][i].token_ids);
        let lp = max_abs_diff(&together[0][i].logprobs, &alone[0][i].logprobs);
        assert!(lp < 1e-4, "log-probs differ by {lp}");
    }
    // The G samples of a prompt are different draws.
    let distinct: std::collections::BTreeSet<_> =
        together[0].iter().map(|c| c.token_ids.clone()).collect();
    assert!(
        distinct.len() > 1,
        "three samples at temperature 1 were identical"
    );
}

#[test]
fn sampled_logprobs_equal_the_learners_logprobs() {
    let (policy, _) = load("llama-tiny");
    let temperature = 0.7;
    let params = SamplingParams {
        max_new_tokens: 10,
        temperature,
        eos_token_ids: policy.eos_token_ids(),
        ..SamplingParams::default()
    };
    let request = GenerationRequest {
        prompt_ids: policy.tokenizer.encode("Count: 1 2 3", true).expect("ids"),
        num_samples: 2,
        seed: 3,
    };
    let out = policy::generate(
        &policy.model,
        &policy.tokenizer,
        std::slice::from_ref(&request),
        &params,
    )
    .expect("generate");
    let sequences: Vec<Sequence> = out[0]
        .iter()
        .map(|c| Sequence {
            prompt_ids: request.prompt_ids.clone(),
            completion_ids: c.token_ids.clone(),
            ..Sequence::default()
        })
        .collect();
    let refs: Vec<&Sequence> = sequences.iter().collect();
    let (lp, _) = tch::no_grad(|| policy::sequence_logprobs(&policy.model, &refs, temperature))
        .expect("score");
    for (r, c) in out[0].iter().enumerate() {
        let row = Vec::<f32>::try_from(lp.get(r as i64).narrow(0, 0, c.logprobs.len() as i64))
            .expect("row");
        let d = max_abs_diff(&row, &c.logprobs);
        assert!(
            d < 1e-4,
            "sample {r}: generation and scoring disagree by {d}"
        );
    }
}

#[test]
fn stop_strings_end_a_completion_right_after_them() {
    let (policy, _) = load("qwen2-tiny");
    // A random model writes spaces often; " " as a stop string must cut every sample at its first.
    let params = SamplingParams {
        max_new_tokens: 40,
        temperature: 1.0,
        stop: vec![" ".into()],
        eos_token_ids: vec![],
        ..SamplingParams::default()
    };
    let request = GenerationRequest {
        prompt_ids: policy.tokenizer.encode("The answer is", true).expect("ids"),
        num_samples: 8,
        seed: 5,
    };
    let out =
        policy::generate(&policy.model, &policy.tokenizer, &[request], &params).expect("generate");
    let stopped = out[0]
        .iter()
        .filter(|c| c.finish_reason == FinishReason::Stop)
        .count();
    assert!(stopped > 0, "no sample produced a space in 40 tokens");
    for c in &out[0] {
        match c.finish_reason {
            FinishReason::Stop => {
                assert!(
                    c.text.ends_with(' ') && c.text.matches(' ').count() == 1,
                    "{:?}",
                    c.text
                );
            }
            FinishReason::Length => {
                assert_eq!(c.token_ids.len(), 40);
                assert!(!c.text.contains(' '));
            }
            other => panic!("unexpected finish reason {other:?}"),
        }
    }
}

fn init_args<'a>(dir: &'a str, tokenizer: &'a str) -> Vec<&'a str> {
    vec![
        "model",
        "init",
        dir,
        "--arch",
        "qwen2",
        "--hidden",
        "64",
        "--layers",
        "2",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--intermediate",
        "96",
        "--tokenizer",
        tokenizer,
        "--seed",
        "7",
        "--init-std",
        "0.2",
        "--max-positions",
        "256",
    ]
}

/// `tests/fixtures/models/tandem-init` was written by the command below and recorded by
/// transformers (`make_fixtures.py check`): re-running it must write the same bytes, and tandem
/// must compute transformers' logits on it.
#[test]
fn a_checkpoint_written_by_tandem_loads_in_transformers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("m");
    let tokenizer = fixtures().join("models/qwen2-tiny/tokenizer.json");
    let args = init_args(
        out.to_str().expect("utf-8"),
        tokenizer.to_str().expect("utf-8"),
    );
    let run = tandem(&args, tmp.path());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let committed = fixtures().join("models/tandem-init");
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        let a = std::fs::read(out.join(file)).expect("written");
        let b = std::fs::read(committed.join(file)).expect("committed");
        assert!(
            a == b,
            "{file} differs from the fixture transformers checked"
        );
    }
    let (policy, reference) = load("tandem-init");
    for case in reference["logits"].as_array().expect("logits") {
        let got = logits_of(&policy.model, &ids(&case["input_ids"]));
        let want: Vec<Vec<f32>> = case["logits"]
            .as_array()
            .expect("rows")
            .iter()
            .map(floats)
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!(max_abs_diff(g, w) < 1e-4);
        }
    }
}

/// Micro-batches are grouped by length to pad less; the step's loss and gradient are the same
/// sums whatever the grouping, with uneven lengths, advantages, scales and old log-probs.
#[test]
fn micro_batches_grouped_by_length_give_the_one_batch_gradient() {
    threads();
    let (policy, _) = load("qwen2-tiny");
    let encode =
        |text: &str, special: bool| policy.tokenizer.encode(text, special).expect("encode");
    let texts = [
        ("What is 2 + 2?", "<answer>4</answer>"),
        (
            "Which of 3, 8, 5 plus 4 is 9?",
            "<think>8 + 4 = 12 vs 9, 5 + 4 = 9 vs 9</think>",
        ),
        ("Hi", "<unknown>help</unknown>"),
        ("What is 12 + 30? Think first.", "42"),
        (
            "Sum 1 2 3",
            "<think>1 + 2 = 3, 3 + 3 = 6</think> <answer>6</answer>",
        ),
    ];
    let sequences: Vec<Sequence> = texts
        .iter()
        .enumerate()
        .map(|(i, (prompt, completion))| {
            let completion_ids = encode(completion, false);
            let old = (0..completion_ids.len())
                .map(|j| -0.5 - 0.1 * (i + j) as f32)
                .collect();
            Sequence {
                prompt_ids: encode(prompt, true),
                completion_ids,
                advantage: [1.0, -0.5, 0.25, 2.0, -1.5][i],
                old_logprobs: Some(old),
                sampled_logprobs: None,
            }
        })
        .collect();
    let scales = [0.1, 0.2, 0.05, 0.3, 0.15];
    let objective = PolicyGradient {
        clip_eps: Some(0.2),
        clip_eps_high: Some(0.28),
        kl_coef: 0.0,
    };
    let run = |micro_batch_size: usize| {
        let config = LearnerConfig {
            micro_batch_size,
            ..LearnerConfig::default()
        };
        let learner = Learner::new(&policy.model, config);
        let mut grads = policy::Gradients::default();
        let stats = learner
            .accumulate(
                &policy.model,
                None,
                &sequences,
                &scales,
                &objective,
                &mut grads,
            )
            .expect("accumulate");
        let flat: Vec<f32> = (0..learner.optimizer.params().len())
            .filter_map(|i| grads.get(i))
            .flat_map(|g| Vec::<f32>::try_from(g.flatten(0, -1)).expect("f32"))
            .collect();
        (stats, flat)
    };
    let (whole, whole_grads) = run(sequences.len());
    assert!(
        whole_grads.iter().any(|g| g.abs() > 1e-6),
        "a gradient to compare"
    );
    for micro in [1, 2, 3] {
        let (split, split_grads) = run(micro);
        assert_eq!(split.tokens, whole.tokens);
        assert!(
            (split.loss - whole.loss).abs() < 1e-5,
            "micro {micro}: {split:?} vs {whole:?}"
        );
        assert!((split.mean_logprob - whole.mean_logprob).abs() < 1e-5);
        assert_eq!(split_grads.len(), whole_grads.len());
        let diff = max_abs_diff(&split_grads, &whole_grads);
        assert!(diff < 1e-5, "micro {micro}: gradients differ by {diff}");
    }
}

#[test]
fn learns_a_target_completion_and_reloads_bit_identically() {
    threads();
    let tmp = tempfile::tempdir().expect("tmp");
    let src = fixtures().join("models/qwen2-tiny");
    let policy = Policy::load(&src, &DeviceSpec::Cpu, None).expect("load");
    let prompt = policy
        .tokenizer
        .encode("What is 12 + 30?", true)
        .expect("prompt");
    let target = policy
        .tokenizer
        .encode("<answer>42</answer>", false)
        .expect("target");
    let sequence = Sequence {
        prompt_ids: prompt,
        completion_ids: target,
        advantage: 1.0,
        old_logprobs: None,
        sampled_logprobs: None,
    };
    let config = LearnerConfig {
        micro_batch_size: 1,
        ..LearnerConfig::default()
    };
    let mut config = config;
    config.optimizer.lr = 3e-3;
    config.optimizer.weight_decay = 0.0;
    let mut learner = Learner::new(&policy.model, config);
    let objective = PolicyGradient {
        clip_eps: None,
        clip_eps_high: None,
        kl_coef: 0.0,
    };
    // Two copies in two micro-batches: gradient accumulation must give the same mean loss.
    let batch = vec![sequence.clone(), sequence];
    let nll = |model: &Transformer| -> f64 {
        let refs: Vec<&Sequence> = batch.iter().collect();
        let (lp, mask) =
            tch::no_grad(|| policy::sequence_logprobs(model, &refs, 1.0)).expect("score");
        -((lp * &mask).sum(Kind::Float) / mask.sum(Kind::Float)).double_value(&[])
    };
    let before = nll(&policy.model);
    for step in 0..61 {
        let stats = learner
            .step(&policy.model, None, &batch, &objective)
            .expect("step");
        if step == 0 {
            assert!(
                (stats.mean_logprob + before).abs() < 1e-4,
                "the step reports the log-probs it saw"
            );
        }
        assert_eq!(stats.tokens, 2 * batch[0].completion_ids.len());
        assert!(stats.grad_norm.is_finite() && stats.grad_norm > 0.0);
    }
    let after = nll(&policy.model);
    assert!(
        before > 1.0,
        "a random model should not know the answer: NLL {before}"
    );
    assert!(
        after < 0.1 * before,
        "NLL fell from {before} to {after} only"
    );
    assert_eq!(learner.optimizer.steps, 61);

    let ckpt = tmp.path().join("step-61");
    policy::save_pretrained(&policy.model, &src, &ckpt, policy::WeightDtype::F32).expect("save");
    let state = policy::TrainerState {
        optimizer_steps: 61,
        step: 61,
        policy_version: 61,
        seed: 1,
    };
    policy::save_trainer_state(
        &ckpt,
        &policy.model,
        policy::WeightDtype::F32,
        &learner,
        &state,
    )
    .expect("state");
    assert!(
        !ckpt.join("master.safetensors").exists(),
        "f32 needs no master copy"
    );
    let reloaded = Policy::load(&ckpt, &DeviceSpec::Cpu, None).expect("reload");
    for ((name, a), (name_b, b)) in policy
        .model
        .named_parameters()
        .iter()
        .zip(reloaded.model.named_parameters())
    {
        assert_eq!(name, name_b);
        assert!(a.detach().equal(b), "{name} changed through save/load");
    }
    let mut resumed = Learner::new(&reloaded.model, learner.config.clone());
    assert_eq!(
        policy::load_trainer_state(&ckpt, &mut resumed).expect("load state"),
        state
    );
    for ((name, a), (_, b)) in learner
        .optimizer
        .state_tensors()
        .iter()
        .zip(resumed.optimizer.state_tensors())
    {
        assert!(a.equal(&b), "{name} changed through save/load");
    }

    // Saved in bf16, a checkpoint keeps f32 master weights, and a resume gets those back.
    let bf16 = tmp.path().join("step-61-bf16");
    policy::save_pretrained(&policy.model, &src, &bf16, policy::WeightDtype::BF16).expect("save");
    policy::save_trainer_state(
        &bf16,
        &policy.model,
        policy::WeightDtype::BF16,
        &learner,
        &state,
    )
    .expect("state");
    let rounded =
        Policy::load(&bf16, &DeviceSpec::Cpu, Some(policy::WeightDtype::F32)).expect("reload bf16");
    let differs = |m: &policy::Transformer| {
        policy
            .model
            .named_parameters()
            .iter()
            .zip(m.named_parameters())
            .any(|((_, a), (_, b))| !a.detach().equal(b))
    };
    assert!(differs(&rounded.model), "bf16 rounding changes the weights");
    policy::load_master_weights(&bf16, &rounded.model).expect("master");
    assert!(
        !differs(&rounded.model),
        "the master copy restores them exactly"
    );
}

/// Replaces `from` by `to` in `dir/config.json`.
fn edit_config(dir: &Path, from: &str, to: &str) {
    let path = dir.join("config.json");
    let config = std::fs::read_to_string(&path).expect("config");
    assert!(config.contains(from), "{from} not in the fixture's config");
    std::fs::write(&path, config.replace(from, to)).expect("write");
}

#[test]
fn bad_model_directories_name_the_file_and_tensor() {
    let tmp = tempfile::tempdir().expect("tmp");
    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        for entry in std::fs::read_dir(fixtures().join("models/qwen2-tiny")).expect("fixture") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
        }
        dir
    };
    let err = |dir: &Path| {
        Policy::load(dir, &DeviceSpec::Cpu, None)
            .err()
            .expect("an error")
            .to_string()
    };

    let missing = copy("missing");
    std::fs::remove_file(missing.join("model.safetensors")).expect("rm");
    let e = err(&missing);
    assert!(
        e.contains("model.safetensors") && e.contains("no weights"),
        "{e}"
    );

    let mistral = copy("mistral");
    edit_config(&mistral, "\"qwen2\"", "\"mistral\"");
    let e = err(&mistral);
    assert!(
        e.contains("config.json") && e.contains("`mistral` is not supported"),
        "{e}"
    );

    let narrow = copy("narrow");
    edit_config(
        &narrow,
        "\"intermediate_size\": 128",
        "\"intermediate_size\": 96",
    );
    let e = err(&narrow);
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight")
            && e.contains("[128, 64]")
            && e.contains("[96, 64]"),
        "{e}"
    );

    let e = Policy::load(tmp.path(), &DeviceSpec::Cpu, None)
        .err()
        .expect("no config")
        .to_string();
    assert!(
        e.contains("tokenizer.json") || e.contains("config.json"),
        "{e}"
    );
}

#[test]
fn model_cli_prints_info_greedy_and_logprobs_as_json() {
    let dir = fixtures().join("models/llama-tiny");
    let dir = dir.to_str().expect("utf-8");
    let cwd = std::env::temp_dir();
    let info = tandem(&["model", "info", dir, "--json"], &cwd);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info: Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(info["architecture"], "LlamaForCausalLM");
    assert_eq!(info["kv_heads"], 1);
    assert!(info["device"].as_str().expect("device").starts_with("cpu"));

    let (policy, _) = load("llama-tiny");
    let prompt = "What is 2 + 2?";
    let prompt_ids = policy.tokenizer.encode(prompt, true).expect("ids");
    let params = SamplingParams {
        max_new_tokens: 16,
        temperature: 0.0,
        eos_token_ids: policy.eos_token_ids(),
        ..SamplingParams::default()
    };
    let request = GenerationRequest {
        prompt_ids: prompt_ids.clone(),
        num_samples: 1,
        seed: 0,
    };
    let want =
        policy::generate(&policy.model, &policy.tokenizer, &[request], &params).expect("generate");
    let out = tandem(
        &[
            "model",
            "generate",
            dir,
            "--prompt",
            prompt,
            "--greedy",
            "--max-new-tokens",
            "16",
            "--json",
        ],
        &cwd,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(ids(&out["prompt_ids"]), prompt_ids);
    assert_eq!(prompt_ids[0], 400, "a plain prompt gets Llama's BOS");
    assert_eq!(ids(&out["samples"][0]["token_ids"]), want[0][0].token_ids);
    assert_eq!(out["samples"][0]["text"], want[0][0].text.as_str());
    let lp = tandem(
        &[
            "model",
            "logprobs",
            dir,
            "--prompt",
            "What is 2 + 2?",
            "--completion",
            " <answer>4</answer>",
            "--json",
        ],
        &cwd,
    );
    assert!(
        lp.status.success(),
        "{}",
        String::from_utf8_lossy(&lp.stderr)
    );
    let lp: Value = serde_json::from_slice(&lp.stdout).expect("json");
    let values = floats(&lp["logprobs"]);
    assert_eq!(values.len(), ids(&lp["completion_ids"]).len());
    assert!(values.iter().all(|v| *v < 0.0 && v.is_finite()));
    let sum: f32 = values.iter().sum();
    assert!((sum - lp["sum"].as_f64().expect("sum") as f32).abs() < 1e-3);
}

/// `generate.policy` in a pipeline: samples, token ids and log-probs are stored, and the same
/// run on 1 and 2 workers produces the same samples (per-prompt seeds, no batch dependence).
#[test]
fn generate_policy_stage_is_reproducible_across_worker_counts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data.jsonl");
    crate::common::write_dataset(&data, 6, 0, 3);
    let model = fixtures().join("models/qwen2-tiny");
    let yaml = format!(
        r#"run:
  name: policy
  seed: 5
  prompts_per_step: 3
  group_size: 2
  steps: 2
stages:
  - id: prompts
    kind: source.jsonl
    params:
      path: {data}
      fields: {{ id: uid, question: problem, answer: solution }}
  - id: rollouts
    kind: generate.policy
    params:
      model: {model}
      threads: 1
      max_new_tokens: 8
      temperature: 1.0
      top_p: 0.9
      stop: ["</answer>"]
      batch_prompts: 2
"#,
        data = data.display(),
        model = model.display()
    );
    let pipeline = tmp.path().join("pipeline.yaml");
    std::fs::write(&pipeline, yaml).expect("write");
    let mut samples = Vec::new();
    for workers in [1, 2] {
        let out = tmp.path().join(format!("out-{workers}"));
        crate::common::run_in_process(&pipeline, workers, &out);
        let streams = crate::common::stored_streams(&crate::common::only_run(&out));
        let rows = match &streams["rollouts"] {
            tandem_schemas::io::Rows::Samples(rows) => rows.clone(),
            other => panic!("rollouts stream holds {other:?}"),
        };
        assert_eq!(rows.len(), 2 * 3 * 2, "steps × prompts × G samples");
        for r in &rows {
            assert!(!r.token_ids.is_empty() && r.token_ids.len() <= 8);
            assert_eq!(r.logprobs.len(), r.token_ids.len());
            assert!(r.logprobs.iter().all(|lp| *lp <= 0.0 && lp.is_finite()));
        }
        let mut keyed: Vec<_> = rows
            .into_iter()
            .map(|r| ((r.step, r.prompt_id, r.sample_idx), (r.token_ids, r.text)))
            .collect();
        keyed.sort();
        samples.push(keyed);
    }
    assert_eq!(
        samples[0], samples[1],
        "1 and 2 workers sampled differently"
    );
}
