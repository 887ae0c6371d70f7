//! Drawing the splits of a [`Task`]: levels by weight, problems by level, each split from its
//! own seeded stream.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use super::countdown;
use super::spec::{LevelKind, Task, TaskError, TaskSpec};

/// What a model answers when it hands a problem to the cloud: the help option of the paper's
/// templates, which the collaborative reward and the router look for.
pub const HELP_RESPONSE: &str = "<unknown> I need external assistance </unknown>";

/// Draws for one problem before a level is declared too small to give a new question.
const MAX_ATTEMPTS: usize = 1000;

/// One generated problem.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskExample {
    /// `arithmetic-train-000012`: task, split and index. SFT rows keep their train id.
    pub id: String,
    /// The prompt text.
    pub question: String,
    /// The exact answer: an integer for arithmetic, the JSON text
    /// `{"numbers": [...], "target": n}` for Countdown.
    pub answer: Value,
    /// The level's name.
    pub difficulty: String,
    /// A worked solution `<think>…</think> <answer>…</answer>`, or [`HELP_RESPONSE`] in SFT
    /// rows chosen to ask for help.
    pub solution: String,
}

/// The generated dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    /// Training problems. A question may repeat within train (small levels run out of
    /// distinct ones) but never appears in test.
    pub train: Vec<TaskExample>,
    /// Held-out problems, each question once.
    pub test: Vec<TaskExample>,
    /// The train problems of the SFT levels, in train order, some answering with
    /// [`HELP_RESPONSE`]; with an instruction, its questions carry it, and some worked rows are
    /// followed by a bare copy (`<id>-bare`).
    pub sft: Vec<TaskExample>,
}

/// Generates a spec's splits: the same spec and seed always give the same problems.
pub fn generate(spec: &TaskSpec, seed: u64) -> Result<Splits, TaskError> {
    spec.resolve()?.generate(seed)
}

