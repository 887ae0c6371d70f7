//! What tandem's commands orchestrate on top of the pipeline engine: runs of runs.
//!
//! - [`eval`]: a routing policy against a cloud budget, as two stored pipelines joined per
//!   question, with the device-only, cloud-only, naive and learned-router baselines
//!   (`tandem eval`);
//! - [`cluster`]: `tandem run --local-cluster N`, N processes of one run on loopback;
//! - [`demo`]: the whole chain on a model made here, from task data to the before/after table
//!   (`tandem demo`);
//! - [`experiment`]: every method of a comparison on one suite over seeds, as a table
//!   (`tandem experiment`);
//! - [`plot`]: the PNG/SVG plots of `tandem report`, `tandem eval` and the demo;
//! - [`progress`]: a pipeline run's progress bar.
//!
//! The CLI (`src/`) parses arguments and calls these; only `tandem-pipeline` knows the
//! dataflow.

pub mod cluster;
pub mod demo;
pub mod eval;
pub mod experiment;
pub mod plot;
pub mod progress;
