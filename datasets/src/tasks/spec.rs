//! What to generate: the YAML-facing [`TaskSpec`] (every field optional but `task`) and the
//! [`Task`] it resolves to once checked, with defaults filled in and no `Option`s left.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::arithmetic::{ArithmeticLevel, Intermediate, Operator, SearchOrder};
use super::countdown::{self, CountdownLevel};

/// Which task to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// `What is 66 * 84?`, answered with an integer.
    Arithmetic,
    /// `Using the numbers [74, 78, 36, 7], create an equation that equals 33. …`
    Countdown,
}

impl TaskKind {
    /// The name in ids, file names and YAML (`arithmetic`, `countdown`).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Arithmetic => "arithmetic",
            TaskKind::Countdown => "countdown",
        }
    }
}

impl std::str::FromStr for TaskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arithmetic" => Ok(TaskKind::Arithmetic),
            "countdown" => Ok(TaskKind::Countdown),
            other => Err(format!(
                "unknown task `{other}`; expected arithmetic or countdown"
            )),
        }
    }
}

/// A task generator's specification, as a YAML section holds it:
///
/// ```yaml
/// task: arithmetic
/// train: 3000
/// test: 300
/// levels:
///   - { name: easy, digits: 1, ops: ["+", "-"] }
///   - { name: hard, digits: 5, ops: ["*"], weight: 2 }
/// sft: { levels: [easy], unknown_share: 0.15 }
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// `arithmetic` or `countdown`.
    pub task: TaskKind,
    /// Problems in the train split. Default: 3000.
    #[serde(default = "default_train")]
    pub train: usize,
    /// Problems in the test split (its questions are distinct). Default: 300.
    #[serde(default = "default_test")]
    pub test: usize,
    /// No train question is a test question (default `true`). `false` draws train
    /// independently of test: for levels that are a small table the model is meant to learn
    /// (single-digit sums), which a disjoint split would mostly hold out.
    #[serde(default = "yes")]
    pub disjoint: bool,
    /// Difficulty levels, each problem's drawn with probability proportional to its `weight`.
    /// Default (empty): arithmetic `easy` = 2-digit and `hard` = 5-digit operands with
    /// `+ - *`; countdown `easy` = 3 and `hard` = 5 numbers up to 100.
    #[serde(default)]
    pub levels: Vec<LevelSpec>,
    /// The supervised warm-start set.
    #[serde(default)]
    pub sft: SftSpec,
}

fn default_train() -> usize {
    3000
}

fn default_test() -> usize {
    300
}

fn yes() -> bool {
    true
}

impl TaskSpec {
    /// The default specification of a task.
    pub fn new(task: TaskKind) -> TaskSpec {
        TaskSpec {
            task,
            train: default_train(),
            test: default_test(),
            disjoint: true,
            levels: Vec::new(),
            sft: SftSpec::default(),
        }
    }
}

/// One difficulty level. Arithmetic levels take `digits` and `ops`, Countdown levels `numbers`
/// and `max_number`; keys of the other task are refused.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSpec {
    /// The difficulty label every problem of this level carries (`easy`, `hard`, ...).
    pub name: String,
    /// Relative probability of the level. Default: 1 (levels equally likely).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Arithmetic: digits of each operand (1 to 9). Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<u32>,
    /// Arithmetic: the operators to draw from, of `+`, `-` and `*`. Default: all three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<String>>,
    /// Arithmetic: operands per problem (2 to 8). More than 2 makes a chain, worked left to
    /// right (`What is 3 + 5 - 6 + 4?`), which takes `+` and `-` only. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operands: Option<usize>,
    /// Arithmetic chains: every intermediate value (each step's result but the last, the
    /// answer) lies in `[low, high]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<[i64; 2]>,
    /// Arithmetic chains: at least one intermediate value lies outside `[low, high]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<[i64; 2]>,
    /// Arithmetic: a search question instead of an expression, listing this many distinct
    /// numbers (2 to 9, at most as many as the digits allow) of which exactly one gives the
    /// target: `Which of 3, 8, 5, 2 plus 4 is 9?`. Its worked solution tries the numbers (in
    /// `order`) up to the one that fits. Takes two operands (no chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<usize>,
    /// Arithmetic search questions: the order their worked solutions try the numbers in,
    /// `shuffled` (a random order per question; the default) or `listed` (the question's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Countdown: how many numbers to combine (2 to 6). Default: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbers: Option<usize>,
    /// Countdown: the largest given number (at least 2). Default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_number: Option<u32>,
}

impl LevelSpec {
    /// A level with only its name set (all else default).
    pub fn named(name: &str) -> LevelSpec {
        LevelSpec {
            name: name.to_owned(),
            weight: None,
            digits: None,
            ops: None,
            operands: None,
            within: None,
            outside: None,
            choices: None,
            order: None,
            numbers: None,
            max_number: None,
        }
    }
}

