//! `tandem replay`: a stored run (offline samples, cloud-sim answers, verdicts, rewards,
//! advantages) replayed from its reward stage with another αc gives exactly the hand
//! recomputation, with no generation and no cloud call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout};
use tandem_schemas::{SampleRecord, Target, VerdictRecord};

use crate::cloud_sim::{CloudSim, read_log};
use crate::common::{only_run, stored_streams, tandem, write_dataset};

/// The pipeline of these tests: offline samples (about a quarter ask for help), the cloud
/// stage against `cloud_base`, exact verdicts, the hierarchical reward with `alpha_cloud`, GAPG.
fn pipeline_yaml(data: &Path, cloud_base: &str, alpha_cloud: f64) -> String {
    format!(
        r#"run: {{ name: stored, seed: 3, prompts_per_step: 4, group_size: 4, steps: 3 }}
stages:
  - id: prompts
    kind: source.jsonl
    params:
      path: {data}
      fields: {{ id: uid, question: problem, answer: solution, completions: responses }}
  - {{ id: rollouts, kind: generate.offline }}
  - id: cloud
    kind: cloud.openai
    params: {{ base_url: '{cloud_base}', model: sim-oracle, backoff_ms: 1, cache_dir: null }}
  - {{ id: verdicts, kind: verify.exact, params: {{ extract: answer_tag }} }}
  - {{ id: reward, kind: reward.collab, params: {{ alpha_local: 1.0, alpha_cloud: {alpha_cloud} }} }}
  - {{ id: advantage, kind: advantage.gapg }}
"#,
        data = data.display()
    )
}

/// A stored run under `<dir>/runs1` with αc = 0.25, and `new.yaml` (αc = 0.6) beside it.
struct Stored {
    sim: CloudSim,
    log: PathBuf,
    run: PathBuf,
    new_yaml: PathBuf,
}

