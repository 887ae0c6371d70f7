//! Parquet as users have it: files written by pyarrow with every codec it offers (snappy is its
//! default and HF `datasets`'), read by the loader `source.parquet` and `tandem eval` use.

use std::process::Command;

use tandem_datasets::FieldMap;

#[test]
fn pyarrow_parquet_loads_with_every_codec() {
    // scripts/test.sh (what CI runs) provides an interpreter with pyarrow.
    let Ok(python) = std::env::var("TANDEM_PYTHON") else {
        eprintln!("TANDEM_PYTHON is not set (scripts/test.sh sets it): codecs not checked");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/write_parquet_codecs.py");
    let out = Command::new(python)
        .arg(script)
        .arg(dir.path())
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let fields: FieldMap = serde_json::from_value(serde_json::json!({
        "id": "id", "question": "question", "answer": "answer", "difficulty": "difficulty"
    }))
    .expect("field map");
    for codec in ["snappy", "gzip", "lz4", "brotli", "zstd", "none"] {
        let path = dir.path().join(format!("{codec}.parquet"));
        let examples =
            tandem_datasets::load(&path, &fields, None).unwrap_or_else(|e| panic!("{codec}: {e}"));
        assert_eq!(examples.len(), 40, "{codec}");
        for (i, example) in examples.iter().enumerate() {
            assert_eq!(example.id, written["id"][i], "{codec} row {i}");
            assert_eq!(example.question, written["question"][i], "{codec} row {i}");
            assert_eq!(
                example.answer.as_deref(),
                written["answer"][i].as_str(),
                "{codec}"
            );
            assert_eq!(
                example.difficulty.as_deref(),
                written["difficulty"][i].as_str(),
                "{codec}"
            );
        }
    }
}
