//! Bad input gets a clear error naming file, line, column or field; the exit code is non-zero;
//! and nothing half-written is left anywhere.

use std::path::Path;

use crate::common::*;

/// Runs `tandem run` on `yaml` (with a valid dataset beside it) and returns stderr, after
/// checking that it failed and wrote nothing at all.
fn run_fails(yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    write_dataset(&dir.path().join("data.jsonl"), 20, 2, 1);
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).expect("write");
    let out = tandem(&["run", "pipeline.yaml", "--out", "runs"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "must fail: {stderr}");
    assert!(
        !dir.path().join("runs").exists(),
        "a rejected pipeline creates no run directory"
    );
    // The same error from `validate`, which never writes.
    let validate = tandem(&["validate", "pipeline.yaml"], dir.path());
    assert_eq!(validate.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&validate.stderr),
        stderr,
        "validate and run report the same error"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one paragraph: {stderr}"
    );
    stderr
}

const HEAD: &str = "run:\n  prompts_per_step: 4\n  group_size: 2\nstages:\n";
const SOURCE: &str = "  - id: prompts\n    kind: source.jsonl\n    params:\n      path: data.jsonl\n      fields: { id: uid, question: problem, answer: solution, completions: responses }\n";

#[test]
fn malformed_yaml_names_file_line_and_column() {
    let err = run_fails("run:\n  prompts_per_step: [4\n  group_size: 2\n");
    assert!(err.starts_with("error: pipeline.yaml:"), "{err}");
    assert!(err.contains("invalid YAML"), "{err}");
}

#[test]
fn unknown_kind_lists_the_known_kinds_at_its_line() {
    let err = run_fails(&format!(
        "{HEAD}{SOURCE}  - id: judge\n    kind: verify.exactt\n"
    ));
    assert!(
        err.contains(
            "pipeline.yaml:11:11: stage `judge` (verify.exactt): unknown stage kind `verify.exactt`"
        ),
        "{err}"
    );
    assert!(
        err.contains("known kinds: advantage.dr_grpo, advantage.gapg, advantage.grpo, "),
        "{err}"
    );
    assert!(
        err.contains(", filter.adaptive, filter.dynamic, filter.none, generate.offline, "),
        "{err}"
    );
    assert!(
        err.contains(", learn.pg, learn.sft, reward.collab, "),
        "{err}"
    );
    assert!(err.ends_with(", verify.math\n"), "{err}");
}

#[test]
fn wrong_parameter_type_points_at_the_value() {
    let yaml = format!("{HEAD}{SOURCE}      limit: ten\n");
    let err = run_fails(&yaml);
    assert!(
        err.contains("pipeline.yaml:10:14: `stages.0.params.limit`: invalid type: string \"ten\""),
        "{err}"
    );
}

#[test]
fn unknown_parameter_points_at_its_key() {
    let err = run_fails(&format!("{HEAD}{SOURCE}      shufle: false\n"));
    assert!(err.contains("pipeline.yaml:10:7: `stages.0.params.shufle`: unknown field `shufle`, expected one of `path`, `fields`, `shuffle`, `limit`"), "{err}");
}

#[test]
fn unreadable_dataset_names_the_path() {
    let err = run_fails(&format!(
        "{HEAD}{}",
        SOURCE.replace("data.jsonl", "missing.jsonl")
    ));
    assert!(err.contains("missing.jsonl: cannot read dataset"), "{err}");
    assert!(err.contains("stage `prompts` (source.jsonl)"), "{err}");
}

#[test]
fn dataset_row_missing_a_mapped_field_names_line_and_field() {
    let dir_source = SOURCE.replace("problem", "prompt_text");
    let err = run_fails(&format!("{HEAD}{dir_source}"));
    assert!(
        err.contains("data.jsonl:1: field `prompt_text` (mapped to `question`) is missing"),
        "{err}"
    );
    assert!(
        err.contains("problem"),
        "the message lists the fields the row has: {err}"
    );
}

#[test]
fn group_size_must_divide_the_batch() {
    let err = run_fails(&format!(
        "run:\n  batch_size: 10\n  group_size: 4\nstages:\n{SOURCE}"
    ));
    assert!(
        err.contains(
            "pipeline.yaml:2:15: run.batch_size (10) is not a multiple of run.group_size (4)"
        ),
        "{err}"
    );
}

#[test]
fn a_stage_whose_needs_are_not_provided_upstream_is_rejected() {
    let err = run_fails(&format!(
        "{HEAD}{SOURCE}  - id: judge\n    kind: verify.exact\n"
    ));
    assert!(
        err.contains(
            "stage `judge` (verify.exact): needs samples but no stage before it provides it"
        ),
        "{err}"
    );
    assert!(
        err.contains("generate.offline"),
        "the message says how to fix it: {err}"
    );
}

