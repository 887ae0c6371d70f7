//! The simulated cloud behind `tandem cloud-sim`: an OpenAI-compatible HTTP server whose answers
//! come from a built-in oracle (Countdown search, exact arithmetic, a gold-answer file), with
//! seeded accuracy, latency and faults, so that runs, demos and tests of the cloud path need no
//! network and no key, and are reproducible.
//!
//! Every random choice is a function of the seed and of the request itself (its hash, and how
//! many times that exact request was seen before), never of arrival order: the same requests
//! give the same outcomes under any concurrency, and a retry of a failed request is a new draw.

mod arith;
mod config;
mod countdown;
mod error;
mod faults;
mod log;
mod openai;
mod oracle;
mod seeded;
mod server;

pub use config::{AnswerFormat, ApiKey, LatencyDist, SimConfig};
pub use faults::{Fault, FaultRates};
pub use server::{Simulator, serve};

// The in-process API, for demos and tests that want a server without a child process (the
// CLI runs `serve` on a runtime of its own).
pub use error::{Error, Result};
pub use server::{SimHandle, spawn};
