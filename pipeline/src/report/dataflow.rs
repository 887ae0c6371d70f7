//! The report's computation as a differential dataflow: the only module that knows timely and
//! differential.
//!
//! Inputs are collections of the rows read (samples, verdicts, rewards, cloud ledger, prompts)
//! and of the per-step tallies a previous report stored. Time 0 holds the stored tallies, time 1
//! the new rows: the per-step tallies of new steps are computed from rows, and the overall tallies
//! (a reduce over every step) are updated from both, so a re-run never touches old rows.
//!
//! Missing facts are data too: a sample without a local verdict is not correct, a group without a
//! cloud verdict has no correct cloud answer (left joins as `semijoin` + `antijoin`).

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::input::Input;
use serde::{Deserialize, Serialize};

use super::load::Rows;
use super::metrics::{Breakdown, Tally};

/// A step's tally for one breakdown.
pub type StepTally = ((u64, Breakdown), Tally);

/// What the dataflow produced.
#[derive(Clone, Debug, Default)]
pub struct Computed {
    /// Per (step, breakdown), every step: stored and new.
    pub per_step: BTreeMap<(u64, Breakdown), Tally>,
    /// Per breakdown, over every step.
    pub overall: BTreeMap<Breakdown, Tally>,
}

/// An f64 with the total order differential needs (by `total_cmp`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Real(f64);

