//! Presets for real benchmarks: the field names a Hugging Face dataset uses, and how to build the
//! question and take the reference answer from its rows, so a pipeline names `preset: gsm8k`
//! instead of writing a [`FieldMap`] and a conversion script.
//!
//! A preset is data (its [`FieldMap`] defaults) and one small per-row step ([`Build`]) that the
//! loaders run after reading a row's fields, so it works with every layout [`load`](crate::load)
//! reads, and a row it cannot finish is an error naming the file, the row and the field.
//!
//! ```
//! use tandem_datasets::{Preset, load_with_preset};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("test.jsonl");
//! std::fs::write(&path, r#"{"question": "2 + 3?", "answer": "2 + 3 = 5\n#### 5"}"#)?;
//! let gsm8k = Preset::named("gsm8k").unwrap();
//! let examples = load_with_preset(&path, &gsm8k.fields(), Some(gsm8k), None)?;
//! assert_eq!(examples[0].answer.as_deref(), Some("5"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::fields::{Role, Shape};
use crate::{Example, FieldMap, tasks};

/// A named mapping of a real benchmark's rows to [`Example`]s.
#[derive(Debug)]
pub struct Preset {
    name: &'static str,
    datasets: &'static [&'static str],
    id: Option<&'static str>,
    question: &'static str,
    answer: &'static str,
    difficulty: Option<&'static str>,
    build: Build,
}

/// What a preset does to a row once its fields are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    /// The fields are the question and the answer as they are.
    AsIs,
    /// The answer is the content of the last `\boxed{…}` in the answer field (a MATH solution).
    LastBoxed,
    /// The answer is the text after the last `####` (GSM8K), without thousands separators.
    AfterHashes,
    /// The answer is a number, stored as a float in some files: `27.0` becomes `27`.
    Number,
    /// The question field holds the numbers and the answer field the target: both are built
    /// as tandem's own Countdown generator writes them.
    Countdown,
}

/// Every preset, in the order `tandem` lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "math-lighteval",
        datasets: &["DigitalLearningGmbH/MATH-lighteval"],
        id: None,
        question: "problem",
        answer: "solution",
        difficulty: Some("level"),
        build: Build::LastBoxed,
    },
    Preset {
        name: "math-500",
        datasets: &["HuggingFaceH4/MATH-500"],
        id: Some("unique_id"),
        question: "problem",
        answer: "answer",
        difficulty: Some("level"),
        build: Build::AsIs,
    },
    Preset {
        name: "amc23",
        datasets: &["math-ai/amc23"],
        id: Some("id"),
        question: "question",
        answer: "answer",
        difficulty: None,
        build: Build::Number,
    },
    Preset {
        name: "minerva-math",
        datasets: &["math-ai/minervamath"],
        id: None,
        question: "question",
        answer: "answer",
        difficulty: None,
        build: Build::AsIs,
    },
    Preset {
        name: "gsm8k",
        datasets: &["openai/gsm8k"],
        id: None,
        question: "question",
        answer: "answer",
        difficulty: None,
        build: Build::AfterHashes,
    },
    Preset {
        name: "countdown-tasks",
        datasets: &["Jiayi-Pan/Countdown-Tasks-3to4"],
        id: None,
        question: "nums",
        answer: "target",
        difficulty: None,
        build: Build::Countdown,
    },
    Preset {
        name: "aime",
        datasets: &["AI-MO/aimo-validation-aime", "HuggingFaceH4/aime_2024"],
        id: Some("id"),
        question: "problem",
        answer: "answer",
        difficulty: None,
        build: Build::Number,
    },
];