/// The supervised warm-start set: train problems with their worked solutions.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SftSpec {
    /// The levels whose train problems get worked solutions. Default: the first level only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<String>>,
    /// The share of SFT rows, chosen at random, that answer with [`HELP_RESPONSE`] instead of a
    /// solution, so the model also learns to ask.
    /// Between 0 and 1; default 0.
    ///
    /// [`HELP_RESPONSE`]: crate::tasks::HELP_RESPONSE
    #[serde(default)]
    pub unknown_share: f64,
    /// A sentence appended to the question of every SFT row, e.g. the help option of the RL
    /// prompt (`" Ask for help if you cannot solve it."`), so that the rows are the exact user
    /// turns the model will see. Default: none, the bare question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// With an `instruction`: the share of the worked-solution rows, chosen at random, that also
    /// appear once more with the bare question, so the model answers the prompt without the
    /// help option too (the device-only baseline's). Such a copy never asks for help; its id
    /// ends in `-bare`. Between 0 and 1; default 0.
    #[serde(default)]
    pub bare_share: f64,
    /// Help rows first work part of the problem, then ask. A worked solution of several steps
    /// is written up to a step chosen at random before the last, results included
    /// (`<think>5 + 9 = 14, 14 - 8 = 6</think> <unknown> I need external assistance
    /// </unknown>`); a one-step solution is written without its result
    /// (`<think>5193 * 7292</think> <unknown> …`). Template I asks for help at the end of the
    /// reasoning; this way the help decision is made with the work in view, where a small model
    /// can tell what it can finish from what it cannot. Default false: the help response alone.
    #[serde(default)]
    pub think_before_asking: bool,
    /// Also teach the single steps the SFT levels' chains are made of: one worked problem
    /// `What is a op b?` for every value `a` a chain can carry into a step (its operands and
    /// its `within` range), every operand `b` and every operator of the level; with an
    /// `instruction`, once with it and once bare. The warm start then writes any step's result,
    /// values outside the range included (`6 + 9 = 15`); what it has not learned is to go on
    /// from such a value. Only for chain levels with `within`. Default false.
    #[serde(default)]
    pub step_table: bool,
}

/// A checked [`TaskSpec`]: defaults filled in, operators parsed, names resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Task {
    /// Which task.
    pub task: TaskKind,
    /// Problems in the train split.
    pub train: usize,
    /// Problems in the test split.
    pub test: usize,
    /// Whether train avoids test's questions.
    pub disjoint: bool,
    /// The levels, in the spec's order.
    pub levels: Vec<Level>,
    /// The SFT set, checked, with `levels` always named (the spec's default filled in).
    pub sft: SftSpec,
}

/// A checked difficulty level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Level {
    /// The difficulty label.
    pub name: String,
    /// Relative probability (positive).
    pub weight: f64,
    /// How its problems are drawn.
    #[serde(flatten)]
    pub kind: LevelKind,
}

/// How a level's problems are drawn.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LevelKind {
    /// An arithmetic level.
    Arithmetic(ArithmeticLevel),
    /// A Countdown level.
    Countdown(CountdownLevel),
}

