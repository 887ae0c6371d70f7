//! The oracle: what the simulated model answers to the last user message.
//!
//! In order: a question of the gold-answer file (the whole message, or a gold question inside
//! a longer message, since pipelines wrap questions in templates) gets the file's answer; a
//! Countdown question gets a searched expression; an arithmetic expression gets its exact
//! value; anything else gets a polite reply with no answer to verify.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use rand::Rng;
use serde_json::Value;
use tandem_datasets::tasks::{SearchProblem, search_problem_in};
use tandem_stages::verify::CountdownProblem;

use super::arith::{self, ArithError, Expression, Rational};
use super::config::AnswerFormat;
use super::countdown;
use super::error::{Error, Result};

/// What kind of question a message was taken to be (the request log's `task`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// A question of the gold-answer file.
    Gold,
    /// A Countdown problem.
    Countdown,
    /// An arithmetic expression.
    Arithmetic,
    /// A search question (`Which of 3, 8, 5 plus 4 is 9?`).
    Search,
    /// None of these: the reply has no answer to verify.
    Unknown,
}

impl Task {
    /// The name in the request log.
    pub fn name(self) -> &'static str {
        match self {
            Task::Gold => "gold",
            Task::Countdown => "countdown",
            Task::Arithmetic => "arithmetic",
            Task::Search => "search",
            Task::Unknown => "unknown",
        }
    }
}

/// The simulated model's reply to one question.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The assistant message.
    pub content: String,
    /// What the question was taken to be.
    pub task: Task,
    /// Whether the reply meant to be right; `None` when there was nothing to be right about.
    pub correct: Option<bool>,
}

/// Answers of the gold-answer file, by question with whitespace runs collapsed.
#[derive(Clone, Debug, Default)]
pub struct GoldAnswers {
    exact: HashMap<String, String>,
    /// The same, longest question first: the most specific one contained in a message wins.
    longest_first: Vec<(String, String)>,
}

impl GoldAnswers {
    /// Reads a JSON Lines file of `{"question": "...", "answer": ...}` rows (`answer` a string
    /// or a number; other keys are ignored; blank lines are skipped). A repeated question
    /// keeps its first answer.
    pub fn load(path: &Path) -> Result<GoldAnswers> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })?;
        let mut rows = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row = gold_row(line).map_err(|message| Error::Gold {
                path: path.to_owned(),
                line: index + 1,
                message,
            })?;
            rows.push(row);
        }
        Ok(GoldAnswers::from_rows(rows))
    }

    /// Answers from `(question, answer)` pairs.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String)>) -> GoldAnswers {
        let mut gold = GoldAnswers::default();
        for (question, answer) in rows {
            let question = collapse_whitespace(&question);
            if question.is_empty() {
                continue;
            }
            if let Entry::Vacant(slot) = gold.exact.entry(question.clone()) {
                slot.insert(answer.clone());
                gold.longest_first.push((question, answer));
            }
        }
        gold.longest_first
            .sort_by_key(|(question, _)| std::cmp::Reverse(question.len()));
        gold
    }

    /// How many questions there are.
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }

    /// The answer to a message (whitespace already collapsed): its own, else that of the
    /// longest gold question it contains.
    fn answer(&self, message: &str) -> Option<&str> {
        if let Some(answer) = self.exact.get(message) {
            return Some(answer);
        }
        self.longest_first
            .iter()
            .find(|(question, _)| question.len() < message.len() && message.contains(question))
            .map(|(_, answer)| answer.as_str())
    }
}

fn gold_row(line: &str) -> Result<(String, String), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let question = match value.get("question") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(_) => return Err("`question` must be a non-empty string".into()),
        None => return Err("missing field `question`".into()),
    };
    let answer = match value.get("answer") {
        Some(Value::String(a)) => a.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("`answer` must be a string or a number".into()),
        None => return Err("missing field `answer`".into()),
    };
    Ok((question, answer))
}

