//! The dataflow against the sequential reference, with 1 and N workers.

use std::collections::BTreeMap;

use tandem_pipeline::reference::run_reference;
use tandem_pipeline::{Plan, PlanOptions};
use tandem_schemas::io::{Rows, facet_rows};
use tandem_schemas::{Facet, StreamKind};

use crate::common::*;

/// Runs the same pipeline with `workers` threads and returns what it stored.
fn stored_run(
    pipeline: &std::path::Path,
    workers: usize,
    out: &std::path::Path,
) -> BTreeMap<String, Rows> {
    stored_streams(&run_in_process(pipeline, workers, out).run_dir)
}

fn same_pipeline_same_streams(prompts: usize, group_size: usize, per_step: usize, steps: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = generated_pipeline(
        dir.path(),
        prompts,
        group_size + 1,
        per_step,
        group_size,
        steps,
    );

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
    let pipeline = generated_pipeline(dir.path(), 64, 2, 32, 2, 2);
    let summary = run_in_process(&pipeline, 3, &dir.path().join("runs"));
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
    let pipeline = generated_pipeline(dir.path(), 50, 3, 10, 3, 5);
    let first = run_in_process(&pipeline, 2, &dir.path().join("runs"));

    let replay = dir.path().join("replay.yaml");
    std::fs::write(
        &replay,
        format!(
            "run: {{ prompts_per_step: 10, group_size: 3 }}\nstages:\n  - {{ id: old, kind: source.replay, params: {{ run: {}, streams: [prompts, rollouts] }} }}\n  - {{ id: verdicts, kind: verify.exact }}\n",
            first.run_dir.display()
        ),
    )
    .expect("write replay");
    let second = run_in_process(&replay, 1, &dir.path().join("runs"));
    assert_eq!(second.steps, 5, "replay runs the stored steps");
    let manifest = |dir: &std::path::Path| {
        tandem_schemas::layout::Manifest::read(&tandem_schemas::layout::RunLayout::new(dir))
            .expect("manifest")
    };
    assert_eq!(
        manifest(&second.run_dir).parent,
        Some(manifest(&first.run_dir).run_id),
        "a replay records the run it read"
    );
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

#[test]
fn parquet_source_with_hf_style_columns_feeds_the_pipeline() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;

    let dir = tempfile::tempdir().expect("tempdir");
    let shards = dir.path().join("data");
    std::fs::create_dir(&shards).expect("mkdir");
    // Two shards, as a Hugging Face `data/` directory holds them; integer answers.
    for (shard, range) in [
        ("train-00000-of-00002.parquet", 0..6i64),
        ("train-00001-of-00002.parquet", 6..10),
    ] {
        let problems: Vec<String> = range.clone().map(|i| format!("What is {i} * 2?")).collect();
        let solutions: Vec<i64> = range.clone().map(|i| i * 2).collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("problem", Arc::new(StringArray::from(problems))),
            ("solution", Arc::new(Int64Array::from(solutions))),
        ];
        let batch = RecordBatch::try_from_iter(columns).expect("batch");
        let file = std::fs::File::create(shards.join(shard)).expect("create");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    }
    let pipeline = dir.path().join("pipeline.yaml");
    let yaml = format!(
        "run: {{ prompts_per_step: 5, group_size: 1 }}\nstages:\n  - id: prompts\n    kind: source.parquet\n    params: {{ path: {}, shuffle: false, fields: {{ question: problem, answer: solution }} }}\n",
        shards.display()
    );
    std::fs::write(&pipeline, yaml).expect("write pipeline");
    let run = run_in_process(&pipeline, 2, &dir.path().join("runs"));
    assert_eq!(run.steps, 2);
    let Rows::Prompts(prompts) = &stored_streams(&run.run_dir)["prompts"] else {
        unreachable!()
    };
    let seen: Vec<(u64, &str, &str, Option<&str>)> = prompts
        .iter()
        .map(|p| {
            (
                p.step,
                p.prompt_id.as_str(),
                p.question.as_str(),
                p.answer.as_deref(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 10);
    assert_eq!(seen[0], (0, "0", "What is 0 * 2?", Some("0")));
    assert_eq!(
        seen[9],
        (1, "9", "What is 9 * 2?", Some("18")),
        "ids count across shards, in file order"
    );

    // Either kind reads a format its path names (here a shard directory) ...
    let jsonl_kind = dir.path().join("jsonl-kind.yaml");
    std::fs::write(
        &jsonl_kind,
        std::fs::read_to_string(&pipeline)
            .expect("read")
            .replace("source.parquet", "source.jsonl"),
    )
    .expect("write");
    Plan::from_file(&jsonl_kind, &PlanOptions::default()).expect("source.jsonl reads the shards");
    // ... and the kind decides how a file with another extension is read: JSON Lines in a
    // `.txt` is refused as Parquet, naming the stage.
    let text = dir.path().join("rows.txt");
    std::fs::write(&text, "{\"problem\": \"p\", \"solution\": 1}\n").expect("write");
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&pipeline)
            .expect("read")
            .replace(&shards.display().to_string(), &text.display().to_string()),
    )
    .expect("write");
    let err = Plan::from_file(&wrong, &PlanOptions::default())
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("stage `prompts` (source.parquet)"), "{err}");
    assert!(err.contains("cannot decode Parquet"), "{err}");
}

