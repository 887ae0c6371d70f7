//! `tandem report`: per-step and overall metrics of stored runs, computed incrementally with
//! differential dataflow, per-difficulty and per-source breakdowns, a comparison of runs joined
//! on `prompt_id`, written as Markdown with PNG and SVG plots.

mod compare;
mod dataflow;
mod error;
mod load;
mod markdown;
mod metrics;
mod plot;
mod state;
mod summary;

pub use compare::compare;
pub use error::ReportError;
pub use markdown::write_markdown;
pub use metrics::{Breakdown, Tally};
pub use plot::write_plots;
pub use plot::write_rate_lines;
pub use summary::summarise;
