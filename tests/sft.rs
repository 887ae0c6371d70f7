//! `learn.sft`: fine-tuning on stored (question, response) pairs as a pipeline. The result is
//! a checkpoint `generate.policy` loads and answers each question with its response, on the
//! very prompts the fine-tuning saw; a stopped run resumes to the same weights; bad records are
//! error rows.

use std::path::{Path, PathBuf};

use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus};
use tandem_stages::{BuildContext, Registry, RunSettings, SharedState};

use crate::common::write_pairs;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tandem-init")
}

/// Six questions with one short stored response each.
const PAIRS: [(&str, &str); 6] = [
    ("What is 2 + 3?", "<answer>5</answer>"),
    ("What is 7 * 6?", "<answer>42</answer>"),
    ("What is 10 - 4?", "<answer>6</answer>"),
    ("Name a colour.", "blue"),
    ("What is 9 + 9?", "<answer>18</answer>"),
    ("Say hello.", "hello there"),
];

/// An SFT pipeline over `data`: every pair each step, `steps` steps at a high rate.
fn sft_pipeline(dir: &Path, data: &Path, steps: u64, every: u64) -> PathBuf {
    crate::common::sft_pipeline(
        dir,
        data,
        &model_dir(),
        &format!(
            "name: sft, seed: 3, prompts_per_step: {}, group_size: 1, steps: {steps}",
            PAIRS.len()
        ),
        &[
            r#"prompt_template: "Q: {question}""#,
            "optimizer: { lr: 0.01, weight_decay: 0.0 }",
            &format!("checkpoint_every: {every}"),
        ],
    )
}

fn metrics(run_dir: &Path) -> Vec<tandem_schemas::MetricsRecord> {
    match &crate::common::stored_streams(run_dir)["metrics"] {
        Rows::Metrics(rows) => rows.clone(),
        other => panic!("metrics holds {:?}", other.kind()),
    }
}

#[test]
fn sft_6_pairs_40_steps_then_generate_policy_answers_each_greedily() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pairs.jsonl");
    write_pairs(&data, &PAIRS);
    let steps = 40;
    let pipeline = sft_pipeline(dir.path(), &data, steps, 0);
    let run = crate::common::run_in_process(&pipeline, 1, &dir.path().join("runs"));
    let metrics = metrics(&run.run_dir);
    assert_eq!(metrics.len(), steps as usize);
    let loss: Vec<f64> = metrics.iter().map(|m| m.values["loss"]).collect();
    eprintln!("NLL per step: {loss:?}");
    assert!(
        loss[steps as usize - 1] < loss[0] / 20.0,
        "the NLL fell: {loss:?}"
    );
    for m in &metrics {
        assert_eq!(
            (m.values["updated"], m.values["sequences"]),
            (1.0, 6.0),
            "{m:?}"
        );
        assert!((m.values["mean_logprob"] + m.values["loss"]).abs() < 1e-6);
        assert!(
            m.values.contains_key("seconds.responses") && m.values.contains_key("seconds.step")
        );
    }
    assert_eq!(metrics[steps as usize - 1].policy_version, steps);
    let checkpoint = run.run_dir.join(format!("checkpoints/step-{}", steps - 1));
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(checkpoint.join("trainer_state.json")).expect("state"),
    )
    .expect("json");
    assert_eq!(state["optimizer_steps"].as_u64(), Some(steps));

    // The checkpoint, sampled greedily by generate.policy with the same prompt params.
    let yaml = format!(
        r#"run: {{ name: answer, seed: 1, prompts_per_step: {n}, group_size: 1, steps: 1 }}
stages:
  - id: prompts
    kind: source.jsonl
    params: {{ path: '{data}', fields: {{ answer: null }} }}
  - id: rollouts
    kind: generate.policy
    params: {{ model: '{model}', threads: 1, prompt_template: "Q: {{question}}", temperature: 0, max_new_tokens: 32 }}
"#,
        n = PAIRS.len(),
        data = data.display(),
        model = checkpoint.display(),
    );
    let answer = dir.path().join("answer.yaml");
    std::fs::write(&answer, yaml).expect("write");
    let sampled = crate::common::run_in_process(&answer, 1, &dir.path().join("answers"));
    let Rows::Samples(samples) = &crate::common::stored_streams(&sampled.run_dir)["rollouts"]
    else {
        panic!("samples")
    };
    assert_eq!(samples.len(), PAIRS.len());
    for s in samples {
        let index: usize = s.prompt_id.parse().expect("the row index");
        assert_eq!(s.text, PAIRS[index].1, "{}", PAIRS[index].0);
        assert_eq!(
            s.finish_reason,
            tandem_schemas::FinishReason::Eos,
            "it learned to stop"
        );
    }
}

