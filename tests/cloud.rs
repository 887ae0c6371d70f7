//! `cloud.openai` against `tandem cloud-sim` on loopback: calls only when asked, once per
//! prompt, cached across steps and runs; faults become rows; a rejected key stops the run; the
//! key is nowhere in what a run writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus};
use tandem_schemas::{CloudRecord, ErrorRecord, RewardRecord};

use crate::cloud_sim::{CloudSim, read_log};
use crate::common::{files_under, only_run, stored_streams, write_dataset};

/// A pipeline over `prompts` generated questions: offline samples (some ask for help), the
/// cloud stage with `cloud` params (YAML flow mapping entries), verdicts, rewards.
fn pipeline(dir: &Path, prompts: usize, per_step: usize, steps: u64, cloud: &str) -> PathBuf {
    let data = dir.join("data.jsonl");
    write_dataset(&data, prompts, 4, 5);
    let yaml = format!(
        r#"run: {{ name: cloud, seed: 3, prompts_per_step: {per_step}, group_size: 4, steps: {steps} }}
stages:
  - id: prompts
    kind: source.jsonl
    params:
      path: {data}
      fields: {{ id: uid, question: problem, answer: solution, completions: responses }}
  - {{ id: rollouts, kind: generate.offline }}
  - id: cloud
    kind: cloud.openai
    params: {{ model: sim-oracle, backoff_ms: 1, {cloud} }}
  - {{ id: verdicts, kind: verify.exact, params: {{ extract: answer_tag }} }}
  - {{ id: reward, kind: reward.collab }}
"#,
        data = data.display()
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, yaml).expect("write pipeline");
    path
}

/// Runs `tandem run` with `env`, returning (success, stderr).
fn run(pipeline: &Path, out: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "run",
            pipeline.to_str().expect("utf-8"),
            "--workers",
            "2",
            "--out",
        ])
        .arg(out)
        .envs(env.iter().copied())
        .env("TANDEM_LOG", "debug")
        .output()
        .expect("run tandem");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn cloud_rows(streams: &BTreeMap<String, Rows>) -> Vec<CloudRecord> {
    match &streams["cloud"] {
        Rows::Cloud(rows) => rows.clone(),
        other => panic!("cloud stream holds {:?}", other.kind()),
    }
}

fn error_rows(streams: &BTreeMap<String, Rows>) -> Vec<ErrorRecord> {
    match &streams["errors"] {
        Rows::Errors(rows) => rows.clone(),
        other => panic!("errors stream holds {:?}", other.kind()),
    }
}

fn reward_rows(streams: &BTreeMap<String, Rows>) -> Vec<RewardRecord> {
    match &streams["reward"] {
        Rows::Rewards(rows) => rows.clone(),
        other => panic!("reward stream holds {:?}", other.kind()),
    }
}

/// Prompts whose stored samples ask for help (the data's help text), by step.
fn asking(streams: &BTreeMap<String, Rows>) -> BTreeSet<(u64, String)> {
    let Rows::Samples(samples) = &streams["rollouts"] else {
        panic!("rollouts stream");
    };
    samples
        .iter()
        .filter(|s| s.asked_help)
        .map(|s| (s.step, s.prompt_id.clone()))
        .collect()
}

#[test]
fn one_call_per_prompt_cached_across_steps_and_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sim = CloudSim::start(&["--request-log", log.to_str().expect("utf-8")]);
    let cache = dir.path().join("cache");
    // 8 prompts, 4 a step, 4 steps: every prompt comes twice (two epochs).
    let cloud = format!("base_url: '{}', cache_dir: '{}'", sim.base, cache.display());
    let pipeline = pipeline(dir.path(), 8, 4, 4, &cloud);

    let (ok, text) = run(&pipeline, &dir.path().join("runs1"), &[]);
    assert!(ok, "{text}");
    let streams = stored_streams(&only_run(&dir.path().join("runs1")));
    let asked = asking(&streams);
    let rows = cloud_rows(&streams);
    let keys: BTreeSet<_> = rows.iter().map(|r| (r.step, r.prompt_id.clone())).collect();
    assert_eq!(
        keys, asked,
        "a row for every step's asking prompt, and only those"
    );
    assert_eq!(
        rows.len(),
        asked.len(),
        "one row per prompt and step, whatever G"
    );
    let prompts: BTreeSet<_> = asked.iter().map(|(_, p)| p.clone()).collect();
    assert!(
        prompts.len() >= 3,
        "the data asks for several prompts: {prompts:?}"
    );
    let calls: Vec<_> = rows.iter().filter(|r| !r.cache_hit).collect();
    assert_eq!(calls.len(), prompts.len(), "one call per prompt per run");
    assert_eq!(
        read_log(&log).len(),
        prompts.len(),
        "the server saw one request per prompt"
    );
    for r in &rows {
        assert!(
            r.answer.as_deref().is_some_and(|a| a.contains("<answer>")),
            "{r:?}"
        );
        assert_eq!(r.error_kind, None);
        if r.cache_hit {
            assert_eq!(
                (r.attempts, r.tokens_in, r.tokens_out, r.cost_usd),
                (0, 0, 0, 0.0)
            );
        } else {
            assert_eq!(r.attempts, 1);
            assert!(r.tokens_in > 0 && r.tokens_out > 0, "{r:?}");
        }
    }
    // The oracle is right, so samples that asked earn alpha_cloud.
    assert!(
        reward_rows(&streams)
            .iter()
            .any(|r| r.components["accuracy_cloud"] == 0.25),
        "some samples asked and were helped"
    );

    // A second run shares the cache: no request reaches the server.
    let (ok, text) = run(&pipeline, &dir.path().join("runs2"), &[]);
    assert!(ok, "{text}");
    let streams = stored_streams(&only_run(&dir.path().join("runs2")));
    assert_eq!(read_log(&log).len(), prompts.len(), "no new request");
    assert!(
        cloud_rows(&streams)
            .iter()
            .all(|r| r.cache_hit && r.answer.is_some())
    );
    sim.stop();
}

