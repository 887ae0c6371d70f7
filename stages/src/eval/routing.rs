//! The numbers a routing policy is judged by, from one [`Outcome`] per test question.
//!
//! A *ranking* is the order in which questions go to the cloud as the call rate grows: the
//! first `k` of it are offloaded at call rate `k / N`. The policy's own ranking puts the
//! questions it asked about first; a learned router's ranks by its score; naive offloading is a
//! seeded random order. Every figure at every call rate follows from the outcomes and the
//! ranking, so baselines are compared on exactly the same answers.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// What is known about one test question.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The policy asked for help.
    pub asked: bool,
    /// The device's answer is correct: its own answer when it did not ask, its answer
    /// re-generated without the help option when it did (what a capped request gets).
    pub local_correct: bool,
    /// The cloud's answer is correct.
    pub cloud_correct: bool,
}

/// The paper's figures for the policy's own routing under a cloud budget.
#[derive(Clone, Debug, PartialEq)]
pub struct AtBudget {
    /// Questions.
    pub questions: usize,
    /// The budget: the largest share of questions that may go to the cloud.
    pub budget: f64,
    /// Questions the policy asked about.
    pub asked: usize,
    /// Asks that went to the cloud: at most `floor(budget × questions)`.
    pub sent: usize,
    /// Asks past the cap, answered on the device instead.
    pub capped: usize,
    /// Call-for-help ratio: `asked / questions` (before the cap).
    pub help_ratio: f64,
    /// `sent / questions`.
    pub call_rate: f64,
    /// Correct answers given on the device / all questions.
    pub local_accuracy: f64,
    /// Correct answers given on the device / questions answered on the device.
    pub conditional_accuracy: f64,
    /// Correct answers, on the device or from the cloud / all questions.
    pub overall_accuracy: f64,
}

impl AtBudget {
    /// The policy's figures at `budget` (a share in [0, 1]): its asks are sent in the order of
    /// `ranking` (see [`ranking_for_policy`]) until `floor(budget × N)` are out; the rest are
    /// answered on the device.
    pub fn new(outcomes: &[Outcome], ranking: &[usize], budget: f64) -> AtBudget {
        let n = outcomes.len();
        let cap = budget_calls(budget, n);
        let asked = outcomes.iter().filter(|o| o.asked).count();
        let mut sent = vec![false; n];
        let mut out = 0;
        for &i in ranking {
            if out == cap {
                break;
            }
            if outcomes[i].asked && !sent[i] {
                sent[i] = true;
                out += 1;
            }
        }
        let (mut local_right, mut cloud_right) = (0, 0);
        for (o, &to_cloud) in outcomes.iter().zip(&sent) {
            match to_cloud {
                true => cloud_right += usize::from(o.cloud_correct),
                false => local_right += usize::from(o.local_correct),
            }
        }
        let on_device = n - out;
        AtBudget {
            questions: n,
            budget,
            asked,
            sent: out,
            capped: asked - out,
            help_ratio: ratio(asked, n),
            call_rate: ratio(out, n),
            local_accuracy: ratio(local_right, n),
            conditional_accuracy: ratio(local_right, on_device),
            overall_accuracy: ratio(local_right + cloud_right, n),
        }
    }
}

/// Accuracy against call rate for one ranking (RouteLLM's curve).
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingCurve {
    /// `(call rate, accuracy)` for `k = 0..=N` questions offloaded, in order.
    pub points: Vec<(f64, f64)>,
}

impl RoutingCurve {
    /// The curve of offloading the questions in `ranking` order (each at most once; questions
    /// the ranking leaves out stay on the device).
    pub fn new(outcomes: &[Outcome], ranking: &[usize]) -> RoutingCurve {
        let n = outcomes.len();
        let mut right: usize = outcomes.iter().filter(|o| o.local_correct).count();
        let mut points = vec![(0.0, ratio(right, n))];
        let mut seen = vec![false; n];
        for &i in ranking {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let o = outcomes[i];
            right = right + usize::from(o.cloud_correct) - usize::from(o.local_correct);
            points.push((ratio(points.len(), n), ratio(right, n)));
        }
        RoutingCurve { points }
    }

    /// Accuracy with nothing offloaded (the device alone).
    pub fn local_only(&self) -> f64 {
        self.points[0].1
    }

    /// The performance gap recovered at each point: `(acc − acc_device) / (acc_cloud −
    /// acc_device)`, where `acc_cloud` is the cloud answering everything. `None` when the
    /// cloud is no better than the device (there is no gap to recover).
    pub fn gap_recovered(&self, cloud_only: f64) -> Option<Vec<(f64, f64)>> {
        let gap = cloud_only - self.local_only();
        (gap > 0.0).then(|| {
            self.points
                .iter()
                .map(|&(rate, acc)| (rate, (acc - self.local_only()) / gap))
                .collect()
        })
    }

