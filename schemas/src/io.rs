//! Records ⇄ Arrow ⇄ Parquet, and [`Rows`]: the rows of one stream gathered from groups.
//!
//! Parquet files are written to a temporary name in the target directory and renamed into place
//! once complete, so a reader (or a run killed mid-write) never sees half a file.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::records::*;
use crate::stream::{Facet, Record, SCHEMA_VERSION, StreamKind};
use crate::{Error, Group, Result};

/// Converts records to one Arrow batch carrying the stream's schema (with its metadata).
pub fn to_batch<R: Record>(rows: &[R]) -> Result<RecordBatch> {
    let arrow = |source: Box<dyn std::error::Error + Send + Sync>| Error::Arrow {
        stream: R::KIND.name(),
        source,
    };
    let batch = serde_arrow::to_record_batch(R::fields(), &rows).map_err(|e| arrow(e.into()))?;
    batch.with_schema(R::schema()).map_err(|e| arrow(e.into()))
}

/// Converts an Arrow batch back to records.
pub fn from_batch<R: Record>(batch: &RecordBatch) -> Result<Vec<R>> {
    serde_arrow::from_record_batch(batch).map_err(|e| Error::Arrow {
        stream: R::KIND.name(),
        source: e.into(),
    })
}

/// Writes records to `path` as zstd Parquet, atomically (temporary file, then rename).
pub fn write_parquet<R: Record>(path: &Path, rows: &[R]) -> Result<()> {
    write_batch(path, &to_batch(rows)?)
}

/// Writes one batch to `path` as zstd Parquet, atomically (temporary file, then rename).
pub fn write_batch(path: &Path, batch: &RecordBatch) -> Result<()> {
    let fail = |message: String| Error::Parquet {
        path: path.to_owned(),
        message,
    };
    let dir = path
        .parent()
        .ok_or_else(|| fail("no parent directory".into()))?;
    fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create directory: {e}")))?;
    let tmp = temporary_name(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| fail(format!("cannot create: {e}")))?;
        let props = writer_properties(batch);
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))
            .map_err(|e| fail(e.to_string()))?;
        writer.write(batch).map_err(|e| fail(e.to_string()))?;
        let mut file = writer.into_inner().map_err(|e| fail(e.to_string()))?;
        file.flush().map_err(|e| fail(e.to_string()))?;
        if durable() {
            file.sync_all().map_err(|e| fail(e.to_string()))?;
        }
        fs::rename(&tmp, path).map_err(|e| fail(format!("cannot rename into place: {e}")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Columns of free text: nearly every value is distinct, so dictionary pages and min/max
/// statistics cost time (about 40% of a write) and buy nothing. Keys keep both.
const FREE_TEXT: &[&str] = &[
    "text",
    "question",
    "completions",
    "answer",
    "reasoning",
    "reason",
    "extracted",
    "normalized",
];

/// zstd, with dictionaries and statistics off for the free-text columns present in `batch`.
fn writer_properties(batch: &RecordBatch) -> WriterProperties {
    use arrow::datatypes::DataType;
    use parquet::file::properties::EnabledStatistics;
    use parquet::schema::types::ColumnPath;
    let mut props =
        WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default()));
    for field in batch.schema().fields() {
        if !FREE_TEXT.contains(&field.name().as_str()) {
            continue;
        }
        let path = match field.data_type() {
            DataType::List(item) | DataType::LargeList(item) => ColumnPath::new(vec![
                field.name().clone(),
                "list".into(),
                item.name().clone(),
            ]),
            _ => ColumnPath::new(vec![field.name().clone()]),
        };
        props = props
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    props.build()
}

/// Whether completed files are also flushed to the device before being renamed into place
/// (`TANDEM_DURABLE=1`). Renaming a fully written file is already safe against the process
/// being killed (the page cache outlives it); fsync adds safety against power loss at a cost
/// of a few milliseconds a file, which dominates materialisation on ordinary disks.
pub fn durable() -> bool {
    static DURABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DURABLE.get_or_init(|| std::env::var("TANDEM_DURABLE").is_ok_and(|v| v == "1" || v == "true"))
}

/// The name a file is written under before it is complete: hidden (readers of a Hive dataset
/// skip dot-files) and unique per process.
pub fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Whether a directory entry is a leftover temporary file of [`write_batch`].
pub fn is_temporary(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
}

/// Reads a Parquet file of stream `R`, refusing files of another stream or schema version.
/// A part file of a run has no `step` column (the `step=<n>` directory holds it, as Hive
/// readers expect); it is restored from the path.
pub fn read_parquet<R: Record>(path: &Path) -> Result<Vec<R>> {
    let fail = |message: String| Error::Parquet {
        path: path.to_owned(),
        message,
    };
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(e.to_string()))?;
    let metadata = builder.schema().metadata();
    let found_stream = metadata.get("tandem.stream").cloned().unwrap_or_default();
    let found_version = metadata
        .get("tandem.schema_version")
        .cloned()
        .unwrap_or_default();
    if found_stream != R::KIND.name() || found_version != SCHEMA_VERSION.to_string() {
        return Err(Error::SchemaMismatch {
            path: path.to_owned(),
            stream: R::KIND.name(),
            version: SCHEMA_VERSION,
            found_stream,
            found_version,
        });
    }
    let partition_step = match builder.schema().field_with_name("step") {
        Ok(_) => None,
        Err(_) => Some(step_of_partition(path).ok_or_else(|| {
            fail("no `step` column and not inside a `step=<n>` directory".into())
        })?),
    };
    let reader = builder.build().map_err(|e| fail(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let mut batch = batch.map_err(|e| fail(e.to_string()))?;
        if let Some(step) = partition_step {
            batch = with_step(&batch, step).map_err(|e| fail(e.to_string()))?;
        }
        rows.extend(from_batch::<R>(&batch)?);
    }
    Ok(rows)
}

/// The `<n>` of the `step=<n>` directory a part file is in.
fn step_of_partition(path: &Path) -> Option<u64> {
    path.parent()?
        .file_name()?
        .to_str()?
        .strip_prefix("step=")?
        .parse()
        .ok()
}

/// `batch` without its `step` column: what a part file under `step=<n>/` stores.
fn without_step(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = batch.schema();
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| schema.field(i).name() != "step")
        .collect();
    batch.project(&keep)
}

