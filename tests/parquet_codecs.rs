//! Parquet as users have it: files written by pyarrow with every codec it offers (snappy is its
//! default and HF `datasets`'), read by the loader `source.parquet` and `tandem eval` use.

use tandem_datasets::FieldMap;

use crate::common::{assert_loaded_as_written, python_json};

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
        assert_loaded_as_written(
            &examples,
            &written,
            ["id", "question", "answer", "difficulty"],
            codec,
        );
    }
}