/// Trims and turns every run of whitespace into one space.
fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the oracle made of a message.
enum Question<'g> {
    Gold(&'g str),
    Countdown(CountdownProblem),
    Search(SearchProblem),
    Arithmetic {
        text: String,
        expression: Expression,
    },
    Unknown,
}

/// The simulated model.
#[derive(Clone, Debug)]
pub struct Oracle {
    gold: GoldAnswers,
    format: AnswerFormat,
}

impl Oracle {
    /// An oracle answering from `gold` first, in `format`.
    pub fn new(gold: GoldAnswers, format: AnswerFormat) -> Oracle {
        Oracle { gold, format }
    }

    /// The reply to `question`: right when `right`, else wrong in a way drawn from `rng`.
    pub fn reply(&self, question: &str, right: bool, rng: &mut impl Rng) -> Reply {
        let (task, reasoning, answer) = match self.classify(question) {
            Question::Gold(gold) => {
                let answer = if right {
                    gold.to_owned()
                } else {
                    wrong_gold(gold, rng)
                };
                let reasoning = format!("Working through the problem step by step gives {answer}.");
                (Task::Gold, reasoning, Some(answer))
            }
            Question::Countdown(problem) => {
                let (reasoning, answer) = countdown_reply(&problem, right);
                (Task::Countdown, reasoning, Some(answer))
            }
            Question::Search(problem) => {
                let (reasoning, answer) = search_reply(&problem, right, rng);
                (Task::Search, reasoning, Some(answer))
            }
            Question::Arithmetic { text, expression } => {
                let (reasoning, answer) = arithmetic_reply(&text, &expression, right, rng);
                (Task::Arithmetic, reasoning, Some(answer))
            }
            Question::Unknown => (
                Task::Unknown,
                "The message does not pose a problem I can work out with certainty.".to_owned(),
                None,
            ),
        };
        Reply {
            content: self.render(&reasoning, answer.as_deref()),
            task,
            correct: (task != Task::Unknown).then_some(right),
        }
    }

    fn classify(&self, question: &str) -> Question<'_> {
        if !self.gold.is_empty()
            && let Some(answer) = self.gold.answer(&collapse_whitespace(question))
        {
            return Question::Gold(answer);
        }
        if let Some(problem) = countdown::problem_in(question) {
            return Question::Countdown(problem);
        }
        if let Some(problem) = search_problem_in(question) {
            return Question::Search(problem);
        }
        match arithmetic_in(question) {
            Some((text, expression)) => Question::Arithmetic { text, expression },
            None => Question::Unknown,
        }
    }

    fn render(&self, reasoning: &str, answer: Option<&str>) -> String {
        const NO_ANSWER: &str = "I cannot answer this with confidence.";
        match (self.format, answer) {
            (AnswerFormat::Tag, Some(answer)) => {
                format!("<think>{reasoning}</think>\n<answer>{answer}</answer>")
            }
            (AnswerFormat::Tag, None) => format!("<think>{reasoning}</think>\n{NO_ANSWER}"),
            (AnswerFormat::Boxed, Some(answer)) => {
                format!("{reasoning}\nThe answer is $\\boxed{{{answer}}}$.")
            }
            (AnswerFormat::Boxed, None) => format!("{reasoning}\n{NO_ANSWER}"),
        }
    }
}

/// Reasoning and answer for a Countdown problem.
fn countdown_reply(problem: &CountdownProblem, right: bool) -> (String, String) {
    let CountdownProblem { numbers, target } = problem;
    let intro = format!("I need {target} from {numbers:?}, using each number once.");
    match (right, countdown::solve(problem)) {
        (true, Some(expression)) => (
            format!("{intro} Trying combinations: {expression} = {target}."),
            expression,
        ),
        (true, None) => (
            format!("{intro} I found no way of combining them with + - * / that reaches {target}."),
            "no solution".to_owned(),
        ),
        (false, _) => {
            // A confident mistake: the claim is the target, the expression is not.
            let expression = countdown::wrong_expression(problem);
            (
                format!("{intro} Trying combinations: {expression} = {target}."),
                expression,
            )
        }
    }
}

