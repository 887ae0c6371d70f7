//! The Countdown oracle: find the problem in a question, then search every way of combining
//! its numbers (each once, all of them) with `+ - * /` in exact arithmetic for the target.
//!
//! Expressions are written in the grammar `verify.countdown` accepts (no unary minus, no
//! numbers but the given ones), with only the parentheses precedence needs.

use std::collections::HashSet;

use tandem_stages::verify::CountdownProblem;

use super::arith::{self, Rational};

/// Problems with more numbers than this are not searched (six numbers is already ~10⁷
/// combinations before pruning, the classic game's size).
pub const MAX_NUMBERS: usize = 6;

/// The most search steps one problem gets (both passes together): about 65 ms in a release
/// build. Four numbers take about 1,400 steps at most and five about 30,000; six unsolvable
/// numbers would take a third of a second and stall the server, so such a search stops here
/// and the reply is that no way was found.
const MAX_STEPS: usize = 200_000;

/// Words after which the target is written (`equals 65`, `equal to 65`, `target 65`, …).
const TARGET_WORDS: [&str; 6] = [
    "equals",
    "equal to",
    "target",
    "result in",
    "results in",
    "evaluates to",
];

/// Words that may sit between a target word and the number (`target number is: 65`).
const FILLER_WORDS: [&str; 6] = ["number", "value", "is", "of", "the", "="];

/// The Countdown problem in a question, if it has one: the first `[…]` list of non-negative
/// integers, and the integer after a target word (one after the list is preferred).
pub fn problem_in(question: &str) -> Option<CountdownProblem> {
    let (numbers, list_end) = number_list(question)?;
    if numbers.is_empty() || numbers.len() > MAX_NUMBERS {
        return None;
    }
    let lower = question.to_ascii_lowercase();
    let mut targets: Vec<(usize, i64)> = TARGET_WORDS
        .iter()
        .flat_map(|word| lower.match_indices(word).map(|(at, w)| (at, at + w.len())))
        .filter_map(|(at, end)| Some((at, integer_after(&lower[end..])?)))
        .collect();
    targets.sort_unstable_by_key(|&(at, _)| (at < list_end, at));
    let target = targets.first()?.1;
    Some(CountdownProblem { numbers, target })
}

/// The first bracketed list of integers, and the byte offset just past it.
fn number_list(text: &str) -> Option<(Vec<i64>, usize)> {
    let mut from = 0;
    while let Some(open) = text[from..].find('[').map(|i| from + i) {
        let close = open + text[open..].find(']')?;
        let numbers: Option<Vec<i64>> = text[open + 1..close]
            .split(',')
            .map(|n| n.trim().parse::<u32>().ok().map(i64::from))
            .collect();
        if let Some(numbers) = numbers {
            return Some((numbers, close + 1));
        }
        from = open + 1;
    }
    None
}

/// The integer at the start of `text`, after spaces, `:` and filler words.
fn integer_after(text: &str) -> Option<i64> {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ':');
        let filler = FILLER_WORDS.iter().find(|w| {
            rest.strip_prefix(**w)
                .is_some_and(|after| !after.starts_with(|c: char| c.is_ascii_alphanumeric()))
        });
        match filler {
            Some(word) => rest = &rest[word.len()..],
            None => break,
        }
    }
    let sign = usize::from(rest.starts_with('-'));
    let digits = rest[sign..].bytes().take_while(u8::is_ascii_digit).count();
    let after = &rest[sign + digits..];
    // `equals 6.5` is not an integer target; `equals 65.` ends a sentence.
    let decimal = after.starts_with('.') && after[1..].starts_with(|c: char| c.is_ascii_digit());
    if digits == 0 || decimal {
        return None;
    }
    rest[..sign + digits].parse().ok()
}

