//! Typed records of every tandem stream, the [`Group`] that carries one prompt through the group
//! stages, and their Arrow schemas.
//!
//! Every row carries the keys `run_id`, `step`, `prompt_id` (and `sample_idx`, `policy_version`
//! where they apply), so the streams a run stores join on them. Each stream holds the keys plus
//! what one stage added, not a copy of everything before it; [`Group`] is the in-memory join.
//!
//! Schemas are derived from the record types (through `serde_arrow`) and stamped with
//! [`SCHEMA_VERSION`] in the Arrow metadata, so a reader can refuse a stream it does not know.
//!
//! ```
//! use tandem_schemas::{PromptRecord, Record, StreamKind};
//! let schema = PromptRecord::schema();
//! assert_eq!(schema.metadata()["tandem.stream"], "prompts");
//! assert_eq!(PromptRecord::KIND, StreamKind::Prompts);
//! ```
#![forbid(missing_docs)]

mod group;
pub mod io;
pub mod layout;
mod records;
mod stream;

pub use group::Group;
pub use records::{
    AdvantageRecord, CloudRecord, ErrorRecord, FilterRecord, FinishReason, MetricsRecord,
    PromptRecord, RequestRecord, RewardRecord, SampleRecord, Target, VerdictRecord,
};
pub use stream::{Facet, Facets, Record, SCHEMA_VERSION, StreamKind};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Records could not be converted to or from Arrow.
    #[error("arrow conversion of the `{stream}` stream failed: {source}")]
    Arrow {
        /// The stream being converted.
        stream: &'static str,
        /// What serde_arrow or arrow said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Parquet file could not be written or read.
    #[error("{path}: {message}")]
    Parquet {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A stored file has a schema version or stream name this build does not read.
    #[error(
        "{path}: stored as stream `{found_stream}` schema v{found_version}, expected `{stream}` v{version}"
    )]
    SchemaMismatch {
        /// The file.
        path: std::path::PathBuf,
        /// The stream that was expected.
        stream: &'static str,
        /// The schema version this build writes.
        version: u32,
        /// The stream name stored in the file.
        found_stream: String,
        /// The schema version stored in the file.
        found_version: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
