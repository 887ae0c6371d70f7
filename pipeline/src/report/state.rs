//! What a report remembers between invocations (`<run>/report/state.json`): the per-step tallies
//! of every final step it has read, so that the next invocation reads only newer steps.
//!
//! JSON rather than Parquet: it is a few hundred bytes a step, read whole, and a person debugging
//! a report can open it (the float sums are stored as their bits, so a re-run is exact). It is trusted only if it was written for the same run, the same streams
//! and this format version; otherwise the report starts from scratch.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ReportError;
use super::dataflow::StepTally;
use super::load::Sources;
use super::metrics::{Breakdown, Tally};

/// Bumped when the state's meaning changes: an older state is then ignored.
const VERSION: u32 = 2;

/// The stored aggregates of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// The run reported.
    pub run_id: String,
    /// The streams read.
    pub sources: Sources,
    /// Steps `0..steps` are in `tallies` (every one final when it was read).
    pub steps: u64,
    /// Per-step tallies.
    pub tallies: Vec<StoredTally>,
}

/// One step's tally for one breakdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredTally {
    /// Step.
    pub step: u64,
    /// Breakdown.
    pub breakdown: Breakdown,
    /// Counts and sums.
    #[serde(with = "exact_tally")]
    pub tally: Tally,
}

/// Sums stored as their bits: serde_json's default float parser may be off by an ulp, and a
/// re-run must reproduce a from-scratch report bit for bit.
mod exact_tally {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Tally;

    #[derive(Serialize, Deserialize)]
    struct Bits {
        counts: [u64; 8],
        reward_sum_bits: u64,
        cloud_cost_usd_bits: u64,
    }

    pub fn serialize<S: Serializer>(t: &Tally, s: S) -> Result<S::Ok, S::Error> {
        Bits {
            counts: [
                t.samples,
                t.asked,
                t.local_correct,
                t.kept_correct,
                t.cloud_correct,
                t.rewards,
                t.cloud_calls,
                t.cloud_tokens,
            ],
            reward_sum_bits: t.reward_sum.to_bits(),
            cloud_cost_usd_bits: t.cloud_cost_usd.to_bits(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tally, D::Error> {
        let b = Bits::deserialize(d)?;
        let [
            samples,
            asked,
            local_correct,
            kept_correct,
            cloud_correct,
            rewards,
            cloud_calls,
            cloud_tokens,
        ] = b.counts;
        Ok(Tally {
            samples,
            asked,
            local_correct,
            kept_correct,
            cloud_correct,
            rewards,
            reward_sum: f64::from_bits(b.reward_sum_bits),
            cloud_calls,
            cloud_tokens,
            cloud_cost_usd: f64::from_bits(b.cloud_cost_usd_bits),
        })
    }
}

impl State {
    /// The state file of a report directory.
    pub fn path(report_dir: &Path) -> PathBuf {
        report_dir.join("state.json")
    }

    /// The stored state, if there is one written for this run and these streams.
    pub fn load(report_dir: &Path, run_id: &str, sources: &Sources) -> Option<State> {
        let text = fs::read_to_string(State::path(report_dir)).ok()?;
        let state: State = serde_json::from_str(&text).ok()?;
        (state.version == VERSION && state.run_id == run_id && &state.sources == sources)
            .then_some(state)
    }

    /// A state covering steps `0..steps`.
    pub fn new(run_id: &str, sources: &Sources, steps: u64, tallies: &[StepTally]) -> State {
        State {
            version: VERSION,
            run_id: run_id.to_owned(),
            sources: sources.clone(),
            steps,
            tallies: tallies
                .iter()
                .filter(|((step, _), _)| *step < steps)
                .map(|((step, breakdown), tally)| StoredTally {
                    step: *step,
                    breakdown: breakdown.clone(),
                    tally: *tally,
                })
                .collect(),
        }
    }

    /// The tallies as the dataflow takes them.
    pub fn step_tallies(&self) -> Vec<StepTally> {
        self.tallies
            .iter()
            .map(|t| ((t.step, t.breakdown.clone()), t.tally))
            .collect()
    }

    /// Writes the state atomically.
    pub fn write(&self, report_dir: &Path) -> Result<(), ReportError> {
        let path = State::path(report_dir);
        let fail = |e: std::io::Error| ReportError::Write {
            path: path.clone(),
            message: e.to_string(),
        };
        fs::create_dir_all(report_dir).map_err(fail)?;
        let tmp = tandem_schemas::io::temporary_name(&path);
        let text = serde_json::to_string(self).map_err(|e| fail(std::io::Error::other(e)))?;
        fs::write(&tmp, text).map_err(fail)?;
        fs::rename(&tmp, &path).map_err(fail)
    }
}
