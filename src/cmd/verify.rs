//! `tandem verify`: judge a file of cases with one of the verifiers, the way a pipeline's
//! verify stage would, to check a dataset or a verifier.
//!
//! Each input line is a JSON object; the same object comes out with `correct`, `extracted`,
//! `normalized` and `reason` (the verdict's method) added, in input order. Rows are judged in
//! chunks on all cores. A line that is not a valid case stops the run with its `file:line`
//! (and column or field), after every row before it has been written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};
use tandem_stages::verify::{
    ChoiceConfig, ChoiceVerifier, CountdownConfig, CountdownProblem, CountdownVerifier, Judgement,
    MathConfig, MathVerifier,
};

/// Rows read and judged at a time.
const CHUNK: usize = 4096;

/// Which verifier judges the cases.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    /// `verify.math`: rows `{"gold": "...", "prediction": "..."}`.
    Math,
    /// `verify.countdown`: rows `{"numbers": [...], "target": n, "prediction": "..."}`.
    Countdown,
    /// `verify.choice`: rows `{"gold": "B", "prediction": "..."}`.
    Choice,
}

/// Arguments of `tandem verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The verifier.
    #[arg(long, value_enum)]
    kind: Kind,
    /// The cases, one JSON object per line. `gold` may be a string or a number; `prediction`
    /// is a response as a model wrote it (the verifier extracts the answer from it).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the judged rows (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// The verifier's parameters as JSON, as under `params:` in a pipeline, e.g.
    /// `{"extract": ["boxed", "whole"]}`, or `{"mode": "math_verify"}` to judge math as
    /// math-verify and lighteval do (`{"mode": "tinyzero"}` for Countdown as TinyZero does).
    #[arg(long, value_name = "JSON")]
    params: Option<String>,
    /// Threads judging rows (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

/// A verifier, built from `--kind` and `--params`.
enum Verifier {
    Math(MathVerifier),
    Countdown(CountdownVerifier),
    Choice(ChoiceVerifier),
}

/// One input row, read and checked.
enum Case {
    Math {
        gold: String,
        prediction: String,
    },
    Countdown {
        problem: CountdownProblem,
        prediction: String,
    },
    Choice {
        gold: char,
        prediction: String,
    },
}

/// A problem with one row, located by the caller.
struct RowError(String);

fn field<'r>(row: &'r Map<String, Value>, name: &str) -> Result<&'r Value, RowError> {
    row.get(name)
        .ok_or_else(|| RowError(format!("missing field `{name}`")))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field(row: &Map<String, Value>, name: &str) -> Result<String, RowError> {
    match field(row, name)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(RowError(format!(
            "field `{name}`: expected a string, found {}",
            kind_of(other)
        ))),
    }
}

/// A reference answer: a string, or a number written as it is in the file.
fn gold_field(row: &Map<String, Value>) -> Result<String, RowError> {
    match field(row, "gold")? {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(RowError(format!(
            "field `gold`: expected a string or a number, found {}",
            kind_of(other)
        ))),
    }
}

fn integer_field(value: &Value, name: &str) -> Result<i64, RowError> {
    value.as_i64().ok_or_else(|| {
        RowError(format!(
            "field `{name}`: expected an integer, found {}",
            match value {
                Value::Number(n) => format!("{n}"),
                other => kind_of(other).to_owned(),
            }
        ))
    })
}

impl Verifier {
    fn new(kind: Kind, params: &Value) -> Result<Verifier> {
        let parse_error = |e| anyhow!("--params: {e}");
        Ok(match kind {
            Kind::Math => {
                let config: MathConfig =
                    tandem_stages::params::parse(params).map_err(parse_error)?;
                Verifier::Math(MathVerifier::new(config).map_err(parse_error)?)
            }
            Kind::Countdown => {
                let config: CountdownConfig =
                    tandem_stages::params::parse(params).map_err(parse_error)?;
                Verifier::Countdown(CountdownVerifier::new(config).map_err(parse_error)?)
            }
            Kind::Choice => {
                let config: ChoiceConfig =
                    tandem_stages::params::parse(params).map_err(parse_error)?;
                Verifier::Choice(ChoiceVerifier::new(config).map_err(parse_error)?)
            }
        })
    }

