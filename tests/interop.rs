//! The stored streams read as Hive-partitioned datasets in pyarrow and DuckDB.

use std::process::Command;

use crate::common::*;

#[test]
fn streams_read_in_pyarrow_and_duckdb_with_default_hive_partitioning() {
    // scripts/test.sh (what CI runs) provides an interpreter with pyarrow and duckdb.
    let Ok(python) = std::env::var("TANDEM_PYTHON") else {
        eprintln!("TANDEM_PYTHON is not set (scripts/test.sh sets it): interop not checked");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = generated_pipeline(dir.path(), 60, 2, 20, 2, 3);
    let run = run_in_process(&pipeline, 2, &dir.path().join("runs"));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_run.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&run.run_dir)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for (stream, rows) in [("prompts", 60), ("rollouts", 120), ("verdicts", 120)] {
        assert_eq!(seen[stream]["pyarrow"], rows, "{stream} in pyarrow");
        assert_eq!(seen[stream]["duckdb"], rows, "{stream} in duckdb");
        assert_eq!(
            seen[stream]["steps"],
            serde_json::json!([0, 1, 2]),
            "{stream} steps from the path"
        );
    }
    let columns = &seen["rollouts"]["columns"];
    for column in [
        "run_id",
        "step",
        "prompt_id",
        "sample_idx",
        "policy_version",
        "text",
    ] {
        assert!(
            columns
                .as_array()
                .expect("list")
                .iter()
                .any(|c| c == column),
            "rollouts lacks {column}: {columns}"
        );
    }
}
