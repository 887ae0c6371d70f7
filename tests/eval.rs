//! `tandem eval`: outcomes joined from the two stored runs equal a hand-made set, and the
//! command's figures equal a recount of what it stored, with the cloud asked once per question.

use std::path::Path;

use tandem_stages::eval::{AtBudget, Outcome, joined_outcomes, ranking_for_policy};

use crate::cloud_sim::{CloudSim, read_log};

/// An offline run: question `i` is "What is i + i?", answered by `completions[i]`.
fn offline_run(
    dir: &Path,
    name: &str,
    completions: &[&str],
    cloud: Option<&str>,
) -> std::path::PathBuf {
    let data = dir.join(format!("{name}.jsonl"));
    let rows: String = completions
        .iter()
        .enumerate()
        .map(|(i, text)| {
            serde_json::json!({
                "id": format!("q{i}"),
                "question": format!("What is {i} + {i}?"),
                "answer": (2 * i).to_string(),
                "completions": [text],
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&data, rows).expect("data");
    let cloud = cloud
        .map(|base| {
            format!("  - {{ id: cloud, kind: cloud.openai, params: {{ base_url: '{base}', model: sim-oracle, ask: all, cache_dir: null }} }}\n")
        })
        .unwrap_or_default();
    let yaml = format!(
        "run: {{ name: {name}, prompts_per_step: {n}, group_size: 1, steps: 1 }}\nstages:\n  - {{ id: prompts, kind: source.jsonl, params: {{ path: '{data}', shuffle: false, fields: {{ completions: completions }} }} }}\n  - {{ id: rollouts, kind: generate.offline }}\n{cloud}  - {{ id: verdicts, kind: verify.exact, params: {{ extract: answer_tag }} }}\n",
        n = completions.len(),
        data = data.display(),
    );
    let pipeline = dir.join(format!("{name}.yaml"));
    std::fs::write(&pipeline, yaml).expect("pipeline");
    crate::common::run_in_process(&pipeline, 1, &dir.join(name)).run_dir
}

#[test]
fn outcomes_join_the_help_run_and_the_run_without_help_on_the_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The cloud is right except on question 4 (a wrong gold answer).
    let gold = dir.path().join("gold.jsonl");
    std::fs::write(&gold, "{\"question\": \"What is 4 + 4?\", \"answer\": 9}\n").expect("gold");
    let sim = CloudSim::start(&["--gold", &gold.display().to_string()]);
    let ask = "<unknown> I need external assistance </unknown>";
    let help = offline_run(
        dir.path(),
        "help",
        &[
            "<answer>0</answer>",
            "<answer>7</answer>",
            ask,
            ask,
            ask,
            "<answer>10</answer>",
        ],
        Some(&sim.base),
    );
    let local = offline_run(
        dir.path(),
        "local",
        &[
            "<answer>0</answer>",
            "<answer>2</answer>",
            "<answer>4</answer>",
            "<answer>5</answer>",
            "<answer>8</answer>",
            "<answer>10</answer>",
        ],
        None,
    );
    sim.stop();
    let (joined, failures) = joined_outcomes(&help, &local).expect("join");
    let o = |asked, local_correct, cloud_correct| Outcome {
        asked,
        local_correct,
        cloud_correct,
    };
    // q1 did not ask, so its own (wrong) answer counts, not the right one given without help;
    // q2–q4 asked, so their answers without help count.
    assert_eq!(
        joined,
        vec![
            (o(false, true, true), true),
            (o(false, false, true), true),
            (o(true, true, true), true),
            (o(true, false, true), false),
            (o(true, true, false), true),
            (o(false, true, true), true),
        ]
    );
    assert_eq!(failures, 0);
    // At a 34% budget two of the three asks go out (floor(0.34 × 6) = 2), in the seeded order.
    let outcomes: Vec<Outcome> = joined.iter().map(|(o, _)| *o).collect();
    let ranking = ranking_for_policy(&outcomes, 0);
    let at = AtBudget::new(&outcomes, &ranking, 0.34);
    assert_eq!((at.asked, at.sent, at.capped), (3, 2, 1));
    let sent: Vec<usize> = ranking
        .iter()
        .copied()
        .filter(|&i| outcomes[i].asked)
        .take(2)
        .collect();
    let capped = [2, 3, 4]
        .into_iter()
        .find(|i| !sent.contains(i))
        .expect("one capped");
    let right = [0, 5].len()
        + sent.iter().filter(|&&i| outcomes[i].cloud_correct).count()
        + usize::from(outcomes[capped].local_correct);
    assert!(
        (at.overall_accuracy - right as f64 / 6.0).abs() < 1e-12,
        "{at:?}"
    );
}

#[test]
fn tandem_eval_reports_what_it_stored_and_asks_the_cloud_once_per_question() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("countdown.jsonl");
    let problems = [
        ([3, 5, 7], 22),
        ([2, 9, 4], 17),
        ([8, 6, 1], 13),
        ([7, 7, 1], 50),
        ([1, 1, 1], 100),
    ];
    let rows: String = problems
        .iter()
        .enumerate()
        .map(|(i, (numbers, target))| {
            serde_json::json!({
                "uid": format!("cd-{i}"),
                "problem": format!("Using the numbers {numbers:?}, create an equation that equals {target}."),
                "solution": serde_json::json!({ "numbers": numbers, "target": target }).to_string(),
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&data, rows).expect("data");
    let log = dir.path().join("requests.jsonl");
    let sim = CloudSim::start(&["--request-log", &log.display().to_string()]);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tandem-init");
    let eval = |out: &str, extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args([
                "eval",
                &model.display().to_string(),
                "--dataset",
                &data.display().to_string(),
            ])
            .args([
                "--field",
                "id=uid",
                "--field",
                "question=problem",
                "--field",
                "answer=solution",
            ])
            .args([
                "--task",
                "countdown",
                "--cloud",
                &sim.base,
                "--budget",
                "0.3",
            ])
            .args(["--max-new-tokens", "6", "--json", "--out", out])
            .args(extra)
            .current_dir(dir.path())
            .env("TANDEM_LOG", "warn")
            .output()
            .expect("run tandem eval");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON on stdout")
    };
    let first = eval("runs-a", &[]);
    assert_eq!(read_log(&log).len(), 5, "every question, once");
    // The second one also trains the learned router, on the first one's run without help.
    let first_local = dir
        .path()
        .join("runs-a")
        .join(first["local_run"].as_str().expect("local run"));
    let second = eval(
        "runs-b",
        &["--router-from", &first_local.display().to_string()],
    );
    assert_eq!(
        read_log(&log).len(),
        5,
        "the disk cache answers the second evaluation"
    );
    sim.stop();
    for key in [
        "policy",
        "local_only",
        "cloud_only",
        "naive_offloading",
        "apgr",
        "curve",
    ] {
        assert_eq!(first[key], second[key], "{key}");
    }
    // The figures are those of the stored runs.
    let runs = dir.path().join("runs-a");
    let help = runs.join(first["help_run"].as_str().expect("help run"));
    let local = runs.join(first["local_run"].as_str().expect("local run"));
    let (joined, failures) = joined_outcomes(&help, &local).expect("join");
    assert_eq!((joined.len(), failures), (5, 0));
    let share = |n: usize| n as f64 / 5.0;
    let cloud_right = joined.iter().filter(|(o, _)| o.cloud_correct).count();
    assert_eq!(
        cloud_right, 4,
        "[1, 1, 1] cannot make 100: the oracle says so, and is judged wrong"
    );
    assert_eq!(first["cloud_only"].as_f64(), Some(share(cloud_right)));
    let without_help = joined.iter().filter(|(_, l)| *l).count();
    assert_eq!(first["local_only"].as_f64(), Some(share(without_help)));
    let policy = &first["policy"];
    let asked = joined.iter().filter(|(o, _)| o.asked).count() as u64;
    assert_eq!(policy["asked"].as_u64(), Some(asked));
    assert_eq!(
        policy["sent"].as_u64(),
        Some(asked.min(1)),
        "floor(0.3 × 5) = 1"
    );
    assert_eq!(first["curve"].as_array().map(Vec::len), Some(6));
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(help.join("eval/eval.json")).expect("eval.json"),
    )
    .expect("json");
    assert_eq!(stored, first);
    assert!(help.join("eval/eval.md").is_file() && help.join("pipeline.yaml").is_file());
    let png = std::fs::read(help.join("eval/accuracy_vs_call_rate.png")).expect("png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let svg = std::fs::read_to_string(help.join("eval/accuracy_vs_call_rate.svg")).expect("svg");
    assert!(
        roxmltree::Document::parse(&svg)
            .expect("svg parses")
            .root_element()
            .has_tag_name("svg")
    );
    assert!(first["router"].is_null());
    let router = &second["router"];
    assert_eq!(router["examples"].as_u64(), Some(5));
    assert_eq!(router["solved"].as_u64(), Some(without_help as u64));
    assert_eq!(
        (router["sent"].as_u64(), router["call_rate"].as_f64()),
        (Some(1), Some(0.2))
    );
    let bce = router["final_bce"].as_f64().expect("bce");
    assert!(
        bce.is_finite() && bce <= std::f64::consts::LN_2 + 1e-9,
        "{bce}"
    );
    // One question offloaded: the device's right answers, give or take that one.
    let overall = router["overall_accuracy"].as_f64().expect("accuracy") * 5.0;
    assert!((overall - overall.round()).abs() < 1e-9, "{overall}");
    assert!(
        (overall.round() as i64 - without_help as i64).abs() <= 1,
        "{overall}"
    );
}

/// `--preset countdown-tasks` reads Countdown-Tasks rows (`nums`, `target`) as downloaded: the
/// stored pipelines name the preset, every row becomes a question the oracle answers right,
/// and an unknown preset is refused with the known ones.
#[test]
fn tandem_eval_preset_reads_a_benchmark_as_downloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("countdown-tasks.jsonl");
    let rows = [
        r#"{"target": 22, "nums": [3, 5, 7]}"#,
        r#"{"target": 17, "nums": [2, 9, 4]}"#,
        r#"{"target": 13, "nums": [8, 6, 1]}"#,
    ];
    std::fs::write(&data, rows.join("\n") + "\n").expect("data");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tandem-init");
    let eval = |preset: &str, cloud: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["eval", &model.display().to_string()])
            .args(["--dataset", &data.display().to_string()])
            .args(["--preset", preset, "--task", "countdown", "--cloud", cloud])
            .args(["--max-new-tokens", "4", "--json", "--out", "runs"])
            .current_dir(dir.path())
            .env("TANDEM_LOG", "warn")
            .output()
            .expect("run tandem eval")
    };
    let unknown = eval("countdown", "http://127.0.0.1:9/v1");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        stderr.contains("--preset countdown: no such preset") && stderr.contains("countdown-tasks"),
        "{stderr}"
    );
    let sim = CloudSim::start(&[]);
    let output = eval("countdown-tasks", &sim.base);
    sim.stop();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["cloud_only"].as_f64(), Some(1.0), "{report}");
    for run in ["help_run", "local_run"] {
        let yaml = dir
            .path()
            .join("runs")
            .join(report[run].as_str().expect("run"))
            .join("pipeline.yaml");
        let yaml = std::fs::read_to_string(&yaml).expect("pipeline.yaml");
        assert!(yaml.contains("preset: countdown-tasks"), "{yaml}");
    }
}
