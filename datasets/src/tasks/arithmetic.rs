//! Arithmetic problems: operands of a level's digit count joined by operators, answered with the
//! exact integer. Two operands give `What is 66 * 84?`; more give a chain such as
//! `What is 3 + 5 - 6 + 4?`, worked left to right one step at a time
//! (`3 + 5 = 8, 8 - 6 = 2, 2 + 4 = 6`).
//!
//! A chain level can ask that every intermediate value (each step's result but the last, which
//! is the answer) stay within a range, or that some intermediate value leave it. A chain of
//! single digits whose intermediate values stay within `[0, 9]` is worked with the single-digit
//! table alone (`digit op digit`, whatever the answer); one that leaves it has to go on from a
//! number outside the table (`12 - 5`). Both kinds read the same (the same form, length and
//! operand range): which one a question is shows only when it is worked out, step by step.
//!
//! A level with `choices` asks which of several distinct numbers gives a value:
//! `Which of 3, 8, 5, 2 plus 4 is 9?` (answer 5). Its worked solution is a search that tries the
//! numbers in a random order until one fits, each try setting its value next to the target
//! (`8 + 4 = 12 vs 9, 5 + 4 = 9 vs 9`), so a model trained on
//! such solutions searches in an order of its own drawing: how long its search takes, and so
//! whether it finishes within its token budget, is decided while it works, not by the question.
//! With [`SearchOrder::Listed`] the solution tries the numbers in the question's order instead:
//! the same search every time, whose length shows only once the numbers are worked.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// A binary operator of arithmetic problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Operator {
    /// `+`
    #[serde(rename = "+")]
    Add,
    /// `-` (the answer may be negative)
    #[serde(rename = "-")]
    Sub,
    /// `*`
    #[serde(rename = "*")]
    Mul,
}

impl Operator {
    /// The symbol in questions and solutions.
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Add => "+",
            Operator::Sub => "-",
            Operator::Mul => "*",
        }
    }

    /// The word in search questions: `plus`, `minus`, `times`.
    pub fn word(self) -> &'static str {
        match self {
            Operator::Add => "plus",
            Operator::Sub => "minus",
            Operator::Mul => "times",
        }
    }

    /// `a op b`, exactly: operands below 10⁹ keep every result inside `i64`.
    pub fn apply(self, a: i64, b: i64) -> i64 {
        match self {
            Operator::Add => a + b,
            Operator::Sub => a - b,
            Operator::Mul => a * b,
        }
    }
}

impl std::str::FromStr for Operator {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "+" => Ok(Operator::Add),
            "-" => Ok(Operator::Sub),
            "*" => Ok(Operator::Mul),
            other => Err(format!(
                "unknown operator `{other}`; expected \"+\", \"-\" or \"*\""
            )),
        }
    }
}

/// A checked arithmetic level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArithmeticLevel {
    /// Digits of each operand: all are drawn uniformly from `10^(digits-1) ..= 10^digits - 1`
    /// (`1..=9` for one digit).
    pub digits: u32,
    /// Operators, drawn uniformly for each step.
    pub ops: Vec<Operator>,
    /// Operands per problem: 2 is one operation, more is a chain worked left to right.
    #[serde(skip_serializing_if = "is_two")]
    pub operands: usize,
    /// What the intermediate values (every step's result but the last) must do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediate: Option<Intermediate>,
    /// A search question instead of an expression: this many distinct numbers of the level's
    /// digits, of which exactly one gives the target (`Which of 3, 8, 5, 2 plus 4 is 9?`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<usize>,
    /// The order a search question's worked solution tries its numbers in.
    #[serde(skip_serializing_if = "SearchOrder::is_shuffled")]
    pub order: SearchOrder,
}

/// The order in which a search question's worked solution tries the listed numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchOrder {
    /// A random order drawn for each question: the model learns to search in an order of its
    /// own drawing, so how far its search gets is decided by its sampling.
    #[default]
    Shuffled,
    /// The order the question lists them in: the search is the same every time, and how far
    /// it must go (where the fitting number stands) shows only once the numbers are worked.
    Listed,
}

impl SearchOrder {
    fn is_shuffled(&self) -> bool {
        *self == SearchOrder::Shuffled
    }
}

impl std::str::FromStr for SearchOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<SearchOrder, String> {
        match s {
            "shuffled" => Ok(SearchOrder::Shuffled),
            "listed" => Ok(SearchOrder::Listed),
            other => Err(format!("must be `shuffled` or `listed`, found `{other}`")),
        }
    }
}

fn is_two(n: &usize) -> bool {
    *n == 2
}

/// A condition on a chain's intermediate values: the results of its steps but the last (the
/// answer), each of which the next step starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intermediate {
    /// Every intermediate value lies in `[low, high]`.
    Within([i64; 2]),
    /// At least one intermediate value lies outside `[low, high]`.
    Outside([i64; 2]),
}