/// `batch` with a constant `step` column put back in front.
fn with_step(batch: &RecordBatch, step: u64) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = batch.schema();
    let mut fields = vec![std::sync::Arc::new(Field::new(
        "step",
        DataType::UInt64,
        false,
    ))];
    fields.extend(schema.fields().iter().cloned());
    let mut columns: Vec<ArrayRef> =
        vec![std::sync::Arc::new(UInt64Array::from(vec![
            step;
            batch.num_rows()
        ]))];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields).with_metadata(schema.metadata().clone())),
        columns,
    )
}

/// The rows of one stream, gathered from groups: what a stage's materialisation writes.
#[derive(Clone, Debug, PartialEq)]
pub enum Rows {
    /// Rows of the `prompts` stream.
    Prompts(Vec<PromptRecord>),
    /// Rows of the `samples` stream.
    Samples(Vec<SampleRecord>),
    /// Rows of the `cloud` stream.
    Cloud(Vec<CloudRecord>),
    /// Rows of the `verdicts` stream.
    Verdicts(Vec<VerdictRecord>),
    /// Rows of the `rewards` stream.
    Rewards(Vec<RewardRecord>),
    /// Rows of the `advantages` stream.
    Advantages(Vec<AdvantageRecord>),
    /// Rows of the `filter` stream.
    Filter(Vec<FilterRecord>),
    /// Rows of the `metrics` stream.
    Metrics(Vec<MetricsRecord>),
    /// Rows of the `errors` stream.
    Errors(Vec<ErrorRecord>),
    /// Rows of the `requests` stream (`tandem serve`'s ledger).
    Requests(Vec<RequestRecord>),
}

/// Applies `$body` to the vector inside any [`Rows`] variant.
macro_rules! each_rows {
    ($rows:expr, $v:ident => $body:expr) => {
        match $rows {
            Rows::Prompts($v) => $body,
            Rows::Samples($v) => $body,
            Rows::Cloud($v) => $body,
            Rows::Verdicts($v) => $body,
            Rows::Rewards($v) => $body,
            Rows::Advantages($v) => $body,
            Rows::Filter($v) => $body,
            Rows::Metrics($v) => $body,
            Rows::Errors($v) => $body,
            Rows::Requests($v) => $body,
        }
    };
}