impl Preset {
    /// The preset called `name`, if there is one.
    pub fn named(name: &str) -> Option<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name)
    }

    /// The names of all presets, comma-separated, for messages that refuse an unknown one.
    pub fn known() -> String {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        names.join(", ")
    }

    /// The name a pipeline writes as `preset:`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Hugging Face datasets whose rows it reads (`openai/gsm8k`).
    pub fn datasets(&self) -> &'static [&'static str] {
        self.datasets
    }

    /// Its field names, which a pipeline's own `fields:` entries may override
    /// ([`FieldOverrides`](crate::FieldOverrides)).
    pub fn fields(&self) -> FieldMap {
        FieldMap {
            id: self.id.map(str::to_owned),
            question: self.question.to_owned(),
            answer: Some(self.answer.to_owned()),
            difficulty: self.difficulty.map(str::to_owned),
            completions: None,
        }
    }

    /// How the loaders read `role`'s field, where the preset needs other than text.
    pub(crate) fn shape(&self, role: Role) -> Option<Shape> {
        (self.build == Build::Countdown && role == Role::Question).then_some(Shape::Scalars)
    }

    /// Whether it needs the answer field mapped (to build the question from it).
    pub(crate) fn needs_answer(&self) -> bool {
        self.build == Build::Countdown
    }

    /// Builds `example`'s question and answer from what the loader read; `inputs` is the
    /// question field's list where [`Preset::shape`] asked for one. On failure, the role whose
    /// field is at fault and what is wrong with it.
    pub(crate) fn finish(
        &self,
        example: &mut Example,
        inputs: Option<Vec<String>>,
    ) -> Result<(), (Role, String)> {
        let answer = |example: &mut Example, take: fn(&str) -> Result<String, String>| {
            if let Some(text) = &example.answer {
                example.answer = Some(take(text).map_err(|reason| (Role::Answer, reason))?);
            }
            Ok(())
        };
        match self.build {
            Build::AsIs => Ok(()),
            Build::LastBoxed => answer(example, last_boxed),
            Build::AfterHashes => answer(example, after_hashes),
            Build::Number => answer(example, |text| Ok(integral(text).to_owned())),
            Build::Countdown => {
                let numbers = inputs
                    .unwrap_or_default()
                    .iter()
                    .map(|n| integer(n))
                    .collect::<Option<Vec<i64>>>()
                    .filter(|numbers| !numbers.is_empty())
                    .ok_or_else(|| (Role::Question, "is not a list of integers".to_owned()))?;
                let target = example
                    .answer
                    .as_deref()
                    .and_then(integer)
                    .ok_or_else(|| (Role::Answer, "is not an integer".to_owned()))?;
                example.question = tasks::countdown_question(&numbers, target);
                example.answer = Some(tasks::countdown_answer(&numbers, target));
                Ok(())
            }
        }
    }
}

/// The content of the last `\boxed{…}` (or `\fbox{…}`) in a solution, braces inside it kept
/// balanced; `\boxed 5` (no braces, as a few MATH solutions write it) gives what follows, up to
/// `$`.
fn last_boxed(solution: &str) -> Result<String, String> {
    match crate::answers::last_boxed(solution).map(str::trim) {
        Some("") => Err("has an empty `\\boxed{}`".to_owned()),
        Some(content) => Ok(content.to_owned()),
        // `\boxed 5`: a box without braces holds the rest of its math.
        None => match ["\\boxed ", "\\fbox "]
            .iter()
            .filter_map(|command| solution.rfind(command).map(|at| at + command.len()))
            .max()
        {
            Some(start) => {
                let rest = &solution[start..];
                match rest.split('$').next().unwrap_or(rest).trim() {
                    "" => Err("has an empty `\\boxed{}`".to_owned()),
                    content => Ok(content.to_owned()),
                }
            }
            None if solution.contains("\\boxed{") || solution.contains("\\fbox{") => {
                Err("has a `\\boxed{` that is never closed".to_owned())
            }
            None => Err("has no `\\boxed{…}` to take the answer from".to_owned()),
        },
    }
}

/// The final answer of a GSM8K solution: the text after its last `####`, trimmed, with
/// thousands separators removed (`1,000` is `1000`).
fn after_hashes(solution: &str) -> Result<String, String> {
    match crate::answers::after_last_hashes(solution) {
        Some(answer) => Ok(answer.replace(',', "")),
        None if solution.contains("####") => Err("has nothing after its last `####`".to_owned()),
        None => Err("has no `####` before its final answer".to_owned()),
    }
}

/// A number's text with a zero fraction dropped (`27.0` is `27`, `-3.00` is `-3`); anything
/// else as it is.
fn integral(text: &str) -> &str {
    let Some((whole, fraction)) = text.split_once('.') else {
        return text;
    };
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    let is_integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if is_integer && !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') {
        whole
    } else {
        text
    }
}