impl Intermediate {
    /// Whether the intermediate `values` meet the condition.
    pub fn holds(self, values: &[i64]) -> bool {
        match self {
            Intermediate::Within([low, high]) => values.iter().all(|v| (low..=high).contains(v)),
            Intermediate::Outside([low, high]) => values.iter().any(|v| !(low..=high).contains(v)),
        }
    }
}

impl ArithmeticLevel {
    /// The single steps a chain of this level can take: `(question, answer, worked solution)`
    /// of `a op b` for every value `a` it carries into a step (an operand, or an intermediate
    /// value within its `within` range), every operand `b` and every operator, in that order.
    /// Empty without a `within` range.
    pub(crate) fn step_table(&self) -> Vec<(String, i64, String)> {
        let Some(Intermediate::Within([low, high])) = self.intermediate else {
            return Vec::new();
        };
        let (first, last) = self.operand_range();
        let mut table = Vec::new();
        for a in low.min(first)..=high.max(last) {
            for op in &self.ops {
                for b in first..=last {
                    let value = op.apply(a, b);
                    let expression = format!("{a} {} {b}", op.symbol());
                    table.push((
                        format!("What is {expression}?"),
                        value,
                        format!("<think>{expression} = {value}</think> <answer>{value}</answer>"),
                    ));
                }
            }
        }
        table
    }

    /// The smallest and largest operand.
    fn operand_range(&self) -> (i64, i64) {
        let low = if self.digits == 1 {
            1
        } else {
            10_i64.pow(self.digits - 1)
        };
        (low, 10_i64.pow(self.digits) - 1)
    }

    /// The most operand digits: two 9-digit operands multiply to less than `i64::MAX`.
    pub const MAX_DIGITS: u32 = 9;

    /// The most operands of a chain.
    pub const MAX_OPERANDS: usize = 8;

    /// Draws of a chain before a level whose `intermediate` condition is (nearly) never met is
    /// given up on.
    pub const MAX_DRAWS: usize = 100_000;

    /// The most numbers a search question lists.
    pub const MAX_CHOICES: usize = 9;

    /// How many distinct operands the level's digits allow (9 for one digit, 90 for two).
    pub fn distinct_operands(&self) -> i64 {
        let (low, high) = self.operand_range();
        high - low + 1
    }

    /// Draws one problem: `(question, answer, worked solution)`; `None` when
    /// [`Self::MAX_DRAWS`] chains in a row miss the `intermediate` condition.
    pub(crate) fn draw(&self, rng: &mut impl Rng) -> Option<(String, i64, String)> {
        if let Some(choices) = self.choices {
            return Some(self.draw_search(choices, rng));
        }
        let (low, high) = self.operand_range();
        for _ in 0..Self::MAX_DRAWS {
            let mut expression = String::new();
            let mut steps = Vec::with_capacity(self.operands - 1);
            let mut values = Vec::with_capacity(self.operands - 1);
            let mut value = rng.random_range(low..=high);
            expression.push_str(&value.to_string());
            for _ in 1..self.operands {
                let operand = rng.random_range(low..=high);
                let op = self.ops[rng.random_range(0..self.ops.len())];
                let next = op.apply(value, operand);
                steps.push(format!("{value} {} {operand} = {next}", op.symbol()));
                expression.push_str(&format!(" {} {operand}", op.symbol()));
                values.push(next);
                value = next;
            }
            let intermediate = &values[..values.len() - 1];
            if self.intermediate.is_none_or(|c| c.holds(intermediate)) {
                let question = format!("What is {expression}?");
                let solution = format!(
                    "<think>{}</think> <answer>{value}</answer>",
                    steps.join(", ")
                );
                return Some((question, value, solution));
            }
        }
        None
    }

