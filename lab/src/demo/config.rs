//! The demo's file: which task, tokenizer and model to make, the two pipelines to run (warm start
//! and RL, each an ordinary pipeline file), the simulated cloud, and the evaluation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tandem_datasets::tasks::TaskSpec;
use tandem_pipeline::yaml::Document;

/// `configs/demo.yaml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Names the demo's directory (`<out>/<name>-<time>`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Seeds the data, the model, the pipelines, the cloud and the evaluation.
    #[serde(default)]
    pub seed: u64,
    /// Torch intra-op threads of every model (0 = libtorch's default).
    #[serde(default = "two")]
    pub threads: usize,
    /// The generated task suite (`tandem data generate`'s spec).
    pub data: TaskSpec,
    /// The byte-level BPE tokenizer trained on the task's text.
    pub tokenizer: TokenizerSpec,
    /// The randomly initialised Qwen2-architecture model.
    pub model: ModelSpec,
    /// The supervised warm start: a pipeline file (relative to this file) and overrides.
    pub warm_start: PipelineRef,
    /// The simulated cloud, started on loopback for the RL run and the evaluations.
    #[serde(default)]
    pub cloud: CloudSpec,
    /// The RL run: a pipeline file (relative to this file) and overrides.
    pub train: PipelineRef,
    /// The evaluation on the test split, before and after RL.
    #[serde(default)]
    pub eval: EvalSpec,
}

fn default_name() -> String {
    "demo".into()
}

fn two() -> usize {
    2
}

/// The tokenizer to train.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSpec {
    /// Vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// A pair merges only when it occurs this often.
    #[serde(default = "two_u64")]
    pub min_frequency: u64,
}

fn two_u64() -> u64 {
    2
}

/// The model `tandem model init` makes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Longest context.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Standard deviation of the initial weights.
    #[serde(default = "default_std")]
    pub init_std: f64,
}

fn default_positions() -> usize {
    256
}

fn default_std() -> f64 {
    0.02
}

/// A pipeline file and `--set` overrides for it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineRef {
    /// The pipeline file, relative to the demo file.
    pub pipeline: PathBuf,
    /// Overrides, as `tandem run --set` takes them (`run.steps=20`).
    #[serde(default)]
    pub set: Vec<String>,
}

/// `tandem cloud-sim`'s settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSpec {
    /// Probability that an answer is right.
    #[serde(default = "one")]
    pub accuracy: f64,
    /// Mean latency of an answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: f64,
}

impl Default for CloudSpec {
    fn default() -> CloudSpec {
        CloudSpec {
            accuracy: 1.0,
            latency_ms: 0.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

/// How the model is evaluated on the test split.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// The largest share of questions that may go to the cloud.
    #[serde(default = "default_budget")]
    pub budget: f64,
    /// Use only the first N test questions.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Most new tokens per answer.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Sampling temperature of the answers (0 = greedy).
    #[serde(default)]
    pub temperature: f64,
    /// Also evaluate the learned-router baseline: the model without the help option, plus a
    /// router trained on which training questions it solved (`tandem eval --router-train`).
    /// Default true.
    #[serde(default = "yes")]
    pub router: bool,
}

fn yes() -> bool {
    true
}

impl Default for EvalSpec {
    fn default() -> EvalSpec {
        EvalSpec {
            budget: default_budget(),
            limit: None,
            max_new_tokens: default_max_new_tokens(),
            temperature: 0.0,
            router: true,
        }
    }
}

fn default_budget() -> f64 {
    0.3
}

fn default_max_new_tokens() -> usize {
    48
}

/// Where the demo's files come from: a directory on disk, or the copies built into the binary.
#[derive(Clone, Debug)]
pub enum Source {
    /// The demo file's directory (pipeline files are relative to it).
    Dir(PathBuf),
    /// `configs/demo.yaml` and its pipelines, as compiled in.
    BuiltIn,
}

/// The files compiled in, by their path relative to `configs/`.
const BUILT_IN: &[(&str, &str)] = &[
    ("demo.yaml", include_str!("../../../configs/demo.yaml")),
    (
        "demo/warm-start.yaml",
        include_str!("../../../configs/demo/warm-start.yaml"),
    ),
    (
        "demo/train.yaml",
        include_str!("../../../configs/demo/train.yaml"),
    ),
];

impl Source {
    /// The path a file relative to the demo file has, for messages and for reading.
    pub fn path(&self, relative: &Path) -> PathBuf {
        match self {
            Source::Dir(dir) => dir.join(relative),
            Source::BuiltIn => Path::new("<built-in>/configs").join(relative),
        }
    }

    /// The text of a file relative to the demo file.
    pub fn read(&self, relative: &Path) -> Result<String> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(relative);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("{}: cannot read", path.display()))
            }
            Source::BuiltIn => BUILT_IN
                .iter()
                .find(|(name, _)| Path::new(name) == relative)
                .map(|(_, text)| (*text).to_owned())
                .with_context(|| {
                    format!(
                        "{}: not a built-in file (built in: {})",
                        relative.display(),
                        BUILT_IN
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
        }
    }
}

/// Reads a demo file (or the built-in one), with `${ENV}` interpolation and overrides; errors
/// say the file, line and column.
pub fn load(file: Option<&Path>, sets: &[String]) -> Result<(DemoConfig, Source)> {
    let (source, name) = match file {
        Some(file) => (
            Source::Dir(file.parent().unwrap_or(Path::new("")).to_owned()),
            PathBuf::from(file.file_name().unwrap_or_default()),
        ),
        None => (Source::BuiltIn, PathBuf::from("demo.yaml")),
    };
    let text = source.read(&name)?;
    let mut document = Document::parse(&source.path(&name), &text)?;
    document.interpolate_env(&|name| std::env::var(name).ok())?;
    for set in sets {
        document.set(set)?;
    }
    let config: DemoConfig = document.deserialize_at(&[])?;
    Ok((config, source))
}

#[cfg(test)]
mod tests {
    use tandem_stages::prompt::NamedTemplate;

    use super::*;

    /// The warm start's questions end in the help sentence of the prompt the RL run samples
    /// with, and are trained with the bare template: a typo in either would teach the model a
    /// prompt it never sees again.
    #[test]
    fn the_sft_rows_are_the_user_turns_of_the_rl_prompts() {
        let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        for file in [None, Some(repo.join("configs/demo-ci.yaml"))] {
            let (config, source) = load(file.as_deref(), &[]).expect("the demo file loads");
            let instruction = config.data.sft.instruction.expect("data.sft.instruction");
            assert_eq!(
                NamedTemplate::Arithmetic.user_turn(),
                format!("{{question}}{instruction}")
            );
            assert_eq!(NamedTemplate::ArithmeticTask.user_turn(), "{question}");
            let warm = source
                .read(&config.warm_start.pipeline)
                .expect("warm start");
            assert!(warm.contains("template: arithmetic_task\n"), "{warm}");
            let train = source.read(&config.train.pipeline).expect("train");
            assert!(train.contains("template: arithmetic\n"), "{train}");
        }
    }
}
