//! The dataflow against the sequential reference, with 1 and N workers.

use std::collections::BTreeMap;

use tandem_pipeline::reference::run_reference;
use tandem_pipeline::{Plan, PlanOptions, RunOptions};
use tandem_schemas::io::{Rows, facet_rows};
use tandem_schemas::{Facet, StreamKind};

use crate::common::*;

/// Runs the same pipeline with `workers` threads and returns what it stored.
fn stored_run(
    pipeline: &std::path::Path,
    workers: usize,
    out: &std::path::Path,
) -> BTreeMap<String, Rows> {
    let plan = Plan::from_file(pipeline, &PlanOptions::default()).expect("plan");
    let summary = tandem_pipeline::run(
        plan,
        RunOptions {
            workers,
            out_dir: out.to_owned(),
            ..RunOptions::default()
        },
    )
    .expect("run");
    stored_streams(&summary.run_dir)
}

fn same_pipeline_same_streams(prompts: usize, group_size: usize, per_step: usize, steps: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data.jsonl");
    write_dataset(&data, prompts, group_size + 1, 3);
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, pipeline_yaml(&data, per_step, group_size, steps))
        .expect("write pipeline");

    let one = stored_run(&pipeline, 1, &dir.path().join("one"));
    let four = stored_run(&pipeline, 4, &dir.path().join("four"));
    assert_eq!(one, four, "1 and 4 workers store the same rows");

    // The plain sequential executor is the oracle for what each stream holds.
    let plan = Plan::from_file(&pipeline, &PlanOptions::default()).expect("plan");
    let steps_of_groups = run_reference(plan, "").expect("reference");
    let groups: Vec<_> = steps_of_groups.iter().flatten().collect();
    assert_eq!(groups.len(), per_step * steps as usize);
    let expected = |facet: Facet| {
        let mut rows = facet_rows(facet, groups.iter().copied());
        rows.sort();
        rows
    };
    assert_eq!(one["prompts"], expected(Facet::Prompt));
    assert_eq!(one["rollouts"], expected(Facet::Samples));
    assert_eq!(one["verdicts"], expected(Facet::Verdicts));
    assert_eq!(
        one["rollouts"].len(),
        per_step * group_size * steps as usize
    );
    assert_eq!(one["errors"], Rows::empty(StreamKind::Errors));
    // Something was judged both ways, or the comparison would be weak.
    let Rows::Verdicts(verdicts) = &one["verdicts"] else {
        unreachable!()
    };
    assert!(verdicts.iter().any(|v| v.correct) && verdicts.iter().any(|v| !v.correct));
}

#[test]
fn dataflow_matches_reference_300_prompts_g4_batch32_steps9() {
    same_pipeline_same_streams(300, 4, 32, 9);
}

#[test]
fn dataflow_matches_reference_40_prompts_g2_batch7_steps12_across_epochs() {
    // 40 / 7 = 5 steps an epoch: 12 steps cross two epoch boundaries.
    same_pipeline_same_streams(40, 2, 7, 12);
}

#[test]
fn part_files_are_split_by_worker_and_readable_as_a_hive_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data.jsonl");
    write_dataset(&data, 64, 2, 5);
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, pipeline_yaml(&data, 32, 2, 2)).expect("write pipeline");
    let plan = Plan::from_file(&pipeline, &PlanOptions::default()).expect("plan");
    let summary = tandem_pipeline::run(
        plan,
        RunOptions {
            workers: 3,
            out_dir: dir.path().join("runs"),
            ..RunOptions::default()
        },
    )
    .expect("run");
    assert_eq!(
        (summary.steps, summary.groups, summary.samples),
        (2, 64, 128)
    );
    let parts: Vec<String> = files_under(&summary.run_dir.join("streams/rollouts"))
        .iter()
        .map(|p| {
            p.strip_prefix(&summary.run_dir)
                .expect("inside")
                .display()
                .to_string()
        })
        .collect();
    // 32 prompts spread over 3 workers by prompt id: every worker gets some.
    let expected: Vec<String> = (0..2)
        .flat_map(|step| {
            (0..3).map(move |w| format!("streams/rollouts/step={step}/part-{w}.parquet"))
        })
        .collect();
    assert_eq!(parts, expected);
    let manifest =
        std::fs::read_to_string(summary.run_dir.join("manifest.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("json");
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["steps_completed"], 2);
    assert_eq!(manifest["seed"], 11);
    assert_eq!(manifest["config"]["run"]["group_size"], 2);
}

#[test]
fn replay_reads_back_exactly_what_was_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data.jsonl");
    write_dataset(&data, 50, 3, 9);
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, pipeline_yaml(&data, 10, 3, 5)).expect("write pipeline");
    let plan = Plan::from_file(&pipeline, &PlanOptions::default()).expect("plan");
    let first = tandem_pipeline::run(
        plan,
        RunOptions {
            workers: 2,
            out_dir: dir.path().join("runs"),
            ..RunOptions::default()
        },
    )
    .expect("run");

    let replay = dir.path().join("replay.yaml");
    std::fs::write(
        &replay,
        format!(
            "run: {{ prompts_per_step: 10, group_size: 3 }}\nstages:\n  - {{ id: old, kind: source.replay, params: {{ run: {}, streams: [prompts, rollouts] }} }}\n  - {{ id: verdicts, kind: verify.exact }}\n",
            first.run_dir.display()
        ),
    )
    .expect("write replay");
    let plan = Plan::from_file(&replay, &PlanOptions::default()).expect("replay plan");
    assert_eq!(plan.steps, 5, "replay runs the stored steps");
    let second = tandem_pipeline::run(
        plan,
        RunOptions {
            out_dir: dir.path().join("runs"),
            ..RunOptions::default()
        },
    )
    .expect("replay run");
    let (a, b) = (
        stored_streams(&first.run_dir),
        stored_streams(&second.run_dir),
    );
    assert_eq!(b["old.prompts"], a["prompts"]);
    assert_eq!(b["old.samples"], a["rollouts"]);
    assert_eq!(
        b["verdicts"], a["verdicts"],
        "the same verifier on the same samples judges the same"
    );
}
