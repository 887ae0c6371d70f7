//! `source.jsonl` and `source.parquet`: prompts from a dataset file, in seeded batches.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use tandem_datasets::{Batches, Example, FieldMap, FieldOverrides, Preset};
use tandem_schemas::{Group, PromptRecord};

use crate::contract::{BuildContext, Built, Source, StepContext};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `source.jsonl` and `source.parquet` (the kind decides the format).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSourceConfig {
    /// The dataset: a JSON Lines or JSON array file, a Parquet or Arrow file, a directory of
    /// `.parquet` files in the Hugging Face `data/` layout, or a directory `save_to_disk` wrote,
    /// told apart by extension (either kind reads all of them); a file with another extension
    /// is read as JSON Lines by `source.jsonl` and as Parquet by `source.parquet`.
    /// Relative paths are relative to the working directory.
    pub path: PathBuf,
    /// Which field feeds which part of a prompt (`question`, `answer`, `id`, `difficulty`,
    /// `completions`); dotted paths reach into nested JSON objects. Entries set here replace
    /// the preset's (or the defaults, `question: question` and `answer: answer`).
    #[serde(default)]
    pub fields: FieldOverrides,
    /// Shuffle each epoch with the run's seed (default `true`); `false` keeps file order.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Use only the first `limit` rows of the file.
    #[serde(default)]
    pub limit: Option<usize>,
    /// A real benchmark's mapping by name (`gsm8k`, `math-lighteval`, `math-500`, `amc23`,
    /// `minerva-math`, `countdown-tasks`, `aime`): its field names, how its question is built
    /// and how its reference answer is taken (docs/data.md, "Presets for real benchmarks").
    #[serde(default, deserialize_with = "preset")]
    pub preset: Option<&'static Preset>,
}

fn yes() -> bool {
    true
}

/// A preset's name, refused with the known ones when there is no such preset.
fn preset<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'static Preset>, D::Error> {
    let name = String::deserialize(d)?;
    Preset::named(&name).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown preset `{name}`; the presets are {}",
            Preset::known()
        ))
    })
}

/// `source.jsonl`'s parameters.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct JsonlSourceConfig(pub DatasetSourceConfig);

/// `source.parquet`'s parameters.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct ParquetSourceConfig(pub DatasetSourceConfig);

impl StageConfig for JsonlSourceConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        self.0
            .build_with(ctx, tandem_datasets::load_jsonl_with_preset)
    }
}

impl StageConfig for ParquetSourceConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        self.0
            .build_with(ctx, tandem_datasets::load_parquet_with_preset)
    }
}

/// Whether `load` knows `path`'s format by itself: a directory, a glob of shards, or a file
/// whose extension names one. Either source kind then reads it, so a `save_to_disk` directory or a JSON array works
/// under `source.parquet` as under `source.jsonl`; the kind decides only how a file with another
/// extension is read.
fn format_is_known(path: &std::path::Path) -> bool {
    path.is_dir()
        || path.to_str().is_some_and(|p| p.contains(['*', '?', '[']))
        || path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["jsonl", "json", "ndjson", "parquet", "arrow"]
                .contains(&e.to_ascii_lowercase().as_str())
        })
}

type Loader = fn(
    &std::path::Path,
    &FieldMap,
    Option<&Preset>,
    Option<usize>,
) -> tandem_datasets::Result<Vec<Example>>;

impl DatasetSourceConfig {
    fn build_with(self, ctx: &BuildContext, load: Loader) -> Result<Built> {
        let path = ctx.resolve(&self.path);
        let load = if format_is_known(&path) {
            tandem_datasets::load_with_preset
        } else {
            load
        };
        let base = self.preset.map_or_else(FieldMap::default, Preset::fields);
        let fields = self.fields.over(base);
        let examples = load(&path, &fields, self.preset, self.limit)
            .map_err(|e| StageError::Data(e.to_string()))?;
        let batches = Batches::new(
            examples.len(),
            ctx.run.batch_size,
            self.shuffle,
            ctx.run.seed,
        )
        .map_err(|e| StageError::Data(format!("{}: {e}", path.display())))?;
        Ok(Built::Source(Box::new(DatasetSource { examples, batches })))
    }
}

/// Emits `batch_size` prompts a step from a loaded dataset.
pub struct DatasetSource {
    examples: Vec<Example>,
    batches: Batches,
}

impl DatasetSource {
    /// A source over examples already in memory (for programs that build their own data).
    pub fn new(
        examples: Vec<Example>,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<Self> {
        let batches = Batches::new(examples.len(), batch_size, shuffle, seed)
            .map_err(|e| StageError::Data(e.to_string()))?;
        Ok(DatasetSource { examples, batches })
    }
}

impl Source for DatasetSource {
    fn natural_steps(&self) -> u64 {
        self.batches.steps_per_epoch()
    }

    fn step(&mut self, ctx: &StepContext) -> Result<Vec<Group>> {
        Ok(self
            .batches
            .indices(ctx.step)
            .into_iter()
            .map(|i| {
                let ex = &self.examples[i];
                Group::new(PromptRecord {
                    run_id: ctx.run_id.to_string(),
                    step: ctx.step,
                    prompt_id: ex.id.clone(),
                    source: ex.source.clone(),
                    question: ex.question.clone(),
                    answer: ex.answer.clone(),
                    difficulty: ex.difficulty.clone(),
                    completions: ex.completions.clone(),
                })
            })
            .collect())
    }
}