fn stored_run(dir: &Path) -> Stored {
    let log = dir.join("requests.jsonl");
    let sim = CloudSim::start(&["--request-log", log.to_str().expect("utf-8")]);
    let data = dir.join("data.jsonl");
    write_dataset(&data, 12, 4, 5);
    let first = dir.join("first.yaml");
    std::fs::write(&first, pipeline_yaml(&data, &sim.base, 0.25)).expect("write");
    let new_yaml = dir.join("new.yaml");
    std::fs::write(&new_yaml, pipeline_yaml(&data, &sim.base, 0.6)).expect("write");
    let out = tandem(
        &["run", "first.yaml", "--workers", "2", "--out", "runs1"],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Stored {
        sim,
        log,
        run: only_run(&dir.join("runs1")),
        new_yaml,
    }
}

fn samples(rows: &Rows) -> &[SampleRecord] {
    match rows {
        Rows::Samples(rows) => rows,
        other => panic!("expected samples, got {:?}", other.kind()),
    }
}

fn verdicts(rows: &Rows) -> &[VerdictRecord] {
    match rows {
        Rows::Verdicts(rows) => rows,
        other => panic!("expected verdicts, got {:?}", other.kind()),
    }
}

/// Runs `tandem replay RUN --from FROM --pipeline PIPELINE EXTRA...` in `cwd`.
fn replay(
    cwd: &Path,
    run: &str,
    from: &str,
    pipeline: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec!["replay", run, "--from", from, "--pipeline", pipeline];
    args.extend_from_slice(extra);
    tandem(&args, cwd)
}

#[test]
fn replay_from_reward_alpha_cloud_0_6_equals_hand_recomputation_with_no_generation_or_cloud_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = stored_run(dir.path());
    let calls_before = read_log(&stored.log).len();
    assert!(calls_before > 0, "the stored run called the cloud");

    let out = replay(
        dir.path(),
        stored.run.to_str().expect("utf-8"),
        "reward",
        "new.yaml",
        &["--out", "runs2"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_log(&stored.log).len(),
        calls_before,
        "a replay calls no cloud"
    );
    stored.sim.stop();
    let replayed = only_run(&dir.path().join("runs2"));

    let manifest = Manifest::read(&RunLayout::new(&replayed)).expect("manifest");
    let parent = Manifest::read(&RunLayout::new(&stored.run)).expect("manifest");
    assert_eq!(manifest.parent.as_deref(), Some(parent.run_id.as_str()));
    let kinds: Vec<&str> = manifest.config["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["source.replay", "reward.collab", "advantage.gapg"]);
    assert!(
        manifest
            .streams
            .iter()
            .all(|s| s.stage != "rollouts" && s.stage != "cloud"),
        "no generator or cloud stage: {:?}",
        manifest.streams
    );

    let old = stored_streams(&stored.run);
    let new = stored_streams(&replayed);
    assert_eq!(
        samples(&new["replay.samples"]),
        samples(&old["rollouts"]),
        "the samples are the stored ones, not generated again"
    );
    // Hand recomputation from the stored verdicts and asked_help.
    let (alpha_local, alpha_cloud) = (1.0, 0.6);
    let verdicts = verdicts(&old["verdicts"]);
    let mut expected: BTreeMap<(u64, String), Vec<f64>> = BTreeMap::new();
    for sample in samples(&old["rollouts"]) {
        let local = verdicts
            .iter()
            .find(|v| {
                (v.step, &v.prompt_id, v.sample_idx, v.target)
                    == (
                        sample.step,
                        &sample.prompt_id,
                        Some(sample.sample_idx),
                        Target::Local,
                    )
            })
            .expect("every sample has a local verdict");
        let cloud_correct = verdicts.iter().any(|v| {
            (v.step, &v.prompt_id, v.sample_idx, v.target)
                == (sample.step, &sample.prompt_id, None, Target::Cloud)
                && v.correct
        });
        let reward = if !sample.asked_help && local.correct {
            alpha_local
        } else if sample.asked_help && cloud_correct {
            alpha_cloud
        } else {
            0.0
        };
        let group = expected
            .entry((sample.step, sample.prompt_id.clone()))
            .or_default();
        assert_eq!(group.len(), sample.sample_idx as usize, "samples in order");
        group.push(reward);
    }
    assert!(
        expected.values().flatten().any(|&r| r == alpha_cloud),
        "some sample asked and the cloud answered right, so αc matters"
    );
    let Rows::Rewards(rewards) = &new["reward"] else {
        panic!("reward stream")
    };
    let Rows::Advantages(advantages) = &new["advantage"] else {
        panic!("advantage stream")
    };
    let samples_count: usize = expected.values().map(Vec::len).sum();
    assert_eq!(rewards.len(), samples_count, "a reward for every sample");
    assert_eq!(
        advantages.len(),
        samples_count,
        "an advantage for every sample"
    );
    for row in rewards {
        let want = expected[&(row.step, row.prompt_id.clone())][row.sample_idx as usize];
        assert!(
            (row.reward - want).abs() <= 1e-12,
            "{} #{}: reward {} ≠ {want}",
            row.prompt_id,
            row.sample_idx,
            row.reward
        );
    }
    for row in advantages {
        let group = &expected[&(row.step, row.prompt_id.clone())];
        let g = group.len() as f64;
        let mean = group.iter().sum::<f64>() / g;
        let want = (group[row.sample_idx as usize] - mean) / (g - 1.0);
        assert!(
            (row.advantage - want).abs() <= 1e-12,
            "{} #{}: advantage {} ≠ {want}",
            row.prompt_id,
            row.sample_idx,
            row.advantage
        );
    }
}

#[test]
fn replay_dry_run_lists_the_streams_read_and_the_stages_run_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = stored_run(dir.path());
    let out = replay(
        dir.path(),
        stored.run.to_str().expect("utf-8"),
        "reward",
        "new.yaml",
        &["--out", "runs2", "--dry-run"],
    );
    stored.sim.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 3 steps × 4 prompts × 4 samples.
    for line in [
        "not run (read back): prompts, rollouts, cloud, verdicts",
        "prompts          prompts    3 step(s) 12 row(s)",
        "rollouts         samples    3 step(s) 48 row(s)",
        "verdicts         verdicts   3 step(s)",
        "cloud            cloud      3 step(s)",
        "replay           source.replay",
        "reward           reward.collab",
        "advantage        advantage.gapg",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(
        !dir.path().join("runs2").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn replay_from_an_unknown_stage_lists_the_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = stored_run(dir.path());
    let run = stored.run.to_str().expect("utf-8").to_owned();
    let out = replay(dir.path(), &run, "rewards", "new.yaml", &[]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(
            "--from `rewards` is not a stage of this pipeline; its stages: prompts, rollouts, cloud, verdicts, reward, advantage"
        ),
        "{text}"
    );

    // A skipped stage the stored run did not store cannot be read back.
    let yaml = std::fs::read_to_string(&stored.new_yaml).expect("read");
    let other = yaml.replace(
        "{ id: verdicts, kind: verify.exact,",
        "{ id: verdicts, kind: verify.math,",
    );
    std::fs::write(dir.path().join("other.yaml"), other).expect("write");
    let out = replay(dir.path(), &run, "reward", "other.yaml", &[]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("stage `verdicts` (verify.math): run ")
            && text.contains("ran `verdicts` as verify.exact"),
        "{text}"
    );
    stored.sim.stop();
}

#[test]
fn replay_past_a_stage_that_stored_nothing_names_the_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data.jsonl");
    write_dataset(&data, 8, 4, 2);
    let yaml = crate::common::pipeline_yaml(&data, 4, 4, 2).replace(
        "    kind: verify.exact\n",
        "    kind: verify.exact\n    materialize: false\n",
    ) + "  - { id: reward, kind: reward.collab }\n";
    std::fs::write(dir.path().join("first.yaml"), &yaml).expect("write");
    let stored =
        crate::common::run_in_process(&dir.path().join("first.yaml"), 1, &dir.path().join("runs"));
    std::fs::write(
        dir.path().join("new.yaml"),
        yaml.replace("materialize: false", "materialize: true"),
    )
    .expect("write");
    let out = replay(
        dir.path(),
        stored.run_dir.to_str().expect("utf-8"),
        "reward",
        "new.yaml",
        &[],
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("new.yaml:")
            && text.contains("stage `verdicts` (verify.exact): run ")
            && text.contains("stored no stream of this stage"),
        "{text}"
    );
}
