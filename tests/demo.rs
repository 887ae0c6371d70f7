//! `tandem demo configs/demo-ci.yaml` runs the whole chain from nothing but the repository: task
//! data, a tokenizer, a fresh model, the supervised warm start, both evaluations against the
//! simulated cloud it starts itself, the RL run, the summary and plots; a second run reuses the
//! cached warm start. And it shows the paper's point on the search suite, where whether the
//! device can finish is decided while it works, not written in the question: after RL the
//! policy, deciding after it has tried, beats the warm start with a learned router at the same
//! budget (margins from the seeds in BENCHMARKS.md, "The CI-sized demo").

use std::path::Path;

use serde_json::Value;

use crate::common::tandem;

fn level<'a>(evaluation: &'a Value, difficulty: &str) -> &'a Value {
    evaluation["levels"]
        .as_array()
        .and_then(|levels| levels.iter().find(|l| l["difficulty"] == difficulty))
        .unwrap_or_else(|| panic!("no level {difficulty} in {evaluation}"))
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// After RL, overall accuracy at the budget exceeds the warm start's with a learned router by
/// at least this much at CI size (seeds 0–2: 0.09, 0.13, 0.02).
const CI_ROUTER_MARGIN: f64 = 0.02;
/// After RL, accuracy on the questions the policy kept on the device exceeds device-only
/// accuracy by at least this much: it asks on the searches that fail (seeds 0–2: 0.19, 0.22,
/// 0.03).
const ASKS_ON_FAILURES_MARGIN: f64 = 0.02;

/// `train.set: [run.steps=…]` in configs/demo-ci.yaml.
const RL_STEPS: u64 = 60;
/// `data.test` in configs/demo-ci.yaml.
const TEST_QUESTIONS: f64 = 100.0;

fn demo(dir: &Path, extra: &[&str]) -> Value {
    demo_of("configs/demo-ci.yaml", dir, extra)
}

