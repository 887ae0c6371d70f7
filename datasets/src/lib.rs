//! Dataset loaders for tandem: JSONL and Parquet files (or a Hugging Face `data/` directory of
//! Parquet shards) become [`Example`]s through a configurable [`FieldMap`], and [`Batches`]
//! decides which examples each training step sees. A [`Preset`] reads a real benchmark (GSM8K,
//! MATH, AIME, ...) by name: its fields, its question, its reference answer. [`tasks`]
//! generates synthetic datasets (arithmetic, Countdown) with exact answers and worked solutions.
//!
//! ```
//! use tandem_datasets::{load_jsonl, FieldMap};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("train.jsonl");
//! std::fs::write(&path, "{\"problem\": \"1+1?\", \"solution\": 2, \"meta\": {\"level\": \"easy\"}}\n")?;
//! let fields = FieldMap {
//!     question: "problem".into(),
//!     answer: Some("solution".into()),
//!     difficulty: Some("meta.level".into()),
//!     ..FieldMap::default()
//! };
//! let examples = load_jsonl(&path, &fields, None)?;
//! assert_eq!(examples[0].id, "0");
//! assert_eq!(examples[0].source, "train.jsonl:1");
//! assert_eq!(examples[0].answer.as_deref(), Some("2"));
//! assert_eq!(examples[0].difficulty.as_deref(), Some("easy"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(missing_docs)]

pub mod answers;
mod batches;
mod error;
mod fields;
mod jsonl;
mod parquet_file;
mod presets;
pub mod tasks;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

pub use batches::{BatchError, Batches};
pub use error::{DatasetError, Location};
pub use fields::{FieldMap, FieldOverrides};
pub use jsonl::{load_jsonl, load_jsonl_with_preset};
pub use parquet_file::{load_parquet, load_parquet_with_preset};
pub use presets::{PRESETS, Preset};

use fields::{Role, Shape};

/// The crate's result type.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

/// One question of a dataset, independent of any run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The mapped id field's value as text or, without an id mapping, the 0-based row index
    /// (`"17"`). Unique within the dataset.
    pub id: String,
    /// Where the row came from: `train.jsonl:3` (1-based line) or `train.parquet#2` (0-based row).
    pub source: String,
    /// The prompt text.
    pub question: String,
    /// The reference answer, if the dataset has answers.
    pub answer: Option<String>,
    /// The difficulty label, if mapped and present in this row.
    pub difficulty: Option<String>,
    /// Completions generated earlier (offline rollouts); empty unless mapped.
    pub completions: Vec<String>,
}

/// Loads a dataset, choosing the format by extension: `.jsonl`, `.json` and `.ndjson` are
/// JSON Lines (or one JSON array of objects, when the file starts with `[`), `.parquet` is
/// Parquet, `.arrow` is Arrow IPC. A directory is either what `datasets`' `save_to_disk` wrote
/// (a `state.json` naming its `.arrow` files, read in its order) or all its `*.parquet` files
/// in name order (the Hugging Face `data/` layout), with row ids counted across the files.
/// A path with `*`, `?` or `[…]` in it is a glob (`data/train-*.parquet`): the files it
/// matches, in name order, each read by its extension.
pub fn load(path: &Path, fields: &FieldMap, limit: Option<usize>) -> Result<Vec<Example>> {
    load_with_preset(path, fields, None, limit)
}

/// [`load`], with `preset` (if any) building each row's question and answer from what `fields`
/// reads; `fields` is usually the preset's own ([`Preset::fields`]), perhaps with some entries
/// overridden.
pub fn load_with_preset(
    path: &Path,
    fields: &FieldMap,
    preset: Option<&Preset>,
    limit: Option<usize>,
) -> Result<Vec<Example>> {
    let reading = Reading { limit, preset };
    if let Some(pattern) = path.to_str().filter(|p| p.contains(['*', '?', '['])) {
        return load_glob(path, pattern, fields, reading);
    }
    let meta = std::fs::metadata(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        if path.join("state.json").is_file() {
            return load_saved_dataset(path, fields, reading);
        }
        if let Ok(text) = std::fs::read_to_string(path.join("dataset_dict.json")) {
            let splits = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("splits").cloned())
                .map_or_else(|| "see dataset_dict.json".to_owned(), |s| s.to_string());
            let message = format!(
                "a DatasetDict that `save_to_disk` wrote: point at one split's directory \
                 (splits: {splits})"
            );
            return Err(DatasetError::invalid(path, message));
        }
        return load_parquet_dir(path, fields, reading);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "json" | "ndjson" => load_jsonl_with_preset(path, fields, preset, limit),
        "parquet" => load_parquet_with_preset(path, fields, preset, limit),
        "arrow" => {
            let mut out = Collector::new(path, fields, reading)?;
            parquet_file::read_arrow_into(path, fields, &mut out)?;
            out.finish()
        }
        _ => Err(DatasetError::invalid(
            path,
            format!(
                "unknown dataset extension `.{ext}`; expected .jsonl, .json, .ndjson, .parquet or \
                 .arrow, or a directory of .parquet files or one `save_to_disk` wrote"
            ),
        )),
    }
}