    /// APGR: the area under the gap-recovered curve over call rates 0 to 1 (trapezoids between
    /// the curve's points; a curve that stops short of offloading everything is continued at
    /// its last value). 0.5 is what random offloading gets on average; 1 would be reached only
    /// if a first call already recovered the whole gap.
    pub fn apgr(&self, cloud_only: f64) -> Option<f64> {
        let pgr = self.gap_recovered(cloud_only)?;
        let mut area = 0.0;
        for pair in pgr.windows(2) {
            let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
            area += (x1 - x0) * (y0 + y1) / 2.0;
        }
        let (last_rate, last) = *pgr.last().expect("the curve starts at call rate 0");
        Some(area + (1.0 - last_rate) * last)
    }

    /// The smallest call rate at which `share` of the gap is recovered (RouteLLM's CPT; 0.5 for
    /// CPT(50%)), or `None` when the curve never gets there.
    pub fn call_rate_to_recover(&self, cloud_only: f64, share: f64) -> Option<f64> {
        self.gap_recovered(cloud_only)?
            .into_iter()
            .find(|&(_, recovered)| recovered >= share - 1e-12)
            .map(|(rate, _)| rate)
    }
}

/// The policy's ranking: the questions it asked about first, then the others, each part in a
/// seeded random order (the order capped asks are chosen in, and the order the curve extends
/// past the policy's own call rate in, as naive offloading would).
pub fn ranking_for_policy(outcomes: &[Outcome], seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut asked, mut rest): (Vec<usize>, Vec<usize>) =
        (0..outcomes.len()).partition(|&i| outcomes[i].asked);
    asked.shuffle(&mut rng);
    rest.shuffle(&mut rng);
    asked.extend(rest);
    asked
}

