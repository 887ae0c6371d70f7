//! Verifiers: whether an answer is correct.

mod exact;

pub use exact::{ExactConfig, ExactVerifier, Extract};
