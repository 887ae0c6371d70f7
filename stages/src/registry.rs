//! The registry of stage kinds: one explicit, greppable list of what `kind:` may name.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;

use crate::contract::{BuildContext, Built};
use crate::{Result, StageError, generate, params, sink, source, verify};

/// Which contract a kind implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Emits prompts (or stored groups).
    Source,
    /// Produces the samples.
    Generator,
    /// Adds to groups.
    Group,
    /// Consumes groups.
    Sink,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Generator => "generator",
            Role::Group => "group stage",
            Role::Sink => "sink",
        })
    }
}

/// A stage config: its serde form is the stage's `params:` in YAML.
pub trait StageConfig: DeserializeOwned {
    /// Builds the stage (opening files, checking values) before anything runs.
    fn build(self, ctx: &BuildContext) -> Result<Built>;
}

/// Builds a stage from its `params` (as JSON) and context.
pub type BuildFn = fn(&serde_json::Value, &BuildContext) -> Result<Built>;

/// A named stage kind.
#[derive(Clone, Copy)]
pub struct KindSpec {
    /// The name used as `kind:` in YAML (`verify.exact`).
    pub name: &'static str,
    /// The contract it implements.
    pub role: Role,
    /// One line for `tandem validate` and error messages.
    pub summary: &'static str,
    /// The constructor; [`build_with`] makes one from a [`StageConfig`].
    pub build: BuildFn,
}

/// The [`BuildFn`] of a config type: parse `params` into `C`, then build it.
pub fn build_with<C: StageConfig>(params: &serde_json::Value, ctx: &BuildContext) -> Result<Built> {
    params::parse::<C>(params)?.build(ctx)
}