/// A pipelined stage that holds each step's batches until a batch of the next step has been
/// submitted: it can only finish if the runtime feeds step t+1 while step t is still out.
mod held {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tandem_schemas::{Facet, Facets, Group};
    use tandem_stages::registry::{KindSpec, StageConfig, build_with};
    use tandem_stages::{
        BuildContext, Built, GroupStage, Pipelined, Registry, Role, StepContext, Wake,
    };

    /// Events, shared with the test.
    pub static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HeldConfig {
        /// The last step (released without waiting for a later one).
        last: u64,
    }

    impl StageConfig for HeldConfig {
        fn build(self, _ctx: &BuildContext) -> tandem_stages::Result<Built> {
            Ok(Built::Group(Box::new(Held {
                last: self.last,
                held: Vec::new(),
                submitted: Vec::new(),
                timed_out: Arc::new(Mutex::new(false)),
            })))
        }
    }

    pub struct Held {
        last: u64,
        held: Vec<(u64, Vec<Group>)>,
        submitted: Vec<u64>,
        timed_out: Arc<Mutex<bool>>,
    }

    impl GroupStage for Held {
        fn needs(&self) -> Facets {
            Facets::of(&[Facet::Samples])
        }
        fn provides(&self) -> Facets {
            Facets::NONE
        }
        fn process(&mut self, _: &mut [Group], _: &StepContext) -> tandem_stages::Result<()> {
            Ok(())
        }
        fn pipelined(&mut self) -> Option<&mut dyn Pipelined> {
            Some(self)
        }
    }

    impl Pipelined for Held {
        fn submit(
            &mut self,
            groups: Vec<Group>,
            ctx: &StepContext,
            wake: Wake,
        ) -> tandem_stages::Result<()> {
            let holding: Vec<u64> = self.held.iter().map(|(s, _)| *s).collect();
            LOG.lock()
                .expect("log")
                .push(format!("submit {} holding {holding:?}", ctx.step));
            self.submitted.push(ctx.step);
            self.held.push((ctx.step, groups));
            // A safety net, so that a runtime that does not pipeline fails the test instead of
            // hanging it.
            let timed_out = self.timed_out.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(20));
                *timed_out.lock().expect("flag") = true;
                wake();
            });
            Ok(())
        }

        fn ready(&mut self) -> tandem_stages::Result<Vec<(u64, Vec<Group>)>> {
            let timed_out = *self.timed_out.lock().expect("flag");
            let (release, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
                .into_iter()
                .partition(|(step, _)| {
                    timed_out || *step == self.last || self.submitted.contains(&(step + 1))
                });
            self.held = keep;
            if timed_out && !release.is_empty() {
                LOG.lock().expect("log").push("timed out".into());
            }
            Ok(release)
        }
    }

    pub fn registry() -> Registry {
        let mut registry = Registry::builtin();
        registry.register(KindSpec {
            name: "test.held",
            role: Role::Group,
            summary: "holds step t until step t+1 arrives",
            build: build_with::<HeldConfig>,
        });
        registry
    }
}

#[test]
fn pipelined_stages_let_the_next_step_start_while_answers_are_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data.jsonl");
    write_dataset(&data, 12, 2, 1);
    let yaml = format!(
        "run: {{ prompts_per_step: 4, group_size: 2, steps: 3 }}\nstages:\n  - id: prompts\n    kind: source.jsonl\n    params:\n      path: {}\n      fields: {{ id: uid, question: problem, answer: solution, completions: responses }}\n  - {{ id: rollouts, kind: generate.offline }}\n  - {{ id: held, kind: test.held, params: {{ last: 2 }} }}\n",
        data.display()
    );
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(&pipeline, yaml).expect("write");
    let plan =
        Plan::from_file_with(&pipeline, &PlanOptions::default(), held::registry()).expect("plan");
    let options = tandem_pipeline::RunOptions {
        out_dir: dir.path().join("runs"),
        ..Default::default()
    };
    let summary = tandem_pipeline::run(plan, options).expect("run");
    let log = held::LOG.lock().expect("log").clone();
    assert!(!log.contains(&"timed out".to_owned()), "{log:?}");
    assert!(log.contains(&"submit 1 holding [0]".to_owned()), "{log:?}");
    assert_eq!(
        (summary.steps, summary.groups),
        (3, 12),
        "every group came through"
    );
    let streams = stored_streams(&summary.run_dir);
    assert_eq!(streams["rollouts"].len(), 24);
}