impl Rows {
    /// No rows of the given stream.
    pub fn empty(kind: StreamKind) -> Rows {
        match kind {
            StreamKind::Prompts => Rows::Prompts(Vec::new()),
            StreamKind::Samples => Rows::Samples(Vec::new()),
            StreamKind::Cloud => Rows::Cloud(Vec::new()),
            StreamKind::Verdicts => Rows::Verdicts(Vec::new()),
            StreamKind::Rewards => Rows::Rewards(Vec::new()),
            StreamKind::Advantages => Rows::Advantages(Vec::new()),
            StreamKind::Filter => Rows::Filter(Vec::new()),
            StreamKind::Metrics => Rows::Metrics(Vec::new()),
            StreamKind::Errors => Rows::Errors(Vec::new()),
            StreamKind::Requests => Rows::Requests(Vec::new()),
        }
    }

    /// The stream these rows belong to.
    pub fn kind(&self) -> StreamKind {
        match self {
            Rows::Prompts(_) => StreamKind::Prompts,
            Rows::Samples(_) => StreamKind::Samples,
            Rows::Cloud(_) => StreamKind::Cloud,
            Rows::Verdicts(_) => StreamKind::Verdicts,
            Rows::Rewards(_) => StreamKind::Rewards,
            Rows::Advantages(_) => StreamKind::Advantages,
            Rows::Filter(_) => StreamKind::Filter,
            Rows::Metrics(_) => StreamKind::Metrics,
            Rows::Errors(_) => StreamKind::Errors,
            Rows::Requests(_) => StreamKind::Requests,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        each_rows!(self, v => v.len())
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the rows of this stream's facet held by `group` (its errors, for `Errors`).
    pub fn extend_from(&mut self, group: &Group) {
        match self {
            Rows::Prompts(v) => v.push(group.prompt.clone()),
            Rows::Samples(v) => v.extend_from_slice(&group.samples),
            Rows::Cloud(v) => v.extend(group.cloud.clone()),
            Rows::Verdicts(v) => v.extend_from_slice(&group.verdicts),
            Rows::Rewards(v) => v.extend_from_slice(&group.rewards),
            Rows::Advantages(v) => v.extend_from_slice(&group.advantages),
            Rows::Filter(v) => v.extend(group.filter.clone()),
            Rows::Metrics(_) | Rows::Requests(_) => {}
            Rows::Errors(v) => v.extend_from_slice(&group.errors),
        }
    }

    /// Sorts rows by their keys, so that what is stored does not depend on arrival order.
    pub fn sort(&mut self) {
        match self {
            Rows::Prompts(v) => {
                v.sort_by(|a, b| (a.step, &a.prompt_id).cmp(&(b.step, &b.prompt_id)))
            }
            Rows::Samples(v) => v.sort_by(|a, b| {
                (a.step, &a.prompt_id, a.sample_idx).cmp(&(b.step, &b.prompt_id, b.sample_idx))
            }),
            Rows::Cloud(v) => v.sort_by(|a, b| (a.step, &a.prompt_id).cmp(&(b.step, &b.prompt_id))),
            Rows::Verdicts(v) => v.sort_by(|a, b| {
                (a.step, &a.prompt_id, a.target as u8, a.sample_idx).cmp(&(
                    b.step,
                    &b.prompt_id,
                    b.target as u8,
                    b.sample_idx,
                ))
            }),
            Rows::Rewards(v) => v.sort_by(|a, b| {
                (a.step, &a.prompt_id, a.sample_idx).cmp(&(b.step, &b.prompt_id, b.sample_idx))
            }),
            Rows::Advantages(v) => v.sort_by(|a, b| {
                (a.step, &a.prompt_id, a.sample_idx).cmp(&(b.step, &b.prompt_id, b.sample_idx))
            }),
            Rows::Filter(v) => {
                v.sort_by(|a, b| (a.step, &a.prompt_id).cmp(&(b.step, &b.prompt_id)))
            }
            Rows::Metrics(v) => v.sort_by_key(|m| m.step),
            Rows::Requests(v) => {
                v.sort_by(|a, b| (a.step, &a.prompt_id).cmp(&(b.step, &b.prompt_id)))
            }
            Rows::Errors(v) => v.sort_by(|a, b| {
                (a.step, &a.prompt_id, &a.stage, a.sample_idx, &a.reason).cmp(&(
                    b.step,
                    &b.prompt_id,
                    &b.stage,
                    b.sample_idx,
                    &b.reason,
                ))
            }),
        }
    }

    /// Moves the rows of `other` to the end of these.
    ///
    /// Panics if `other` holds another stream's rows: callers pair rows by stream kind.
    pub fn append(&mut self, other: Rows) {
        macro_rules! join {
            ($($v:ident),*) => {
                match (self, other) {
                    $((Rows::$v(a), Rows::$v(b)) => a.extend(b),)*
                    (a, b) => panic!("cannot append {} rows to {} rows", b.kind(), a.kind()),
                }
            };
        }
        join!(
            Prompts, Samples, Cloud, Verdicts, Rewards, Advantages, Filter, Metrics, Errors,
            Requests
        )
    }

    /// Sets the run id of every row (a replayed or compared stream belongs to another run).
    pub fn set_run_id(&mut self, run_id: &str) {
        each_rows!(self, v => v.iter_mut().for_each(|r| r.run_id = run_id.to_owned()))
    }

    /// The rows as one Arrow batch.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        each_rows!(self, v => to_batch(v))
    }

    /// Writes the rows to `path` as Parquet, atomically.
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        write_batch(path, &self.to_batch()?)
    }