#[test]
fn injected_faults_become_rows_with_bounded_retries_and_one_charge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    // 5% of each of the six kinds: 30% of requests fail.
    let sim = CloudSim::start(&[
        "--faults",
        "0.05",
        "--seed",
        "7",
        "--hang-s",
        "30",
        "--request-log",
        log.to_str().expect("utf-8"),
    ]);
    let cloud = format!(
        "base_url: '{}', cache_dir: null, timeout_ms: 400, retries: 1, prices: {{ input_per_million: 1.0, output_per_million: 2.0 }}",
        sim.base
    );
    let pipeline = pipeline(dir.path(), 64, 32, 2, &cloud);
    let (ok, text) = run(&pipeline, &dir.path().join("runs"), &[]);
    assert!(ok, "the run completes: {text}");
    assert!(!text.contains("panicked"), "{text}");
    let streams = stored_streams(&only_run(&dir.path().join("runs")));
    let rows = cloud_rows(&streams);
    assert_eq!(rows.len(), asking(&streams).len());
    let errors = error_rows(&streams);
    let mut failed = 0;
    for r in &rows {
        assert!(r.attempts <= 2, "bounded: 1 + 1 retry: {r:?}");
        match (&r.answer, &r.error_kind) {
            (Some(_), None) => {}
            (None, Some(kind)) => {
                failed += 1;
                let row = errors
                    .iter()
                    .find(|e| e.prompt_id == r.prompt_id && e.step == r.step && e.stage == "cloud");
                assert_eq!(row.map(|e| e.kind.as_str()), Some(kind.as_str()), "{r:?}");
            }
            other => panic!("an answer or an error kind, not {other:?}"),
        }
    }
    assert!(
        failed > 0,
        "with 30% faults and one retry some prompts fail"
    );
    // The ledger charges each answered call once: what the server answered whole.
    let served: Vec<Value> = read_log(&log);
    let ok_lines: Vec<&Value> = served.iter().filter(|l| l["outcome"] == "ok").collect();
    let answered: Vec<&CloudRecord> = rows
        .iter()
        .filter(|r| r.answer.is_some() && !r.cache_hit)
        .collect();
    assert_eq!(
        answered.len(),
        ok_lines.len(),
        "no duplicate and no missing charge"
    );
    let billed: u64 = ok_lines
        .iter()
        .map(|l| l["completion_tokens"].as_u64().expect("tokens"))
        .sum();
    assert_eq!(answered.iter().map(|r| r.tokens_out).sum::<u64>(), billed);
    let cost: f64 = answered.iter().map(|r| r.cost_usd).sum();
    let expected: f64 = answered
        .iter()
        .map(|r| (r.tokens_in as f64 + 2.0 * r.tokens_out as f64) / 1e6)
        .sum();
    assert!((cost - expected).abs() < 1e-12);
    let mut per_hash: BTreeMap<&str, usize> = BTreeMap::new();
    for line in &served {
        *per_hash
            .entry(line["hash"].as_str().expect("hash"))
            .or_default() += 1;
    }
    assert!(
        per_hash.values().all(|&n| n <= 2),
        "at most 2 attempts per request: {per_hash:?}"
    );
    let kinds: BTreeSet<&str> = served
        .iter()
        .map(|l| l["outcome"].as_str().expect("kind"))
        .collect();
    assert!(
        kinds.len() >= 4,
        "several fault kinds were injected: {kinds:?}"
    );
    sim.stop();
}

