//! The serde form of a pipeline file: the `run:` settings and the list of stages.

use serde::{Deserialize, Serialize};

/// A pipeline file.
///
/// ```yaml
/// run:
///   name: countdown
///   seed: 7
///   prompts_per_step: 32
///   group_size: 8
///   steps: 800
/// stages:
///   - id: prompts
///     kind: source.jsonl
///     params: { path: data/train.jsonl }
/// ```
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Settings of the whole run.
    pub run: RunSpec,
    /// The stages, in dataflow order: one source, then (optionally) a generator, group stages,
    /// and sinks last.
    pub stages: Vec<StageSpec>,
}

/// The `run:` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Prefix of the run id (default: the pipeline file's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Seed of every random choice in the run (shuffles, sampling, subset picks).
    #[serde(default)]
    pub seed: u64,
    /// Prompts per training step (the paper's "prompts per batch").
    #[serde(default)]
    pub prompts_per_step: Option<usize>,
    /// Samples per step (TRL/verl style: prompts × group size). Give this or
    /// `prompts_per_step`; it must be a multiple of `group_size`.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Samples per prompt, G (default 1).
    #[serde(default = "one")]
    pub group_size: usize,
    /// Steps to run (default: one epoch of the source).
    #[serde(default)]
    pub steps: Option<u64>,
    /// How many steps generation may run ahead of a learner (0 = strictly on-policy: step t
    /// samples with the weights learnt from step t-1). Only matters when a sink updates the
    /// policy.
    #[serde(default)]
    pub max_staleness: u64,
}

fn one() -> usize {
    1
}

/// One entry of `stages:`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// A name unique in the pipeline; also the name of the stage's stored stream.
    pub id: String,
    /// The registered kind (`tandem validate --kinds` lists them).
    pub kind: String,
    /// The kind's parameters.
    #[serde(default)]
    pub params: serde_json::Value,
    /// Store the stage's output stream as Parquet (default `true`).
    #[serde(default = "yes")]
    pub materialize: bool,
}

fn yes() -> bool {
    true
}