/// An expression that uses every number once and equals the target, if there is one.
pub fn solve(problem: &CountdownProblem) -> Option<String> {
    if problem.numbers.is_empty() || problem.numbers.len() > MAX_NUMBERS {
        return None;
    }
    let mut items = [(Rational::integer(0), 0); MAX_NUMBERS];
    for (i, &n) in problem.numbers.iter().enumerate() {
        items[i] = (Rational::integer(n.into()), i);
    }
    // First as the game is played (every step a natural number), which reads the way a person
    // would write it; then with negative and fractional steps too.
    let mut steps_left = MAX_STEPS;
    [true, false].into_iter().find_map(|natural| {
        let mut search = Search {
            nodes: problem.numbers.iter().map(|&n| Node::Number(n)).collect(),
            target: Rational::integer(problem.target.into()),
            natural,
            dead: HashSet::new(),
            steps_left,
        };
        let root = search.find(&mut items, problem.numbers.len());
        steps_left = search.steps_left;
        Some(search.render(root?).0)
    })
}

/// A plausible wrong answer: an expression over the given numbers with another value (the
/// sum, else the product, else a chain of differences), or, when every one of those hits the
/// target, the sum with a number that was not given.
pub fn wrong_expression(problem: &CountdownProblem) -> String {
    let joined = |op: &str| {
        problem
            .numbers
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(op)
    };
    let target = Rational::integer(problem.target.into());
    let candidates = [joined(" + "), joined(" * "), joined(" - ")];
    for candidate in &candidates {
        if arith::parse(candidate).is_some_and(|e| e.value != Ok(target)) {
            return candidate.clone();
        }
    }
    format!("{} + 1", candidates[0])
}

/// One step of an expression, in an arena: leaves are the given numbers, in order.
#[derive(Clone, Copy, Debug)]
enum Node {
    Number(i64),
    Apply { op: u8, left: usize, right: usize },
}

/// A value still to be combined, and the arena node that computes it.
type Item = (Rational, usize);

struct Search {
    nodes: Vec<Node>,
    target: Rational,
    /// Whether every step must be a natural number (no negative or fractional step).
    natural: bool,
    /// Multisets of values (sorted, padded) known to reach no solution: the same values reached
    /// by another order of steps need no second search.
    dead: HashSet<ValuesKey>,
    /// Steps left before the search gives up.
    steps_left: usize,
}

/// A multiset of up to [`MAX_NUMBERS`] values, sorted, as `(numerator, denominator)` pairs.
type ValuesKey = [(i128, i128); MAX_NUMBERS];

/// Below this many values, a search is cheaper than the memo's lookup.
const MEMO_FROM: usize = 3;

impl Search {
    /// The root node of a solution from `items[..count]`, combining two of them at a time.
    /// The items are rewritten in place during the search and restored before it returns
    /// `None` (no allocation per step).
    fn find(&mut self, items: &mut [Item; MAX_NUMBERS], count: usize) -> Option<usize> {
        if count == 1 {
            return (items[0].0 == self.target).then_some(items[0].1);
        }
        if self.steps_left == 0 {
            return None;
        }
        self.steps_left -= 1;
        let key = (count >= MEMO_FROM).then(|| {
            let mut key = [(0, 0); MAX_NUMBERS];
            for (slot, (value, _)) in key.iter_mut().zip(&items[..count]) {
                *slot = (value.numer(), value.denom());
            }
            key[..count].sort_unstable();
            key
        });
        if key.as_ref().is_some_and(|key| self.dead.contains(key)) {
            return None;
        }
        for i in 0..count {
            for j in i + 1..count {
                let ((a, an), (b, bn)) = (items[i], items[j]);
                // The pair's result goes to slot i, the last item to slot j: the first
                // `count - 1` slots are then the items of the next step.
                items[j] = items[count - 1];
                let steps = [
                    (a.add(b), b'+', an, bn),
                    (a.mul(b), b'*', an, bn),
                    (a.sub(b), b'-', an, bn),
                    (b.sub(a), b'-', bn, an),
                    (a.div(b), b'/', an, bn),
                    (b.div(a), b'/', bn, an),
                ];
                for (value, op, left, right) in steps {
                    let Ok(value) = value else {
                        continue;
                    };
                    if self.natural && (!value.is_integer() || value.numer() < 0) {
                        continue;
                    }
                    let node = self.nodes.len();
                    self.nodes.push(Node::Apply { op, left, right });
                    items[i] = (value, node);
                    if let Some(root) = self.find(items, count - 1) {
                        return Some(root);
                    }
                    self.nodes.truncate(node);
                }
                items[i] = (a, an);
                items[j] = (b, bn);
            }
        }
        // A search cut short by the budget proved nothing.
        if let Some(key) = key
            && self.steps_left > 0
        {
            self.dead.insert(key);
        }
        None
    }

