//! `verify.countdown`: the Countdown task (PAPER.md, Template I). An answer is correct when its
//! last `<answer>…</answer>` block holds an arithmetic expression that uses every given number
//! exactly once and equals the target, computed with exact rationals. Judges every sample, and
//! the cloud answer if present.
//!
//! The rule follows the TinyZero countdown reward (all numbers must be used, each once), but
//! parses the expression with its own grammar instead of `eval`, so what is accepted is exactly
//! what is documented: integers, `+ - * /`, parentheses and whitespace, with an optional
//! trailing `= <number>` that is ignored (`mode: lenient`, the default) or makes the answer a
//! `parse_error` (`mode: tinyzero`, as TinyZero's reward, whose allowed characters exclude
//! `=`, judges it).

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group, PromptRecord};

use crate::contract::{BuildContext, Built, GroupStage, StepContext};
use crate::registry::StageConfig;
use crate::verify::{Judgement, judge_group};
use crate::{Result, StageError};

/// Answers longer than this (in characters) are a `parse_error`: no real Countdown expression is
/// near it, and it bounds the parser's work on adversarial output.
pub const MAX_ANSWER_CHARS: usize = 1_000;

/// Parentheses nested deeper than this are a `parse_error`; it bounds the parser's recursion.
pub const MAX_DEPTH: usize = 64;

/// Parameters of `verify.countdown`. The numbers and the target come from the prompt itself
/// (see [`CountdownProblem::from_prompt`]), so nothing has to be mapped.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountdownConfig {
    /// The tags around the final answer, `[open, close]` (default `["<answer>", "</answer>"]`).
    #[serde(default = "default_answer_tags")]
    pub answer: [String; 2],
    /// What a trailing `= <number>` means (default `lenient`: ignored, since the expression
    /// before it is what is judged; `tinyzero`: the answer is not an expression and is wrong,
    /// so rewards match TinyZero's and papers built on it).
    #[serde(default)]
    pub mode: CountdownMode,
}

/// How strictly an answer must be a bare expression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountdownMode {
    /// `(1+2)*3 = 9` is judged as `(1+2)*3`; the tail is ignored, even when it lies. The
    /// default: small models often write the equation out, and the expression is the answer.
    #[default]
    Lenient,
    /// `(1+2)*3 = 9` is a `parse_error`, as in TinyZero's countdown reward.
    Tinyzero,
}

fn default_answer_tags() -> [String; 2] {
    ["<answer>".into(), "</answer>".into()]
}

impl Default for CountdownConfig {
    fn default() -> Self {
        CountdownConfig {
            answer: default_answer_tags(),
            mode: CountdownMode::default(),
        }
    }
}

impl StageConfig for CountdownConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Group(Box::new(CountdownVerifier::new(self)?)))
    }
}

/// A Countdown problem: the numbers to combine and the value to reach.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CountdownProblem {
    /// The given numbers (a multiset: each occurrence must be used once).
    pub numbers: Vec<i64>,
    /// The value the expression must equal.
    pub target: i64,
}

impl CountdownProblem {
    /// The problem of a prompt: from its reference answer when that is JSON like
    /// `{"numbers": [..], "target": n}`, else from the question text.
    ///
    /// ```
    /// use tandem_stages::verify::CountdownProblem;
    /// let q = "Using the numbers [74, 78, 36, 7], create an equation that equals 33.";
    /// let p = CountdownProblem::from_question(q).unwrap();
    /// assert_eq!((p.numbers, p.target), (vec![74, 78, 36, 7], 33));
    /// ```
    pub fn from_prompt(prompt: &PromptRecord) -> Option<CountdownProblem> {
        prompt
            .answer
            .as_deref()
            .and_then(CountdownProblem::from_answer_json)
            .or_else(|| CountdownProblem::from_question(&prompt.question))
    }

    /// Reads `{"numbers": [..], "target": n}` (other keys are ignored); `None` if it is not that.
    pub fn from_answer_json(answer: &str) -> Option<CountdownProblem> {
        let problem: CountdownProblem = serde_json::from_str(answer).ok()?;
        (!problem.numbers.is_empty()).then_some(problem)
    }

    /// Reads the question form `… numbers [74, 78, 36, 7] … equals 33 …`: the numbers are the
    /// first `[...]`, the target the integer after the first `equals` that follows it.
    pub fn from_question(question: &str) -> Option<CountdownProblem> {
        let open = question.find('[')?;
        let close = open + question[open..].find(']')?;
        let numbers = question[open + 1..close]
            .split(',')
            .map(|n| n.trim().parse::<i64>().ok())
            .collect::<Option<Vec<_>>>()?;
        let after = &question[close..];
        let rest = after[after.find("equals")? + "equals".len()..].trim_start();
        let sign = usize::from(rest.starts_with('-'));
        let digits = rest[sign..].bytes().take_while(u8::is_ascii_digit).count();
        let target = rest[..sign + digits].parse::<i64>().ok()?;
        Some(CountdownProblem { numbers, target })
    }
}

