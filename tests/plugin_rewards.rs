//! Plug-in rewards from YAML: the Python `reward.command` example the docs show, and a reward
//! kind written in Rust (`examples/custom_reward.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use tandem_schemas::io::Rows;
use tandem_schemas::{RewardRecord, Target};

use crate::common::{only_run, stored_streams, tandem};

#[allow(dead_code)] // its `main` is the example's; the test uses `registry` and `PIPELINE`
#[path = "../examples/custom_reward.rs"]
mod custom_reward;

fn rewards(streams: &BTreeMap<String, Rows>, stage: &str) -> Vec<RewardRecord> {
    match &streams[stage] {
        Rows::Rewards(rows) => rows.clone(),
        other => panic!("{stage} holds {:?} rows", other.kind()),
    }
}

/// `(prompt_id, sample_idx)` → whether verify.exact judged the sample correct.
fn local_verdicts(streams: &BTreeMap<String, Rows>) -> BTreeMap<(String, u32), bool> {
    let Rows::Verdicts(rows) = &streams["verdicts"] else {
        panic!("verdicts stream");
    };
    rows.iter()
        .filter(|v| v.target == Target::Local)
        .map(|v| {
            (
                (v.prompt_id.clone(), v.sample_idx.expect("local")),
                v.correct,
            )
        })
        .collect()
}

#[test]
fn the_python_example_scores_every_sample_like_the_builtin_verifier() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("tempdir");
    let run = tandem(
        &[
            "run",
            "configs/reward-command-example.yaml",
            "--workers",
            "2",
            "--out",
            out.path().to_str().expect("utf-8"),
        ],
        repo,
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let streams = stored_streams(&only_run(out.path()));
    let verdicts = local_verdicts(&streams);
    let rows = rewards(&streams, "python");
    assert_eq!(
        rows.len(),
        2 * 32 * 4,
        "every sample of both steps has a row"
    );
    assert!(streams["errors"].is_empty(), "no error rows");
    let mut exact = 0;
    for r in &rows {
        let correct = verdicts[&(r.prompt_id.clone(), r.sample_idx)];
        let c = &r.components;
        // The Python reward's `exact` is the built-in verifier's verdict on this data.
        assert_eq!(c["exact"], f64::from(u8::from(correct)), "{r:?}");
        assert_eq!(c["brevity"], 0.0, "stored completions are short");
        let collab = c["accuracy_local"] + c["accuracy_cloud"];
        assert!(
            (r.reward - (collab + 0.5 * (c["exact"] + c["brevity"]))).abs() < 1e-12,
            "{r:?}"
        );
        exact += usize::from(correct);
    }
    assert!(
        exact > 0 && exact < rows.len(),
        "both verdicts occur: {exact}"
    );
}

#[test]
fn a_reward_kind_written_in_rust_stacks_with_the_builtins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = dir.path().join("pipeline.yaml");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/data/offline-arithmetic.jsonl");
    // The whole epoch (8 steps of 32), so that the prompts checked below are in it.
    let yaml = custom_reward::PIPELINE
        .replace(
            "datasets/data/offline-arithmetic.jsonl",
            data.to_str().expect("utf-8"),
        )
        .replace("steps: 2", "steps: 8");
    std::fs::write(&pipeline, yaml).expect("write");
    let plan = tandem_pipeline::Plan::from_file_with(
        &pipeline,
        &tandem_pipeline::PlanOptions::default(),
        custom_reward::registry(),
    )
    .expect("plan");
    let options = tandem_pipeline::RunOptions {
        out_dir: dir.path().join("runs"),
        workers: 2,
        ..Default::default()
    };
    let summary = tandem_pipeline::run(plan, options).expect("run");
    let streams = stored_streams(&summary.run_dir);
    let rows = rewards(&streams, "majority");
    assert_eq!(rows.len(), 256 * 4);
    let majority = |prompt: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.prompt_id == prompt)
            .map(|r| r.components["majority"])
            .collect()
    };
    // arith-0001 answers [help, 11137, 11127, help]: a tie, broken towards the smaller answer.
    assert_eq!(majority("arith-0001"), vec![0.0, 0.0, 1.0, 0.0]);
    // arith-0002 answers [128, 128, 128, 129].
    assert_eq!(majority("arith-0002"), vec![1.0, 1.0, 1.0, 0.0]);
    for r in &rows {
        let c = &r.components;
        let expected = c["accuracy_local"] + c["accuracy_cloud"] + 0.5 * c["majority"];
        assert!((r.reward - expected).abs() < 1e-12, "{r:?}");
    }
}