#[test]
fn learn_sft_trains_on_the_prompt_ids_generate_policy_samples_from() {
    use tandem_stages::learn::SftConfig;
    use tandem_stages::policy::{PolicyHub, Tokenizer};
    let tokenizer = Tokenizer::from_dir(&model_dir()).expect("tokenizer");
    let question = "Using the numbers [1, 2], create an equation that equals 3";
    for prompt in [
        serde_json::json!({}),
        serde_json::json!({ "template": "countdown" }),
        serde_json::json!({ "system_prompt": "Be brief.", "prompt_template": "Q: {question}" }),
        serde_json::json!({ "chat": false, "prompt_template": "Q: {question}\nA:" }),
    ] {
        let mut params = prompt.clone();
        params["model"] = serde_json::json!(model_dir());
        params["threads"] = serde_json::json!(1);
        let shared = SharedState::default();
        let ctx = BuildContext {
            stage_id: "stage".into(),
            base_dir: PathBuf::from("."),
            run: RunSettings::default(),
            shared: shared.clone(),
        };
        Registry::builtin()
            .build("generate.policy", &params, &ctx)
            .unwrap_or_else(|e| panic!("{prompt}: {e}"));
        let hub = shared
            .get_or_try_init::<PolicyHub, ()>(PolicyHub::KEY, || Err(()))
            .expect("the generator made the hub");
        let sft = tandem_stages::params::parse::<SftConfig>(&params)
            .and_then(|c| c.learner(&ctx))
            .unwrap_or_else(|e| panic!("{prompt}: {e}"));
        let ids = sft.prompt_ids(question).expect("sft prompt");
        assert_eq!(
            ids,
            hub.prompt_ids(question).expect("policy prompt"),
            "{prompt}"
        );
        assert!(
            tokenizer
                .decode(&ids, false)
                .expect("decode")
                .contains("equals 3"),
            "{prompt}"
        );
        // The target ends with the tokenizer's EOS, the token generation stops on.
        let target = sft.response_ids("<answer>3</answer>").expect("target");
        assert_eq!(target.last().copied(), tokenizer.eos_token_id(), "{prompt}");
        assert_eq!(
            tokenizer.decode(&target, false).expect("decode"),
            "<answer>3</answer><|im_end|>"
        );
    }
    // Without append_eos the target is the text alone.
    let params = serde_json::json!({ "model": model_dir(), "append_eos": false, "threads": 1 });
    let sft = tandem_stages::params::parse::<SftConfig>(&params)
        .and_then(|c| c.learner(&BuildContext::new("sft", RunSettings::default())))
        .expect("learner");
    assert_eq!(
        sft.response_ids("hi").expect("ids"),
        tokenizer.encode("hi", false).expect("ids")
    );
}

#[test]
fn an_empty_response_is_an_error_row_and_a_missing_model_a_params_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pairs.jsonl");
    let mut pairs = PAIRS.to_vec();
    pairs[2].1 = "";
    write_pairs(&data, &pairs);
    let pipeline = sft_pipeline(dir.path(), &data, 2, 0);
    let run = crate::common::run_in_process(&pipeline, 2, &dir.path().join("runs"));
    let streams = crate::common::stored_streams(&run.run_dir);
    let Rows::Errors(errors) = &streams["errors"] else {
        panic!("errors")
    };
    assert_eq!(errors.len(), 2, "one per step: {errors:?}");
    for e in errors {
        assert_eq!(
            (
                e.prompt_id.as_str(),
                e.stage.as_str(),
                e.kind.as_str(),
                e.sample_idx
            ),
            ("2", "sft", "empty_response", Some(0))
        );
    }
    for m in metrics(&run.run_dir) {
        assert_eq!(
            (m.values["sequences"], m.values["skipped_samples"]),
            (5.0, 1.0)
        );
    }

    let yaml = std::fs::read_to_string(&pipeline).expect("read");
    let without_model: String = yaml
        .lines()
        .filter(|l| !l.contains("model:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&pipeline, without_model).expect("write");
    let out = crate::common::tandem(&["validate", &pipeline.display().to_string()], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sft.yaml:10:7: `stages.2.params`: missing field `model`"),
        "{stderr}"
    );
}

#[test]
fn a_stopped_sft_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pairs.jsonl");
    write_pairs(&data, &PAIRS[..4]);
    let steps = 6;
    let pipeline = sft_pipeline(dir.path(), &data, steps, 2);
    let yaml = std::fs::read_to_string(&pipeline)
        .expect("read")
        .replace("prompts_per_step: 6", "prompts_per_step: 2");
    std::fs::write(&pipeline, yaml).expect("write");
    let whole = crate::common::run_in_process(&pipeline, 1, &dir.path().join("whole"));
    let stopped = crate::common::run_in_process(&pipeline, 1, &dir.path().join("stopped"));
    // What a run stopped during step 5 leaves: its manifest says 5 steps and running.
    let layout = RunLayout::new(&stopped.run_dir);
    let mut manifest = Manifest::read(&layout).expect("manifest");
    assert!(manifest.checkpointed, "learn.sft keeps checkpoints");
    manifest.status = RunStatus::Running;
    manifest.steps_completed = 5;
    manifest.write(&layout).expect("rewind");
    let resumed = crate::common::tandem(
        &["run", "--resume", &stopped.run_dir.display().to_string()],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    let manifest = Manifest::read(&layout).expect("manifest");
    assert_eq!(manifest.resumed_at, vec![4], "from checkpoint step-3");
    assert_eq!(manifest.status, RunStatus::Complete);
    crate::common::assert_same_checkpoint(
        &stopped.run_dir,
        &whole.run_dir,
        steps - 1,
        "resumed vs uninterrupted",
    );
    let loss = |m: Vec<tandem_schemas::MetricsRecord>| -> Vec<f64> {
        m.iter().map(|m| m.values["loss"]).collect()
    };
    assert_eq!(
        loss(metrics(&stopped.run_dir)),
        loss(metrics(&whole.run_dir))
    );
}
