//! The per-answer budget: a deadline that the parser and the evaluators check as they go.
//!
//! Nothing is interrupted from outside (no thread is killed, no signal is sent): the work checks
//! the clock itself, so the limit holds on any thread, including the dataflow's workers. The
//! hard caps on sizes (answer length, nesting depth, exact-number bits) keep each step between
//! two checks short, so the answer comes back soon after the deadline.

use std::time::{Duration, Instant};

/// The time for one answer ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timeout;

/// A deadline, read every [`Budget::EVERY`] ticks (reading the clock costs more than most ticks).
#[derive(Debug)]
pub(crate) struct Budget {
    deadline: Option<Instant>,
    ticks: u32,
}

impl Budget {
    /// How many ticks pass between two readings of the clock.
    const EVERY: u32 = 64;

    /// A budget of `limit` from now.
    pub(crate) fn new(limit: Duration) -> Budget {
        Budget {
            // An absurd limit (centuries) does not fit an `Instant`: no deadline then.
            deadline: Instant::now().checked_add(limit),
            ticks: 0,
        }
    }

    /// One unit of work (a token, a node, a loop round); fails once the deadline has passed.
    pub(crate) fn tick(&mut self) -> Result<(), Timeout> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(Self::EVERY) {
            self.check()
        } else {
            Ok(())
        }
    }

    /// Reads the clock now; for steps that may be slow on their own (big-number arithmetic).
    pub(crate) fn check(&self) -> Result<(), Timeout> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Timeout),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_fails_within_one_round_of_ticks() {
        let mut budget = Budget::new(Duration::ZERO);
        assert_eq!(budget.check(), Err(Timeout));
        let failed_at = (1..=Budget::EVERY).find(|_| budget.tick().is_err());
        assert_eq!(failed_at, Some(Budget::EVERY));
        let mut roomy = Budget::new(Duration::from_secs(3600));
        assert!((0..1000).all(|_| roomy.tick().is_ok()));
        assert!(Budget::new(Duration::MAX).check().is_ok());
    }
}