/// The verdict on one expression; [`Outcome::method`] is what `VerdictRecord.method` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Uses every number once and equals the target.
    Correct,
    /// Uses every number once but has another value.
    WrongValue,
    /// Does not use the given numbers exactly once each (one missing, reused or foreign).
    WrongNumbers,
    /// Not an expression of the accepted grammar (or too long, or nested too deep).
    ParseError,
    /// No answer block was found.
    NoAnswer,
    /// Divides by zero somewhere.
    DivByZero,
    /// An intermediate value does not fit the exact arithmetic (`i128` fractions).
    Overflow,
}

impl Outcome {
    /// The name stored in `VerdictRecord.method`.
    pub fn method(self) -> &'static str {
        match self {
            Outcome::Correct => "correct",
            Outcome::WrongValue => "wrong_value",
            Outcome::WrongNumbers => "wrong_numbers",
            Outcome::ParseError => "parse_error",
            Outcome::NoAnswer => "no_answer",
            Outcome::DivByZero => "div_by_zero",
            Outcome::Overflow => "overflow",
        }
    }
}

/// Judges an expression (the text inside the answer tags) against a problem. Returns the outcome
/// and, when the text parses, the expression with whitespace and any `= n` tail removed.
///
/// Checks run in this order: grammar, numbers used, division by zero / overflow, value.
///
/// ```
/// use tandem_stages::verify::{CountdownProblem, Outcome, check_expression};
/// let p = CountdownProblem { numbers: vec![74, 78, 36, 7], target: 33 };
/// let (outcome, normalized) = check_expression(&p, " 78 - 74 + (36 - 7) = 33");
/// assert_eq!(outcome, Outcome::Correct);
/// assert_eq!(normalized.as_deref(), Some("78-74+(36-7)"));
/// assert_eq!(check_expression(&p, "74 - 78 + 36 + 7").0, Outcome::WrongValue);
/// assert_eq!(check_expression(&p, "78 - 74 + 36 - 7 + 0").0, Outcome::WrongNumbers);
/// assert_eq!(check_expression(&p, "78 - 74 + 36 - (-7)").0, Outcome::ParseError);
/// ```
pub fn check_expression(problem: &CountdownProblem, expression: &str) -> (Outcome, Option<String>) {
    check_expression_in(CountdownMode::Lenient, problem, expression)
}

/// [`check_expression`] in a given mode: in [`CountdownMode::Tinyzero`] an `= n` tail makes
/// the answer a `parse_error`.
///
/// ```
/// use tandem_stages::verify::{CountdownMode, CountdownProblem, Outcome, check_expression_in};
/// let p = CountdownProblem { numbers: vec![1, 2, 3], target: 9 };
/// let strict = |e| check_expression_in(CountdownMode::Tinyzero, &p, e).0;
/// assert_eq!(strict("(1+2)*3"), Outcome::Correct);
/// assert_eq!(strict("(1+2)*3 = 9"), Outcome::ParseError);
/// ```
pub fn check_expression_in(
    mode: CountdownMode,
    problem: &CountdownProblem,
    expression: &str,
) -> (Outcome, Option<String>) {
    let Ok(parsed) = parse(expression, mode) else {
        return (Outcome::ParseError, None);
    };
    let mut used = parsed.literals;
    let mut given: Vec<Option<i128>> = problem.numbers.iter().map(|&n| Some(n.into())).collect();
    used.sort_unstable();
    given.sort_unstable();
    let outcome = if used != given {
        Outcome::WrongNumbers
    } else {
        match parsed.value {
            Err(Arith::DivByZero) => Outcome::DivByZero,
            Err(Arith::Overflow) => Outcome::Overflow,
            Ok(value) if value == Rational::integer(problem.target.into()) => Outcome::Correct,
            Ok(_) => Outcome::WrongValue,
        }
    };
    (outcome, Some(parsed.normalized))
}

/// Judges Countdown answers.
pub struct CountdownVerifier {
    config: CountdownConfig,
}

impl CountdownVerifier {
    /// A verifier with these parameters, once they are checked.
    pub fn new(config: CountdownConfig) -> Result<CountdownVerifier> {
        // An empty tag would match everywhere and silently judge the whole text.
        for (i, tag) in config.answer.iter().enumerate() {
            if tag.is_empty() {
                return Err(StageError::Params {
                    path: format!("answer[{i}]"),
                    message: "the answer tags must not be empty".into(),
                });
            }
        }
        Ok(CountdownVerifier { config })
    }

