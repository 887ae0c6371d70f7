//! YAML pipelines → validated plans → a timely dataflow whose every stream is stored as Parquet.
//!
//! - [`yaml`]: the pipeline file as a tree that remembers where every value is written;
//! - [`spec`]: its typed form;
//! - [`plan`]: validation (kinds, parameters, needs/provides, batch arithmetic), all before
//!   anything runs;
//! - [`runtime`]: the dataflow (the only module that knows timely);
//! - [`cluster`]: runs of several processes (hostfile, start-up handshake, lost processes);
//! - [`rundir`]: run directories and manifests;
//! - [`resume`]: continuing a stored run from its newest checkpoint;
//! - [`replay`]: a stored run's streams feeding new downstream stages;
//! - [`reference`]: a sequential executor, the oracle for the dataflow.
#![forbid(missing_docs)]
// Plan errors carry their location and are built once per run, on the cold path: boxing them
// would add noise at every `?` for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod cluster;
pub mod plan;
pub mod reference;
pub mod replay;
pub mod report;
pub mod resume;
pub mod rundir;
pub mod runtime;
pub mod spec;
pub mod yaml;

pub use cluster::Cluster;
pub use plan::{Plan, PlanError, PlanOptions};
pub use replay::{ReplayError, ReplayPlan, StoredStream, plan_replay};
pub use resume::{ResumeError, Resumed, resume};
pub use runtime::{OnStep, RunError, RunOptions, RunSummary, StepReport, run, run_resumed};
