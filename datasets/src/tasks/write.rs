//! Storing generated splits as rows `source.jsonl` and `source.parquet` read with the fields
//! `id`, `question`, `answer`, `difficulty` and `completions` (the worked solution, which
//! `generate.offline` replays), plus a `dataset.json` that says how they were made.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::{Map, Value, json};

use super::generate::{HELP_RESPONSE, Splits, TaskExample};
use super::spec::{Task, TaskError};

/// The file format of the splits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines (`train.jsonl`).
    #[default]
    Jsonl,
    /// Parquet (`train.parquet`).
    Parquet,
}

impl Format {
    /// The file extension, which is also the name on the command line.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "parquet" => Ok(Format::Parquet),
            other => Err(format!(
                "unknown format `{other}`; expected jsonl or parquet"
            )),
        }
    }
}

/// What [`write_dataset`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The split files (train, test, sft) and `dataset.json`.
    pub files: Vec<PathBuf>,
    /// Rows per level of each split (`train`, `test`, `sft`), levels in the spec's order.
    pub counts: Vec<(&'static str, Vec<(String, usize)>)>,
    /// SFT rows that answer with the help response.
    pub sft_unknown: usize,
}

/// Writes `train`, `test` and `sft` files in `format` and `dataset.json` (the resolved task,
/// the seed, the files and the counts) into `dir`, creating it; existing files are replaced.
pub fn write_dataset(
    dir: &Path,
    task: &Task,
    seed: u64,
    splits: &Splits,
    format: Format,
) -> Result<Written, TaskError> {
    std::fs::create_dir_all(dir).map_err(|e| TaskError::write(dir, e))?;
    let mut files = Vec::new();
    let mut counts = Vec::new();
    let parts = [
        ("train", &splits.train),
        ("test", &splits.test),
        ("sft", &splits.sft),
    ];
    for (split, examples) in parts {
        let path = dir.join(format!("{split}.{}", format.extension()));
        match format {
            Format::Jsonl => write_jsonl(&path, examples)?,
            Format::Parquet => write_parquet(&path, examples)?,
        }
        files.push(path);
        let per_level: Vec<(String, usize)> = task
            .levels
            .iter()
            .map(|level| {
                let n = examples
                    .iter()
                    .filter(|e| e.difficulty == level.name)
                    .count();
                (level.name.clone(), n)
            })
            .collect();
        counts.push((split, per_level));
    }
    let sft_unknown = splits
        .sft
        .iter()
        .filter(|e| e.solution.ends_with(HELP_RESPONSE))
        .count();
    let mut count_json = Map::new();
    for (split, per_level) in &counts {
        let levels: Map<String, Value> = per_level
            .iter()
            .map(|(name, n)| (name.clone(), Value::from(*n)))
            .collect();
        count_json.insert((*split).to_owned(), Value::Object(levels));
    }
    let file_names: Map<String, Value> = parts
        .iter()
        .zip(&files)
        .map(|((split, _), path)| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            ((*split).to_owned(), Value::from(name))
        })
        .collect();
    let description = json!({
        "spec": task,
        "seed": seed,
        "format": format.extension(),
        "files": file_names,
        "counts": count_json,
        "sft_unknown": sft_unknown,
    });
    let path = dir.join("dataset.json");
    let text = serde_json::to_string_pretty(&description).expect("a JSON value serializes");
    std::fs::write(&path, text + "\n").map_err(|e| TaskError::write(&path, e))?;
    files.push(path);
    Ok(Written {
        files,
        counts,
        sft_unknown,
    })
}

/// The row of an example: `{"id", "question", "answer", "difficulty", "completions": [solution]}`.
fn row(example: &TaskExample) -> Value {
    json!({
        "id": example.id,
        "question": example.question,
        "answer": example.answer,
        "difficulty": example.difficulty,
        "completions": [example.solution],
    })
}

/// Writes examples as JSON Lines, one [row](write_dataset) per line.
pub fn write_jsonl(path: &Path, examples: &[TaskExample]) -> Result<(), TaskError> {
    let file = std::fs::File::create(path).map_err(|e| TaskError::write(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    for example in examples {
        serde_json::to_writer(&mut out, &row(example)).map_err(|e| TaskError::write(path, e))?;
        out.write_all(b"\n")
            .map_err(|e| TaskError::write(path, e))?;
    }
    out.flush().map_err(|e| TaskError::write(path, e))
}

/// The Parquet schema of examples: `answer` is `Int64` when every answer is an integer
/// (arithmetic), else `Utf8` (Countdown's JSON text).
pub fn parquet_schema(integer_answers: bool) -> SchemaRef {
    let answer = if integer_answers {
        DataType::Int64
    } else {
        DataType::Utf8
    };
    let completions = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("question", DataType::Utf8, false),
        Field::new("answer", answer, false),
        Field::new("difficulty", DataType::Utf8, false),
        Field::new("completions", completions, false),
    ]))
}

/// Writes examples as one Parquet file with the columns of [`parquet_schema`].
pub fn write_parquet(path: &Path, examples: &[TaskExample]) -> Result<(), TaskError> {
    let integers: Option<Vec<i64>> = examples.iter().map(|e| e.answer.as_i64()).collect();
    let answer: ArrayRef = match &integers {
        Some(values) => Arc::new(Int64Array::from(values.clone())),
        None => Arc::new(
            examples
                .iter()
                .map(|e| match &e.answer {
                    Value::String(text) => Some(text.clone()),
                    other => Some(other.to_string()),
                })
                .collect::<StringArray>(),
        ),
    };
    let text = |get: fn(&TaskExample) -> &str| -> ArrayRef {
        Arc::new(
            examples
                .iter()
                .map(|e| Some(get(e)))
                .collect::<StringArray>(),
        )
    };
    let mut completions = ListBuilder::new(StringBuilder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    for example in examples {
        completions.values().append_value(&example.solution);
        completions.append(true);
    }
    let schema = parquet_schema(integers.is_some());
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            text(|e| &e.id),
            text(|e| &e.question),
            answer,
            text(|e| &e.difficulty),
            Arc::new(completions.finish()),
        ],
    )
    .expect("the columns match the schema by construction");
    let file = std::fs::File::create(path).map_err(|e| TaskError::write(path, e))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)
        .map_err(|e| TaskError::write(path, e))?;
    writer
        .write(&batch)
        .map_err(|e| TaskError::write(path, e))?;
    writer.close().map_err(|e| TaskError::write(path, e))?;
    Ok(())
}
