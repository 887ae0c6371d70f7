//! Dataset presets on small files shaped as the real benchmarks (their field names and value
//! types, a few rows each), read by `source.jsonl` / `source.parquet` with `preset:`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListBuilder, PrimitiveBuilder, RecordBatch,
};
use arrow::datatypes::Int64Type;
use tandem_schemas::PromptRecord;
use tandem_stages::verify::{CountdownConfig, CountdownProblem, CountdownVerifier, Outcome};
use tandem_stages::{BuildContext, Built, Registry, RunSettings, StepContext};

use crate::common::tandem;

/// Every prompt `kind` emits in its first step, in file order, with `params` plus the file.
fn prompts(kind: &str, path: &Path, params: serde_json::Value) -> Vec<PromptRecord> {
    try_prompts(kind, path, params).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

fn try_prompts(
    kind: &str,
    path: &Path,
    mut params: serde_json::Value,
) -> Result<Vec<PromptRecord>, String> {
    params["path"] = path.to_str().expect("a UTF-8 path").into();
    params["shuffle"] = false.into();
    let ctx = BuildContext {
        stage_id: "prompts".into(),
        base_dir: PathBuf::from("."),
        run: RunSettings {
            batch_size: 1,
            ..Default::default()
        },
        shared: Default::default(),
    };
    let Built::Source(mut source) = Registry::builtin()
        .build(kind, &params, &ctx)
        .map_err(|e| e.to_string())?
    else {
        panic!("{kind} builds a source")
    };
    let steps = source.natural_steps();
    let mut out = Vec::new();
    for step in 0..steps {
        let ctx = StepContext::single_worker("r", "prompts", step);
        let groups = source.step(&ctx).map_err(|e| e.to_string())?;
        out.extend(groups.into_iter().map(|g| g.prompt));
    }
    Ok(out)
}

fn write_jsonl(dir: &Path, rows: &[serde_json::Value]) -> PathBuf {
    let path = dir.join("test.jsonl");
    let lines: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    path
}

fn write_parquet(dir: &Path, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
    let path = dir.join("test-00000-of-00001.parquet");
    let batch = RecordBatch::try_from_iter(columns).expect("valid batch");
    let file = std::fs::File::create(&path).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    path
}

fn strings(values: &[&str]) -> ArrayRef {
    Arc::new(arrow::array::StringArray::from(values.to_vec()))
}

fn summary(prompts: &[PromptRecord]) -> Vec<(&str, &str, Option<&str>)> {
    prompts
        .iter()
        .map(|p| {
            (
                p.prompt_id.as_str(),
                p.question.as_str(),
                p.answer.as_deref(),
            )
        })
        .collect()
}

#[test]
fn math_lighteval_takes_the_last_boxed_answer_from_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_parquet(
        dir.path(),
        vec![
            (
                "problem",
                strings(&["Simplify $\\frac{2}{4}$.", "Solve $x+1=3$."]),
            ),
            ("level", strings(&["Level 1", "Level 2"])),
            ("type", strings(&["Prealgebra", "Algebra"])),
            (
                "solution",
                strings(&[
                    "Try $\\boxed{2/4}$ first; it reduces to $\\boxed{\\frac{1}{2}}$.",
                    "Subtract 1: $x = \\boxed{2}$.",
                ]),
            ),
        ],
    );
    let rows = prompts(
        "source.parquet",
        &path,
        serde_json::json!({ "preset": "math-lighteval" }),
    );
    assert_eq!(
        summary(&rows),
        [
            ("0", "Simplify $\\frac{2}{4}$.", Some("\\frac{1}{2}")),
            ("1", "Solve $x+1=3$.", Some("2")),
        ]
    );
    assert_eq!(rows[1].difficulty.as_deref(), Some("Level 2"));
    // An explicit entry replaces the preset's, the others stay.
    let by_type = prompts(
        "source.parquet",
        &path,
        serde_json::json!({ "preset": "math-lighteval", "fields": { "difficulty": "type" } }),
    );
    assert_eq!(by_type[1].difficulty.as_deref(), Some("Algebra"));
    assert_eq!(by_type[1].answer.as_deref(), Some("2"));
}

#[test]
fn math_500_maps_unique_id_answer_and_integer_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_jsonl(
        dir.path(),
        &[
            serde_json::json!({
                "problem": "Convert $(0,3)$ to polar coordinates.",
                "solution": "We have $r = 3$ ... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$",
                "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
                "subject": "Precalculus",
                "level": 2,
                "unique_id": "test/precalculus/807.json"
            }),
            serde_json::json!({
                "problem": "What is $1+1$?",
                "solution": "$\\boxed{2}$",
                "answer": "2",
                "subject": "Prealgebra",
                "level": 1,
                "unique_id": "test/prealgebra/1.json"
            }),
        ],
    );
    let rows = prompts(
        "source.jsonl",
        &path,
        serde_json::json!({ "preset": "math-500" }),
    );
    assert_eq!(
        summary(&rows),
        [
            (
                "test/precalculus/807.json",
                "Convert $(0,3)$ to polar coordinates.",
                Some("\\left( 3, \\frac{\\pi}{2} \\right)")
            ),
            ("test/prealgebra/1.json", "What is $1+1$?", Some("2")),
        ]
    );
    assert_eq!(rows[0].difficulty.as_deref(), Some("2"));
    assert_eq!(rows[0].source, "test.jsonl:1");
}