/// Reasoning and answer for a search question: the number that fits, or, when wrong, another
/// listed number (a confident mistake of the same form).
fn search_reply(problem: &SearchProblem, right: bool, rng: &mut impl Rng) -> (String, String) {
    let solution = problem.solve();
    let answer = match (right, solution) {
        (true, Some(n)) => n.to_string(),
        (true, None) => "none".to_owned(),
        (false, _) => {
            let others: Vec<i64> = problem
                .numbers
                .iter()
                .copied()
                .filter(|&n| Some(n) != solution)
                .collect();
            match others.is_empty() {
                true => "none".to_owned(),
                false => others[rng.random_range(0..others.len())].to_string(),
            }
        }
    };
    let reasoning = format!(
        "Trying each of {:?} {} {} against {}: {answer}.",
        problem.numbers, problem.op, problem.operand, problem.target
    );
    (reasoning, answer)
}

/// Reasoning and answer for an arithmetic expression.
fn arithmetic_reply(
    text: &str,
    expression: &Expression,
    right: bool,
    rng: &mut impl Rng,
) -> (String, String) {
    let answer = match (&expression.value, right) {
        (Ok(_), true) => expression.value_text(),
        (Ok(value), false) => Expression {
            value: Ok(wrong_number(*value, rng)),
            ..expression.clone()
        }
        .value_text(),
        (Err(_), true) => None,
        (Err(_), false) => Some(rng.random_range(1..=9).to_string()),
    };
    match answer {
        Some(answer) => (format!("Computing {text} exactly: {answer}."), answer),
        None => (
            format!("{text} divides by zero, so it has no value."),
            "undefined".to_owned(),
        ),
    }
}

/// The arithmetic expression a message asks about: among its runs of digits, operators,
/// parentheses and spaces, the one with the most operators (`What is 7953 + 3194?`,
/// `What is $12 \times 3$?`).
fn arithmetic_in(question: &str) -> Option<(String, Expression)> {
    let question = question
        .replace("\\cdot", "*")
        .replace("\\times", "*")
        .replace("\\div", "/");
    let allowed = |c: char| c.is_ascii_digit() || " \t\n.+-*/()×÷·−".contains(c);
    question
        .split(|c: char| !allowed(c))
        .map(|run| run.trim().trim_end_matches(['.', ' ']))
        .filter(|run| run.contains(|c: char| c.is_ascii_digit()))
        .filter_map(|run| {
            let expression = arith::parse(run)?;
            // An overflow is not a question the oracle can answer; a division by zero is.
            let answerable = expression.value != Err(ArithError::Overflow);
            (expression.operators > 0 && answerable).then(|| (run.to_owned(), expression))
        })
        .max_by_key(|(run, expression)| (expression.operators, run.len()))
}

/// A different number near `value`: off by 1 to 9 either way.
fn wrong_number(value: Rational, rng: &mut impl Rng) -> Rational {
    let magnitude: i128 = rng.random_range(1..=9);
    let offset = if rng.random() { magnitude } else { -magnitude };
    value
        .add(Rational::integer(offset))
        .or_else(|_| value.sub(Rational::integer(offset)))
        .expect("one of value ± 9 fits i128")
}

