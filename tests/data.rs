//! `tandem data generate`: what it writes loads as a pipeline dataset, and every worked
//! solution passes the real verifier (through `tandem verify`) for both tasks.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::tandem;

fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read rows")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON row"))
        .collect()
}

/// Generates `task`, turns every train and test row into a verifier case whose prediction is
/// the row's worked solution, and checks `tandem verify` judges them all correct.
fn worked_solutions_pass_the_verifier(task: &str, kind: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tandem(
        &[
            "data", "generate", "--task", task, "--out", "gen", "--seed", "3", "--train", "300",
            "--test", "60",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("train    300 rows (easy "), "{stdout}");
    let mut cases = String::new();
    let mut total = 0;
    for split in ["train", "test"] {
        for row in rows(&dir.path().join("gen").join(format!("{split}.jsonl"))) {
            let prediction = row["completions"][0].clone();
            let case = match kind {
                "math" => json!({"gold": row["answer"], "prediction": prediction}),
                _ => {
                    let problem: Value = serde_json::from_str(
                        row["answer"]
                            .as_str()
                            .expect("Countdown answers are JSON text"),
                    )
                    .expect("JSON");
                    json!({"numbers": problem["numbers"], "target": problem["target"],
                           "prediction": prediction})
                }
            };
            cases.push_str(&format!("{case}\n"));
            total += 1;
        }
    }
    std::fs::write(dir.path().join("cases.jsonl"), cases).expect("write cases");
    let out = tandem(
        &[
            "verify",
            "--kind",
            kind,
            "--input",
            "cases.jsonl",
            "--output",
            "judged.jsonl",
            "--threads",
            "1",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{total} rows, {total} correct")),
        "{stderr}"
    );
}

#[test]
fn arithmetic_solutions_pass_verify_math() {
    worked_solutions_pass_the_verifier("arithmetic", "math");
}

#[test]
fn countdown_solutions_pass_verify_countdown() {
    worked_solutions_pass_the_verifier("countdown", "countdown");
}

#[test]
fn a_bad_spec_names_the_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("spec.yaml"),
        "task: countdown\nlevels:\n  - { name: easy, numbers: 3 }\n  - { name: hard, numbers: 9 }\n",
    )
    .expect("write spec");
    let out = tandem(
        &["data", "generate", "--spec", "spec.yaml", "--out", "gen"],
        dir.path(),
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: spec.yaml:4:28: `levels.1.numbers`: must be between 2 and 6, found 9"
    );
    assert!(
        !dir.path().join("gen").exists(),
        "nothing is written on a bad spec"
    );
}

/// `tandem model tokenizer` on generated data gives a tokenizer `tandem model init` ships and
/// `tandem model info` loads, with `<|im_end|>` as its end of sequence.
#[test]
fn a_tokenizer_trained_on_generated_data_ships_with_model_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = tandem(args, dir.path());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "data",
        "generate",
        "--task",
        "arithmetic",
        "--out",
        "gen",
        "--train",
        "200",
        "--test",
        "20",
    ]);
    let stdout = run(&[
        "model",
        "tokenizer",
        "--corpus",
        "gen/train.jsonl",
        "--corpus",
        "gen/sft.jsonl",
        "--text",
        "<unknown> I need external assistance </unknown>",
        "--vocab-size",
        "280",
        "--out",
        "tok",
    ]);
    assert!(
        stdout.starts_with("wrote tok (280 tokens from "),
        "{stdout}"
    );
    run(&[
        "model",
        "init",
        "m",
        "--arch",
        "qwen2",
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--intermediate",
        "48",
        "--tokenizer",
        "tok/tokenizer.json",
    ]);
    let info: Value =
        serde_json::from_str(&run(&["model", "info", "m", "--json", "--threads", "1"]))
            .expect("JSON");
    assert_eq!(info["tokenizer_vocab_size"], 280);
    assert_eq!(info["vocab_size"], 320);
    assert_eq!(info["eos_token_ids"], json!([279]));
    assert_eq!(info["chat_template"], true);

    let missing = tandem(
        &[
            "model",
            "tokenizer",
            "--corpus",
            "gen/train.jsonl",
            "--fields",
            "prompt",
            "--out",
            "t2",
        ],
        dir.path(),
    );
    assert!(!missing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim_end(),
        "error: gen/train.jsonl: no row has any of the fields prompt (set --fields)"
    );
}
