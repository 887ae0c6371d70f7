//! Reads the columns the report needs from a run's stored streams: only those columns (a
//! projection, so the free text, token ids and log-probabilities of samples are never decoded)
//! and only the steps asked for.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, UInt32Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tandem_schemas::StreamKind;
use tandem_schemas::layout::{Manifest, RunLayout};

use super::ReportError;

/// The streams of a run the report reads, by kind (the last of each kind in manifest order).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sources {
    /// The prompts stream (difficulty and source of each prompt).
    pub prompts: Option<String>,
    /// The samples stream (who asked for help).
    pub samples: String,
    /// The verdicts stream of the last verify stage.
    pub verdicts: Option<String>,
    /// The rewards stream of the last reward stage.
    pub rewards: Option<String>,
    /// The cloud ledger.
    pub cloud: Option<String>,
}

impl Sources {
    /// Picks the streams from a run's manifest; a run without samples has nothing to report.
    pub fn of(manifest: &Manifest, root: &Path) -> Result<Sources, ReportError> {
        let last = |kind: StreamKind| {
            manifest
                .streams
                .iter()
                .rev()
                .find(|s| s.kind == kind)
                .map(|s| s.name.clone())
        };
        Ok(Sources {
            prompts: last(StreamKind::Prompts),
            samples: last(StreamKind::Samples).ok_or_else(|| ReportError::NoSamples {
                run: root.to_owned(),
            })?,
            verdicts: last(StreamKind::Verdicts),
            rewards: last(StreamKind::Rewards),
            cloud: last(StreamKind::Cloud),
        })
    }
}

/// One sample: whether it asked for help.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sample {
    /// Step.
    pub step: u64,
    /// Prompt.
    pub prompt_id: String,
    /// Index in the group.
    pub sample_idx: u32,
    /// Whether it asked the cloud.
    pub asked_help: bool,
}

/// One verdict: of a sample (`sample_idx` set) or of the cloud's answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Verdict {
    /// Step.
    pub step: u64,
    /// Prompt.
    pub prompt_id: String,
    /// The sample judged; `None` for the cloud's answer.
    pub sample_idx: Option<u32>,
    /// Whether the answer is correct.
    pub correct: bool,
}

/// One reward.
#[derive(Clone, Debug, PartialEq)]
pub struct Reward {
    /// Step.
    pub step: u64,
    /// Prompt.
    pub prompt_id: String,
    /// Sample.
    pub sample_idx: u32,
    /// The reward the learner saw.
    pub reward: f64,
}

/// One row of the cloud ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudCall {
    /// Step.
    pub step: u64,
    /// Prompt.
    pub prompt_id: String,
    /// Tokens billed, prompt and completion.
    pub tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
}

/// One prompt's labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Prompt {
    /// Step.
    pub step: u64,
    /// Prompt.
    pub prompt_id: String,
    /// Difficulty label, when the dataset has one.
    pub difficulty: Option<String>,
    /// Where it came from, with the row number cut (`data.jsonl:17` → `data.jsonl`).
    pub source: String,
}

/// The rows of some steps of a run, as the report needs them.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// Samples.
    pub samples: Vec<Sample>,
    /// Verdicts (local and cloud).
    pub verdicts: Vec<Verdict>,
    /// Rewards.
    pub rewards: Vec<Reward>,
    /// Cloud ledger rows.
    pub cloud: Vec<CloudCall>,
    /// Prompts.
    pub prompts: Vec<Prompt>,
    /// Rows read from Parquet, all streams together.
    pub rows_read: u64,
}

/// Reads the steps `steps` of the chosen streams.
pub fn read_steps(
    layout: &RunLayout,
    sources: &Sources,
    steps: &[u64],
) -> Result<Rows, ReportError> {
    let mut rows = Rows::default();
    for &step in steps {
        for (part, batch) in batches(
            layout,
            &sources.samples,
            step,
            &["prompt_id", "sample_idx", "asked_help"],
        )? {
            let (pid, idx, asked) = (
                strings(&part, &batch, "prompt_id")?,
                u32s(&part, &batch, "sample_idx")?,
                bools(&part, &batch, "asked_help")?,
            );
            for i in 0..batch.num_rows() {
                rows.samples.push(Sample {
                    step,
                    prompt_id: pid[i].clone().unwrap_or_default(),
                    sample_idx: idx[i].unwrap_or_default(),
                    asked_help: asked[i].unwrap_or_default(),
                });
            }
            rows.rows_read += batch.num_rows() as u64;
        }
        if let Some(stream) = &sources.verdicts {
            for (part, batch) in batches(
                layout,
                stream,
                step,
                &["prompt_id", "sample_idx", "target", "correct"],
            )? {
                let (pid, idx, target, correct) = (
                    strings(&part, &batch, "prompt_id")?,
                    u32s(&part, &batch, "sample_idx")?,
                    strings(&part, &batch, "target")?,
                    bools(&part, &batch, "correct")?,
                );
                for i in 0..batch.num_rows() {
                    let cloud = target[i].as_deref() == Some("cloud");
                    rows.verdicts.push(Verdict {
                        step,
                        prompt_id: pid[i].clone().unwrap_or_default(),
                        sample_idx: if cloud { None } else { idx[i] },
                        correct: correct[i].unwrap_or_default(),
                    });
                }
                rows.rows_read += batch.num_rows() as u64;
            }
        }
        if let Some(stream) = &sources.rewards {
            for (part, batch) in
                batches(layout, stream, step, &["prompt_id", "sample_idx", "reward"])?
            {
                let (pid, idx, reward) = (
                    strings(&part, &batch, "prompt_id")?,
                    u32s(&part, &batch, "sample_idx")?,
                    f64s(&part, &batch, "reward")?,
                );
                for i in 0..batch.num_rows() {
                    rows.rewards.push(Reward {
                        step,
                        prompt_id: pid[i].clone().unwrap_or_default(),
                        sample_idx: idx[i].unwrap_or_default(),
                        reward: reward[i].unwrap_or_default(),
                    });
                }
                rows.rows_read += batch.num_rows() as u64;
            }
        }
        if let Some(stream) = &sources.cloud {
            for (part, batch) in batches(
                layout,
                stream,
                step,
                &["prompt_id", "tokens_in", "tokens_out", "cost_usd"],
            )? {
                let (pid, tin, tout, cost) = (
                    strings(&part, &batch, "prompt_id")?,
                    u64s(&part, &batch, "tokens_in")?,
                    u64s(&part, &batch, "tokens_out")?,
                    f64s(&part, &batch, "cost_usd")?,
                );
                for i in 0..batch.num_rows() {
                    rows.cloud.push(CloudCall {
                        step,
                        prompt_id: pid[i].clone().unwrap_or_default(),
                        tokens: tin[i].unwrap_or_default() + tout[i].unwrap_or_default(),
                        cost_usd: cost[i].unwrap_or_default(),
                    });
                }
                rows.rows_read += batch.num_rows() as u64;
            }
        }
        if let Some(stream) = &sources.prompts {
            for (part, batch) in
                batches(layout, stream, step, &["prompt_id", "source", "difficulty"])?
            {
                let (pid, source, difficulty) = (
                    strings(&part, &batch, "prompt_id")?,
                    strings(&part, &batch, "source")?,
                    strings(&part, &batch, "difficulty")?,
                );
                for i in 0..batch.num_rows() {
                    rows.prompts.push(Prompt {
                        step,
                        prompt_id: pid[i].clone().unwrap_or_default(),
                        difficulty: difficulty[i].clone(),
                        source: source_name(source[i].as_deref().unwrap_or_default()),
                    });
                }
                rows.rows_read += batch.num_rows() as u64;
            }
        }
    }
    Ok(rows)
}

