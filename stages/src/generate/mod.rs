//! Generators: what fills in a group's samples.

mod offline;
mod policy;
mod templates;

pub use offline::{OfflineConfig, OfflineGenerator};
pub use policy::{PolicyConfig, PolicyGenerator};
pub use templates::NamedTemplate;