/// A `save_to_disk` directory: the `.arrow` files its `state.json` lists under `_data_files`,
/// in that order.
fn load_saved_dataset(dir: &Path, fields: &FieldMap, reading: Reading<'_>) -> Result<Vec<Example>> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|source| DatasetError::Read {
        path: state_path.clone(),
        source,
    })?;
    let files: Option<Vec<String>> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|state| {
            state
                .get("_data_files")?
                .as_array()?
                .iter()
                .map(|f| Some(f.get("filename")?.as_str()?.to_owned()))
                .collect()
        });
    let Some(files) = files.filter(|f| !f.is_empty()) else {
        let message = "expected `_data_files`: [{\"filename\": \"data-00000-of-00001.arrow\"}, …], \
                       as `datasets`' save_to_disk writes it";
        return Err(DatasetError::invalid(&state_path, message));
    };
    let mut out = Collector::new(dir, fields, reading)?;
    for file in &files {
        if out.is_full() {
            break;
        }
        parquet_file::read_arrow_into(&dir.join(file), fields, &mut out)?;
    }
    out.finish()
}

/// The files a glob matches, in name order, read one after another with ids counted across.
fn load_glob(
    path: &Path,
    pattern: &str,
    fields: &FieldMap,
    reading: Reading<'_>,
) -> Result<Vec<Example>> {
    let bad = |message: String| DatasetError::invalid(path, message);
    let matches = glob::glob(pattern).map_err(|e| bad(format!("not a valid glob: {e}")))?;
    let mut files = Vec::new();
    for entry in matches {
        let file = entry.map_err(|e| bad(format!("cannot read a match: {e}")))?;
        if file.is_file() {
            files.push(file);
        }
    }
    if files.is_empty() {
        return Err(bad("the glob matches no file".to_owned()));
    }
    files.sort();
    let mut out = Collector::new(path, fields, reading)?;
    for file in &files {
        if out.is_full() {
            break;
        }
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "parquet" => parquet_file::read_into(file, fields, &mut out)?,
            "arrow" => parquet_file::read_arrow_into(file, fields, &mut out)?,
            _ => {
                let message = format!(
                    "matches {}, which is not .parquet or .arrow (a glob reads shards of those)",
                    file.display()
                );
                return Err(bad(message));
            }
        }
    }
    out.finish()
}

/// The split names of hub-style shard names (`train-00000-of-00002.parquet` is `train`).
fn shard_splits(files: &[std::path::PathBuf]) -> Vec<String> {
    let mut splits: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let name = f.file_stem()?.to_str()?;
            let (split, shard) = name.split_once('-')?;
            let (index, total) = shard.split_once("-of-")?;
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (digits(index) && digits(total)).then(|| split.to_owned())
        })
        .collect();
    splits.sort();
    splits.dedup();
    splits
}

fn load_parquet_dir(dir: &Path, fields: &FieldMap, reading: Reading<'_>) -> Result<Vec<Example>> {
    let read_err = |source| DatasetError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let is_parquet = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        if is_parquet && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(DatasetError::invalid(
            dir,
            "the directory has no .parquet files",
        ));
    }
    files.sort();
    let splits = shard_splits(&files);
    if splits.len() > 1 {
        // Reading them all would mix the splits, test into train, without a word.
        let message = format!(
            "the directory holds the shards of several splits ({}); name one with a glob, e.g. \
             `{}/{}-*.parquet`",
            splits.join(", "),
            dir.display(),
            splits[0]
        );
        return Err(DatasetError::invalid(dir, message));
    }
    let mut out = Collector::new(dir, fields, reading)?;
    for file in &files {
        if out.is_full() {
            break;
        }
        parquet_file::read_into(file, fields, &mut out)?;
    }
    out.finish()
}

