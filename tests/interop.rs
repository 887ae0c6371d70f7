//! The stored streams read as Hive-partitioned datasets in pyarrow and DuckDB.

use crate::common::*;

#[test]
fn streams_read_in_pyarrow_and_duckdb_with_default_hive_partitioning() {
    // scripts/test.sh (what CI runs) provides an interpreter with pyarrow and duckdb.
    if std::env::var_os("TANDEM_PYTHON").is_none() {
        eprintln!("TANDEM_PYTHON is not set (scripts/test.sh sets it): interop not checked");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = generated_pipeline(dir.path(), 60, 2, 20, 2, 3);
    let run = run_in_process(&pipeline, 2, &dir.path().join("runs"));
    let Some(seen) = python_json("read_run.py", &[run.run_dir.as_os_str()], "interop") else {
        return;
    };
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
