//! One run's report: read the final steps not yet reported, run the dataflow over them and the
//! stored tallies, store the new tallies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tandem_schemas::layout::{Manifest, RunLayout};

use super::ReportError;
use super::dataflow;
use super::load::{self, Sources};
use super::metrics::{Breakdown, Tally};
use super::state::State;

/// The metrics of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The run's id.
    pub run_id: String,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Final steps reported (`0..steps`; the manifest's `steps_completed`).
    pub steps: u64,
    /// Steps whose rows this invocation read (the others came from the stored state).
    pub steps_processed: u64,
    /// Parquet rows this invocation read, all streams together.
    pub rows_read: u64,
    /// The streams read.
    pub sources: Sources,
    /// Per step, per breakdown.
    #[serde(serialize_with = "per_step_rows")]
    pub per_step: BTreeMap<(u64, Breakdown), Tally>,
    /// Over every step, per breakdown.
    #[serde(serialize_with = "overall_rows")]
    pub overall: BTreeMap<Breakdown, Tally>,
}

impl RunReport {
    /// The per-step tallies of one breakdown, in step order.
    pub fn steps_of(&self, breakdown: &Breakdown) -> Vec<(u64, Tally)> {
        self.per_step
            .iter()
            .filter(|((_, b), _)| b == breakdown)
            .map(|((step, _), tally)| (*step, *tally))
            .collect()
    }
}

/// Reports a run, reading only the final steps its stored state (under `report_dir`) does not
/// cover, `batch_steps` steps at a time; `from_scratch` ignores the stored state.
pub fn summarise(
    run_dir: &Path,
    report_dir: &Path,
    from_scratch: bool,
    batch_steps: usize,
) -> Result<RunReport, ReportError> {
    let layout = RunLayout::new(run_dir);
    let manifest = Manifest::read(&layout).map_err(|message| ReportError::NotARun {
        path: run_dir.to_owned(),
        message,
    })?;
    let sources = Sources::of(&manifest, run_dir)?;
    let steps = manifest.steps_completed;
    // A run resumed from an older checkpoint rewrites steps the state may cover: start over.
    let state = (!from_scratch)
        .then(|| State::load(report_dir, &manifest.run_id, &sources))
        .flatten()
        .filter(|state| state.steps <= steps)
        .unwrap_or_default();
    let new_steps: Vec<u64> = (state.steps..steps).collect();
    // New steps go through the dataflow a batch at a time, each batch's tallies joining the
    // stored ones, as if the report had been run after every batch: memory is bounded by one
    // batch's rows, and the result is the same bits (tallies are per step).
    let batches: Vec<&[u64]> = if new_steps.is_empty() {
        vec![&[]]
    } else {
        new_steps.chunks(batch_steps.max(1)).collect()
    };
    let mut tallies = state.step_tallies();
    let mut computed = dataflow::Computed::default();
    let mut rows_read = 0;
    for batch in batches {
        let rows = load::read_steps(&layout, &sources, batch)?;
        rows_read += rows.rows_read;
        computed = dataflow::compute(tallies, rows);
        tallies = computed
            .per_step
            .iter()
            .map(|(k, t)| (k.clone(), *t))
            .collect();
    }
    State::new(&manifest.run_id, &sources, steps, &tallies).write(report_dir)?;
    Ok(RunReport {
        run_id: manifest.run_id,
        run_dir: run_dir.to_owned(),
        steps,
        steps_processed: new_steps.len() as u64,
        rows_read,
        sources,
        per_step: computed.per_step,
        overall: computed.overall,
    })
}

#[derive(Serialize)]
struct TallyRow<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<u64>,
    breakdown: String,
    #[serde(flatten)]
    tally: &'a Tally,
    help_rate: f64,
    local_accuracy: f64,
    conditional_accuracy: f64,
    overall_accuracy: f64,
    mean_reward: f64,
}

impl<'a> TallyRow<'a> {
    fn new(step: Option<u64>, breakdown: &Breakdown, tally: &'a Tally) -> TallyRow<'a> {
        TallyRow {
            step,
            breakdown: breakdown.to_string(),
            tally,
            help_rate: tally.help_rate(),
            local_accuracy: tally.local_accuracy(),
            conditional_accuracy: tally.conditional_accuracy(),
            overall_accuracy: tally.overall_accuracy(),
            mean_reward: tally.mean_reward(),
        }
    }
}

fn per_step_rows<S: serde::Serializer>(
    map: &BTreeMap<(u64, Breakdown), Tally>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(map.iter().map(|((s, b), t)| TallyRow::new(Some(*s), b, t)))
}

fn overall_rows<S: serde::Serializer>(
    map: &BTreeMap<Breakdown, Tally>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(map.iter().map(|(b, t)| TallyRow::new(None, b, t)))
}
