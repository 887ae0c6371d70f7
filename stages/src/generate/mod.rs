//! Generators: what fills in a group's samples.

mod offline;
mod openai;
mod policy;
mod server;

pub use offline::{OfflineConfig, OfflineGenerator};
pub use openai::{OpenAiGenConfig, OpenAiGenerator};
pub use policy::{PolicyConfig, PolicyGenerator};
pub use server::{LaunchConfig, Sync};

/// The seed of one prompt's samples at `step`: the run's seed, the step and the prompt id
/// hashed (FNV-1a), so a prompt's samples do not depend on what else the step holds.
pub(crate) fn group_seed(run_seed: u64, step: u64, prompt_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ run_seed;
    for b in step.to_le_bytes().iter().chain(prompt_id.as_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}