#[test]
fn amc23_float_answers_become_integers_from_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_parquet(
        dir.path(),
        vec![
            ("id", Arc::new(Int64Array::from(vec![0, 1, 2])) as ArrayRef),
            (
                "question",
                strings(&["Cities A and B ...", "What is $2.5 + 1$?", "Q3"]),
            ),
            (
                "answer",
                Arc::new(Float64Array::from(vec![27.0, 3.5, -4.0])),
            ),
            (
                "url",
                strings(&["https://aops.com/a", "https://aops.com/b", "u"]),
            ),
        ],
    );
    let rows = prompts(
        "source.parquet",
        &path,
        serde_json::json!({ "preset": "amc23" }),
    );
    assert_eq!(
        summary(&rows),
        [
            ("0", "Cities A and B ...", Some("27")),
            ("1", "What is $2.5 + 1$?", Some("3.5")),
            ("2", "Q3", Some("-4")),
        ]
    );
    // The same rows as JSON Lines read the same.
    let jsonl = write_jsonl(
        dir.path(),
        &[
            serde_json::json!({"id": 0, "question": "Cities A and B ...", "answer": 27.0, "url": "u"}),
        ],
    );
    let rows = prompts(
        "source.jsonl",
        &jsonl,
        serde_json::json!({ "preset": "amc23" }),
    );
    assert_eq!(rows[0].answer.as_deref(), Some("27"));
}

#[test]
fn minerva_math_maps_question_and_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_jsonl(
        dir.path(),
        &[
            serde_json::json!({"question": "Compute the mass in kg.", "answer": "6.6e-27"}),
            serde_json::json!({"question": "Find $\\lambda$ in nm.", "answer": "\\frac{1}{2}"}),
        ],
    );
    let rows = prompts(
        "source.jsonl",
        &path,
        serde_json::json!({ "preset": "minerva-math" }),
    );
    assert_eq!(
        summary(&rows),
        [
            ("0", "Compute the mass in kg.", Some("6.6e-27")),
            ("1", "Find $\\lambda$ in nm.", Some("\\frac{1}{2}")),
        ]
    );
}

#[test]
fn gsm8k_takes_the_answer_after_the_last_hashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_jsonl(
        dir.path(),
        &[
            serde_json::json!({
                "question": "Natalia sold clips to 48 friends in April ...",
                "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n48+24 = <<48+24=72>>72\n#### 72"
            }),
            serde_json::json!({
                "question": "A company pays $500 a month ...",
                "answer": "500 * 2 = 1000\n#### 1,000"
            }),
        ],
    );
    let rows = prompts(
        "source.jsonl",
        &path,
        serde_json::json!({ "preset": "gsm8k" }),
    );
    assert_eq!(
        summary(&rows),
        [
            (
                "0",
                "Natalia sold clips to 48 friends in April ...",
                Some("72")
            ),
            ("1", "A company pays $500 a month ...", Some("1000")),
        ]
    );
}

#[test]
fn countdown_tasks_rows_are_judged_as_generated_ones_from_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nums = ListBuilder::new(PrimitiveBuilder::<Int64Type>::new());
    for row in [[44, 19, 35].as_slice(), &[74, 78, 36, 7]] {
        nums.values().append_slice(row);
        nums.append(true);
    }
    let path = write_parquet(
        dir.path(),
        vec![
            (
                "target",
                Arc::new(Int64Array::from(vec![98, 33])) as ArrayRef,
            ),
            ("nums", Arc::new(nums.finish())),
        ],
    );
    let rows = prompts(
        "source.parquet",
        &path,
        serde_json::json!({ "preset": "countdown-tasks" }),
    );
    assert_eq!(
        rows[1].question,
        "Using the numbers [74, 78, 36, 7], create an equation that equals 33. You can use basic \
         arithmetic operations (+, -, *, /) and each number can only be used once."
    );
    assert_eq!(
        rows[1].answer.as_deref(),
        Some("{\"numbers\": [74, 78, 36, 7], \"target\": 33}")
    );
    // `verify.countdown` reads the same problem from the answer and from the question, and
    // judges a solution of it correct.
    let verifier = CountdownVerifier::new(CountdownConfig::default()).expect("verifier");
    for row in &rows {
        let problem = CountdownProblem::from_prompt(row).expect("a problem");
        let from_question = CountdownProblem::from_question(&row.question).expect("a problem");
        assert_eq!(
            (&problem.numbers, problem.target),
            (&from_question.numbers, from_question.target)
        );
    }
    let problem = CountdownProblem::from_prompt(&rows[0]).expect("a problem");
    let judged = verifier.judge(&problem, "<answer>44 + 19 + 35</answer>");
    assert_eq!(judged.method, Outcome::Correct.method());
    let judged = verifier.judge(&problem, "<answer>44 + 19 - 35</answer>");
    assert_eq!(judged.method, Outcome::WrongValue.method());

    // TinyZero's JSON Lines form reads the same.
    let jsonl = write_jsonl(
        dir.path(),
        &[serde_json::json!({"target": 98, "nums": [44, 19, 35]})],
    );
    let from_jsonl = prompts(
        "source.jsonl",
        &jsonl,
        serde_json::json!({ "preset": "countdown-tasks" }),
    );
    assert_eq!(from_jsonl[0].question, rows[0].question);
    assert_eq!(from_jsonl[0].answer, rows[0].answer);
}

