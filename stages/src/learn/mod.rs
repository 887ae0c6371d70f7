//! Learners: sinks that update a model from each step's groups. `learn.pg` takes
//! policy-gradient steps on the samples `generate.policy` drew; `learn.sft` fine-tunes a model
//! on the stored responses of a dataset (a warm start). Both checkpoint and report the same way.

mod pg;
mod sft;
mod trained;

pub use pg::{Aggregation, LearnConfig, PolicyLearner};
pub use sft::{SftConfig, SftLearner};
