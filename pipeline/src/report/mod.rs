//! `tandem report`: per-step and overall metrics of stored runs, computed incrementally with
//! differential dataflow, per-difficulty and per-source breakdowns, a comparison of runs joined
//! on `prompt_id`, written as Markdown (the PNG and SVG plots are drawn by the CLI).

mod compare;
mod dataflow;
mod error;
mod load;
mod markdown;
mod metrics;
mod state;
mod summary;

pub use compare::Comparison;
pub use compare::compare;
pub use error::ReportError;
pub use markdown::write_markdown;
pub use metrics::{Breakdown, Tally};
pub use summary::{RunReport, summarise};
