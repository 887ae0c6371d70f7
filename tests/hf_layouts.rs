//! Datasets as HF `datasets` writes them: `save_to_disk` directories (Arrow IPC shards and a
//! `state.json`), JSON arrays, JSON Lines and hub-style Parquet shards, each written by
//! `datasets` itself and read by the loader `source.*` and `tandem eval` use.

use std::path::Path;

use tandem_datasets::FieldMap;

use crate::common::{assert_loaded_as_written, python_json};

#[test]
fn every_layout_datasets_writes_loads_row_for_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    // scripts/test.sh (what CI runs) provides an interpreter with pyarrow and `datasets`.
    let Some(written) = python_json("write_hf_layouts.py", &[dir.path().as_os_str()], "layouts")
    else {
        return;
    };
    let fields: FieldMap = serde_json::from_value(serde_json::json!({
        "id": "id", "question": "problem", "answer": "solution", "difficulty": "level"
    }))
    .expect("field map");
    for layout in ["saved", "array.json", "lines.jsonl", "data"] {
        let path = dir.path().join(layout);
        let examples =
            tandem_datasets::load(&path, &fields, None).unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert_eq!(examples.len(), 30, "{layout}");
        assert_loaded_as_written(
            &examples,
            &written,
            ["id", "problem", "solution", "level"],
            layout,
        );
    }
    // A limit stops inside the second of the three Arrow shards.
    let saved = dir.path().join("saved");
    let first = tandem_datasets::load(&saved, &fields, Some(13)).expect("limit");
    assert_eq!(first.len(), 13);
    assert_eq!(first[12].id, "q-012");

    // One split of a DatasetDict loads; the dict itself says which splits there are.
    let test = tandem_datasets::load(&dir.path().join("dict/test"), &fields, None).expect("split");
    assert_eq!(test.len(), 5);
    let err = tandem_datasets::load(&dir.path().join("dict"), &fields, None)
        .expect_err("a DatasetDict is not one dataset")
        .to_string();
    assert!(
        err.contains("point at one split's directory") && err.contains("\"train\",\"test\""),
        "{err}"
    );
    // An Arrow shard on its own is a dataset too.
    let shard = first_arrow_file(&saved);
    let rows = tandem_datasets::load(&shard, &fields, None).expect("one shard");
    assert_eq!(rows[0].id, "q-000");
}

fn first_arrow_file(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
        .collect();
    files.sort();
    files.remove(0)
}
