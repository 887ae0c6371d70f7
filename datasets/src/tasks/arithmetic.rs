//! Arithmetic problems: two operands of a level's digit count and one operator,
//! `What is 66 * 84?`, answered with the exact integer.

use rand::Rng;
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
    /// Digits of each operand: both are drawn uniformly from `10^(digits-1) ..= 10^digits - 1`.
    pub digits: u32,
    /// Operators, drawn uniformly.
    pub ops: Vec<Operator>,
}

impl ArithmeticLevel {
    /// The most operand digits: two 9-digit operands multiply to less than `i64::MAX`.
    pub const MAX_DIGITS: u32 = 9;

    /// Draws one problem: `(question, answer, worked solution)`.
    pub(crate) fn draw(&self, rng: &mut impl Rng) -> (String, i64, String) {
        let low = if self.digits == 1 {
            1
        } else {
            10_i64.pow(self.digits - 1)
        };
        let high = 10_i64.pow(self.digits) - 1;
        let a = rng.random_range(low..=high);
        let b = rng.random_range(low..=high);
        let op = self.ops[rng.random_range(0..self.ops.len())];
        let value = op.apply(a, b);
        let expression = format!("{a} {} {b}", op.symbol());
        let question = format!("What is {expression}?");
        let solution = format!("<think>{expression} = {value}</think> <answer>{value}</answer>");
        (question, value, solution)
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
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..8 {
                let (question, answer, solution) = level.draw(&mut rng);
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
}
