//! Verifiers: whether an answer is correct.

mod countdown;
mod exact;

pub use countdown::{
    CountdownConfig, CountdownProblem, CountdownVerifier, MAX_ANSWER_CHARS, MAX_DEPTH, Outcome,
    check_expression,
};
pub use exact::{ExactConfig, ExactVerifier, Extract};