    /// Writes the rows of one step as a run's part file (`.../step=<n>/part-<w>.parquet`),
    /// atomically and without the `step` column, which the directory name holds: pyarrow,
    /// DuckDB and polars then read the stream as a Hive-partitioned dataset with no schema
    /// conflict between file and path.
    pub fn write_part(&self, path: &Path) -> Result<()> {
        let batch = without_step(&self.to_batch()?).map_err(|e| Error::Arrow {
            stream: self.kind().name(),
            source: e.into(),
        })?;
        write_batch(path, &batch)
    }

    /// Reads a stored file of stream `kind`.
    pub fn read_parquet(kind: StreamKind, path: &Path) -> Result<Rows> {
        Ok(match kind {
            StreamKind::Prompts => Rows::Prompts(read_parquet(path)?),
            StreamKind::Samples => Rows::Samples(read_parquet(path)?),
            StreamKind::Cloud => Rows::Cloud(read_parquet(path)?),
            StreamKind::Verdicts => Rows::Verdicts(read_parquet(path)?),
            StreamKind::Rewards => Rows::Rewards(read_parquet(path)?),
            StreamKind::Advantages => Rows::Advantages(read_parquet(path)?),
            StreamKind::Filter => Rows::Filter(read_parquet(path)?),
            StreamKind::Metrics => Rows::Metrics(read_parquet(path)?),
            StreamKind::Errors => Rows::Errors(read_parquet(path)?),
            StreamKind::Requests => Rows::Requests(read_parquet(path)?),
        })
    }
}

