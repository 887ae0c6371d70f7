//! Parquet as users have it: files written by pyarrow with every codec it offers (snappy is its
//! default and HF `datasets`'), read by the loader `source.parquet` and `tandem eval` use.

use tandem_datasets::FieldMap;

use crate::common::python_json;

#[test]
fn pyarrow_parquet_loads_with_every_codec() {
    let dir = tempfile::tempdir().expect("tempdir");
    // scripts/test.sh (what CI runs) provides an interpreter with pyarrow and `datasets`.
    let Some(written) = python_json(
        "write_parquet_codecs.py",
        &[dir.path().as_os_str()],
        "codecs",
    ) else {
        return;
    };
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