impl PartialEq for Real {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Real {}
impl PartialOrd for Real {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Real {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What one row adds to the tally of its (step, breakdown).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Contribution {
    Sample {
        asked: bool,
        local_correct: bool,
        cloud_correct: bool,
    },
    Reward(Real),
    Cloud {
        tokens: u64,
        cost_usd: Real,
    },
}

impl Contribution {
    fn tally(&self) -> Tally {
        match *self {
            Contribution::Sample {
                asked,
                local_correct,
                cloud_correct,
            } => Tally {
                samples: 1,
                asked: asked.into(),
                local_correct: local_correct.into(),
                kept_correct: (!asked && local_correct).into(),
                cloud_correct: (asked && cloud_correct).into(),
                ..Tally::default()
            },
            Contribution::Reward(reward) => Tally {
                rewards: 1,
                reward_sum: reward.0,
                ..Tally::default()
            },
            Contribution::Cloud { tokens, cost_usd } => Tally {
                cloud_calls: 1,
                cloud_tokens: tokens,
                cloud_cost_usd: cost_usd.0,
                ..Tally::default()
            },
        }
    }
}

/// Sums `(value, multiplicity)` pairs of a reduce, in the order differential presents them
/// (sorted), so the same input always gives the same bits.
fn fold(values: impl Iterator<Item = (Tally, isize)>) -> Tally {
    values.fold(Tally::default(), |acc, (t, n)| {
        acc.add(&t.times(u64::try_from(n).expect("inputs only insert")))
    })
}

/// Runs the computation: `stored` tallies (of steps already reported) at time 0, `rows` (of new
/// steps) at time 1; returns every step's tallies and the overall ones.
pub fn compute(stored: Vec<StepTally>, rows: Rows) -> Computed {
    timely::execute_directly(move |worker| {
        let per_step_out = Rc::new(RefCell::new(Vec::new()));
        let overall_out = Rc::new(RefCell::new(Vec::new()));
        let (per_step_sink, overall_sink) = (per_step_out.clone(), overall_out.clone());

        let (mut inputs, probe) = worker.dataflow::<u32, _, _>(|scope| {
            let (stored_in, stored) = scope.new_collection::<StepTally, isize>();
            let (samples_in, samples) = scope.new_collection::<((u64, String, u32), bool), isize>();
            let (local_in, local) = scope.new_collection::<(u64, String, u32), isize>();
            let (cloud_ok_in, cloud_ok) = scope.new_collection::<(u64, String), isize>();
            let (rewards_in, rewards) = scope.new_collection::<((u64, String), Real), isize>();
            let (ledger_in, ledger) = scope.new_collection::<((u64, String), (u64, Real)), isize>();
            let (prompts_in, prompts) = scope.new_collection::<((u64, String), Breakdown), isize>();

            // Correctness of each sample's own answer (left join on the local verdicts).
            let local = local.distinct();
            let with_local = samples
                .clone()
                .semijoin(local.clone())
                .map(|((s, p, i), asked)| ((s, p), (i, asked, true)))
                .concat(
                    samples
                        .clone()
                        .antijoin(local)
                        .map(|((s, p, i), asked)| ((s, p), (i, asked, false))),
                );
            // … and of the cloud's answer to its group.
            let cloud_ok = cloud_ok.distinct();
            let judged =
                with_local
                    .clone()
                    .semijoin(cloud_ok.clone())
                    .map(|(key, (_, asked, local_correct))| {
                        (
                            key,
                            Contribution::Sample {
                                asked,
                                local_correct,
                                cloud_correct: true,
                            },
                        )
                    })
                    .concat(with_local.antijoin(cloud_ok).map(
                        |(key, (_, asked, local_correct))| {
                            (
                                key,
                                Contribution::Sample {
                                    asked,
                                    local_correct,
                                    cloud_correct: false,
                                },
                            )
                        },
                    ));

            // Every prompt is in the `all` breakdown, and in those its labels name.
            let breakdowns = samples
                .map(|((s, p, _), _)| ((s, p), Breakdown::All))
                .concat(prompts)
                .distinct();

            let contributions = judged
                .concat(rewards.map(|(key, r)| (key, Contribution::Reward(r))))
                .concat(ledger.map(|(key, (tokens, cost_usd))| {
                    (key, Contribution::Cloud { tokens, cost_usd })
                }));

            let per_step = contributions
                .join(breakdowns)
                .map(|((step, _), (contribution, breakdown))| ((step, breakdown), contribution))
                .reduce_named("StepTally", |_key, input, output| {
                    let tally = fold(input.iter().map(|(c, n)| (c.tally(), *n)));
                    output.push((tally, 1isize));
                })
                .concat(stored);

            let overall = per_step
                .clone()
                .map(|((_, breakdown), tally)| (breakdown, tally))
                .reduce_named("OverallTally", |_key, input, output| {
                    output.push((fold(input.iter().map(|(t, n)| (**t, *n))), 1isize));
                });

            let (probe, _) = per_step
                .inspect(move |(data, _, diff)| {
                    per_step_sink.borrow_mut().push((data.clone(), *diff))
                })
                .probe();
            let overall = overall
                .inspect(move |(data, _, diff)| {
                    overall_sink.borrow_mut().push((data.clone(), *diff))
                })
                .probe_with(&probe);
            drop(overall);
            (
                (
                    stored_in,
                    samples_in,
                    local_in,
                    cloud_ok_in,
                    rewards_in,
                    ledger_in,
                    prompts_in,
                ),
                probe,
            )
        });

        let (stored_in, samples_in, local_in, cloud_ok_in, rewards_in, ledger_in, prompts_in) =
            &mut inputs;
        for tally in stored {
            stored_in.insert(tally);
        }
        samples_in.advance_to(1);
        local_in.advance_to(1);
        cloud_ok_in.advance_to(1);
        rewards_in.advance_to(1);
        ledger_in.advance_to(1);
        prompts_in.advance_to(1);
        stored_in.advance_to(1);
        for s in rows.samples {
            samples_in.insert(((s.step, s.prompt_id, s.sample_idx), s.asked_help));
        }
        for v in rows.verdicts {
            match (v.correct, v.sample_idx) {
                (true, Some(idx)) => local_in.insert((v.step, v.prompt_id, idx)),
                (true, None) => cloud_ok_in.insert((v.step, v.prompt_id)),
                (false, _) => {}
            }
        }
        for r in rows.rewards {
            rewards_in.insert(((r.step, r.prompt_id), Real(r.reward)));
        }
        for c in rows.cloud {
            ledger_in.insert(((c.step, c.prompt_id), (c.tokens, Real(c.cost_usd))));
        }
        for p in rows.prompts {
            let key = (p.step, p.prompt_id);
            let difficulty = p.difficulty.unwrap_or_else(|| "(none)".to_owned());
            prompts_in.insert((key.clone(), Breakdown::Difficulty(difficulty)));
            prompts_in.insert((key, Breakdown::Source(p.source)));
        }
        stored_in.advance_to(2);
        samples_in.advance_to(2);
        local_in.advance_to(2);
        cloud_ok_in.advance_to(2);
        rewards_in.advance_to(2);
        ledger_in.advance_to(2);
        prompts_in.advance_to(2);
        stored_in.flush();
        samples_in.flush();
        local_in.flush();
        cloud_ok_in.flush();
        rewards_in.flush();
        ledger_in.flush();
        prompts_in.flush();
        while probe.less_than(&2) {
            worker.step();
        }

        let mut computed = Computed::default();
        for (step_tally, diff) in consolidate(per_step_out.take()) {
            if diff > 0 {
                computed.per_step.insert(step_tally.0, step_tally.1);
            }
        }
        for ((breakdown, tally), diff) in consolidate(overall_out.take()) {
            if diff > 0 {
                computed.overall.insert(breakdown, tally);
            }
        }
        computed
    })
}

/// Accumulates the updates seen at every time into final multiplicities.
fn consolidate<D: Ord>(mut updates: Vec<(D, isize)>) -> Vec<(D, isize)> {
    differential_dataflow::consolidation::consolidate(&mut updates);
    updates
}