/// Naive offloading: a seeded random order.
pub fn ranking_random(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// A router's ranking: the highest score first (ties in question order).
pub fn ranking_by_scores(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// The ROC AUC of `scores` for telling the `positive` rows from the others: the probability that
/// a random positive scores above a random negative, ties counting one half (the Mann–Whitney
/// statistic). `None` without a positive and a negative. A router's AUC for "solved on the
/// device" says how well the question alone predicts what the device can do: 0.5 is chance.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len(), "one label per score");
    let positives = positive.iter().filter(|p| **p).count();
    let negatives = positive.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' ranks (1-based, ties given their mean rank).
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = order[start..end].iter().filter(|&&i| positive[i]).count();
        rank_sum += mean_rank * tied_positives as f64;
        start = end;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// The most questions a budget (a share in [0, 1]) lets go to the cloud: `floor(budget × n)`,
/// with the product rounded to 12 decimals first, so that 0.3 × 10 is 3 and not
/// 2.9999999999999996 floored to 2.
fn budget_calls(budget: f64, n: usize) -> usize {
    let exact = (budget.clamp(0.0, 1.0) * n as f64 * 1e12).round() / 1e12;
    exact.floor() as usize
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against the definition: the share of (positive, negative) pairs ordered right, ties
        /// counting one half.
        #[test]
        fn roc_auc_counts_correctly_ordered_pairs(
            rows in proptest::collection::vec((0u8..6, any::<bool>()), 0..40),
        ) {
            let scores: Vec<f64> = rows.iter().map(|(s, _)| f64::from(*s)).collect();
            let labels: Vec<bool> = rows.iter().map(|(_, l)| *l).collect();
            let (mut pairs, mut right) = (0.0, 0.0);
            for (i, &pi) in labels.iter().enumerate() {
                for (j, &pj) in labels.iter().enumerate() {
                    if pi && !pj {
                        pairs += 1.0;
                        right += match scores[i].total_cmp(&scores[j]) {
                            std::cmp::Ordering::Greater => 1.0,
                            std::cmp::Ordering::Equal => 0.5,
                            std::cmp::Ordering::Less => 0.0,
                        };
                    }
                }
            }
            let expected = (pairs > 0.0).then(|| right / pairs);
            let got = roc_auc(&scores, &labels);
            match (got, expected) {
                (Some(g), Some(e)) => prop_assert!((g - e).abs() < 1e-12, "{} vs {}", g, e),
                (g, e) => prop_assert_eq!(g, e),
            }
        }
    }

    /// Ten questions with known outcomes (a = asked, l = local answer right, c = cloud right).
    fn ten() -> Vec<Outcome> {
        let o = |asked, local_correct, cloud_correct| Outcome {
            asked,
            local_correct,
            cloud_correct,
        };
        vec![
            o(false, true, true),   // 0: easy, solved locally
            o(false, true, true),   // 1
            o(false, true, false),  // 2: the cloud would get it wrong
            o(false, false, true),  // 3: should have asked
            o(false, true, true),   // 4
            o(true, false, true),   // 5: asked, rightly
            o(true, false, true),   // 6: asked, rightly
            o(true, true, true),    // 7: asked, needlessly
            o(true, false, false),  // 8: asked, nobody can solve it
            o(false, false, false), // 9
        ]
    }

    #[test]
    fn the_budget_caps_sent_asks_exactly_and_capped_ones_are_answered_locally() {
        let outcomes = ten();
        // Asks in the order 5, 6, 7, 8 (a hand-made ranking).
        let ranking = [5, 6, 7, 8, 0, 1, 2, 3, 4, 9];
        let unlimited = AtBudget::new(&outcomes, &ranking, 1.0);
        assert_eq!(
            (unlimited.asked, unlimited.sent, unlimited.capped),
            (4, 4, 0)
        );
        // Device: 0, 1, 2, 4 right of 6 kept (0–4, 9); cloud: 5, 6, 7 right of 4 sent.
        assert_eq!(unlimited.local_accuracy, 0.4);
        assert_eq!(unlimited.conditional_accuracy, 4.0 / 6.0);
        assert_eq!(unlimited.overall_accuracy, 0.7);
        assert_eq!((unlimited.help_ratio, unlimited.call_rate), (0.4, 0.4));

        // 30% of 10 is exactly 3 calls (not 2 from 2.9999…): 5, 6, 7 go, 8 is capped.
        let paper = AtBudget::new(&outcomes, &ranking, 0.3);
        assert_eq!((paper.sent, paper.capped), (3, 1));
        assert_eq!(paper.call_rate, 0.3);
        assert_eq!(paper.overall_accuracy, 0.7, "8 is wrong either way");
        // 20%: 5 and 6 go; 7 is answered locally (right), 8 locally (wrong).
        let tight = AtBudget::new(&outcomes, &ranking, 0.2);
        assert_eq!((tight.sent, tight.capped), (2, 2));
        assert_eq!(tight.local_accuracy, 0.5);
        assert_eq!(tight.conditional_accuracy, 5.0 / 8.0);
        assert_eq!(tight.overall_accuracy, 0.7);
        // No budget: everything local.
        let none = AtBudget::new(&outcomes, &ranking, 0.0);
        assert_eq!((none.sent, none.capped, none.call_rate), (0, 4, 0.0));
        assert_eq!(none.overall_accuracy, 0.5);
        assert_eq!(none.help_ratio, 0.4, "the ratio counts asks before the cap");
        for budget in [0.0, 0.05, 0.1, 0.25, 0.3, 0.35, 0.9, 1.0] {
            let at = AtBudget::new(&outcomes, &ranking, budget);
            assert!(at.call_rate <= budget + 1e-12, "{budget}: {at:?}");
            assert_eq!(at.sent, ((budget * 10.0) + 1e-9).floor().min(4.0) as usize);
        }
    }

    #[test]
    fn the_curve_apgr_and_cpt_match_a_hand_computation() {
        let outcomes = ten();
        // Device alone: 5 right (0, 1, 2, 4, 7). Cloud alone: 7 right (all but 2, 8, 9).
        let cloud_only = 0.7;
        let ranking = [5, 6, 3, 7, 8, 0, 1, 4, 2, 9];
        let curve = RoutingCurve::new(&outcomes, &ranking);
        let accuracies: Vec<f64> = curve.points.iter().map(|p| p.1).collect();
        let expect = [0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7];
        for (got, want) in accuracies.iter().zip(expect) {
            assert!((got - want).abs() < 1e-12, "{accuracies:?}");
        }
        assert_eq!(curve.points.len(), 11);
        assert!((curve.points[3].0 - 0.3).abs() < 1e-12);
        // PGR = (acc − 0.5) / 0.2: 0, 0.5, 1, 1.5 × 6, 1, 1. Trapezoids of width 0.1:
        // (0 + 0.5)/2 + (0.5 + 1)/2 + (1 + 1.5)/2 + 1.5 × 5 + (1.5 + 1)/2 + 1 = 12.0 → × 0.1.
        let apgr = curve.apgr(cloud_only).expect("a gap");
        assert!((apgr - 1.2).abs() < 1e-12, "{apgr}");
        assert_eq!(curve.call_rate_to_recover(cloud_only, 0.5), Some(0.1));
        assert_eq!(curve.call_rate_to_recover(cloud_only, 1.0), Some(0.2));
        assert_eq!(curve.call_rate_to_recover(cloud_only, 2.0), None);
        // No gap to recover: nothing to report.
        assert_eq!(curve.apgr(0.5), None);
        // A partial ranking stops; the area is continued at its last value.
        let short = RoutingCurve::new(&outcomes, &[5]);
        assert_eq!(short.points, vec![(0.0, 0.5), (0.1, 0.6)]);
        let area = short.apgr(cloud_only).expect("gap");
        assert!((area - (0.1 * 0.25 + 0.9 * 0.5)).abs() < 1e-12, "{area}");
    }

    #[test]
    fn rankings_are_seeded_and_the_policy_ranks_its_asks_first() {
        let outcomes = ten();
        let policy = ranking_for_policy(&outcomes, 3);
        let mut first: Vec<usize> = policy[..4].to_vec();
        first.sort_unstable();
        assert_eq!(first, [5, 6, 7, 8]);
        assert_eq!(policy, ranking_for_policy(&outcomes, 3));
        assert_ne!(ranking_random(10, 1), ranking_random(10, 2));
        let mut all = ranking_random(10, 1);
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(ranking_by_scores(&[0.1, 0.9, 0.5, 0.9]), [1, 3, 2, 0]);
    }
}