impl Task {
    /// Generates the splits: test first (so it gets the widest choice of distinct questions),
    /// then train avoiding test's questions (unless not `disjoint`), then the SFT selection, each from its own ChaCha
    /// stream of `seed`.
    pub fn generate(&self, seed: u64) -> Result<Splits, TaskError> {
        let stream = |n| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(n);
            rng
        };
        let mut test_questions = HashSet::new();
        let test = self.split("test", self.test, &mut stream(1), |question| {
            test_questions.insert(question.to_owned())
        })?;
        let train = self.split("train", self.train, &mut stream(0), |question| {
            !self.disjoint || !test_questions.contains(question)
        })?;
        let sft = self.sft(&train, &mut stream(2));
        Ok(Splits { train, test, sft })
    }

    /// Draws `count` problems; `accept` says whether a question may join the split.
    fn split(
        &self,
        split: &str,
        count: usize,
        rng: &mut ChaCha8Rng,
        mut accept: impl FnMut(&str) -> bool,
    ) -> Result<Vec<TaskExample>, TaskError> {
        let total: f64 = self.levels.iter().map(|l| l.weight).sum();
        let mut examples = Vec::with_capacity(count);
        for index in 0..count {
            let mut pick = rng.random::<f64>() * total;
            let level_index = self
                .levels
                .iter()
                .position(|l| {
                    pick -= l.weight;
                    pick < 0.0
                })
                .unwrap_or(self.levels.len() - 1);
            let level = &self.levels[level_index];
            let mut attempts = 0;
            let (question, answer, solution) = loop {
                let Some(drawn) = draw(&level.kind, rng) else {
                    let message = format!(
                        "level `{}`: {} chains in a row missed its `within`/`outside` condition; \
                         widen the range or change the operands",
                        level.name,
                        super::ArithmeticLevel::MAX_DRAWS
                    );
                    return Err(TaskError::invalid(
                        format!("levels[{level_index}]"),
                        message,
                    ));
                };
                if accept(&drawn.0) {
                    break drawn;
                }
                attempts += 1;
                if attempts == MAX_ATTEMPTS {
                    let message = format!(
                        "level `{}` ran out of distinct questions after {index} {split} problems \
                         ({MAX_ATTEMPTS} draws gave only questions already taken); make it \
                         larger (more digits or numbers) or lower `train`/`test`",
                        level.name
                    );
                    return Err(TaskError::invalid(
                        format!("levels[{level_index}]"),
                        message,
                    ));
                }
            };
            examples.push(TaskExample {
                id: format!("{}-{split}-{index:06}", self.task.name()),
                question,
                answer,
                difficulty: level.name.clone(),
                solution,
            });
        }
        Ok(examples)
    }

    /// The train rows of the SFT levels, with exactly `round(unknown_share × rows)` of them,
    /// chosen at random, answering with the help response; with an instruction, every question
    /// carries it, and `round(bare_share × worked rows)` worked rows, chosen at random, are
    /// followed by a copy with the bare question.
    fn sft(&self, train: &[TaskExample], rng: &mut ChaCha8Rng) -> Vec<TaskExample> {
        let sft = &self.sft;
        let names: HashSet<&str> = sft.levels.iter().flatten().map(String::as_str).collect();
        let mut rows: Vec<TaskExample> = train
            .iter()
            .filter(|e| names.contains(e.difficulty.as_str()))
            .cloned()
            .collect();
        let unknown = (sft.unknown_share * rows.len() as f64).round() as usize;
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.shuffle(rng);
        for &i in &order[..unknown] {
            rows[i].solution = match sft.think_before_asking {
                true => format!(
                    "<think>{}</think> {HELP_RESPONSE}",
                    worked_part(&rows[i].solution, rng)
                ),
                false => HELP_RESPONSE.to_owned(),
            };
        }
        let table = self.step_table();
        let Some(instruction) = &sft.instruction else {
            rows.extend(table);
            return rows;
        };
        // `order` is a random permutation: past the help rows, its first ones are a random
        // choice of worked rows.
        let worked = rows.len() - unknown;
        let bare = (sft.bare_share * worked as f64).round() as usize;
        let mut with_bare = vec![false; rows.len()];
        for &i in &order[unknown..unknown + bare] {
            with_bare[i] = true;
        }
        let mut out = Vec::with_capacity(rows.len() + bare);
        for (row, bare) in rows.into_iter().zip(with_bare) {
            let copy = bare.then(|| TaskExample {
                id: format!("{}-bare", row.id),
                ..row.clone()
            });
            out.push(TaskExample {
                question: format!("{}{instruction}", row.question),
                ..row
            });
            out.extend(copy);
        }
        for row in table {
            out.push(TaskExample {
                id: format!("{}-bare", row.id),
                ..row.clone()
            });
            out.push(TaskExample {
                question: format!("{}{instruction}", row.question),
                ..row
            });
        }
        out
    }

    /// With `sft.step_table`, the single steps of the SFT levels (`arithmetic-step-3+4`), in
    /// level order, each step once.
    fn step_table(&self) -> Vec<TaskExample> {
        if !self.sft.step_table {
            return Vec::new();
        }
        let names: HashSet<&str> = self
            .sft
            .levels
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        for level in self
            .levels
            .iter()
            .filter(|l| names.contains(l.name.as_str()))
        {
            let LevelKind::Arithmetic(arithmetic) = &level.kind else {
                continue;
            };
            for (question, answer, solution) in arithmetic.step_table() {
                if !seen.insert(question.clone()) {
                    continue;
                }
                let expression = &question["What is ".len()..question.len() - 1];
                rows.push(TaskExample {
                    id: format!("{}-step-{}", self.task.name(), expression.replace(' ', "")),
                    question,
                    answer: Value::from(answer),
                    difficulty: level.name.clone(),
                    solution,
                });
            }
        }
        rows
    }
}

/// What a help row writes of a worked solution `<think>s₁ = v₁, …, sₙ = vₙ</think> …` before
/// it asks. With several steps: the steps up to one chosen at random before the last, with their
/// results (`s₁ = v₁, s₂ = v₂`), so the model learns to stop right after a result and ask.
/// With one step: that step without its result (`s₁`), as there is nothing to stop after; no
/// draw from `rng` then.
fn worked_part<'a>(solution: &'a str, rng: &mut impl Rng) -> &'a str {
    let think = solution
        .strip_prefix("<think>")
        .and_then(|rest| rest.split("</think>").next())
        .unwrap_or_default();
    let steps: Vec<&str> = think.split(", ").collect();
    if steps.len() < 2 {
        return think.split(" = ").next().unwrap_or(think);
    }
    let written = rng.random_range(1..steps.len());
    let end = steps[..written].iter().map(|s| s.len()).sum::<usize>() + ", ".len() * (written - 1);
    &think[..end]
}

fn draw(kind: &LevelKind, rng: &mut ChaCha8Rng) -> Option<(String, Value, String)> {
    match kind {
        LevelKind::Arithmetic(level) => {
            let (question, answer, solution) = level.draw(rng)?;
            Some((question, Value::from(answer), solution))
        }
        LevelKind::Countdown(level) => {
            let (numbers, target, solution) = level.draw(rng);
            let question = countdown::question(&numbers, target);
            let answer = Value::String(countdown::answer(&numbers, target));
            Some((question, answer, solution))
        }
    }
}
