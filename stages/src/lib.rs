//! Stage contracts, the registry of stage kinds, and tandem's built-in stages.
//!
//! A stage is plain Rust: it takes groups and returns groups, so it is testable without a
//! dataflow and usable from other programs. Only `tandem-pipeline` wires stages together.
//!
//! Four contracts (see [`contract`]): a [`Source`] emits the prompts of a step, a [`Generator`]
//! fills in the samples, a [`GroupStage`] adds to each group (declaring what it needs and
//! provides), and a [`Sink`] consumes finished groups. Kinds are registered by name in one
//! explicit [`Registry`]; a user registers their own kind the same way.
//!
//! ```
//! use tandem_stages::Registry;
//! let registry = Registry::builtin();
//! assert!(registry.get("source.jsonl").is_some());
//! assert!(registry.names().contains(&"verify.exact"));
//! ```
#![forbid(missing_docs)]

pub mod advantage;
pub mod cloud;
pub mod contract;
pub mod eval;
pub mod filter;
pub mod generate;
pub mod help;
pub mod learn;
pub mod net;
pub mod params;
pub mod policy;
pub mod prompt;
pub mod registry;
pub mod reward;
pub mod sink;
pub mod source;
pub mod verify;

pub use contract::{
    BuildContext, Built, Generator, GroupStage, Pipelined, ResumePoint, RunSettings, Scope,
    SharedState, Sink, Source, StepContext, StepFigures, Wake,
};
pub use registry::{KindSpec, Registry, Role};

/// A problem that stops the run (as opposed to a bad record, which becomes an error row).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A stage's parameters are invalid. `path` is relative to the stage's `params`
    /// (serde_path_to_error's notation), so the pipeline can point at the YAML.
    #[error("{}: {message}", if path.is_empty() || path == "." { "params" } else { path.as_str() })]
    Params {
        /// Dotted path of the offending value inside `params` (`.` for `params` itself).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A dataset or stored run could not be used.
    #[error("{0}")]
    Data(String),
    /// Something failed while the run was going (I/O, a lost subprocess).
    #[error("{0}")]
    Run(String),
}

/// Result with [`StageError`].
pub type Result<T, E = StageError> = std::result::Result<T, E>;