#[test]
fn a_rejected_key_stops_the_run_naming_the_variable_not_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = CloudSim::start_with_env(
        &["--api-key-env", "SIM_KEY"],
        &[("SIM_KEY", "sk-right-9c1e")],
    );
    let cloud = format!(
        "base_url: '{}', cache_dir: null, api_key_env: TANDEM_CLOUD_KEY",
        sim.base
    );
    let pipeline = pipeline(dir.path(), 8, 4, 4, &cloud);
    let out = dir.path().join("runs");
    let (ok, text) = run(&pipeline, &out, &[("TANDEM_CLOUD_KEY", "sk-wrong-7f3a")]);
    assert!(!ok, "the run stops");
    assert!(text.contains("TANDEM_CLOUD_KEY"), "{text}");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(!text.contains("sk-wrong-7f3a"), "{text}");
    let manifest = Manifest::read(&RunLayout::new(only_run(&out))).expect("manifest");
    assert_eq!(manifest.status, RunStatus::Failed);
    assert!(manifest.steps_completed < 4, "stopped before the last step");
    sim.stop();
}

#[test]
fn the_api_key_is_nowhere_in_what_a_run_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "sk-secret-5d2b71";
    let log = dir.path().join("requests.jsonl");
    let sim = CloudSim::start_with_env(
        &[
            "--api-key-env",
            "SIM_KEY",
            "--request-log",
            log.to_str().expect("utf-8"),
        ],
        &[("SIM_KEY", key)],
    );
    let cache = dir.path().join("cache");
    let cloud = format!(
        "base_url: '{}', cache_dir: '{}', api_key_env: TANDEM_CLOUD_KEY",
        sim.base,
        cache.display()
    );
    let pipeline = pipeline(dir.path(), 8, 4, 2, &cloud);
    let (ok, text) = run(
        &pipeline,
        &dir.path().join("runs"),
        &[("TANDEM_CLOUD_KEY", key)],
    );
    assert!(ok, "{text}");
    assert!(
        read_log(&log).iter().all(|l| l["outcome"] == "ok"),
        "the key was accepted"
    );
    assert!(!text.contains(key), "not in the logs");
    let files = files_under(dir.path());
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "parquet"))
    );
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        let found = bytes.windows(key.len()).any(|w| w == key.as_bytes());
        assert!(!found, "the key is in {}", file.display());
    }
    sim.stop();
}

#[test]
fn calls_past_the_budget_are_refused_and_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sim = CloudSim::start(&["--request-log", log.to_str().expect("utf-8")]);
    let cloud = format!(
        "base_url: '{}', cache_dir: null, budget: {{ calls_per_run: 2 }}",
        sim.base
    );
    let pipeline = pipeline(dir.path(), 16, 8, 2, &cloud);
    let (ok, text) = run(&pipeline, &dir.path().join("runs"), &[]);
    assert!(ok, "{text}");
    let streams = stored_streams(&only_run(&dir.path().join("runs")));
    let rows = cloud_rows(&streams);
    assert!(rows.len() > 2, "more prompts asked than the budget allows");
    assert_eq!(read_log(&log).len(), 2);
    assert_eq!(rows.iter().filter(|r| r.answer.is_some()).count(), 2);
    for r in rows.iter().filter(|r| r.answer.is_none()) {
        assert_eq!((r.error_kind.as_deref(), r.attempts), (Some("budget"), 0));
    }
    assert!(
        error_rows(&streams).iter().all(|e| e.stage != "cloud"),
        "a refusal is a decision, not an error"
    );
    // A refused call is a failed cloud answer for the reward: no sample of those groups earns αc.
    let refused: BTreeSet<_> = rows
        .iter()
        .filter(|r| r.answer.is_none())
        .map(|r| (r.step, r.prompt_id.clone()))
        .collect();
    for r in reward_rows(&streams) {
        if refused.contains(&(r.step, r.prompt_id.clone())) {
            assert_eq!(r.components["accuracy_cloud"], 0.0);
        }
    }
    sim.stop();
}

#[test]
fn the_shipped_cloud_example_runs_against_the_simulator() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = CloudSim::start(&[]);
    let out = dir.path().join("runs");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .current_dir(repo)
        .args(["run", "configs/cloud-example.yaml", "--out"])
        .arg(&out)
        .arg("--set")
        .arg(format!("stages.2.params.base_url={}", sim.base))
        .arg("--set")
        .arg(format!(
            "stages.2.params.cache_dir={}",
            dir.path().join("cache").display()
        ))
        .env("TANDEM_LOG", "warn")
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let streams = stored_streams(&only_run(&out));
    let rows = cloud_rows(&streams);
    let answered = rows.iter().filter(|r| r.answer.is_some()).count();
    let refused = rows
        .iter()
        .filter(|r| r.error_kind.as_deref() == Some("budget"))
        .count();
    assert_eq!(answered + refused, rows.len());
    assert!(
        answered > 0 && answered <= 2 * 16,
        "calls_per_step: 16 over 2 steps: {answered}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.answer.is_some())
            .all(|r| r.cost_usd > 0.0)
    );
    let Rows::Verdicts(verdicts) = &streams["verdicts"] else {
        panic!("verdicts");
    };
    let cloud_right = verdicts
        .iter()
        .filter(|v| v.target == tandem_schemas::Target::Cloud && v.correct)
        .count();
    assert_eq!(
        cloud_right, answered,
        "the oracle's answers are judged right"
    );
    sim.stop();
}
