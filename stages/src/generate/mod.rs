//! Generators: what fills in a group's samples.

mod offline;
mod policy;

pub use offline::{OfflineConfig, OfflineGenerator};
pub use policy::{PolicyConfig, PolicyGenerator};