fn integer(text: &str) -> Option<i64> {
    integral(text.trim()).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(question: &str, answer: &str) -> Example {
        Example {
            id: "0".into(),
            source: "test.jsonl:1".into(),
            question: question.into(),
            answer: Some(answer.into()),
            difficulty: None,
            completions: Vec::new(),
        }
    }

    fn finish(preset: &str, answer: &str) -> Result<Option<String>, (Role, String)> {
        let mut example = example("q", answer);
        let preset = Preset::named(preset).expect("a preset");
        preset.finish(&mut example, None)?;
        Ok(example.answer)
    }

    #[test]
    fn boxed_keeps_nested_braces_and_the_last_box_wins() {
        let solution = "First $\\boxed{1}$, then $x = \\boxed{\\frac{1}{\\sqrt{2}}}$.";
        assert_eq!(last_boxed(solution).as_deref(), Ok("\\frac{1}{\\sqrt{2}}"));
        assert_eq!(last_boxed("so $\\boxed 5$.").as_deref(), Ok("5"));
        assert_eq!(last_boxed("\\fbox{a} then \\boxed{b}").as_deref(), Ok("b"));
        assert_eq!(last_boxed("\\boxed{ {1,2} }").as_deref(), Ok("{1,2}"));
        assert_eq!(
            last_boxed("no box here"),
            Err("has no `\\boxed{…}` to take the answer from".to_owned())
        );
        assert_eq!(
            last_boxed("\\boxed{\\frac{1}{2}"),
            Err("has a `\\boxed{` that is never closed".to_owned())
        );
        assert_eq!(
            last_boxed("\\boxed{ }"),
            Err("has an empty `\\boxed{}`".to_owned())
        );
        assert_eq!(
            finish("math-lighteval", "$\\boxed{\\{1, 2\\}}$").expect("boxed"),
            Some("\\{1, 2\\}".to_owned())
        );
    }

    #[test]
    fn hashes_take_the_last_answer_without_thousands_separators() {
        assert_eq!(after_hashes("48 + 24 = 72\n#### 72").as_deref(), Ok("72"));
        assert_eq!(after_hashes("#### 1\n#### 1,000 ").as_deref(), Ok("1000"));
        assert_eq!(after_hashes("a\n####-2,500.50").as_deref(), Ok("-2500.50"));
        assert_eq!(
            after_hashes("The answer is 72."),
            Err("has no `####` before its final answer".to_owned())
        );
        assert_eq!(
            after_hashes("#### "),
            Err("has nothing after its last `####`".to_owned())
        );
        let err = finish("gsm8k", "72").expect_err("no ####");
        assert_eq!(err.0, Role::Answer);
    }

    #[test]
    fn numbers_drop_a_zero_fraction_only() {
        for (text, want) in [
            ("27.0", "27"),
            ("-3.00", "-3"),
            ("27", "27"),
            ("2.5", "2.5"),
            ("1.0e3", "1.0e3"),
            (".0", ".0"),
            ("x.0", "x.0"),
            ("\\frac{1}{2}", "\\frac{1}{2}"),
        ] {
            assert_eq!(integral(text), want, "{text}");
        }
        assert_eq!(finish("amc23", "27.0").expect("number"), Some("27".into()));
        assert_eq!(finish("aime", "204").expect("number"), Some("204".into()));
        assert_eq!(
            finish("math-500", "27.0").expect("as is"),
            Some("27.0".into())
        );
    }

    #[test]
    fn countdown_rows_read_as_the_generator_writes_them() {
        let preset = Preset::named("countdown-tasks").expect("a preset");
        assert_eq!(preset.shape(Role::Question), Some(Shape::Scalars));
        assert_eq!(preset.shape(Role::Answer), None);
        let mut row = example("", "33");
        let nums = ["74", "78", "36.0", "7"].map(str::to_owned).to_vec();
        preset.finish(&mut row, Some(nums)).expect("a problem");
        let numbers = [74, 78, 36, 7];
        assert_eq!(row.question, tasks::countdown_question(&numbers, 33));
        assert_eq!(row.answer, Some(tasks::countdown_answer(&numbers, 33)));
        assert_eq!(
            row.answer.as_deref(),
            Some("{\"numbers\": [74, 78, 36, 7], \"target\": 33}")
        );

        let mut row = example("", "33");
        let bad = preset.finish(&mut row, Some(vec!["7".into(), "x".into()]));
        assert_eq!(
            bad,
            Err((Role::Question, "is not a list of integers".into()))
        );
        let mut row = example("", "33.5");
        let bad = preset.finish(&mut row, Some(vec!["7".into()]));
        assert_eq!(bad, Err((Role::Answer, "is not an integer".into())));
    }

    #[test]
    fn names_are_unique_and_listed() {
        for (i, preset) in PRESETS.iter().enumerate() {
            assert_eq!(
                Preset::named(preset.name).map(|p| p.name),
                Some(preset.name)
            );
            assert!(PRESETS[..i].iter().all(|p| p.name != preset.name));
            assert!(!preset.datasets.is_empty());
        }
        assert_eq!(
            Preset::known(),
            "math-lighteval, math-500, amc23, minerva-math, gsm8k, countdown-tasks, aime"
        );
        assert!(Preset::named("gsm8K").is_none());
    }
}