fn demo_of(file: &str, dir: &Path, extra: &[&str]) -> Value {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = repo.join(file);
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let output = tandem(
        &[
            "demo",
            &path(&config),
            "--json",
            "--out",
            &path(&dir.join("runs")),
            "--cache",
            &path(&dir.join("cache")),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
        dir,
    );
    assert!(
        output.status.success(),
        "tandem demo failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("demo.json on stdout")
}

/// The policy beats the warm start with a learned router, and the other baselines, each at its
/// own call rate.
fn assert_the_policy_wins(out: &Value, router_margin: f64) {
    let (before, after) = (&out["before"], &out["after"]);
    let router = number(&before["router"]["overall_accuracy"]);
    let policy = number(&after["overall_accuracy"]);
    assert!(
        policy - router >= router_margin,
        "policy {policy} vs warm start + router {router}: {out}"
    );
    // The router is not starved: it sends up to the budget, as the policy may.
    assert!(number(&before["router"]["call_rate"]) > 0.25, "{before}");
    for baseline in ["local_only", "random_offloading"] {
        assert!(policy > number(&after[baseline]), "{baseline}: {after}");
    }
    assert!(policy > number(&before["overall_accuracy"]), "{before}");
}

#[test]
fn the_ci_demo_runs_every_step_from_scratch_and_the_policy_beats_the_router() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = demo(dir.path(), &[]);
    assert_eq!(first["warm_start_reused"], false);

    for evaluation in [&first["before"], &first["after"]] {
        // Every test question is judged once, by difficulty.
        let (easy, hard) = (level(evaluation, "easy"), level(evaluation, "hard"));
        assert_eq!(
            number(&easy["questions"]) + number(&hard["questions"]),
            TEST_QUESTIONS,
            "{evaluation}"
        );
        // The simulated cloud answers 95% right; the budget caps the calls.
        assert!(number(&evaluation["cloud_only"]) >= 0.85, "{evaluation}");
        assert!(
            number(&evaluation["call_rate"]) <= 0.3 + 1e-9,
            "{evaluation}"
        );
        // Overall help rate is the questions-weighted mean of the levels'.
        let weighted = [easy, hard]
            .iter()
            .map(|l| number(&l["help_rate"]) * number(&l["questions"]))
            .sum::<f64>()
            / TEST_QUESTIONS;
        assert!(
            (weighted - number(&evaluation["help_rate"])).abs() < 1e-9,
            "{evaluation}"
        );
        // The learned-router baseline is evaluated on both models, trained on the whole
        // training split: it sends at most the budget, and its AUC is a probability.
        let router = &evaluation["router"];
        assert!(number(&router["call_rate"]) <= 0.3 + 1e-9, "{router}");
        let auc = number(&router["auc"]);
        assert!((0.0..=1.0).contains(&auc), "{router}");
    }
    assert_ne!(first["before"]["model"], first["after"]["model"]);
    // The warm start solves a share of the searches on its own, and fails a share: the device
    // only baseline is the model without the help sentence (`sft.bare_share`).
    let device_only = number(&first["before"]["local_only"]);
    assert!((0.15..=0.85).contains(&device_only), "{}", first["before"]);

    // What RL did: asking pays at the budget, against every baseline.
    assert_the_policy_wins(&first, CI_ROUTER_MARGIN);
    // And it asks when its own search fails: what it keeps on the device it solves far more
    // often than the device does alone.
    let after = &first["after"];
    let picked = number(&after["conditional_accuracy"]) - number(&after["local_only"]);
    assert!(
        picked >= ASKS_ON_FAILURES_MARGIN,
        "conditional accuracy - device only = {picked}: {after}"
    );
    // What RL kept of the warm start's local skill, question by question.
    let kept = &first["kept"];
    assert!(number(&kept["solved_before"]) > 0.0, "{kept}");
    assert!(
        (0.0..=1.0).contains(&number(&kept["still_solved"])),
        "{kept}"
    );

    // Everything it reports is on disk: the summary, the plots, the stored runs.
    let demo_dir = Path::new(first["dir"].as_str().expect("dir"));
    for file in ["demo.json", "summary.md", "rl_steps.png", "rl_steps.svg"] {
        assert!(
            demo_dir.join(file).is_file(),
            "{file} missing in {}",
            demo_dir.display()
        );
    }
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(demo_dir.join("demo.json")).expect("demo.json"),
    )
    .expect("demo.json parses");
    assert_eq!(stored["after"], first["after"]);
    let summary = std::fs::read_to_string(demo_dir.join("summary.md")).expect("summary.md");
    for row in [
        "| help rate, easy (",
        "| help rate, hard (",
        "| **overall accuracy at the 30.0% budget** |",
        "| device + learned router at the 30.0% budget |",
        "| learned router's AUC (solved on the device) |",
    ] {
        assert!(
            summary.contains(row),
            "{row} missing in summary.md:\n{summary}"
        );
    }
    let train_run = Path::new(first["train_run"].as_str().expect("train_run"));
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(train_run.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest parses");
    assert_eq!(manifest["steps_completed"], RL_STEPS, "{manifest}");
    assert!(
        train_run.starts_with(demo_dir),
        "runs are stored under the demo's directory"
    );

    // The second run takes the warm start from the cache: same model, same data, no SFT.
    // (Two RL steps are enough for that, and no router.)
    let second = demo(
        dir.path(),
        &[
            "--set",
            "train.set=[run.steps=2]",
            "--set",
            "eval.router=false",
        ],
    );
    assert_eq!(second["warm_start_reused"], true);
    assert_eq!(second["warm_start"]["model"], first["warm_start"]["model"]);
    assert_eq!(number(&second["seconds"]["warm_start"]), 0.0);
    // Same seed, same warm model, seeded sampling: the "before" numbers repeat exactly.
    assert_eq!(second["before"]["levels"], first["before"]["levels"]);
}

/// After RL, overall accuracy at the budget exceeds the warm start's with a learned router by at
/// least this much on the full search demo (seeds 0–2: BENCHMARKS.md, "The search suite as the
/// main job").
const ROUTER_MARGIN: f64 = 0.1;

/// The paper's claim on the built-in demo at full size. It takes 10 minutes, twice the CI
/// size, so it runs on request: `cargo test --release --test tests the_policy_beats -- --ignored`.
#[test]
#[ignore = "the full demo: about 10 minutes on 2 cores"]
fn the_policy_beats_the_warm_start_with_a_learned_router_on_the_search_demo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = demo_of("configs/demo.yaml", dir.path(), &[]);
    assert_the_policy_wins(&out, ROUTER_MARGIN);
}