/// A specification that cannot be generated, or a dataset that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A field of the spec has a bad value; `field` is its path (`levels[1].digits`).
    #[error("{field}: {message}")]
    Invalid {
        /// The path of the field in the spec, as YAML would spell it.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// An output file could not be written.
    #[error("{}: cannot write: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

impl TaskError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> TaskError {
        TaskError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn write(path: &std::path::Path, message: impl ToString) -> TaskError {
        TaskError::Write {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

impl TaskSpec {
    /// Checks the spec and fills in defaults. Errors name the offending field.
    ///
    /// ```
    /// use tandem_datasets::tasks::{LevelSpec, TaskKind, TaskSpec};
    /// let mut spec = TaskSpec::new(TaskKind::Arithmetic);
    /// spec.levels = vec![LevelSpec { digits: Some(0), ..LevelSpec::named("easy") }];
    /// let err = spec.resolve().unwrap_err();
    /// assert_eq!(err.to_string(), "levels[0].digits: must be between 1 and 9, found 0");
    /// ```
    pub fn resolve(&self) -> Result<Task, TaskError> {
        let specs = if self.levels.is_empty() {
            default_levels(self.task)
        } else {
            self.levels.clone()
        };
        let mut names = HashSet::new();
        let mut levels = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let field = |key: &str| format!("levels[{i}].{key}");
            if spec.name.trim().is_empty() {
                return Err(TaskError::invalid(field("name"), "must not be empty"));
            }
            if !names.insert(spec.name.as_str()) {
                let message = format!("`{}` names two levels; names must be unique", spec.name);
                return Err(TaskError::invalid(field("name"), message));
            }
            let weight = spec.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                let message = format!("must be a positive number, found {weight}");
                return Err(TaskError::invalid(field("weight"), message));
            }
            let kind = match self.task {
                TaskKind::Arithmetic => LevelKind::Arithmetic(arithmetic_level(spec, &field)?),
                TaskKind::Countdown => LevelKind::Countdown(countdown_level(spec, &field)?),
            };
            levels.push(Level {
                name: spec.name.clone(),
                weight,
                kind,
            });
        }
        let sft_names = match &self.sft.levels {
            Some(names) => names.clone(),
            None => vec![levels[0].name.clone()],
        };
        let mut sft_levels = Vec::with_capacity(sft_names.len());
        for (i, name) in sft_names.iter().enumerate() {
            let Some(index) = levels.iter().position(|l| &l.name == name) else {
                let known: Vec<&str> = levels.iter().map(|l| l.name.as_str()).collect();
                let message = format!("no level is named `{name}`; levels: {}", known.join(", "));
                return Err(TaskError::invalid(format!("sft.levels[{i}]"), message));
            };
            if !sft_levels.contains(name) {
                sft_levels.push(levels[index].name.clone());
            }
        }
        let share = self.sft.unknown_share;
        if !(0.0..=1.0).contains(&share) {
            let message = format!("must be between 0 and 1, found {share}");
            return Err(TaskError::invalid("sft.unknown_share", message));
        }
        let bare = self.sft.bare_share;
        if !(0.0..=1.0).contains(&bare) {
            let message = format!("must be between 0 and 1, found {bare}");
            return Err(TaskError::invalid("sft.bare_share", message));
        }
        if bare > 0.0 && self.sft.instruction.is_none() {
            let message =
                "bare copies differ from the other rows only by `sft.instruction`; set it";
            return Err(TaskError::invalid("sft.bare_share", message));
        }
        if self.sft.step_table {
            for name in &sft_levels {
                let level = levels
                    .iter()
                    .find(|l| &l.name == name)
                    .expect("resolved above");
                let chain_within = matches!(
                    &level.kind,
                    LevelKind::Arithmetic(ArithmeticLevel {
                        intermediate: Some(Intermediate::Within(_)),
                        ..
                    })
                );
                if !chain_within {
                    let message = format!(
                        "level `{name}` is not an arithmetic chain with `within`; the table is \
                         the steps such chains are made of"
                    );
                    return Err(TaskError::invalid("sft.step_table", message));
                }
            }
        }
        if self.train + self.test == 0 {
            return Err(TaskError::invalid("train", "train and test are both 0"));
        }
        Ok(Task {
            task: self.task,
            train: self.train,
            test: self.test,
            disjoint: self.disjoint,
            levels,
            sft: SftSpec {
                levels: Some(sft_levels),
                ..self.sft.clone()
            },
        })
    }
}

fn default_levels(task: TaskKind) -> Vec<LevelSpec> {
    match task {
        TaskKind::Arithmetic => vec![
            LevelSpec {
                digits: Some(2),
                ..LevelSpec::named("easy")
            },
            LevelSpec {
                digits: Some(5),
                ..LevelSpec::named("hard")
            },
        ],
        TaskKind::Countdown => vec![
            LevelSpec {
                numbers: Some(3),
                ..LevelSpec::named("easy")
            },
            LevelSpec {
                numbers: Some(5),
                ..LevelSpec::named("hard")
            },
        ],
    }
}

fn arithmetic_level(
    spec: &LevelSpec,
    field: &dyn Fn(&str) -> String,
) -> Result<ArithmeticLevel, TaskError> {
    let keys = "name, weight, digits, ops, operands, within, outside, choices, order";
    // A key of the other task is refused, so a mixed-up spec does not silently generate
    // something else.
    for (present, key) in [
        (spec.numbers.is_some(), "numbers"),
        (spec.max_number.is_some(), "max_number"),
    ] {
        if present {
            let message = format!("arithmetic levels do not take `{key}` (they take {keys})");
            return Err(TaskError::invalid(field(key), message));
        }
    }
    let digits = spec.digits.unwrap_or(2);
    if !(1..=ArithmeticLevel::MAX_DIGITS).contains(&digits) {
        let message = format!(
            "must be between 1 and {}, found {digits}",
            ArithmeticLevel::MAX_DIGITS
        );
        return Err(TaskError::invalid(field("digits"), message));
    }
    let ops = match &spec.ops {
        None => vec![Operator::Add, Operator::Sub, Operator::Mul],
        Some(ops) if ops.is_empty() => {
            return Err(TaskError::invalid(
                field("ops"),
                "must name at least one operator",
            ));
        }
        Some(ops) => {
            let mut parsed = Vec::with_capacity(ops.len());
            for (j, op) in ops.iter().enumerate() {
                let op = op.parse::<Operator>().map_err(|message| {
                    TaskError::invalid(format!("{}[{j}]", field("ops")), message)
                })?;
                if !parsed.contains(&op) {
                    parsed.push(op);
                }
            }
            parsed
        }
    };
    let operands = spec.operands.unwrap_or(2);
    if !(2..=ArithmeticLevel::MAX_OPERANDS).contains(&operands) {
        let message = format!(
            "must be between 2 and {}, found {operands}",
            ArithmeticLevel::MAX_OPERANDS
        );
        return Err(TaskError::invalid(field("operands"), message));
    }
    if operands > 2 && ops.contains(&Operator::Mul) {
        // Worked left to right, `2 + 3 * 4` would be 20; the usual reading is 14.
        let message = "a chain of more than 2 operands is worked left to right, which is the \
                       usual reading only with `+` and `-`";
        return Err(TaskError::invalid(field("ops"), message));
    }
    let intermediate = match (spec.within, spec.outside) {
        (Some(_), Some(_)) => {
            let message = "`within` and `outside` exclude each other; give one";
            return Err(TaskError::invalid(field("outside"), message));
        }
        (Some(range), None) => Some((Intermediate::Within(range), "within")),
        (None, Some(range)) => Some((Intermediate::Outside(range), "outside")),
        (None, None) => None,
    };
    if let Some((_, key)) = intermediate {
        if operands < 3 {
            let message = "needs a chain (`operands` of 3 or more): two operands have no \
                           intermediate value, only the answer";
            return Err(TaskError::invalid(field(key), message));
        }
        let [low, high] = spec.within.or(spec.outside).expect("one is set");
        if low > high {
            let message = format!("[low, high] with low <= high, found [{low}, {high}]");
            return Err(TaskError::invalid(field(key), message));
        }
    }
    let level = ArithmeticLevel {
        digits,
        ops,
        operands,
        intermediate: intermediate.map(|(condition, _)| condition),
        choices: spec.choices,
        order: match &spec.order {
            None => SearchOrder::Shuffled,
            Some(order) => order
                .parse()
                .map_err(|message: String| TaskError::invalid(field("order"), message))?,
        },
    };
    if spec.order.is_some() && spec.choices.is_none() {
        let message = "only a search question (`choices`) has an order to try its numbers in";
        return Err(TaskError::invalid(field("order"), message));
    }
    if let Some(choices) = spec.choices {
        if operands != 2 {
            let message = "a search question combines one listed number with one operand; \
                           it takes no chain (`operands` 2)";
            return Err(TaskError::invalid(field("operands"), message));
        }
        let most = (level.distinct_operands() as usize).min(ArithmeticLevel::MAX_CHOICES);
        if !(2..=most).contains(&choices) {
            let message = format!(
                "must be between 2 and {most} (distinct numbers of {digits} digit(s)), found \
                 {choices}"
            );
            return Err(TaskError::invalid(field("choices"), message));
        }
    }
    Ok(level)
}

fn countdown_level(
    spec: &LevelSpec,
    field: &dyn Fn(&str) -> String,
) -> Result<CountdownLevel, TaskError> {
    let keys = "name, weight, numbers, max_number";
    for (present, key) in [
        (spec.digits.is_some(), "digits"),
        (spec.ops.is_some(), "ops"),
        (spec.operands.is_some(), "operands"),
        (spec.within.is_some(), "within"),
        (spec.outside.is_some(), "outside"),
        (spec.choices.is_some(), "choices"),
        (spec.order.is_some(), "order"),
    ] {
        if present {
            let message = format!("countdown levels do not take `{key}` (they take {keys})");
            return Err(TaskError::invalid(field(key), message));
        }
    }
    let numbers = spec.numbers.unwrap_or(4);
    if !(2..=countdown::MAX_NUMBERS).contains(&numbers) {
        let message = format!(
            "must be between 2 and {}, found {numbers}",
            countdown::MAX_NUMBERS
        );
        return Err(TaskError::invalid(field("numbers"), message));
    }
    let max_number = spec.max_number.unwrap_or(100);
    if !(2..=countdown::MAX_VALUE).contains(&max_number) {
        let message = format!(
            "must be between 2 and {}, found {max_number}",
            countdown::MAX_VALUE
        );
        return Err(TaskError::invalid(field("max_number"), message));
    }
    Ok(CountdownLevel {
        numbers,
        max_number,
    })
}