#[test]
fn unset_environment_variable_is_named() {
    let err = run_fails(&format!(
        "{HEAD}{}",
        SOURCE.replace("data.jsonl", "${TANDEM_TEST_SURELY_UNSET}")
    ));
    assert!(
        err.contains(
            "pipeline.yaml:8:13: environment variable `TANDEM_TEST_SURELY_UNSET` is not set"
        ),
        "{err}"
    );
}

#[test]
fn set_overrides_and_env_defaults_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_dataset(&dir.path().join("data.jsonl"), 20, 2, 1);
    let yaml = format!(
        "{HEAD}{}  - {{ id: rollouts, kind: generate.offline }}\n",
        SOURCE.replace("data.jsonl", "${TANDEM_TEST_SURELY_UNSET:-data.jsonl}")
    );
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).expect("write");
    let out = tandem(
        &[
            "run",
            "pipeline.yaml",
            "--out",
            "runs",
            "--set",
            "run.steps=3",
            "--set",
            "run.prompts_per_step=5",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("complete: 3 step(s), 15 groups, 30 samples, 0 error rows"),
        "{stdout}"
    );
}

#[test]
fn a_stage_failing_mid_run_keeps_every_complete_step_and_marks_the_run_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_dataset(&dir.path().join("data.jsonl"), 20, 2, 1);
    std::fs::create_dir(dir.path().join("a-directory")).expect("mkdir");
    // The sink cannot create its file (the path is a directory): a run error at step 0.
    let yaml = format!(
        "{HEAD}{SOURCE}  - {{ id: rollouts, kind: generate.offline }}\n  - {{ id: export, kind: sink.jsonl, params: {{ path: a-directory }} }}\n"
    );
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).expect("write");
    let out = tandem(&["run", "pipeline.yaml", "--out", "runs"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stage `export` (sink.jsonl) at step 0"),
        "{stderr}"
    );
    let run = only_run(&dir.path().join("runs"));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["status"], "failed");
    assert!(
        manifest["error"]
            .as_str()
            .expect("error")
            .contains("a-directory")
    );
    assert_only_complete_parquet(&run);
}

/// Every `.parquet` file under `dir` reads completely; any other file is the manifest or a
/// hidden temporary that Hive-style readers skip.
pub fn assert_only_complete_parquet(dir: &Path) {
    for file in files_under(dir) {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".parquet") {
            let reader = std::fs::File::open(&file).expect("open");
            let batches =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(reader)
                    .unwrap_or_else(|e| {
                        panic!("{}: not a complete parquet file: {e}", file.display())
                    })
                    .build()
                    .expect("reader");
            for batch in batches {
                batch.unwrap_or_else(|e| panic!("{}: unreadable: {e}", file.display()));
            }
        } else {
            assert!(
                name == "manifest.json" || name.starts_with('.'),
                "unexpected file {}",
                file.display()
            );
        }
    }
}

#[test]
fn generate_openai_names_the_parameter_at_fault() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/qwen2-tiny");
    let stage = |params: &str| {
        format!(
            "{HEAD}{SOURCE}  - id: rollouts\n    kind: generate.openai\n    params: {{ model: '{}', {params} }}\n",
            model.display()
        )
    };
    for (params, names) in [
        (
            "max_new_tokens: 8",
            "`stages.1.params.url`: give the server's url, or `launch`",
        ),
        (
            "url: 'http://127.0.0.1:1', launch: { python: python3 }",
            "`stages.1.params.launch`: give url or launch, not both",
        ),
        (
            "url: 'http://127.0.0.1:1', sleep_level: 3",
            "`stages.1.params.sleep_level`",
        ),
        (
            "url: 'http://127.0.0.1:1', sync: { command: [] }",
            "`stages.1.params.sync.command`",
        ),
        (
            "url: 'http://127.0.0.1:1', extra_body: { n: 2 }",
            "`stages.1.params.extra_body.n`: is set by the stage",
        ),
        (
            "url: 'http://127.0.0.1:1', sync: vlm",
            "unknown variant `vlm`",
        ),
        (
            "url: 'http://127.0.0.1:1', prob_tokens: 4",
            "unknown field `prob_tokens`",
        ),
    ] {
        let err = run_fails(&stage(params));
        assert!(err.contains(names), "{params}: {err}");
        assert!(err.contains("pipeline.yaml:"), "{params}: {err}");
    }
}