/// One role's value in one row, as a loader read it.
pub(crate) enum Cell {
    Text(String),
    Strings(Vec<String>),
    /// Only for `difficulty`, which rows may lack.
    Absent,
}

/// How a load reads rows: how many at most, and the preset that finishes each.
#[derive(Clone, Copy)]
pub(crate) struct Reading<'p> {
    pub(crate) limit: Option<usize>,
    pub(crate) preset: Option<&'p Preset>,
}

/// Gathers examples from one or more files, enforcing what holds across rows: unique ids, the
/// row limit, and at least one row; a preset finishes each row.
pub(crate) struct Collector<'a> {
    path: &'a Path,
    limit: Option<usize>,
    preset: Option<&'a Preset>,
    examples: Vec<Example>,
    /// Index into `examples` of the row that first used each id, to name it in the error.
    ids: HashMap<String, usize>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(path: &'a Path, fields: &FieldMap, reading: Reading<'a>) -> Result<Self> {
        let Reading { limit, preset } = reading;
        if limit == Some(0) {
            return Err(DatasetError::invalid(
                path,
                "limit is 0, so no rows would load",
            ));
        }
        if let Some(preset) = preset.filter(|p| p.needs_answer() && fields.answer.is_none()) {
            let message = format!(
                "the `{}` preset builds the question from the answer field too, so \
                 `fields.answer` cannot be null",
                preset.name()
            );
            return Err(DatasetError::invalid(path, message));
        }
        Ok(Collector {
            path,
            limit,
            preset,
            examples: Vec::new(),
            ids: HashMap::new(),
        })
    }

    pub(crate) fn is_full(&self) -> bool {
        self.limit.is_some_and(|limit| self.examples.len() >= limit)
    }

    /// Rows still to read before the limit, if any.
    pub(crate) fn remaining(&self) -> Option<usize> {
        self.limit
            .map(|limit| limit.saturating_sub(self.examples.len()))
    }

    /// What `role`'s field is read as: a list for `completions` and where the preset asks.
    pub(crate) fn shape(&self, role: Role) -> Shape {
        match role {
            Role::Completions => Shape::Strings,
            _ => self
                .preset
                .and_then(|p| p.shape(role))
                .unwrap_or(Shape::Text),
        }
    }

    /// Builds the next example from `read`, which returns a row's value for each mapped role in
    /// its [`Collector::shape`]; `file` and `location` say where the row is, for errors.
    pub(crate) fn push(
        &mut self,
        fields: &FieldMap,
        (file, location): (&Path, Location),
        source: String,
        mut read: impl FnMut(Role, &str, Shape) -> Result<Cell>,
    ) -> Result<()> {
        let mut example = Example {
            id: self.examples.len().to_string(),
            source,
            question: String::new(),
            answer: None,
            difficulty: None,
            completions: Vec::new(),
        };
        let mut inputs = None;
        for (role, field) in fields.roles() {
            match (role, read(role, field, self.shape(role))?) {
                (Role::Id, Cell::Text(text)) => example.id = text,
                (Role::Question, Cell::Text(text)) => example.question = text,
                (Role::Question, Cell::Strings(list)) => inputs = Some(list),
                (Role::Answer, Cell::Text(text)) => example.answer = Some(text),
                (Role::Difficulty, Cell::Text(text)) => example.difficulty = Some(text),
                (Role::Completions, Cell::Strings(list)) => example.completions = list,
                _ => {}
            }
        }
        if let Some(preset) = self.preset {
            preset
                .finish(&mut example, inputs)
                .map_err(|(role, reason)| {
                    let (_, field) = fields
                        .roles()
                        .into_iter()
                        .find(|&(r, _)| r == role)
                        .expect("a preset only faults the fields it read");
                    DatasetError::Preset {
                        path: file.to_path_buf(),
                        location,
                        field: field.to_owned(),
                        role: role.name(),
                        preset: preset.name(),
                        reason,
                    }
                })?;
        }
        match self.ids.entry(example.id.clone()) {
            Entry::Occupied(first) => Err(DatasetError::DuplicateId {
                path: self.path.to_path_buf(),
                id: example.id,
                first: self.examples[*first.get()].source.clone(),
                second: example.source,
            }),
            Entry::Vacant(slot) => {
                slot.insert(self.examples.len());
                self.examples.push(example);
                Ok(())
            }
        }
    }

    pub(crate) fn finish(self) -> Result<Vec<Example>> {
        if self.examples.is_empty() {
            return Err(DatasetError::invalid(self.path, "the dataset has no rows"));
        }
        Ok(self.examples)
    }
}

