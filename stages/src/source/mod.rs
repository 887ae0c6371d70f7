//! Sources: datasets on disk, and stored runs.

mod dataset;
mod replay;

pub use dataset::{DatasetSource, DatasetSourceConfig, JsonlSourceConfig, ParquetSourceConfig};
pub use replay::{ReplaySource, ReplaySourceConfig};