    /// The text of the last complete answer block in `text`: the last closing tag and the
    /// nearest opening tag before it (as a regex's last non-overlapping match would give), so a
    /// response cut off inside a later block still yields its last finished answer.
    pub fn extract<'t>(&self, text: &'t str) -> Option<&'t str> {
        let [open, close] = &self.config.answer;
        let end = text.rfind(close.as_str())?;
        let start = text[..end].rfind(open.as_str())? + open.len();
        Some(&text[start..end])
    }

    /// Judges one response against a problem.
    pub fn judge(&self, problem: &CountdownProblem, text: &str) -> Judgement {
        let extracted = self.extract(text);
        let (outcome, normalized) = match extracted {
            Some(answer) => check_expression_in(self.config.mode, problem, answer),
            None => (Outcome::NoAnswer, None),
        };
        Judgement {
            correct: outcome == Outcome::Correct,
            extracted: extracted.map(str::to_owned),
            normalized,
            method: outcome.method().to_owned(),
        }
    }
}

impl GroupStage for CountdownVerifier {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Prompt, Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Verdicts])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        for group in groups {
            let Some(problem) = CountdownProblem::from_prompt(&group.prompt) else {
                group.push_error(
                    &ctx.stage_id,
                    None,
                    "bad_prompt",
                    "no Countdown problem in the prompt: the answer is not JSON \
                     {\"numbers\": [..], \"target\": n} and the question has no \
                     `[n1, n2, ...] ... equals n`",
                );
                continue;
            };
            let verdicts = judge_group(group, |text| self.judge(&problem, text));
            group.verdicts.extend(verdicts);
        }
        Ok(())
    }
}

/// Why exact arithmetic has no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arith {
    DivByZero,
    Overflow,
}

/// An exact fraction: reduced, denominator positive, so equality is structural.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rational {
    num: i128,
    den: i128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rational {
    fn integer(n: i128) -> Rational {
        Rational { num: n, den: 1 }
    }

    fn new(num: i128, den: i128) -> Result<Rational, Arith> {
        if den == 0 {
            return Err(Arith::DivByZero);
        }
        // gcd of two i128 magnitudes can be 2^127 (both i128::MIN), which is not an i128.
        let g = i128::try_from(gcd(num.unsigned_abs(), den.unsigned_abs()))
            .map_err(|_| Arith::Overflow)?;
        let (mut num, mut den) = (num / g, den / g);
        if den < 0 {
            num = num.checked_neg().ok_or(Arith::Overflow)?;
            den = den.checked_neg().ok_or(Arith::Overflow)?;
        }
        Ok(Rational { num, den })
    }

    fn apply(self, op: u8, rhs: Rational) -> Result<Rational, Arith> {
        let mul = |a: i128, b: i128| a.checked_mul(b).ok_or(Arith::Overflow);
        match op {
            b'+' | b'-' => {
                let left = mul(self.num, rhs.den)?;
                let right = mul(rhs.num, self.den)?;
                let num = if op == b'+' {
                    left.checked_add(right)
                } else {
                    left.checked_sub(right)
                };
                Rational::new(num.ok_or(Arith::Overflow)?, mul(self.den, rhs.den)?)
            }
            b'*' => Rational::new(mul(self.num, rhs.num)?, mul(self.den, rhs.den)?),
            _ => {
                if rhs.num == 0 {
                    return Err(Arith::DivByZero);
                }
                Rational::new(mul(self.num, rhs.den)?, mul(self.den, rhs.num)?)
            }
        }
    }
}

/// A value, or why it has none. Kept apart from syntax errors: a division by zero is only
/// reported once the expression is known to parse and to use the right numbers.
type Value = Result<Rational, Arith>;

/// A parsed expression: its value, the literals it used (`None` for one too large for `i128`,
/// which can never be a given number), and its normalised text.
struct Parsed {
    value: Value,
    literals: Vec<Option<i128>>,
    normalized: String,
}

/// The text is not in the grammar (or is too long or too deep): the verdict is `parse_error`.
#[derive(Debug)]
struct SyntaxError;