#[test]
fn aime_reads_both_hub_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // AI-MO/aimo-validation-aime (answers as strings or ints) and HuggingFaceH4/aime_2024.
    let path = write_jsonl(
        dir.path(),
        &[
            serde_json::json!({"id": 0, "problem": "Find the remainder ...", "answer": "204",
                "solution": "...", "url": "https://artofproblemsolving.com/a"}),
            serde_json::json!({"id": 1, "problem": "Let $x$ ...", "answer": 25,
                "solution": "...", "url": "https://artofproblemsolving.com/b"}),
            serde_json::json!({"id": 60, "problem": "Every morning Aya ...", "answer": "204",
                "solution": "...", "url": "https://artofproblemsolving.com/c", "year": 2024}),
        ],
    );
    let rows = prompts(
        "source.jsonl",
        &path,
        serde_json::json!({ "preset": "aime" }),
    );
    assert_eq!(
        summary(&rows),
        [
            ("0", "Find the remainder ...", Some("204")),
            ("1", "Let $x$ ...", Some("25")),
            ("60", "Every morning Aya ...", Some("204")),
        ]
    );
}

#[test]
fn a_row_without_its_gold_answer_is_an_error_naming_file_and_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_jsonl(
        dir.path(),
        &[
            serde_json::json!({"question": "q1", "answer": "1 + 1 = 2\n#### 2"}),
            serde_json::json!({"question": "q2", "answer": "The answer is 3."}),
        ],
    );
    let err = try_prompts(
        "source.jsonl",
        &path,
        serde_json::json!({ "preset": "gsm8k" }),
    )
    .expect_err("no ####");
    assert_eq!(
        err,
        format!(
            "{}:2: field `answer` (mapped to `answer`) has no `####` before its final answer, \
             which the `gsm8k` preset needs",
            path.display()
        )
    );
    let parquet = write_parquet(
        dir.path(),
        vec![
            ("problem", strings(&["p0", "p1"])),
            ("solution", strings(&["$\\boxed{1}$", "so it is 2."])),
            ("level", strings(&["Level 1", "Level 1"])),
            ("type", strings(&["Algebra", "Algebra"])),
        ],
    );
    let err = try_prompts(
        "source.parquet",
        &parquet,
        serde_json::json!({ "preset": "math-lighteval" }),
    )
    .expect_err("no boxed");
    assert_eq!(
        err,
        format!(
            "{}: row 1: field `solution` (mapped to `answer`) has no `\\boxed{{…}}` to take the \
             answer from, which the `math-lighteval` preset needs",
            parquet.display()
        )
    );
}

#[test]
fn an_unknown_preset_is_refused_with_the_known_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_jsonl(
        dir.path(),
        &[serde_json::json!({"question": "q", "answer": "1"})],
    );
    let err = try_prompts(
        "source.jsonl",
        &path,
        serde_json::json!({ "preset": "gsm8" }),
    )
    .expect_err("unknown");
    assert!(
        err.contains(
            "preset: unknown preset `gsm8`; the presets are math-lighteval, math-500, amc23, \
             minerva-math, gsm8k, countdown-tasks, aime"
        ),
        "{err}"
    );
    // `tandem validate` points at the value, as for any bad parameter.
    let yaml = "run:\n  prompts_per_step: 1\n  group_size: 2\nstages:\n  - id: prompts\n    \
                kind: source.jsonl\n    params:\n      path: test.jsonl\n      preset: gsm8\n  \
                - id: samples\n    kind: generate.offline\n";
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).expect("write");
    let out = tandem(&["validate", "pipeline.yaml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: pipeline.yaml:9:15: `stages.0.params.preset`: unknown preset `gsm8`; the \
             presets are math-lighteval,"
        ),
        "{stderr}"
    );
}
