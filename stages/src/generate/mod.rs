//! Generators: what fills in a group's samples.

mod offline;

pub use offline::{OfflineConfig, OfflineGenerator};
