//! Countdown problems: given numbers and a target reachable with `+ - * /`, each number used
//! once. A problem is made backwards, so it is always solvable: draw the numbers, combine
//! random pairs until one value is left, and that value is the target.

use rand::Rng;
use serde::Serialize;

/// The most numbers a level may have: the simulated cloud searches up to six (the classic
/// game's size), so larger problems would go unanswered there.
pub const MAX_NUMBERS: usize = 6;

/// The largest given number and the largest value any step of a generated solution reaches,
/// which keeps targets in the range people play (and models can reach) instead of products of
/// five numbers.
pub const MAX_VALUE: u32 = 1000;

/// A checked Countdown level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CountdownLevel {
    /// How many numbers each problem gives.
    pub numbers: usize,
    /// The numbers are drawn uniformly from `1..=max_number`.
    pub max_number: u32,
}

/// A sub-expression of a solution, with what rendering its parent needs.
struct Expr {
    text: String,
    value: i64,
    /// 3 for a number, 2 for `*` and `/`, 1 for `+` and `-`.
    precedence: u8,
}

impl CountdownLevel {
    /// Draws one problem: `(numbers, target, worked solution)`.
    pub(crate) fn draw(&self, rng: &mut impl Rng) -> (Vec<i64>, i64, String) {
        let numbers: Vec<i64> = (0..self.numbers)
            .map(|_| i64::from(rng.random_range(1..=self.max_number)))
            .collect();
        let mut pool: Vec<Expr> = numbers
            .iter()
            .map(|&n| Expr {
                text: n.to_string(),
                value: n,
                precedence: 3,
            })
            .collect();
        let mut steps = Vec::with_capacity(self.numbers - 1);
        while pool.len() > 1 {
            let a = pool.swap_remove(rng.random_range(0..pool.len()));
            let b = pool.swap_remove(rng.random_range(0..pool.len()));
            let (big, small) = if a.value >= b.value { (a, b) } else { (b, a) };
            let max = i64::from(MAX_VALUE);
            let mut choices = Vec::with_capacity(4);
            if big.value + small.value <= max {
                choices.push('+');
            }
            if big.value != small.value {
                choices.push('-');
            }
            if big.value * small.value <= max {
                choices.push('*');
            }
            if small.value > 1 && big.value % small.value == 0 {
                choices.push('/');
            }
            // Never empty: unequal values subtract, equal ones above 1 divide, and 1 + 1 fits.
            let op = choices[rng.random_range(0..choices.len())];
            let (value, precedence) = match op {
                '+' => (big.value + small.value, 1),
                '-' => (big.value - small.value, 1),
                '*' => (big.value * small.value, 2),
                _ => (big.value / small.value, 2),
            };
            steps.push(format!("{} {op} {} = {value}", big.value, small.value));
            let left = parenthesize(&big, big.precedence < precedence);
            let right_needs = small.precedence < precedence
                || (small.precedence == precedence && matches!(op, '-' | '/'));
            let right = parenthesize(&small, right_needs);
            pool.push(Expr {
                text: format!("{left} {op} {right}"),
                value,
                precedence,
            });
        }
        let answer = pool.pop().expect("at least two numbers, combined into one");
        let solution = format!(
            "<think>{}</think> <answer>{}</answer>",
            steps.join(", "),
            answer.text
        );
        (numbers, answer.value, solution)
    }
}

fn parenthesize(expr: &Expr, needed: bool) -> String {
    if needed {
        format!("({})", expr.text)
    } else {
        expr.text.clone()
    }
}

/// The question text, in the form `verify.countdown` and the simulated cloud parse.
pub(crate) fn question(numbers: &[i64], target: i64) -> String {
    format!(
        "Using the numbers {}, create an equation that equals {target}. You can use basic \
         arithmetic operations (+, -, *, /) and each number can only be used once.",
        list(numbers)
    )
}

/// The reference answer: `{"numbers": [74, 78, 36, 7], "target": 33}`, spaced as Python's
/// `json.dumps` writes it, as in the published Countdown sets.
pub(crate) fn answer(numbers: &[i64], target: i64) -> String {
    format!("{{\"numbers\": {}, \"target\": {target}}}", list(numbers))
}

