//! Sinks: where finished groups go (besides the materialised streams).

mod jsonl;

pub use jsonl::{JsonlSink, JsonlSinkConfig};