    /// Reads one line into a case; the error says what is wrong (and the column, for JSON).
    fn case(&self, line: &str) -> Result<Case, RowError> {
        let value: Value = serde_json::from_str(line).map_err(|e| {
            // serde_json appends " at line 1 column N"; the caller adds the real line.
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            RowError(format!("column {}: {message}", e.column()))
        })?;
        let Value::Object(row) = value else {
            return Err(RowError(format!(
                "expected a JSON object, found {}",
                kind_of(&value)
            )));
        };
        let prediction = string_field(&row, "prediction")?;
        Ok(match self {
            Verifier::Math(_) => Case::Math {
                gold: gold_field(&row)?,
                prediction,
            },
            Verifier::Choice(v) => {
                let gold = gold_field(&row)?;
                let gold = v.reference(&gold).ok_or_else(|| {
                    RowError(format!("field `gold`: {gold:?} is not one of the letters"))
                })?;
                Case::Choice { gold, prediction }
            }
            Verifier::Countdown(_) => {
                let Value::Array(numbers) = field(&row, "numbers")? else {
                    return Err(RowError(
                        "field `numbers`: expected an array of integers".into(),
                    ));
                };
                let numbers = numbers
                    .iter()
                    .enumerate()
                    .map(|(i, n)| integer_field(n, &format!("numbers[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                let target = integer_field(field(&row, "target")?, "target")?;
                Case::Countdown {
                    problem: CountdownProblem { numbers, target },
                    prediction,
                }
            }
        })
    }

    fn judge(&self, case: &Case) -> Judgement {
        match (self, case) {
            (Verifier::Math(v), Case::Math { gold, prediction }) => {
                v.judge(prediction, &v.reference(gold))
            }
            (
                Verifier::Countdown(v),
                Case::Countdown {
                    problem,
                    prediction,
                },
            ) => v.judge(problem, prediction),
            (Verifier::Choice(v), Case::Choice { gold, prediction }) => v.judge(prediction, *gold),
            _ => unreachable!("cases are read by the verifier that judges them"),
        }
    }
}

/// Judges `cases` on up to `threads` threads, keeping their order.
fn judge_all(verifier: &Verifier, cases: &[Case], threads: usize) -> Vec<Judgement> {
    let per_thread = cases.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .chunks(per_thread)
            .map(|part| s.spawn(move || part.iter().map(|c| verifier.judge(c)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verifiers do not panic"))
            .collect()
    })
}

/// The input line with the verdict's fields added. The original text is kept as it is (key
/// order, number formatting) unless it already has one of the added keys, which is replaced.
fn judged_row(line: &str, judgement: &Judgement) -> String {
    let added = [
        ("correct", Value::Bool(judgement.correct)),
        (
            "extracted",
            judgement
                .extracted
                .clone()
                .map_or(Value::Null, Value::String),
        ),
        (
            "normalized",
            judgement
                .normalized
                .clone()
                .map_or(Value::Null, Value::String),
        ),
        ("reason", Value::String(judgement.method.clone())),
    ];
    let mut row: Map<String, Value> = serde_json::from_str(line).unwrap_or_default();
    if added.iter().any(|(key, _)| row.contains_key(*key)) {
        row.extend(added.map(|(k, v)| (k.to_owned(), v)));
        return Value::Object(row).to_string();
    }
    let body = line.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body).trim_end();
    let mut out = String::with_capacity(line.len() + 128);
    out.push_str(body);
    for (i, (key, value)) in added.iter().enumerate() {
        if i > 0 || !body.ends_with('{') {
            out.push_str(", ");
        }
        out.push_str(&format!("\"{key}\": {value}"));
    }
    out.push('}');
    out
}

#[derive(Default)]
struct Summary {
    rows: usize,
    correct: usize,
    by_reason: BTreeMap<String, (usize, usize)>,
}

impl Summary {
    fn add(&mut self, judgement: &Judgement) {
        self.rows += 1;
        self.correct += usize::from(judgement.correct);
        let entry = self.by_reason.entry(judgement.method.clone()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(judgement.correct);
    }

    fn print(&self, seconds: f64) {
        let share = |part: usize, whole: usize| {
            if whole == 0 {
                0.0
            } else {
                100.0 * part as f64 / whole as f64
            }
        };
        eprintln!(
            "{} rows, {} correct ({:.1}%), judged in {:.3} s ({:.0} rows/s)",
            self.rows,
            self.correct,
            share(self.correct, self.rows),
            seconds,
            self.rows as f64 / seconds.max(1e-9)
        );
        for (reason, (rows, correct)) in &self.by_reason {
            eprintln!("  {reason:<16} {rows:>8} rows  {correct:>8} correct");
        }
    }
}

fn open_output(path: Option<&Path>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    })
}

pub fn run(args: Args) -> Result<()> {
    let params = match &args.params {
        Some(text) => serde_json::from_str(text).context("--params is not JSON")?,
        None => Value::Null,
    };
    let verifier = Verifier::new(args.kind, &params)?;
    let input =
        File::open(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    let mut out = open_output(args.output.as_deref())?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut lines = BufReader::new(input).lines().enumerate();
    loop {
        let mut texts = Vec::new();
        let mut cases = Vec::new();
        let mut failure = None;
        while cases.len() < CHUNK {
            let Some((index, line)) = lines.next() else {
                break;
            };
            let place = format!("{}:{}", args.input.display(), index + 1);
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    failure = Some(anyhow!("{place}: {e}"));
                    break;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            match verifier.case(&line) {
                Ok(case) => {
                    texts.push(line);
                    cases.push(case);
                }
                Err(RowError(reason)) => {
                    failure = Some(anyhow!("{place}: {reason}"));
                    break;
                }
            }
        }
        if cases.is_empty() && failure.is_none() {
            break;
        }
        for (line, judgement) in texts.iter().zip(judge_all(&verifier, &cases, threads)) {
            writeln!(out, "{}", judged_row(line, &judgement))?;
            summary.add(&judgement);
        }
        if let Some(failure) = failure {
            // Everything before the bad line is kept.
            out.flush()?;
            summary.print(started.elapsed().as_secs_f64());
            return Err(failure);
        }
    }
    out.flush()?;
    summary.print(started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judgement(correct: bool) -> Judgement {
        Judgement {
            correct,
            extracted: Some("1".into()),
            normalized: None,
            method: "exact_rational".into(),
        }
    }

    #[test]
    fn rows_keep_their_text_and_gain_the_verdict() {
        assert_eq!(
            judged_row(
                r#"{"gold": 1, "prediction": "x", "id": 7.50}"#,
                &judgement(true)
            ),
            r#"{"gold": 1, "prediction": "x", "id": 7.50, "correct": true, "extracted": "1", "normalized": null, "reason": "exact_rational"}"#
        );
        assert_eq!(
            judged_row("{}", &judgement(false)),
            r#"{"correct": false, "extracted": "1", "normalized": null, "reason": "exact_rational"}"#
        );
        // A row that already has a verdict gets the new one, where the old one was (as Python's
        // dict.update keeps a key's place).
        assert_eq!(
            judged_row(r#"{"correct": true, "a": 1}"#, &judgement(false)),
            r#"{"correct":false,"a":1,"extracted":"1","normalized":null,"reason":"exact_rational"}"#
        );
    }
}