/// A prompt's source without its row: `data.jsonl:17` and `train.parquet#3` name a row of a
/// file, and a breakdown by row would have one prompt per line.
pub fn source_name(source: &str) -> String {
    match source.rfind([':', '#']) {
        Some(at)
            if !source[at + 1..].is_empty()
                && source[at + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            source[..at].to_owned()
        }
        _ => source.to_owned(),
    }
}

/// The batches of one step of a stream, projected onto `columns` (those the file has).
fn batches(
    layout: &RunLayout,
    stream: &str,
    step: u64,
    columns: &[&str],
) -> Result<Vec<(PathBuf, RecordBatch)>, ReportError> {
    let mut out = Vec::new();
    let parts = layout.parts(stream, step).map_err(|e| ReportError::Read {
        path: layout.stream_dir(stream),
        message: e.to_string(),
    })?;
    for part in parts {
        out.extend(
            read_part(&part, columns)?
                .into_iter()
                .map(|batch| (part.clone(), batch)),
        );
    }
    Ok(out)
}

fn read_part(path: &Path, columns: &[&str]) -> Result<Vec<RecordBatch>, ReportError> {
    let fail = |message: String| ReportError::Read {
        path: path.to_owned(),
        message,
    };
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(e.to_string()))?;
    // `difficulty` is optional (files written before it existed read as unlabelled).
    if let Some(missing) = columns
        .iter()
        .find(|&&c| c != "difficulty" && builder.schema().field_with_name(c).is_err())
    {
        return Err(fail(format!(
            "no `{missing}` column: not a stream the report can read"
        )));
    }
    let schema = builder.parquet_schema();
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(schema, roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    reader
        .map(|batch| batch.map_err(|e| fail(e.to_string())))
        .collect()
}

fn column(
    part: &Path,
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<ArrayRef, ReportError> {
    let array = batch
        .column_by_name(name)
        .expect("read_part refused files without the columns read");
    if array.data_type() == to {
        return Ok(array.clone());
    }
    arrow::compute::cast(array, to).map_err(|e| ReportError::Read {
        path: part.to_owned(),
        message: format!("column `{name}`: {e}"),
    })
}

fn strings(
    part: &Path,
    batch: &RecordBatch,
    name: &str,
) -> Result<Vec<Option<String>>, ReportError> {
    // An absent optional column (an old file without `difficulty`) reads as nulls.
    if batch.column_by_name(name).is_none() && name == "difficulty" {
        return Ok(vec![None; batch.num_rows()]);
    }
    let array = column(part, batch, name, &DataType::Utf8)?;
    Ok(array
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect())
}

fn bools(part: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<Option<bool>>, ReportError> {
    let array = column(part, batch, name, &DataType::Boolean)?;
    Ok(array.as_boolean().iter().collect())
}

fn u32s(part: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<Option<u32>>, ReportError> {
    let array = column(part, batch, name, &DataType::UInt32)?;
    Ok(array.as_primitive::<UInt32Type>().iter().collect())
}

fn u64s(part: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<Option<u64>>, ReportError> {
    let array = column(part, batch, name, &DataType::UInt64)?;
    Ok(array.as_primitive::<UInt64Type>().iter().collect())
}

fn f64s(part: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>, ReportError> {
    let array = column(part, batch, name, &DataType::Float64)?;
    Ok(array.as_primitive::<Float64Type>().iter().collect())
}

#[cfg(test)]
mod tests {
    use super::source_name;

    #[test]
    fn source_name_cuts_the_row() {
        assert_eq!(source_name("data.jsonl:17"), "data.jsonl");
        assert_eq!(source_name("train.parquet#3"), "train.parquet");
        assert_eq!(source_name("countdown"), "countdown");
        assert_eq!(source_name("gen:v2"), "gen:v2");
    }
}