fn parse(text: &str, mode: CountdownMode) -> Result<Parsed, SyntaxError> {
    if text.chars().count() > MAX_ANSWER_CHARS {
        return Err(SyntaxError);
    }
    let mut parser = Parser {
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
        literals: Vec::new(),
    };
    let value = parser.expr()?;
    parser.skip_ws();
    let expression_end = parser.pos;
    if parser.peek() == Some(b'=') && mode == CountdownMode::Lenient {
        parser.pos += 1;
        parser.skip_ws();
        if parser.peek() == Some(b'-') {
            parser.pos += 1;
        }
        if parser.digits() == 0 {
            return Err(SyntaxError);
        }
        parser.skip_ws();
    }
    if parser.pos != parser.bytes.len() {
        return Err(SyntaxError);
    }
    let normalized = text[..expression_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    Ok(Parsed {
        value,
        literals: parser.literals,
        normalized,
    })
}

/// Recursive descent over bytes (the grammar is ASCII; any other byte is a syntax error).
/// Only parentheses recurse, and [`MAX_DEPTH`] caps them; operator chains are loops.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    literals: Vec<Option<i128>>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Consumes a run of digits and returns how many there were.
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Result<Value, SyntaxError> {
        let mut value = self.term()?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(op @ (b'+' | b'-')) => {
                    self.pos += 1;
                    let rhs = self.term()?;
                    value = value.and_then(|l| rhs.and_then(|r| l.apply(op, r)));
                }
                _ => return Ok(value),
            }
        }
    }

    /// term := factor (('*' | '/') factor)*
    fn term(&mut self) -> Result<Value, SyntaxError> {
        let mut value = self.factor()?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(op @ (b'*' | b'/')) => {
                    self.pos += 1;
                    let rhs = self.factor()?;
                    value = value.and_then(|l| rhs.and_then(|r| l.apply(op, r)));
                }
                _ => return Ok(value),
            }
        }
    }

    /// factor := integer | '(' expr ')'. No unary minus: Countdown builds from the given
    /// numbers only, and `-7` would smuggle in a number that is not given.
    fn factor(&mut self) -> Result<Value, SyntaxError> {
        self.skip_ws();
        match self.peek() {
            Some(b'(') => {
                if self.depth >= MAX_DEPTH {
                    return Err(SyntaxError);
                }
                self.depth += 1;
                self.pos += 1;
                let value = self.expr()?;
                self.skip_ws();
                if self.peek() != Some(b')') {
                    return Err(SyntaxError);
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(value)
            }
            Some(b) if b.is_ascii_digit() => {
                let start = self.pos;
                self.digits();
                let literal = std::str::from_utf8(&self.bytes[start..self.pos])
                    .ok()
                    .and_then(|s| s.parse::<i128>().ok());
                self.literals.push(literal);
                Ok(literal.map(Rational::integer).ok_or(Arith::Overflow))
            }
            _ => Err(SyntaxError),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tandem_schemas::Target;
    use tandem_schemas::{CloudRecord, PromptRecord, SampleRecord};

    use super::*;

    fn problem(numbers: &[i64], target: i64) -> CountdownProblem {
        CountdownProblem {
            numbers: numbers.to_vec(),
            target,
        }
    }

    fn verifier() -> CountdownVerifier {
        CountdownVerifier {
            config: CountdownConfig::default(),
        }
    }

    fn ctx() -> StepContext {
        StepContext::single_worker("r", "judge", 0)
    }

    #[test]
    fn expressions_table() {
        let p = problem(&[74, 78, 36, 7], 33);
        let table: &[(&str, Outcome, Option<&str>)] = &[
            // 74 - 78 + 36 + 7 = 39.
            ("74 - 78 + 36 + 7", Outcome::WrongValue, Some("74-78+36+7")),
            ("78 - 74 + 36 - 7", Outcome::Correct, Some("78-74+36-7")),
            (
                "(78 - 74) + (36 - 7)",
                Outcome::Correct,
                Some("(78-74)+(36-7)"),
            ),
            ("78-74+36-7 = 33", Outcome::Correct, Some("78-74+36-7")),
            ("78-74+36-7=33", Outcome::Correct, Some("78-74+36-7")),
            // The `= n` tail is ignored, even when it lies.
            ("78-74+36-7 = 34", Outcome::Correct, Some("78-74+36-7")),
            (
                "78 - 74 + 36 - 36",
                Outcome::WrongNumbers,
                Some("78-74+36-36"),
            ),
            ("78 - 74 + 36", Outcome::WrongNumbers, Some("78-74+36")),
            (
                "78 - 74 + 36 - 7 + 0",
                Outcome::WrongNumbers,
                Some("78-74+36-7+0"),
            ),
            ("-7 + 78 - 74 + 36", Outcome::ParseError, None),
            ("78 - 74 + 36 - (-7)", Outcome::ParseError, None),
            // Wrong numbers is reported before the division by zero they cause.
            (
                "74 / (78 - 78) + 36 + 7",
                Outcome::WrongNumbers,
                Some("74/(78-78)+36+7"),
            ),
            ("I think it is 33", Outcome::ParseError, None),
            ("", Outcome::ParseError, None),
            ("78 - 74 + 36 - 7 =", Outcome::ParseError, None),
            ("(78 - 74 + 36 - 7", Outcome::ParseError, None),
            ("78 - 74 + 36 - 7)", Outcome::ParseError, None),
            ("78 × 74 + 36 - 7", Outcome::ParseError, None),
            ("78 - 74 + 36 - 7.0", Outcome::ParseError, None),
            ("78 - 74 + 36 - 7 = 33 = 33", Outcome::ParseError, None),
        ];
        for &(expression, outcome, normalized) in table {
            let got = check_expression(&p, expression);
            assert_eq!(
                got,
                (outcome, normalized.map(str::to_owned)),
                "{expression}"
            );
        }
    }

    #[test]
    fn tinyzero_mode_rejects_an_equals_tail_that_lenient_ignores() {
        let p = problem(&[1, 2, 3], 9);
        let table: &[(&str, Outcome, Outcome)] = &[
            // (answer, lenient, tinyzero)
            ("(1+2)*3 = 9", Outcome::Correct, Outcome::ParseError),
            ("(1+2)*3=9", Outcome::Correct, Outcome::ParseError),
            ("(1+2)*3 = 8", Outcome::Correct, Outcome::ParseError),
            ("(1+2)*3", Outcome::Correct, Outcome::Correct),
            (" (1 + 2) * 3 ", Outcome::Correct, Outcome::Correct),
            ("1+2+3", Outcome::WrongValue, Outcome::WrongValue),
            ("1+2 = 3", Outcome::WrongNumbers, Outcome::ParseError),
        ];
        for &(answer, lenient, tinyzero) in table {
            assert_eq!(
                check_expression_in(CountdownMode::Lenient, &p, answer).0,
                lenient,
                "{answer}"
            );
            assert_eq!(check_expression(&p, answer).0, lenient, "{answer}");
            assert_eq!(
                check_expression_in(CountdownMode::Tinyzero, &p, answer).0,
                tinyzero,
                "{answer}"
            );
        }
        // Through the stage's config and extraction.
        let ctx = BuildContext::new("judge", crate::RunSettings::default());
        assert!(
            crate::registry::build_with::<CountdownConfig>(
                &serde_json::json!({"mode": "tinyzero"}),
                &ctx
            )
            .is_ok()
        );
        let strict = CountdownVerifier::new(CountdownConfig {
            mode: CountdownMode::Tinyzero,
            ..CountdownConfig::default()
        })
        .expect("config");
        let response = "<think>1+2=3, 3*3=9</think> <answer>(1+2)*3 = 9</answer>";
        let judged = strict.judge(&p, response);
        assert_eq!(
            (judged.correct, judged.method.as_str()),
            (false, "parse_error")
        );
        let judged = verifier().judge(&p, response);
        assert_eq!((judged.correct, judged.method.as_str()), (true, "correct"));
    }

    #[test]
    fn fractions_that_reach_the_target_are_correct() {
        // 7 / 2 = 3.5 is not an integer, but (7 / 2) * 4 = 14 exactly; float-free.
        let p = problem(&[7, 2, 4], 14);
        assert_eq!(check_expression(&p, "7 / 2 * 4").0, Outcome::Correct);
        assert_eq!(check_expression(&p, "7 / (2 * 4)").0, Outcome::WrongValue);
        // The classic 8 / (3 - 8 / 3) = 8 / (1/3) = 24 goes through thirds.
        let p = problem(&[8, 3, 8, 3], 24);
        assert_eq!(check_expression(&p, "8 / (3 - 8 / 3)").0, Outcome::Correct);
        // (74 - 78 + 36) / 8 = 4, and 10 / 3 * 3 = 10 exactly.
        let p = problem(&[74, 78, 36, 8, 10, 3, 3], 14);
        assert_eq!(
            check_expression(&p, "(74 - 78 + 36) / 8 + 10 / 3 * 3").0,
            Outcome::Correct
        );
        // 1 / 3 + 1 / 3 + 1 / 3 = 1 only in exact arithmetic (floats give 0.999…).
        let p = problem(&[1, 3, 1, 3, 1, 3], 1);
        assert_eq!(check_expression(&p, "1/3 + 1/3 + 1/3").0, Outcome::Correct);
    }

    #[test]
    fn division_by_zero_and_overflow() {
        let p = problem(&[5, 3, 3], 0);
        assert_eq!(check_expression(&p, "5 / (3 - 3)").0, Outcome::DivByZero);
        // Zero divided by something is fine.
        assert_eq!(check_expression(&p, "(3 - 3) / 5").0, Outcome::Correct);
        let big = i64::MAX;
        let p = problem(&[big, big, big, big, big], 1);
        assert_eq!(
            check_expression(&p, &format!("{big} * {big} * {big} + {big} - {big}")).0,
            Outcome::Overflow
        );
        // A literal beyond i128 can never be one of the given numbers.
        let huge = "9".repeat(60);
        assert_eq!(
            check_expression(&problem(&[1], 1), &huge),
            (Outcome::WrongNumbers, Some(huge.clone()))
        );
    }

    #[test]
    fn long_or_deep_answers_are_parse_errors_without_recursing() {
        let p = problem(&[1], 1);
        let at_limit = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(check_expression(&p, &at_limit).0, Outcome::Correct);
        let too_deep = format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(check_expression(&p, &too_deep).0, Outcome::ParseError);
        // Deep enough to overflow a stack if depth were not capped before recursing.
        let absurd = "(".repeat(MAX_ANSWER_CHARS);
        assert_eq!(check_expression(&p, &absurd).0, Outcome::ParseError);
        let long = format!("1{}", " ".repeat(MAX_ANSWER_CHARS));
        assert_eq!(check_expression(&p, &long).0, Outcome::ParseError);
        let chain = vec!["1"; 400].join("*");
        assert_eq!(
            check_expression(&problem(&[1; 400], 1), &chain).0,
            Outcome::Correct
        );
    }

    #[test]
    fn problems_come_from_json_answers_or_question_text() {
        let q = "Using the numbers [74, 78, 36, 7], create an equation that equals 33. You can \
                 use basic arithmetic operations (+, -, *, /) and each number can only be used once.";
        let from_text = CountdownProblem::from_question(q);
        assert_eq!(from_text, Some(problem(&[74, 78, 36, 7], 33)));
        let prompt = PromptRecord {
            question: "whatever".into(),
            answer: Some(r#"{"numbers": [3, 5], "target": 15, "extra": 1}"#.into()),
            ..Default::default()
        };
        assert_eq!(
            CountdownProblem::from_prompt(&prompt),
            Some(problem(&[3, 5], 15))
        );
        // A plain-number answer is not the JSON form: the question decides.
        let prompt = PromptRecord {
            question: q.into(),
            answer: Some("33".into()),
            ..Default::default()
        };
        assert_eq!(
            CountdownProblem::from_prompt(&prompt),
            Some(problem(&[74, 78, 36, 7], 33))
        );
        for bad in [
            "no numbers here, equals 3",
            "Using [1, 2] make 3",
            "Using [1, x] equals 3",
            "Using [] equals 3",
            "equals 3 using [1, 2]",
            "Using [1, 2 equals 3",
        ] {
            assert_eq!(CountdownProblem::from_question(bad), None, "{bad}");
        }
    }

    #[test]
    fn judges_samples_and_the_cloud_answer_and_flags_bad_prompts() {
        let sample = |i, text: &str| SampleRecord {
            prompt_id: "p".into(),
            sample_idx: i,
            text: text.into(),
            ..Default::default()
        };
        let mut groups = vec![
            Group {
                samples: vec![
                    sample(0, "<think>…</think><answer>78 - 74 + 36 - 7</answer>"),
                    sample(
                        1,
                        "<answer>78 - 74 + 36 - 7</answer> no: <answer>78+74</answer>",
                    ),
                    sample(2, "<answer>78 + 74 + 36 + 7</answer>"),
                    sample(
                        3,
                        "<think>hm</think> <unknown> I need external assistance </unknown>",
                    ),
                    sample(
                        4,
                        "<answer>78+74</answer> wait <answer>78 - 74 + 36 - 7</answer>",
                    ),
                    sample(5, "<answer>1</answer> then <answer>78 - 74 + 36 - 7"),
                ],
                cloud: Some(CloudRecord {
                    answer: Some("Sure: <answer>(78 - 74) + (36 - 7) = 33</answer>".into()),
                    ..Default::default()
                }),
                ..Group::new(PromptRecord {
                    prompt_id: "p".into(),
                    question:
                        "Using the numbers [74, 78, 36, 7], create an equation that equals 33."
                            .into(),
                    ..Default::default()
                })
            },
            Group {
                samples: vec![sample(0, "<answer>1</answer>")],
                ..Group::new(PromptRecord {
                    prompt_id: "q".into(),
                    question: "What is 2 + 2?".into(),
                    ..Default::default()
                })
            },
        ];
        verifier().process(&mut groups, &ctx()).expect("process");
        let got: Vec<_> = groups[0]
            .verdicts
            .iter()
            .map(|v| (v.sample_idx, v.target, v.correct, v.method.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(0), Target::Local, true, "correct"),
                (Some(1), Target::Local, false, "wrong_numbers"),
                (Some(2), Target::Local, false, "wrong_value"),
                (Some(3), Target::Local, false, "no_answer"),
                (Some(4), Target::Local, true, "correct"),
                (Some(5), Target::Local, false, "wrong_numbers"),
                (None, Target::Cloud, true, "correct"),
            ]
        );
        let cloud = &groups[0].verdicts[6];
        assert_eq!(
            cloud.extracted.as_deref(),
            Some("(78 - 74) + (36 - 7) = 33")
        );
        assert_eq!(cloud.normalized.as_deref(), Some("(78-74)+(36-7)"));
        assert_eq!(groups[0].verdicts[3].extracted, None);
        assert!(groups[0].errors.is_empty());
        assert!(groups[1].verdicts.is_empty());
        assert_eq!(groups[1].errors.len(), 1);
        assert_eq!(groups[1].errors[0].kind, "bad_prompt");
        assert_eq!(groups[1].errors[0].stage, "judge");
    }

    #[test]
    fn config_rejects_empty_tags_and_unknown_fields() {
        let ctx = BuildContext::new("judge", crate::RunSettings::default());
        let err = crate::registry::build_with::<CountdownConfig>(
            &serde_json::json!({"answer": ["<a>", ""]}),
            &ctx,
        )
        .err()
        .expect("empty tag");
        assert_eq!(
            err.to_string(),
            "answer[1]: the answer tags must not be empty"
        );
        assert!(
            crate::registry::build_with::<CountdownConfig>(
                &serde_json::json!({"numbers_field": "x"}),
                &ctx
            )
            .is_err()
        );
        assert!(
            crate::registry::build_with::<CountdownConfig>(&serde_json::Value::Null, &ctx).is_ok()
        );
    }

    /// The reference's own fraction, independent of the verifier's [`Rational`]; with numbers
    /// below 100 and at most four of them nothing can overflow.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Frac(i128, i128);

    impl Frac {
        fn reduced(n: i128, d: i128) -> Option<Frac> {
            if d == 0 {
                return None;
            }
            let g = gcd(n.unsigned_abs(), d.unsigned_abs()) as i128;
            let s = if d < 0 { -1 } else { 1 };
            Some(Frac(s * n / g, s * d / g))
        }

        fn apply(self, op: char, r: Frac) -> Option<Frac> {
            let Frac(a, b) = self;
            let Frac(c, d) = r;
            match op {
                '+' => Frac::reduced(a * d + c * b, b * d),
                '-' => Frac::reduced(a * d - c * b, b * d),
                '*' => Frac::reduced(a * c, b * d),
                _ => Frac::reduced(a * d, b * c),
            }
        }
    }

    const OPS: [char; 4] = ['+', '-', '*', '/'];

    /// Every fully parenthesised expression over `seq` in this order, with its value (`None`:
    /// divides by zero somewhere).
    fn expressions(seq: &[i64]) -> Vec<(String, Option<Frac>)> {
        if let [n] = seq {
            return vec![(n.to_string(), Some(Frac(i128::from(*n), 1)))];
        }
        let mut out = Vec::new();
        for split in 1..seq.len() {
            let (left, right) = (expressions(&seq[..split]), expressions(&seq[split..]));
            for (ls, lv) in &left {
                for (rs, rv) in &right {
                    for op in OPS {
                        let value = lv.zip(*rv).and_then(|(l, r)| l.apply(op, r));
                        out.push((format!("({ls}{op}{rs})"), value));
                    }
                }
            }
        }
        out
    }

    fn permutations(items: &[i64]) -> Vec<Vec<i64>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, first);
                out.push(tail);
            }
        }
        out
    }

    /// Brute force: every expression using all numbers once, over every ordering, bracketing
    /// and choice of operators, keyed by its fully parenthesised form.
    fn brute_force(numbers: &[i64]) -> HashMap<String, Option<Frac>> {
        permutations(numbers)
            .iter()
            .flat_map(|order| expressions(order))
            .collect()
    }

    enum Tree {
        Leaf(i64),
        Node(char, Box<Tree>, Box<Tree>),
    }

    fn precedence(op: char) -> u8 {
        if op == '+' || op == '-' { 1 } else { 2 }
    }

    impl Tree {
        fn random(leaves: &[i64], rng: &mut ChaCha8Rng) -> Tree {
            if let [n] = leaves {
                return Tree::Leaf(*n);
            }
            let split = rng.random_range(1..leaves.len());
            let op = OPS[rng.random_range(0..OPS.len())];
            Tree::Node(
                op,
                Box::new(Tree::random(&leaves[..split], rng)),
                Box::new(Tree::random(&leaves[split..], rng)),
            )
        }

        /// The reference's key: the same form [`expressions`] produces.
        fn canonical(&self) -> String {
            match self {
                Tree::Leaf(n) => n.to_string(),
                Tree::Node(op, l, r) => format!("({}{op}{})", l.canonical(), r.canonical()),
            }
        }

        fn op(&self) -> Option<char> {
            match self {
                Tree::Leaf(_) => None,
                Tree::Node(op, _, _) => Some(*op),
            }
        }

        /// How a model would write it: only the parentheses precedence needs (and some
        /// redundant ones), with random spacing. Dropped parentheses only re-associate `+` or
        /// `*` over a right operand of equal precedence, which exact arithmetic does not see.
        fn render(&self, rng: &mut ChaCha8Rng) -> String {
            let space = |rng: &mut ChaCha8Rng| " ".repeat(rng.random_range(0..3));
            match self {
                Tree::Leaf(n) => n.to_string(),
                Tree::Node(op, l, r) => {
                    let p = precedence(*op);
                    let needs_left = l.op().is_some_and(|o| precedence(o) < p);
                    let needs_right = r.op().is_some_and(|o| {
                        precedence(o) < p || (precedence(o) == p && (*op == '-' || *op == '/'))
                    });
                    let wrap = |t: &Tree, needed: bool, rng: &mut ChaCha8Rng| {
                        let inner = t.render(rng);
                        if needed || (t.op().is_some() && rng.random_bool(0.25)) {
                            format!("({}{inner}{})", space(rng), space(rng))
                        } else {
                            inner
                        }
                    };
                    let left = wrap(l, needs_left, rng);
                    let right = wrap(r, needs_right, rng);
                    format!("{left}{}{op}{}{right}", space(rng), space(rng))
                }
            }
        }
    }

    fn uses_numbers(leaves: &[i64], numbers: &[i64]) -> bool {
        let mut leaves = leaves.to_vec();
        let mut numbers = numbers.to_vec();
        leaves.sort_unstable();
        numbers.sort_unstable();
        leaves == numbers
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn agrees_with_brute_force_reference(
            // Small numbers repeat often, which is what makes `(3 - 3)` and so division by
            // zero reachable.
            numbers in prop_oneof![
                prop::collection::vec(1i64..100, 3..=4),
                prop::collection::vec(1i64..5, 3..=4),
            ],
            seed in any::<u64>(),
            swap in 0u8..5,
            aim_at_candidate in any::<bool>(),
            other_target in 0i64..200,
            with_tail in any::<bool>(),
            zero_divisor in 0u8..4,
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let reference = brute_force(&numbers);
            let reachable: HashSet<Frac> = reference.values().flatten().copied().collect();

            let mut leaves = numbers.clone();
            leaves.shuffle(&mut rng);
            let i = rng.random_range(0..leaves.len());
            match swap {
                // A number that is not given (all given ones are below 100).
                0 => leaves[i] += 100,
                // Another given number used twice (and one left out), when they differ.
                1 => leaves[i] = leaves[(i + 1) % leaves.len()],
                _ => {}
            }
            let duplicate = (1..leaves.len()).find(|&j| leaves[..j].contains(&leaves[j]));
            let tree = match duplicate {
                // A zero divisor built on purpose: random trees almost never make one.
                Some(j) if zero_divisor == 0 && uses_numbers(&leaves, &numbers) => {
                    let twin = leaves.remove(j);
                    let first = leaves.iter().position(|&n| n == twin).expect("a duplicate");
                    leaves.remove(first);
                    let zero = Tree::Node(
                        '-',
                        Box::new(Tree::Leaf(twin)),
                        Box::new(Tree::Leaf(twin)),
                    );
                    let rest = Tree::random(&leaves, &mut rng);
                    leaves.extend([twin, twin]);
                    Tree::Node('/', Box::new(rest), Box::new(zero))
                }
                _ => Tree::random(&leaves, &mut rng),
            };
            let uses_numbers = uses_numbers(&leaves, &numbers);

            let value = if uses_numbers {
                let value = reference.get(&tree.canonical());
                prop_assert!(value.is_some(), "{} not enumerated", tree.canonical());
                value.copied().flatten()
            } else {
                None
            };
            let target = match value {
                Some(Frac(n, 1)) if aim_at_candidate => n as i64,
                _ => other_target,
            };
            let mut text = tree.render(&mut rng);
            if with_tail {
                text.push_str(&format!(" = {target}"));
            }

            let (outcome, normalized) = check_expression(&problem(&numbers, target), &text);
            let expected = if !uses_numbers {
                Outcome::WrongNumbers
            } else {
                match value {
                    None => Outcome::DivByZero,
                    Some(v) if v == Frac(i128::from(target), 1) => Outcome::Correct,
                    Some(_) => Outcome::WrongValue,
                }
            };
            prop_assert_eq!(outcome, expected, "{} (target {})", text, target);
            if outcome == Outcome::Correct {
                prop_assert!(reachable.contains(&Frac(i128::from(target), 1)));
            }
            let expected_normalized: String = text
                .split('=')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            prop_assert_eq!(normalized, Some(expected_normalized));
        }
    }
}
