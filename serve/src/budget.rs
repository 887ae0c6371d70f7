//! The escalation budget at serving time: the share of requests sent to the cloud never
//! exceeds `share`, counted over every request since the start or over the last N requests.
//!
//! A request is counted when it is admitted (in arrival order); its escalation is decided later,
//! when the device's answer asks for help. An escalation is allowed only if, with it, the
//! escalations among the counted requests stay at or under `floor(share × counted)`. In total
//! mode the counted requests only grow, so the share stays within the budget at every moment
//! and at the end; in window mode the same holds for the window that ends at the newest
//! request at each decision. A failed escalation gives its place back.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Over which requests the budget's share is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetWindow {
    /// Every request since the server started.
    Total,
    /// The last N admitted requests.
    Requests(usize),
}

/// The escalation budget.
#[derive(Debug)]
pub struct Budget {
    share: f64,
    window: BudgetWindow,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Requests admitted so far; the next one's sequence number.
    admitted: u64,
    /// Escalations since the start (total mode; a count, so a long-running server keeps no
    /// list).
    escalated: u64,
    /// Sequence numbers of the escalations in the window (window mode).
    in_window: VecDeque<u64>,
}

impl State {
    fn escalated(&self, window: BudgetWindow) -> u64 {
        match window {
            BudgetWindow::Total => self.escalated,
            BudgetWindow::Requests(_) => self.in_window.len() as u64,
        }
    }
}

/// The budget's figures at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetSnapshot {
    /// Requests admitted since the start.
    pub admitted: u64,
    /// Requests the share is counted over now.
    pub counted: u64,
    /// Escalations among them.
    pub escalated: u64,
    /// Escalations that may still go out before another request arrives.
    pub left: u64,
}

impl Budget {
    /// A budget of `share` (between 0 and 1) over `window`.
    pub fn new(share: f64, window: BudgetWindow) -> Budget {
        Budget {
            share,
            window,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held leaves consistent counts (each update is one push
        // or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new request; returns its sequence number.
    pub fn admit(&self) -> u64 {
        let mut state = self.lock();
        state.admitted += 1;
        state.admitted - 1
    }

    /// Takes an escalation for request `seq` if the budget allows it.
    pub fn try_escalate(&self, seq: u64) -> bool {
        let mut state = self.lock();
        let counted = self.prune(&mut state);
        if state.escalated(self.window) >= self.allowance(counted) {
            return false;
        }
        match self.window {
            BudgetWindow::Total => state.escalated += 1,
            BudgetWindow::Requests(_) => state.in_window.push_back(seq),
        }
        true
    }

    /// Gives back the escalation of `seq` (its cloud call failed).
    pub fn release(&self, seq: u64) {
        let mut state = self.lock();
        match self.window {
            BudgetWindow::Total => state.escalated = state.escalated.saturating_sub(1),
            BudgetWindow::Requests(_) => {
                if let Some(i) = state.in_window.iter().position(|s| *s == seq) {
                    state.in_window.remove(i);
                }
            }
        }
    }

    /// The figures now.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let mut state = self.lock();
        let counted = self.prune(&mut state);
        let escalated = state.escalated(self.window);
        BudgetSnapshot {
            admitted: state.admitted,
            counted,
            escalated,
            left: self.allowance(counted).saturating_sub(escalated),
        }
    }

    /// The largest number of escalations among `counted` requests.
    fn allowance(&self, counted: u64) -> u64 {
        // The epsilon keeps 0.3 × 10 at 3 despite binary fractions.
        (self.share * counted as f64 + 1e-9).floor() as u64
    }

    /// Drops escalations that left the window; returns how many requests are counted.
    fn prune(&self, state: &mut State) -> u64 {
        match self.window {
            BudgetWindow::Total => state.admitted,
            BudgetWindow::Requests(n) => {
                let first = state.admitted.saturating_sub(n as u64);
                state.in_window.retain(|s| *s >= first);
                state.admitted - first
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request asks; the escalations granted never exceed the share of those admitted.
    #[test]
    fn total_budget_0_3_over_100_requests_grants_30_and_never_more_than_the_share() {
        let budget = Budget::new(0.3, BudgetWindow::Total);
        let mut granted = 0u64;
        for i in 0..100 {
            let seq = budget.admit();
            assert_eq!(seq, i);
            if budget.try_escalate(seq) {
                granted += 1;
            }
            assert!(granted * 10 <= 3 * (i + 1), "{granted} of {}", i + 1);
        }
        assert_eq!(granted, 30);
        assert_eq!(budget.snapshot().left, 0);
    }

    #[test]
    fn requests_admitted_before_the_decisions_all_count() {
        // 200 requests arrive at once; their answers come later, all asking.
        let budget = Budget::new(0.3, BudgetWindow::Total);
        let seqs: Vec<u64> = (0..200).map(|_| budget.admit()).collect();
        let granted = seqs.iter().filter(|s| budget.try_escalate(**s)).count();
        assert_eq!(granted, 60);
    }

    #[test]
    fn a_failed_escalation_gives_its_place_back() {
        let budget = Budget::new(0.5, BudgetWindow::Total);
        let (a, b) = (budget.admit(), budget.admit());
        assert!(budget.try_escalate(a));
        assert!(!budget.try_escalate(b));
        budget.release(a);
        assert!(budget.try_escalate(b));
    }

    #[test]
    fn window_of_10_at_0_2_allows_2_per_10_requests_and_recovers_as_it_slides() {
        let budget = Budget::new(0.2, BudgetWindow::Requests(10));
        let mut granted = Vec::new();
        for _ in 0..30 {
            let seq = budget.admit();
            if budget.try_escalate(seq) {
                granted.push(seq);
            }
        }
        // Every window of 10 consecutive requests holds at most 2 escalations.
        for start in 0..=20u64 {
            let inside = granted
                .iter()
                .filter(|s| (start..start + 10).contains(*s))
                .count();
            assert!(inside <= 2, "{granted:?}");
        }
        assert_eq!(granted.len(), 6, "{granted:?}");
        // In total mode the same requests would get 6 as well, but front-loaded differently:
        // the window forgets, so after 10 quiet requests two more are allowed at once.
        for _ in 0..10 {
            budget.admit();
        }
        let snapshot = budget.snapshot();
        assert_eq!(
            (snapshot.counted, snapshot.escalated, snapshot.left),
            (10, 0, 2)
        );
    }

    #[test]
    fn a_zero_budget_never_escalates() {
        let budget = Budget::new(0.0, BudgetWindow::Total);
        for _ in 0..50 {
            let seq = budget.admit();
            assert!(!budget.try_escalate(seq));
        }
    }
}