/// Rebuilds groups from stored streams: `prompts` defines the groups, every other facet's rows
/// are attached to the group with the same (step, prompt_id). Rows whose prompt is unknown are
/// returned as errors by key, never silently dropped.
pub fn assemble_groups(
    prompts: Vec<PromptRecord>,
    facets: Vec<Rows>,
) -> Result<Vec<Group>, String> {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<(u64, String), Group> = prompts
        .into_iter()
        .map(|p| ((p.step, p.prompt_id.clone()), Group::new(p)))
        .collect();
    let mut orphans = Vec::new();
    macro_rules! attach {
        ($rows:expr, $field:ident, $how:ident) => {
            for row in $rows {
                match groups.get_mut(&(row.step, row.prompt_id.clone())) {
                    Some(g) => attach!(@$how g.$field, row),
                    None => orphans.push(format!("step {} prompt {}", row.step, row.prompt_id)),
                }
            }
        };
        (@push $slot:expr, $row:expr) => { $slot.push($row) };
        (@set $slot:expr, $row:expr) => { $slot = Some($row) };
    }
    for rows in facets {
        match rows {
            Rows::Prompts(_) | Rows::Metrics(_) | Rows::Requests(_) => {}
            Rows::Samples(v) => attach!(v, samples, push),
            Rows::Cloud(v) => attach!(v, cloud, set),
            Rows::Verdicts(v) => attach!(v, verdicts, push),
            Rows::Rewards(v) => attach!(v, rewards, push),
            Rows::Advantages(v) => attach!(v, advantages, push),
            Rows::Filter(v) => attach!(v, filter, set),
            Rows::Errors(v) => attach!(v, errors, push),
        }
    }
    if !orphans.is_empty() {
        orphans.truncate(5);
        return Err(format!(
            "rows without a stored prompt: {}",
            orphans.join(", ")
        ));
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    for g in &mut groups {
        g.samples.sort_by_key(|s| s.sample_idx);
        g.rewards.sort_by_key(|s| s.sample_idx);
        g.advantages.sort_by_key(|s| s.sample_idx);
    }
    Ok(groups)
}

/// The rows of `facet` (as a [`Rows`]) held by `groups`.
pub fn facet_rows<'a>(facet: Facet, groups: impl IntoIterator<Item = &'a Group>) -> Rows {
    let mut rows = Rows::empty(facet.stream());
    for g in groups {
        rows.extend_from(g);
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn keys() -> impl Strategy<Value = (String, u64, String)> {
        ("[a-z0-9-]{1,12}", 0u64..1_000_000, "\\PC{0,20}")
    }

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,80}"
    }

    fn finish() -> impl Strategy<Value = FinishReason> {
        prop_oneof![
            Just(FinishReason::Eos),
            Just(FinishReason::Stop),
            Just(FinishReason::Length),
            Just(FinishReason::External)
        ]
    }

    fn components() -> impl Strategy<Value = BTreeMap<String, f64>> {
        prop::collection::btree_map("[a-z_]{1,10}", -1e6f64..1e6, 0..4)
    }

    /// Round-trips rows through Arrow and through a Parquet file, and checks both give them back.
    fn round_trip<R: Record + PartialEq + std::fmt::Debug>(rows: Vec<R>) {
        let batch = to_batch(&rows).expect("to arrow");
        assert_eq!(batch.num_rows(), rows.len());
        assert_eq!(from_batch::<R>(&batch).expect("from arrow"), rows);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("step=0").join("part-0.parquet");
        write_parquet(&path, &rows).expect("write");
        assert_eq!(read_parquet::<R>(&path).expect("read"), rows);
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec!["part-0.parquet"],
            "no temporary file is left behind"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn prompts_round_trip(rows in prop::collection::vec((keys(), text(), text(),
                prop::option::of(text()), prop::option::of("[a-z]{1,6}"),
                prop::collection::vec(text(), 0..3)), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), source, question, answer, difficulty, completions)|
                PromptRecord { run_id, step, prompt_id, source, question, answer, difficulty, completions }).collect());
        }

        #[test]
        fn samples_round_trip(rows in prop::collection::vec((keys(), 0u32..64, any::<u64>(), text(),
                prop::collection::vec(any::<u32>(), 0..20), prop::collection::vec(-50f32..0.0, 0..20),
                finish(), any::<bool>()), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), sample_idx, policy_version, text, token_ids, logprobs, finish_reason, asked_help)|
                SampleRecord { run_id, step, prompt_id, sample_idx, policy_version, text, token_ids, logprobs, finish_reason, asked_help }).collect());
        }

        #[test]
        fn cloud_round_trip(rows in prop::collection::vec((keys(), text(), "[0-9a-f]{64}", prop::option::of(text()),
                prop::option::of(text()), 0f64..1e5, any::<u64>(), any::<u64>(), 0f64..10.0, any::<bool>(), 0u32..8,
                prop::option::of("[a-z_0-9]{1,10}")), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), model, request_hash, answer, reasoning, latency_ms, tokens_in, tokens_out, cost_usd, cache_hit, attempts, error_kind)|
                CloudRecord { run_id, step, prompt_id, model, request_hash, answer, reasoning, latency_ms, tokens_in, tokens_out, cost_usd, cache_hit, attempts, error_kind }).collect());
        }

        #[test]
        fn verdicts_round_trip(rows in prop::collection::vec((keys(), prop::option::of(0u32..64), any::<bool>(), any::<bool>(),
                prop::option::of(text()), prop::option::of(text()), "[a-z_]{1,10}"), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), sample_idx, cloud, correct, extracted, normalized, method)|
                VerdictRecord { run_id, step, prompt_id, sample_idx, target: if cloud { Target::Cloud } else { Target::Local }, correct, extracted, normalized, method }).collect());
        }

        #[test]
        fn rewards_round_trip(rows in prop::collection::vec((keys(), 0u32..64, any::<u64>(), -1e6f64..1e6, components()), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), sample_idx, policy_version, reward, components)|
                RewardRecord { run_id, step, prompt_id, sample_idx, policy_version, reward, components }).collect());
        }

        #[test]
        fn advantages_round_trip(rows in prop::collection::vec((keys(), 0u32..64, any::<u64>(), -1e6f64..1e6, "[a-z_]{1,8}"), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), sample_idx, policy_version, advantage, estimator)|
                AdvantageRecord { run_id, step, prompt_id, sample_idx, policy_version, advantage, estimator }).collect());
        }

        #[test]
        fn filter_round_trip(rows in prop::collection::vec((keys(), any::<bool>(), "[A-Za-z0-9]{1,8}", text()), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), kept, bucket, reason)|
                FilterRecord { run_id, step, prompt_id, kept, bucket, reason }).collect());
        }

        #[test]
        fn metrics_round_trip(rows in prop::collection::vec((keys(), any::<u64>(), components()), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, _), policy_version, values)|
                MetricsRecord { run_id, step, policy_version, values }).collect());
        }

        #[test]
        fn errors_round_trip(rows in prop::collection::vec((keys(), prop::option::of(0u32..64), "[a-z.]{1,12}", "[a-z_]{1,8}", text()), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), sample_idx, stage, kind, reason)|
                ErrorRecord { run_id, step, prompt_id, sample_idx, stage, kind, reason }).collect());
        }

        #[test]
        fn requests_round_trip(rows in prop::collection::vec((keys(), "[0-9a-f]{64}", prop::bool::ANY, prop::bool::ANY, prop::option::of("[a-z_0-9]{1,8}"), any::<u64>(), 0.0f64..1e6), 0..6)) {
            round_trip(rows.into_iter().map(|((run_id, step, prompt_id), question_hash, asked_help, capped, cloud_error, tokens, latency_ms)|
                RequestRecord {
                    run_id, step, prompt_id, question_hash,
                    answered_by: if cloud_error.is_none() && asked_help && !capped { "cloud" } else { "device" }.into(),
                    asked_help, escalated: asked_help && !capped, capped, cloud_error, stream: capped,
                    device_tokens_in: tokens, device_tokens_out: tokens / 2, cloud_tokens_in: 3, cloud_tokens_out: tokens / 3,
                    cost_usd: latency_ms / 7.0, device_ms: latency_ms / 2.0, cloud_ms: latency_ms / 3.0, latency_ms,
                    finish_reason: "stop".into(),
                }).collect());
        }
    }

    #[test]
    fn part_files_keep_step_in_the_path_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir
            .path()
            .join("samples")
            .join("step=42")
            .join("part-0.parquet");
        let rows = vec![SampleRecord {
            step: 42,
            prompt_id: "p".into(),
            text: "t".into(),
            ..Default::default()
        }];
        Rows::Samples(rows.clone())
            .write_part(&path)
            .expect("write");
        let file = File::open(&path).expect("open");
        let stored = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
        assert!(
            stored.schema().field_with_name("step").is_err(),
            "the file has no step column"
        );
        assert_eq!(read_parquet::<SampleRecord>(&path).expect("read"), rows);
        let elsewhere = dir.path().join("loose.parquet");
        fs::copy(&path, &elsewhere).expect("copy");
        let err = read_parquet::<SampleRecord>(&elsewhere).expect_err("no step anywhere");
        assert!(err.to_string().contains("step=<n>"), "{err}");
    }

    #[test]
    fn reading_another_stream_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.parquet");
        write_parquet(&path, &[PromptRecord::default()]).expect("write");
        let err = read_parquet::<SampleRecord>(&path).expect_err("must refuse");
        assert!(
            err.to_string().contains("stored as stream `prompts`"),
            "{err}"
        );
    }

    #[test]
    fn groups_reassemble_from_their_streams() {
        let prompt = |id: &str| PromptRecord {
            step: 3,
            prompt_id: id.into(),
            ..Default::default()
        };
        let sample = |id: &str, i| SampleRecord {
            step: 3,
            prompt_id: id.into(),
            sample_idx: i,
            ..Default::default()
        };
        let groups = vec![
            Group {
                samples: vec![sample("a", 0), sample("a", 1)],
                ..Group::new(prompt("a"))
            },
            Group {
                samples: vec![sample("b", 0)],
                ..Group::new(prompt("b"))
            },
        ];
        let prompts = match facet_rows(Facet::Prompt, &groups) {
            Rows::Prompts(p) => p,
            other => panic!("wrong kind {:?}", other.kind()),
        };
        let mut samples = facet_rows(Facet::Samples, &groups);
        if let Rows::Samples(v) = &mut samples {
            v.reverse();
        }
        assert_eq!(
            assemble_groups(prompts, vec![samples]).expect("assemble"),
            groups
        );
        let orphan = Rows::Samples(vec![sample("zzz", 0)]);
        let err = assemble_groups(vec![prompt("a")], vec![orphan]).expect_err("orphan");
        assert!(err.contains("prompt zzz"), "{err}");
    }
}