/// A wrong version of a gold answer: a nearby number when it is one, else `answer + 1`
/// (still an expression a math verifier reads, and never equal to the answer).
fn wrong_gold(gold: &str, rng: &mut impl Rng) -> String {
    match arith::parse(gold) {
        Some(
            expression @ Expression {
                value: Ok(value), ..
            },
        ) => Expression {
            value: Ok(wrong_number(value, rng)),
            ..expression
        }
        .value_text()
        .expect("the value is Ok"),
        _ => format!("{gold} + 1"),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use tandem_stages::verify::{Outcome, check_expression};

    use super::*;

    const COUNTDOWN: &str = "Using the numbers [19, 36, 55, 7], create an equation that equals \
        65. You can use basic arithmetic operations (+, -, *, /) and each number can only be used \
        once. Let me solve this step by step.";

    fn oracle(format: AnswerFormat) -> Oracle {
        let gold = GoldAnswers::from_rows([
            (
                "What is the  sum of the first 3 primes?".into(),
                "10".into(),
            ),
            ("Simplify $\\frac{6}{8}$.".into(), "\\frac{3}{4}".into()),
        ]);
        Oracle::new(gold, format)
    }

    fn answer_of(content: &str) -> &str {
        let start = content.find("<answer>").unwrap() + "<answer>".len();
        &content[start..content.find("</answer>").unwrap()]
    }

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(1)
    }

    #[test]
    fn countdown_questions_get_a_verified_expression() {
        let reply = oracle(AnswerFormat::Tag).reply(COUNTDOWN, true, &mut rng());
        assert_eq!(reply.task, Task::Countdown);
        assert_eq!(reply.correct, Some(true));
        assert!(reply.content.starts_with("<think>"), "{}", reply.content);
        let problem = countdown::problem_in(COUNTDOWN).unwrap();
        let expression = answer_of(&reply.content);
        assert_eq!(check_expression(&problem, expression).0, Outcome::Correct);

        let wrong = oracle(AnswerFormat::Tag).reply(COUNTDOWN, false, &mut rng());
        assert_eq!(wrong.correct, Some(false));
        assert_eq!(
            check_expression(&problem, answer_of(&wrong.content)).0,
            Outcome::WrongValue
        );
    }

    #[test]
    fn unsolvable_countdown_says_so() {
        let question = "Using the numbers [1, 1, 1], create an equation that equals 100.";
        let reply = oracle(AnswerFormat::Tag).reply(question, true, &mut rng());
        assert_eq!(answer_of(&reply.content), "no solution");
    }

    #[test]
    fn arithmetic_questions_get_exact_values() {
        let cases = [
            ("What is 7953 + 3194?", "11147"),
            (
                "What is 7953 + 3194?. Let me solve this step by step.",
                "11147",
            ),
            ("Compute (12 - 4) * 3 / 6.", "4"),
            ("7 / 2", "7/2"),
            ("What is 1.5 + 2.25?", "3.75"),
            ("What is 5 / (2 - 2)?", "undefined"),
            ("What is $1 + 2 \\cdot 3$?", "7"),
            ("Compute $84 \\div 4 \\times 2$.", "42"),
        ];
        for (question, expected) in cases {
            let reply = oracle(AnswerFormat::Tag).reply(question, true, &mut rng());
            assert_eq!(reply.task, Task::Arithmetic, "{question}");
            assert_eq!(answer_of(&reply.content), expected, "{question}");
        }
    }

    #[test]
    fn search_questions_get_the_number_that_fits() {
        let question = "Which of 3, 8, 5, 2 plus 4 is 9? Ask for help if you cannot solve it.";
        let oracle = oracle(AnswerFormat::Tag);
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let right = oracle.reply(question, true, &mut rng);
            assert_eq!((right.task, answer_of(&right.content)), (Task::Search, "5"));
            let wrong = oracle.reply(question, false, &mut rng);
            assert!(
                ["3", "8", "2"].contains(&answer_of(&wrong.content)),
                "{}",
                wrong.content
            );
        }
    }

    #[test]
    fn wrong_answers_differ_from_right_ones() {
        for question in ["What is 7953 + 3194?", "What is 1.5 + 2.25?", "7 / 2"] {
            let oracle = oracle(AnswerFormat::Tag);
            for seed in 0..20 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let right = oracle.reply(question, true, &mut rng);
                let wrong = oracle.reply(question, false, &mut rng);
                assert_ne!(answer_of(&right.content), answer_of(&wrong.content));
            }
        }
        let mut rng = rng();
        assert_ne!(wrong_gold("10", &mut rng), "10");
        assert_eq!(wrong_gold("\\frac{3}{4}", &mut rng), "\\frac{3}{4} + 1");
    }

    #[test]
    fn gold_questions_match_whole_or_inside_a_template() {
        let oracle = oracle(AnswerFormat::Boxed);
        let reply = oracle.reply("What is the sum of the first 3\nprimes?", true, &mut rng());
        assert_eq!(reply.task, Task::Gold);
        assert!(
            reply.content.ends_with("The answer is $\\boxed{10}$."),
            "{}",
            reply.content
        );
        let wrapped = "Simplify $\\frac{6}{8}$.. Let's think step by step.";
        let reply = oracle.reply(wrapped, true, &mut rng());
        assert!(
            reply.content.ends_with("$\\boxed{\\frac{3}{4}}$."),
            "{}",
            reply.content
        );
    }

    #[test]
    fn unknown_questions_get_no_verifiable_answer() {
        for format in [AnswerFormat::Tag, AnswerFormat::Boxed] {
            let reply = oracle(format).reply("Tell me a joke about cats.", true, &mut rng());
            assert_eq!(reply.task, Task::Unknown);
            assert_eq!(reply.correct, None);
            assert!(!reply.content.contains("<answer>") && !reply.content.contains("boxed"));
        }
    }

    #[test]
    fn gold_files_are_read_with_located_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gold.jsonl");
        std::fs::write(
            &path,
            "{\"question\": \"Q one\", \"answer\": 3, \"level\": 1}\n\n{\"question\": \"Q two\", \"answer\": \"x\"}\n",
        )
        .unwrap();
        let gold = GoldAnswers::load(&path).unwrap();
        assert_eq!(gold.answer("Q one"), Some("3"));
        assert_eq!(gold.answer("Q two"), Some("x"));

        std::fs::write(
            &path,
            "{\"question\": \"Q\", \"answer\": 1}\n{\"question\": \"R\"}\n",
        )
        .unwrap();
        let error = GoldAnswers::load(&path).unwrap_err().to_string();
        assert!(
            error.ends_with("gold.jsonl:2: missing field `answer`"),
            "{error}"
        );
    }

    /// Every question `tandem data generate` writes is one the oracle recognises, and its right
    /// reply is right by the generator's own answer.
    #[test]
    fn generated_questions_are_recognised_and_answered() {
        use tandem_datasets::tasks::{TaskKind, TaskSpec, generate};
        let oracle = Oracle::new(GoldAnswers::default(), AnswerFormat::Tag);
        for kind in [TaskKind::Arithmetic, TaskKind::Countdown] {
            let spec = TaskSpec {
                train: 150,
                test: 30,
                ..TaskSpec::new(kind)
            };
            let splits = generate(&spec, 11).unwrap();
            for example in splits.train.iter().chain(&splits.test) {
                let reply = oracle.reply(&example.question, true, &mut rng());
                let answer = answer_of(&reply.content);
                match kind {
                    TaskKind::Arithmetic => {
                        assert_eq!(reply.task, Task::Arithmetic, "{example:?}");
                        assert_eq!(answer, example.answer.to_string(), "{example:?}");
                    }
                    TaskKind::Countdown => {
                        assert_eq!(reply.task, Task::Countdown, "{example:?}");
                        let problem =
                            CountdownProblem::from_answer_json(example.answer.as_str().unwrap())
                                .unwrap();
                        assert_eq!(
                            countdown::problem_in(&example.question),
                            Some(problem.clone())
                        );
                        assert_eq!(
                            check_expression(&problem, answer).0,
                            Outcome::Correct,
                            "{example:?}: {answer}"
                        );
                    }
                }
            }
        }
    }
}
