//! Seeded generators of synthetic tasks with exact answers: arithmetic (`What is 66 * 84?`) and
//! Countdown (reach a target with `+ - * /` over given numbers). Each problem carries a
//! difficulty label from the [`TaskSpec`]'s levels, a train/test split, and a worked solution
//! for supervised warm-starting; [`write_dataset`] stores them in the row shape `source.jsonl`
//! and `source.parquet` read.
//!
//! ```
//! use tandem_datasets::tasks::{TaskKind, TaskSpec, generate};
//!
//! let spec = TaskSpec { train: 20, test: 5, ..TaskSpec::new(TaskKind::Arithmetic) };
//! let splits = generate(&spec, 7)?;
//! assert_eq!((splits.train.len(), splits.test.len()), (20, 5));
//! let first = &splits.train[0];
//! assert_eq!(first.id, "arithmetic-train-000000");
//! assert!(first.question.starts_with("What is "));
//! assert!(first.solution.ends_with(&format!("<answer>{}</answer>", first.answer)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod arithmetic;
mod countdown;
mod generate;
mod search;
mod spec;
mod write;

pub use arithmetic::{ArithmeticLevel, Intermediate, Operator, SearchOrder};
pub use countdown::{CountdownLevel, MAX_NUMBERS, MAX_VALUE};
pub(crate) use countdown::{answer as countdown_answer, question as countdown_question};
pub use generate::{HELP_RESPONSE, Splits, TaskExample, generate};
pub use search::{SearchProblem, problem_in as search_problem_in};
pub use spec::{Level, LevelKind, LevelSpec, SftSpec, Task, TaskError, TaskKind, TaskSpec};
pub use write::{Format, Written, parquet_schema, write_dataset, write_jsonl, write_parquet};

#[cfg(test)]
mod tests;
