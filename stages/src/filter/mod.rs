//! Filter stages: which groups of a step the learner uses. Each kind sees the whole step
//! (`Scope::Step`) and writes one [`tandem_schemas::FilterRecord`] per group: `kept`, the
//! `bucket` it fell in, and the `reason` in words.
//!
//! | kind | kept buckets | dropped buckets |
//! |---|---|---|
//! | `filter.adaptive` | `D1`, `D2` (at most ⌊ρ · \|D1\|⌋) | `dropped`, `errors` |
//! | `filter.dynamic` | `kept` (rewards differ) | `dropped` (all equal), `errors` |
//! | `filter.none` | `all` | `errors` |
//!
//! Every kind drops a group that holds error rows from an earlier stage into `errors`.

mod adaptive;
mod decision;
mod dynamic;
mod none;
mod rho;

pub use adaptive::{AdaptiveConfig, AdaptiveFilter};
pub use dynamic::{DynamicConfig, DynamicFilter};
pub use none::{NoFilter, NoFilterConfig};
pub use rho::Rho;