    /// A search question over `choices` distinct numbers (at most [`Self::distinct_operands`]):
    /// the numbers, an operator and an operand, and the target that exactly one number reaches
    /// (distinct numbers give distinct values under `+`, `-` and `*` by a non-zero operand).
    /// The solution tries the numbers in [`Self::order`], up to the one that fits; each try
    /// writes the target after its value (`12 vs 9`), so that whether to go on is decided by
    /// two numbers side by side rather than by one far back in the question.
    fn draw_search(&self, choices: usize, rng: &mut impl Rng) -> (String, i64, String) {
        let (low, high) = self.operand_range();
        let mut numbers: Vec<i64> = Vec::with_capacity(choices);
        while numbers.len() < choices {
            let n = rng.random_range(low..=high);
            if !numbers.contains(&n) {
                numbers.push(n);
            }
        }
        let op = self.ops[rng.random_range(0..self.ops.len())];
        let operand = rng.random_range(low..=high);
        let answer = numbers[rng.random_range(0..choices)];
        let target = op.apply(answer, operand);
        let mut order = numbers.clone();
        if self.order == SearchOrder::Shuffled {
            order.shuffle(rng);
        }
        let found = order.iter().position(|&n| n == answer).expect("listed");
        let tries: Vec<String> = order[..=found]
            .iter()
            .map(|&n| {
                let value = op.apply(n, operand);
                format!("{n} {} {operand} = {value} vs {target}", op.symbol())
            })
            .collect();
        let listed: Vec<String> = numbers.iter().map(i64::to_string).collect();
        let question = format!(
            "Which of {} {} {operand} is {target}?",
            listed.join(", "),
            op.word()
        );
        let solution = format!(
            "<think>{}</think> <answer>{answer}</answer>",
            tries.join(", ")
        );
        (question, answer, solution)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Reads `What is A op B?` back and computes it in i128, independently of [`Operator`].
    fn oracle(question: &str) -> (i128, i128, char, i128) {
        let expr = question
            .strip_prefix("What is ")
            .and_then(|q| q.strip_suffix('?'))
            .expect("question form");
        let parts: Vec<&str> = expr.split(' ').collect();
        assert_eq!(parts.len(), 3, "{question}");
        let (a, b): (i128, i128) = (parts[0].parse().expect("a"), parts[2].parse().expect("b"));
        let op = parts[1].chars().next().expect("op");
        let value = match op {
            '+' => a + b,
            '-' => a - b,
            '*' => a * b,
            other => panic!("operator {other}"),
        };
        (a, b, op, value)
    }

    proptest! {
        #[test]
        fn answers_are_exact_and_operands_have_the_digits(
            digits in 1..=ArithmeticLevel::MAX_DIGITS,
            seed in any::<u64>(),
        ) {
            let level = ArithmeticLevel {
                digits,
                ops: vec![Operator::Add, Operator::Sub, Operator::Mul],
                operands: 2,
                intermediate: None,
                choices: None,
                order: SearchOrder::Shuffled,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..8 {
                let (question, answer, solution) = level.draw(&mut rng).expect("no condition");
                let (a, b, op, value) = oracle(&question);
                prop_assert_eq!(i128::from(answer), value);
                for operand in [a, b] {
                    prop_assert_eq!(operand.to_string().len(), digits as usize);
                }
                let expected = format!("<think>{a} {op} {b} = {value}</think> <answer>{value}</answer>");
                prop_assert_eq!(solution, expected);
            }
        }
    }

    /// Works `What is a op b op c …?` out left to right, independently of the generator:
    /// `(answer, intermediate values, operands)`.
    fn chain_oracle(question: &str) -> (i64, Vec<i64>, Vec<i64>) {
        let expr = question
            .strip_prefix("What is ")
            .and_then(|q| q.strip_suffix('?'))
            .expect("question form");
        let tokens: Vec<&str> = expr.split(' ').collect();
        let mut value: i64 = tokens[0].parse().expect("operand");
        let mut operands = vec![value];
        let mut values = Vec::new();
        for pair in tokens[1..].chunks(2) {
            let operand: i64 = pair[1].parse().expect("operand");
            operands.push(operand);
            value = match pair[0] {
                "+" => value + operand,
                "-" => value - operand,
                other => panic!("operator {other} in a chain"),
            };
            values.push(value);
        }
        (value, values, operands)
    }

    fn chain(operands: usize, intermediate: Option<Intermediate>) -> ArithmeticLevel {
        ArithmeticLevel {
            digits: 1,
            ops: vec![Operator::Add, Operator::Sub],
            operands,
            intermediate,
            choices: None,
            order: SearchOrder::Shuffled,
        }
    }

    proptest! {
        #[test]
        fn chains_are_worked_left_to_right_and_meet_their_condition(
            operands in 3..=ArithmeticLevel::MAX_OPERANDS,
            within in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let condition = match within {
                true => Intermediate::Within([0, 9]),
                false => Intermediate::Outside([0, 9]),
            };
            let level = chain(operands, Some(condition));
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..8 {
                let (question, answer, solution) = level.draw(&mut rng).expect("reachable");
                let (value, values, given) = chain_oracle(&question);
                prop_assert_eq!(answer, value);
                prop_assert_eq!(given.len(), operands);
                prop_assert!(given.iter().all(|n| (1..=9).contains(n)), "{}", question);
                // Intermediate values: every step's result but the answer.
                let inside = values[..values.len() - 1].iter().all(|v| (0..=9).contains(v));
                prop_assert_eq!(inside, within, "{}", question);
                // One step per operation, each `previous op operand = value`.
                let think = solution
                    .strip_prefix("<think>")
                    .and_then(|s| s.split_once("</think> "))
                    .expect("worked solution");
                let steps: Vec<&str> = think.0.split(", ").collect();
                prop_assert_eq!(steps.len(), operands - 1);
                let mut previous = given[0];
                for (i, step) in steps.iter().enumerate() {
                    let (left, result) = step.split_once(" = ").expect("a step");
                    prop_assert!(left.starts_with(&format!("{previous} ")), "{}", step);
                    prop_assert!(left.ends_with(&format!(" {}", given[i + 1])), "{}", step);
                    prop_assert_eq!(result.parse::<i64>().ok(), Some(values[i]));
                    previous = values[i];
                }
                prop_assert_eq!(think.1, format!("<answer>{answer}</answer>"));
            }
        }
    }

    proptest! {
        #[test]
        fn search_questions_have_one_answer_and_a_search_that_ends_on_it(
            choices in 2..=ArithmeticLevel::MAX_CHOICES,
            op in prop::sample::select(vec![Operator::Add, Operator::Sub, Operator::Mul]),
            order in prop::sample::select(vec![SearchOrder::Shuffled, SearchOrder::Listed]),
            seed in any::<u64>(),
        ) {
            let level = ArithmeticLevel {
                digits: 1,
                ops: vec![op],
                operands: 2,
                intermediate: None,
                choices: Some(choices),
                order,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..8 {
                let (question, answer, solution) = level.draw(&mut rng).expect("no condition");
                // Read back independently: `Which of a, b, c <word> k is t?`.
                let body = question
                    .strip_prefix("Which of ")
                    .and_then(|q| q.strip_suffix('?'))
                    .expect("question form");
                let (left, target) = body.rsplit_once(" is ").expect("target");
                let target: i64 = target.parse().expect("target");
                let words: Vec<&str> = left.rsplitn(3, ' ').collect();
                let operand: i64 = words[0].parse().expect("operand");
                prop_assert_eq!(words[1], op.word());
                let numbers: Vec<i64> =
                    words[2].split(", ").map(|n| n.parse().expect("number")).collect();
                prop_assert_eq!(numbers.len(), choices);
                let fit = |n: i64| match words[1] {
                    "plus" => n + operand,
                    "minus" => n - operand,
                    _ => n * operand,
                } == target;
                let fitting: Vec<i64> = numbers.iter().copied().filter(|&n| fit(n)).collect();
                prop_assert_eq!(fitting, vec![answer]);
                // The search: distinct listed numbers, each with its value, ending on the answer.
                let (think, rest) = solution
                    .strip_prefix("<think>")
                    .and_then(|s| s.split_once("</think> "))
                    .expect("worked solution");
                prop_assert_eq!(rest, format!("<answer>{answer}</answer>"));
                let tries: Vec<&str> = think.split(", ").collect();
                let mut tried = Vec::new();
                for (i, step) in tries.iter().enumerate() {
                    let (left, value) = step.split_once(" = ").expect("a try");
                    let value = value
                        .strip_suffix(&format!(" vs {target}"))
                        .expect("the target beside the value");
                    let n: i64 = left.split(' ').next().unwrap().parse().expect("number");
                    prop_assert_eq!(left, format!("{n} {} {operand}", op.symbol()));
                    prop_assert!(numbers.contains(&n) && !tried.contains(&n), "{}", solution);
                    if order == SearchOrder::Listed {
                        prop_assert_eq!(n, numbers[i], "listed order: {}", solution);
                    }
                    prop_assert_eq!(value.parse::<i64>().ok(), Some(op.apply(n, operand)));
                    prop_assert_eq!(fit(n), i + 1 == tries.len(), "{}", solution);
                    tried.push(n);
                }
            }
        }
    }

    #[test]
    fn search_orders_vary_so_the_answer_is_not_always_tried_first() {
        let level = ArithmeticLevel {
            digits: 1,
            ops: vec![Operator::Add],
            operands: 2,
            intermediate: None,
            choices: Some(5),
            order: SearchOrder::Shuffled,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let lengths: Vec<usize> = (0..500)
            .map(|_| level.draw(&mut rng).unwrap().2.matches(" = ").count())
            .collect();
        // A uniform order puts the answer at each of the 5 places a fifth of the time.
        for place in 1..=5 {
            let share = lengths.iter().filter(|&&l| l == place).count() as f64 / 500.0;
            assert!((0.13..0.27).contains(&share), "place {place}: {share}");
        }
    }

    #[test]
    fn an_unreachable_condition_gives_up_instead_of_looping() {
        // With `+` only, the first intermediate value of 1..=9 operands is at least 2: never
        // within [0, 1].
        let level = ArithmeticLevel {
            ops: vec![Operator::Add],
            ..chain(4, Some(Intermediate::Within([0, 1])))
        };
        assert_eq!(level.draw(&mut ChaCha8Rng::seed_from_u64(1)), None);
    }
}
