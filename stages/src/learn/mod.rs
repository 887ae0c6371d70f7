//! Learners: sinks that update a model from each step's groups. `learn.pg` takes
//! policy-gradient steps on the samples `generate.policy` drew.

mod pg;
mod trained;

pub use pg::{Aggregation, LearnConfig, PolicyLearner};