/// On the products suite, where difficulty shows in the question (4-digit products against
/// single-digit sums), the policy learns to ask on the hard level only; a router does as well
/// there (docs/demo.md, "Products"). About 4 minutes: `cargo test --release --test tests
/// products_demo -- --ignored`.
#[test]
#[ignore = "the products demo: about 4 minutes on 2 cores"]
fn on_the_products_demo_the_policy_asks_on_the_hard_level_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = demo_of("configs/demo-products.yaml", dir.path(), &[]);
    let after = &out["after"];
    let (easy, hard) = (level(after, "easy"), level(after, "hard"));
    // 4-digit products are beyond a sub-million-parameter model.
    assert_eq!(number(&hard["local_accuracy"]), 0.0, "{after}");
    let gap = number(&hard["help_rate"]) - number(&easy["help_rate"]);
    assert!(gap >= 0.5, "help rate hard - easy = {gap}: {after}");
    let over_random = number(&after["overall_accuracy"]) - number(&after["random_offloading"]);
    assert!(
        over_random >= 0.1,
        "over random offloading {over_random}: {after}"
    );
}

/// `tandem validate` takes a demo file: its own settings, then both pipelines as they would be
/// planned on the data and fresh model the demo makes; errors say where.
#[test]
fn validate_checks_a_demo_file_and_both_of_its_pipelines() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    for file in [
        "configs/demo.yaml",
        "configs/demo-ci.yaml",
        "configs/demo-chains.yaml",
        "configs/demo-products.yaml",
    ] {
        let path = repo.join(file);
        let output = tandem(&["validate", path.to_str().expect("utf-8")], dir.path());
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        for line in [
            format!("{}: ok (a demo file", path.display()),
            "configs/demo/warm-start.yaml: ok".to_owned(),
            "configs/demo/train.yaml: ok".to_owned(),
            "learn            learn.pg".to_owned(),
        ] {
            assert!(stdout.contains(&line), "{line} missing:\n{stdout}");
        }
    }

    // A typo in the demo's own settings, at its line and column.
    let bad = dir.path().join("demo.yaml");
    let text = std::fs::read_to_string(repo.join("configs/demo-ci.yaml"))
        .expect("demo-ci.yaml")
        .replace("  budget: 0.3", "  budgt: 0.3");
    std::fs::write(&bad, text).expect("write");
    std::fs::create_dir_all(dir.path().join("demo")).expect("mkdir");
    for pipeline in ["warm-start.yaml", "train.yaml"] {
        std::fs::copy(
            repo.join("configs/demo").join(pipeline),
            dir.path().join("demo").join(pipeline),
        )
        .expect("copy");
    }
    let output = tandem(&["validate", "demo.yaml"], dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("demo.yaml:"), "{stderr}");
    assert!(stderr.contains("unknown field `budgt`"), "{stderr}");

    // A bad value in a pipeline's overrides: the pipeline's stage is named.
    let output = tandem(
        &[
            "validate",
            repo.join("configs/demo-ci.yaml").to_str().expect("utf-8"),
            "--set",
            "train.set=[stages.4.params.alpha_cloud=high]",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("train.yaml"), "{stderr}");
    assert!(stderr.contains("alpha_cloud"), "{stderr}");
}