    /// The text of a node and its precedence (1: `+ -`, 2: `* /`, 3: a number).
    fn render(&self, node: usize) -> (String, u8) {
        match self.nodes[node] {
            Node::Number(n) => (n.to_string(), 3),
            Node::Apply { op, left, right } => {
                let precedence = if matches!(op, b'+' | b'-') { 1 } else { 2 };
                let (left, left_precedence) = self.render(left);
                let (right, right_precedence) = self.render(right);
                // Left operands need parentheses only under a tighter operator; right ones
                // also under the same non-associative one (a - (b + c), a / (b * c)).
                let left_parens = left_precedence < precedence;
                let right_parens = match op {
                    b'+' => false,
                    b'*' => right_precedence < 2,
                    _ => right_precedence <= precedence,
                };
                let wrap = |text: String, parens: bool| {
                    if parens { format!("({text})") } else { text }
                };
                (
                    format!(
                        "{} {} {}",
                        wrap(left, left_parens),
                        op as char,
                        wrap(right, right_parens)
                    ),
                    precedence,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tandem_stages::verify::{Outcome, check_expression};

    use super::*;

    fn problem(numbers: &[i64], target: i64) -> CountdownProblem {
        CountdownProblem {
            numbers: numbers.to_vec(),
            target,
        }
    }

    #[test]
    fn problems_are_found_in_varied_wordings() {
        let cases = [
            (
                "Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can \
                 use basic arithmetic operations (+, -, *, /) and each number can only be used once.",
                Some(problem(&[19, 36, 55, 7], 65)),
            ),
            (
                "Numbers: [3, 5, 7]. Target: 22. Use each number once.",
                Some(problem(&[3, 5, 7], 22)),
            ),
            (
                "Make an expression equal to 24 from [4, 7, 8, 8].",
                Some(problem(&[4, 7, 8, 8], 24)),
            ),
            (
                "The target number is 100; the numbers are [25, 50, 75, 3].",
                Some(problem(&[25, 50, 75, 3], 100)),
            ),
            (
                "Using [1, 2], write an expression that equals -1.",
                Some(problem(&[1, 2], -1)),
            ),
            ("What is 7953 + 3194?", None),
            ("Using [1, 2, 3], make something nice.", None),
            ("Using [a, b], create an equation that equals 5.", None),
            (
                "Using [1, 2, 3, 4, 5, 6, 7], create an equation that equals 5.",
                None,
            ),
            ("Using [2, 3], create an equation that equals 6.5.", None),
        ];
        for (question, expected) in cases {
            assert_eq!(problem_in(question), expected, "{question}");
        }
    }

    #[test]
    fn the_example_question_is_solved() {
        let p = problem(&[19, 36, 55, 7], 65);
        let solved = solve(&p).unwrap();
        assert_eq!(
            check_expression(&p, &solved).0,
            Outcome::Correct,
            "{solved}"
        );
    }

    #[test]
    fn fractional_steps_are_used_when_nothing_else_works() {
        // 24 from [1, 5, 5, 5] needs 5 * (5 - 1 / 5).
        let p = problem(&[1, 5, 5, 5], 24);
        let solved = solve(&p).unwrap();
        assert_eq!(
            check_expression(&p, &solved).0,
            Outcome::Correct,
            "{solved}"
        );
        assert!(solved.contains('/'), "{solved}");
    }

    #[test]
    fn expressions_carry_only_the_parentheses_precedence_needs() {
        let numbers = [Node::Number(5), Node::Number(2), Node::Number(3)];
        let render = |steps: &[(u8, usize, usize)]| {
            let mut nodes = numbers.to_vec();
            nodes.extend(
                steps
                    .iter()
                    .map(|&(op, left, right)| Node::Apply { op, left, right }),
            );
            let search = Search {
                nodes,
                target: Rational::integer(0),
                natural: false,
                dead: HashSet::new(),
                steps_left: 0,
            };
            search.render(search.nodes.len() - 1).0
        };
        assert_eq!(render(&[(b'-', 0, 1), (b'*', 3, 2)]), "(5 - 2) * 3");
        assert_eq!(render(&[(b'*', 1, 2), (b'+', 0, 3)]), "5 + 2 * 3");
        assert_eq!(render(&[(b'+', 1, 2), (b'-', 0, 3)]), "5 - (2 + 3)");
        assert_eq!(render(&[(b'-', 0, 1), (b'-', 3, 2)]), "5 - 2 - 3");
        assert_eq!(render(&[(b'-', 1, 2), (b'+', 0, 3)]), "5 + 2 - 3");
        assert_eq!(render(&[(b'*', 1, 2), (b'/', 0, 3)]), "5 / (2 * 3)");
        assert_eq!(render(&[(b'/', 1, 2), (b'*', 0, 3)]), "5 * 2 / 3");
        assert_eq!(render(&[(b'/', 0, 1), (b'/', 3, 2)]), "5 / 2 / 3");
    }

    /// A solvable problem: `count` random numbers combined by a random expression tree.
    fn random_solvable(rng: &mut ChaCha8Rng, count: usize) -> CountdownProblem {
        loop {
            let numbers: Vec<i64> = (0..count).map(|_| rng.random_range(1..=100)).collect();
            let mut values: Vec<Rational> = numbers
                .iter()
                .map(|&n| Rational::integer(n.into()))
                .collect();
            while values.len() > 1 {
                let a = values.swap_remove(rng.random_range(0..values.len()));
                let b = values.swap_remove(rng.random_range(0..values.len()));
                let combined = match rng.random_range(0..4) {
                    0 => a.add(b),
                    1 => a.sub(b),
                    2 => a.mul(b),
                    _ => a.div(b),
                };
                // A division by zero becomes a sum: every number stays in the expression.
                values.push(combined.or_else(|_| a.add(b)).expect("small sums fit"));
            }
            // Keep integer targets only (the game's), as an honest generator would.
            let Ok(target) = values[0].to_string().parse::<i64>() else {
                continue;
            };
            return CountdownProblem { numbers, target };
        }
    }

    #[test]
    fn random_solvable_problems_are_solved_300_seeded() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for round in 0..300 {
            let count = [2, 3, 4, 4, 4, 5][round % 6];
            let p = random_solvable(&mut rng, count);
            let expression = solve(&p).unwrap_or_else(|| panic!("no solution for {p:?}"));
            assert_eq!(
                check_expression(&p, &expression).0,
                Outcome::Correct,
                "{p:?}: {expression}"
            );
        }
    }

    #[test]
    fn six_number_problems_are_solved_3_seeded() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..3 {
            let p = random_solvable(&mut rng, 6);
            let expression = solve(&p).unwrap_or_else(|| panic!("no solution for {p:?}"));
            assert_eq!(check_expression(&p, &expression).0, Outcome::Correct);
        }
    }

    #[test]
    fn unsolvable_problems_have_no_solution() {
        assert_eq!(solve(&problem(&[1, 1, 1], 100)), None);
        assert_eq!(solve(&problem(&[2, 4], 7)), None);
        assert_eq!(solve(&problem(&[], 0)), None);
        // Six distinct numbers and an unreachable target: the step budget ends the search.
        let started = std::time::Instant::now();
        assert_eq!(solve(&problem(&[3, 7, 11, 13, 17, 19], 99_991)), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn wrong_expressions_use_the_numbers_and_miss_the_target() {
        for p in [
            problem(&[19, 36, 55, 7], 65),
            problem(&[2, 2], 4),
            problem(&[1, 1, 1], 3),
        ] {
            let wrong = wrong_expression(&p);
            assert_eq!(
                check_expression(&p, &wrong).0,
                Outcome::WrongValue,
                "{wrong}"
            );
        }
        // One number that is the target: the only expression over it is right.
        let only = problem(&[5], 5);
        assert_ne!(
            check_expression(&only, &wrong_expression(&only)).0,
            Outcome::Correct
        );
    }
}