/// The file's name for [`Example::source`]: short, since the run config already has the path.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet_file::tests::{math_fields, write_math};

    #[test]
    fn a_directory_of_several_splits_is_refused_and_a_glob_picks_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        write_math(
            &data.join("train-00000-of-00002.parquet"),
            0,
            &[Some(1), Some(2)],
        );
        write_math(&data.join("train-00001-of-00002.parquet"), 2, &[Some(3)]);
        write_math(&data.join("test-00000-of-00001.parquet"), 3, &[Some(4)]);
        let err = load(&data, &math_fields(), None).expect_err("mixed splits");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the directory holds the shards of several splits (test, train); name one \
                 with a glob, e.g. `{}/test-*.parquet`",
                data.display(),
                data.display()
            )
        );
        let train = load(&data.join("train-*.parquet"), &math_fields(), None).expect("train");
        let sources: Vec<&str> = train.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "train-00000-of-00002.parquet#0",
                "train-00000-of-00002.parquet#1",
                "train-00001-of-00002.parquet#0"
            ]
        );
        let none = load(&data.join("valid-*.parquet"), &math_fields(), None).expect_err("none");
        assert!(
            none.to_string().ends_with("the glob matches no file"),
            "{none}"
        );
        std::fs::write(data.join("notes.txt"), "x").expect("write");
        let other = load(&data.join("*"), &math_fields(), None).expect_err("a .txt");
        assert!(
            other.to_string().contains("notes.txt, which is not"),
            "{other}"
        );
    }

    #[test]
    fn load_dispatches_on_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a.jsonl", "a.JSON", "a.ndjson"] {
            let path = dir.path().join(name);
            std::fs::write(&path, "{\"question\": \"q\", \"answer\": 1}\n").expect("write");
            let examples = load(&path, &FieldMap::default(), None).expect("loads");
            assert_eq!(examples[0].source, format!("{name}:1"));
        }
        let path = dir.path().join("a.parquet");
        write_math(&path, 0, &[Some(1)]);
        assert_eq!(
            load(&path, &math_fields(), None).expect("loads")[0].source,
            "a.parquet#0"
        );

        let path = dir.path().join("a.csv");
        std::fs::write(&path, "question,answer\n").expect("write");
        let err = load(&path, &FieldMap::default(), None).expect_err("csv");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: unknown dataset extension `.csv`; expected .jsonl, .json, .ndjson, .parquet or \
                 .arrow, or a directory of .parquet files or one `save_to_disk` wrote",
                path.display()
            )
        );
        let err =
            load(&dir.path().join("none.jsonl"), &FieldMap::default(), None).expect_err("missing");
        assert!(matches!(err, DatasetError::Read { .. }), "{err}");
    }

    #[test]
    fn load_reads_a_directory_of_parquet_shards_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_math(
            &dir.path().join("train-00001-of-00002.parquet"),
            2,
            &[Some(3)],
        );
        write_math(
            &dir.path().join("train-00000-of-00002.parquet"),
            0,
            &[Some(1), Some(2)],
        );
        std::fs::write(dir.path().join("README.md"), "not data").expect("write");
        let examples = load(dir.path(), &math_fields(), None).expect("loads");
        let summary: Vec<(&str, &str, &str)> = examples
            .iter()
            .map(|e| (e.id.as_str(), e.source.as_str(), e.question.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("0", "train-00000-of-00002.parquet#0", "p0"),
                ("1", "train-00000-of-00002.parquet#1", "p1"),
                ("2", "train-00001-of-00002.parquet#0", "p2"),
            ]
        );
        let limited = load(dir.path(), &math_fields(), Some(2)).expect("loads");
        assert_eq!(limited, examples[..2]);

        let empty = tempfile::tempdir().expect("tempdir");
        let err = load(empty.path(), &math_fields(), None).expect_err("no shards");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the directory has no .parquet files",
                empty.path().display()
            )
        );
    }
}