fn list(numbers: &[i64]) -> String {
    let items: Vec<String> = numbers.iter().map(i64::to_string).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// An exact evaluator of `+ - * /` and parentheses over integers, independent of the
    /// generator: returns the value as a reduced fraction and the numbers used, in order.
    pub(crate) fn evaluate(text: &str) -> ((i128, i128), Vec<i64>) {
        let tokens: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut parser = Parser {
            tokens,
            at: 0,
            used: Vec::new(),
        };
        let value = parser.sum();
        assert_eq!(parser.at, parser.tokens.len(), "trailing text in {text}");
        (value, parser.used)
    }

    struct Parser {
        tokens: Vec<char>,
        at: usize,
        used: Vec<i64>,
    }

    fn reduce((n, d): (i128, i128)) -> (i128, i128) {
        assert_ne!(d, 0, "division by zero");
        let (mut a, mut b) = (n.abs(), d.abs());
        while b != 0 {
            (a, b) = (b, a % b);
        }
        let g = a.max(1) * d.signum();
        (n / g, d / g)
    }

    impl Parser {
        fn peek(&self) -> Option<char> {
            self.tokens.get(self.at).copied()
        }

        fn sum(&mut self) -> (i128, i128) {
            let mut acc = self.product();
            while let Some(op @ ('+' | '-')) = self.peek() {
                self.at += 1;
                let (n, d) = self.product();
                let n = if op == '+' { n } else { -n };
                acc = reduce((acc.0 * d + n * acc.1, acc.1 * d));
            }
            acc
        }

        fn product(&mut self) -> (i128, i128) {
            let mut acc = self.atom();
            while let Some(op @ ('*' | '/')) = self.peek() {
                self.at += 1;
                let (n, d) = self.atom();
                acc = if op == '*' {
                    reduce((acc.0 * n, acc.1 * d))
                } else {
                    reduce((acc.0 * d, acc.1 * n))
                };
            }
            acc
        }

        fn atom(&mut self) -> (i128, i128) {
            if self.peek() == Some('(') {
                self.at += 1;
                let value = self.sum();
                assert_eq!(self.peek(), Some(')'));
                self.at += 1;
                return value;
            }
            let start = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
            let digits: String = self.tokens[start..self.at].iter().collect();
            let n: i64 = digits.parse().expect("a number");
            self.used.push(n);
            (i128::from(n), 1)
        }
    }

    /// The text between `<answer>` and `</answer>`.
    pub(crate) fn answer_of(solution: &str) -> &str {
        let start = solution.find("<answer>").expect("answer tag") + "<answer>".len();
        &solution[start..solution.find("</answer>").expect("closing tag")]
    }

    proptest! {
        #[test]
        fn solutions_use_every_number_once_and_reach_the_target(
            numbers in 2..=MAX_NUMBERS,
            max_number in 2..=MAX_VALUE,
            seed in any::<u64>(),
        ) {
            let level = CountdownLevel { numbers, max_number };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (given, target, solution) = level.draw(&mut rng);
            prop_assert_eq!(given.len(), numbers);
            prop_assert!(given.iter().all(|&n| (1..=i64::from(max_number)).contains(&n)));
            prop_assert!(target >= 1 && target <= i64::from(MAX_VALUE), "{}", target);
            let (value, mut used) = evaluate(answer_of(&solution));
            prop_assert_eq!(value, (i128::from(target), 1), "{}", solution);
            let mut given = given;
            given.sort_unstable();
            used.sort_unstable();
            prop_assert_eq!(used, given);
        }
    }

    #[test]
    fn evaluator_and_text_forms() {
        assert_eq!(evaluate("78 - 74 + (36 - 7)").0, (33, 1));
        assert_eq!(evaluate("100 / (10 / 2)").0, (20, 1));
        assert_eq!(evaluate("100 / 10 / 2").0, (5, 1));
        let question = question(&[74, 78, 36, 7], 33);
        assert_eq!(
            question,
            "Using the numbers [74, 78, 36, 7], create an equation that equals 33. You can use \
             basic arithmetic operations (+, -, *, /) and each number can only be used once."
        );
        assert_eq!(
            answer(&[74, 78, 36, 7], 33),
            r#"{"numbers": [74, 78, 36, 7], "target": 33}"#
        );
    }
}
