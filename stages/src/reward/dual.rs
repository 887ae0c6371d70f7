//! Dual ascent on the price of a call for help, for `reward.collab`'s `target_call_rate`.
//!
//! The paper's objective is a constrained one: maximise accuracy while calling the cloud on at
//! most a budget `b` of the questions. Its hierarchical reward relaxes the constraint into a
//! constant, αc = αa − γ. Here γ is the Lagrange multiplier instead, and is learned by projected
//! dual ascent on the step's call rate r_t (the share of its samples that asked for help):
//!
//! ```text
//! I_{t+1} = clamp(I_t + η · (r_t − b), 0, αa)        I_0 = αa − αc (the configured αc)
//! γ_{t+1} = clamp(I_{t+1} + Kp · (r_t − b), 0, αa)
//! ```
//!
//! Asking more than the budget raises γ and makes a call worth less; asking less lowers it.
//! With Kp = 0 this is plain projected dual ascent. A policy answers a new price only some
//! steps later, so the integral alone overshoots and the call rate oscillates around the
//! target; the proportional term (a PI controller on the multiplier, as in Stooke et al.'s PID
//! Lagrangian, 2020) reacts at once and lets a small η do the rest.
//!
//! **Which steps count.** The rewards of step t use the γ that the call rates of steps
//! 0 ..= t − 1 − s have made, where s is the run's `max_staleness`. Those are exactly the steps
//! the policy that generated step t was trained on, and a learner has consumed them before step
//! t is generated, so their rates are always known: γ is the same for any worker count, any
//! timing and across `--resume` (which reads the earlier steps' rates back from the stored
//! samples).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tandem_schemas::StreamKind;
use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout};

use crate::{Result, StageError};

/// How long a step waits for an earlier step's call rate. Only a pipeline without a learner
/// (nothing orders its steps) can wait at all; the bound keeps a stopped run from hanging.
const WAIT: Duration = Duration::from_secs(600);

/// The schedule: target, step size, bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DualAscent {
    /// b: the call rate to reach.
    pub target: f64,
    /// η: how far the integral moves per unit of rate above the target.
    pub lr: f64,
    /// Kp: how far γ sits above the integral per unit of the latest rate above the target.
    pub kp: f64,
    /// γ before any step: αa − the configured αc.
    pub initial: f64,
    /// γ's upper bound: αa (a call the cloud answered is never worth less than nothing).
    pub max: f64,
}

impl DualAscent {
    /// γ after the steps whose call rates are `rates`, in step order.
    pub fn gamma(&self, rates: &[f64]) -> f64 {
        let integral = rates.iter().fold(self.initial, |integral, rate| {
            (integral + self.lr * (rate - self.target)).clamp(0.0, self.max)
        });
        match rates.last() {
            Some(rate) => (integral + self.kp * (rate - self.target)).clamp(0.0, self.max),
            None => integral,
        }
    }
}

/// The call rate of every step seen so far, shared by the stage's instances on every worker.
#[derive(Debug, Default)]
pub struct CallRates {
    rates: Mutex<BTreeMap<u64, f64>>,
    arrived: Condvar,
}

impl CallRates {
    /// Records the call rate of `step`.
    pub fn record(&self, step: u64, rate: f64) {
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.insert(step, rate);
        self.arrived.notify_all();
    }

    /// The call rates of steps `0..upto`, in order, waiting (bounded) for any not recorded yet.
    pub fn upto(&self, upto: u64) -> Result<Vec<f64>> {
        let deadline = Instant::now() + WAIT;
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match (0..upto).find(|step| !rates.contains_key(step)) {
                None => return Ok((0..upto).map(|step| rates[&step]).collect()),
                Some(missing) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(StageError::Run(format!(
                            "the call rate of step {missing} was not known after {} s; dual \
                             ascent needs each step's rate before the steps that use it (a \
                             learner in the pipeline orders them)",
                            WAIT.as_secs()
                        )));
                    }
                    rates = self
                        .arrived
                        .wait_timeout(rates, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

/// The call rates of steps `0..first_step` of a stored run, from its samples streams (what a
/// resumed run needs to rebuild γ).
pub fn stored_call_rates(run_dir: &Path, first_step: u64) -> Result<BTreeMap<u64, f64>> {
    let layout = RunLayout::new(run_dir);
    let manifest = Manifest::read(&layout).map_err(StageError::Data)?;
    let mut tallies: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for stream in manifest
        .streams
        .iter()
        .filter(|s| s.kind == StreamKind::Samples)
    {
        let parts = layout
            .parts_before(&stream.name, first_step)
            .map_err(|e| StageError::Data(format!("resuming: stream {}: {e}", stream.name)))?;
        for (step, part) in parts {
            let rows = Rows::read_parquet(StreamKind::Samples, &part)
                .map_err(|e| StageError::Data(format!("resuming: {}: {e}", part.display())))?;
            if let Rows::Samples(samples) = rows {
                let tally = tallies.entry(step).or_default();
                tally.0 += samples.iter().filter(|s| s.asked_help).count();
                tally.1 += samples.len();
            }
        }
    }
    // Steps before the resume point are complete: one without samples stored had none, and
    // its rate is 0 as in the live run (`help::call_rate` of no samples).
    let rates = (0..first_step)
        .map(|step| {
            let (asked, all) = tallies.get(&step).copied().unwrap_or_default();
            let rate = if all == 0 {
                0.0
            } else {
                asked as f64 / all as f64
            };
            (step, rate)
        })
        .collect();
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: DualAscent = DualAscent {
        target: 0.3,
        lr: 0.5,
        kp: 0.0,
        initial: 0.75,
        max: 1.0,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn gamma_rises_above_the_target_falls_below_and_stays_in_bounds() {
        assert_eq!(SCHEDULE.gamma(&[]), 0.75);
        assert!(close(SCHEDULE.gamma(&[0.5]), 0.85));
        assert!(close(SCHEDULE.gamma(&[0.1]), 0.65));
        assert_eq!(SCHEDULE.gamma(&[1.0; 5]), 1.0, "never above αa");
        assert_eq!(SCHEDULE.gamma(&[0.0; 10]), 0.0, "never below 0");
        // Projected: the clamp applies at every step, not only at the end.
        assert!(close(SCHEDULE.gamma(&[1.0, 1.0, 0.0]), 0.85));
        assert_eq!(SCHEDULE.gamma(&[0.3; 7]), 0.75, "at the target γ stays");
    }

    #[test]
    fn the_proportional_term_follows_the_latest_rate_and_leaves_the_integral_alone() {
        let pi = DualAscent {
            kp: 1.0,
            ..SCHEDULE
        };
        // Integral 0.85 after 0.5; plus 1.0 × 0.2.
        assert!(close(pi.gamma(&[0.5]), 1.0));
        // Integral 0.85 then 0.75 after 0.1; minus 1.0 × 0.2.
        assert!(close(pi.gamma(&[0.5, 0.1]), 0.55));
        assert!(
            close(pi.gamma(&[0.5, 0.1, 0.3]), 0.75),
            "at the target: the integral"
        );
        assert!(close(pi.gamma(&[0.0]), 0.3));
    }

    #[test]
    fn rates_wait_for_the_steps_they_need() {
        let rates = std::sync::Arc::new(CallRates::default());
        rates.record(0, 0.5);
        assert_eq!(rates.upto(1).expect("known"), vec![0.5]);
        let later = rates.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            later.record(1, 0.25);
        });
        assert_eq!(rates.upto(2).expect("arrives"), vec![0.5, 0.25]);
        writer.join().expect("writer");
    }
}