/// The built-in kinds.
pub const BUILTIN: &[KindSpec] = &[
    KindSpec {
        name: "source.jsonl",
        role: Role::Source,
        summary: "prompts from a JSON Lines file, with a field mapping",
        build: build_with::<source::JsonlSourceConfig>,
    },
    KindSpec {
        name: "source.parquet",
        role: Role::Source,
        summary: "prompts from a Parquet file or directory (HF-style columns), with a field mapping",
        build: build_with::<source::ParquetSourceConfig>,
    },
    KindSpec {
        name: "source.replay",
        role: Role::Source,
        summary: "the stored groups of a previous run, step by step",
        build: build_with::<source::ReplaySourceConfig>,
    },
    KindSpec {
        name: "generate.offline",
        role: Role::Generator,
        summary: "samples taken from the dataset's own completions (offline rollouts)",
        build: build_with::<generate::OfflineConfig>,
    },
    KindSpec {
        name: "generate.policy",
        role: Role::Generator,
        summary: "G samples per prompt from a local HF model (Qwen2/Llama) on tch",
        build: build_with::<generate::PolicyConfig>,
    },
    KindSpec {
        name: "generate.openai",
        role: Role::Generator,
        summary: "G samples per prompt from a serving engine (vLLM, SGLang, any /v1/completions server), its weights kept in step with the learner",
        build: build_with::<generate::OpenAiGenConfig>,
    },
    KindSpec {
        name: "cloud.openai",
        role: Role::Group,
        summary: "the cloud model's answer to prompts a sample asked help for (OpenAI-compatible; cached, budgeted, retried)",
        build: build_with::<crate::cloud::CloudConfig>,
    },
    KindSpec {
        name: "verify.exact",
        role: Role::Group,
        summary: "exact match of the extracted answer with the reference, after normalisation",
        build: build_with::<verify::ExactConfig>,
    },
    KindSpec {
        name: "learn.pg",
        role: Role::Sink,
        summary: "the learner: one policy-gradient update of the generator's model (generate.policy or generate.openai) per step, metrics, checkpoints",
        build: build_with::<crate::learn::LearnConfig>,
    },
    KindSpec {
        name: "learn.sft",
        role: Role::Sink,
        summary: "supervised fine-tuning: one likelihood update per step on the dataset's responses (generate.offline), metrics, checkpoints",
        build: build_with::<crate::learn::SftConfig>,
    },
    KindSpec {
        name: "sink.jsonl",
        role: Role::Sink,
        summary: "writes every finished group as one JSON line",
        build: build_with::<sink::JsonlSinkConfig>,
    },
    KindSpec {
        name: "verify.countdown",
        role: Role::Group,
        summary: "Countdown: the answer uses every given number once and equals the target (exact rationals)",
        build: build_with::<verify::CountdownConfig>,
    },
    KindSpec {
        name: "verify.math",
        role: Role::Group,
        summary: "math answers by value: LaTeX normalised, parsed, compared exactly or numerically, else as strings",
        build: build_with::<verify::MathConfig>,
    },
    KindSpec {
        name: "verify.choice",
        role: Role::Group,
        summary: "multiple choice: the chosen letter equals the reference letter",
        build: build_with::<verify::ChoiceConfig>,
    },
    KindSpec {
        name: "reward.collab",
        role: Role::Group,
        summary: "the paper's hierarchical reward: alpha_local if solved alone, alpha_cloud if help was asked and the cloud is right",
        build: build_with::<crate::reward::CollabConfig>,
    },
    KindSpec {
        name: "reward.format",
        role: Role::Group,
        summary: "weight for a well-formed response (think block, then answer or help block)",
        build: build_with::<crate::reward::FormatConfig>,
    },
    KindSpec {
        name: "reward.length",
        role: Role::Group,
        summary: "a capped penalty per token past a length budget",
        build: build_with::<crate::reward::LengthConfig>,
    },
    KindSpec {
        name: "reward.command",
        role: Role::Group,
        summary: "scores from a long-lived subprocess in any language (JSON Lines: a group in, its scores out)",
        build: build_with::<crate::reward::CommandConfig>,
    },
    KindSpec {
        name: "reward.http",
        role: Role::Group,
        summary: "scores from an HTTP service (POST batches of groups, retried on failures that heal)",
        build: build_with::<crate::reward::HttpConfig>,
    },
    KindSpec {
        name: "advantage.gapg",
        role: Role::Group,
        summary: "the paper's GAPG advantage: (r_i - group mean) / (G - 1), no std division",
        build: build_with::<crate::advantage::GapgConfig>,
    },
    KindSpec {
        name: "advantage.grpo",
        role: Role::Group,
        summary: "GRPO's advantage as TRL computes it: (r_i - group mean) / (std + eps), std of the group, the step, or none",
        build: build_with::<crate::advantage::GrpoConfig>,
    },
    KindSpec {
        name: "advantage.rloo",
        role: Role::Group,
        summary: "REINFORCE leave-one-out: r_i - mean of the other G - 1 rewards",
        build: build_with::<crate::advantage::RlooConfig>,
    },
    KindSpec {
        name: "advantage.dr_grpo",
        role: Role::Group,
        summary: "Dr. GRPO: r_i - group mean, no std; the learner divides token sums by a constant",
        build: build_with::<crate::advantage::DrGrpoConfig>,
    },
    KindSpec {
        name: "filter.adaptive",
        role: Role::Group,
        summary: "the paper's adaptive prompt filtering: D1 (solved locally) and a seeded draw of at most rho x |D1| D2 prompts (only the cloud solved them)",
        build: build_with::<crate::filter::AdaptiveConfig>,
    },
    KindSpec {
        name: "filter.dynamic",
        role: Role::Group,
        summary: "DAPO's dynamic sampling, the dropping half: drops groups whose rewards are all equal",
        build: build_with::<crate::filter::DynamicConfig>,
    },
    KindSpec {
        name: "filter.none",
        role: Role::Group,
        summary: "keeps every group (bucket all), so unfiltered runs have a filter stream to compare",
        build: build_with::<crate::filter::NoFilterConfig>,
    },
];

/// Stage kinds by name.
#[derive(Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, KindSpec>,
}

impl Registry {
    /// A registry of the built-in kinds.
    pub fn builtin() -> Registry {
        let mut registry = Registry {
            kinds: BTreeMap::new(),
        };
        for kind in BUILTIN {
            registry.register(*kind);
        }
        registry
    }

    /// Adds (or replaces) a kind: how a Rust user plugs in their own stage.
    pub fn register(&mut self, kind: KindSpec) {
        self.kinds.insert(kind.name, kind);
    }

    /// The kind of that name.
    pub fn get(&self, name: &str) -> Option<&KindSpec> {
        self.kinds.get(name)
    }

    /// Every kind name, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    /// Every kind, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = &KindSpec> {
        self.kinds.values()
    }

    /// Builds a stage of kind `name`, checking that it implements the role it claims.
    pub fn build(
        &self,
        name: &str,
        params: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Built> {
        let kind = self
            .get(name)
            .ok_or_else(|| StageError::Data(format!("unknown stage kind `{name}`")))?;
        (kind.build)(params, ctx)
    }
}
