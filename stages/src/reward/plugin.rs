//! What `reward.command` and `reward.http` share: the JSON a plug-in reward receives for a group,
//! and the checks on what it sends back.
//!
//! A group goes out as one JSON object ([`GroupView`]): the prompt's fields, the samples (in
//! `sample_idx` order), the cloud answer and the verdicts. A plug-in answers one *result* per
//! group:
//!
//! - `{"scores": [s0, s1, …]}`: one score per sample, in the order sent. A score is a number
//!   (stored as the stage's `component`) or an object of named numbers (each name its own
//!   component), e.g. `{"accuracy": 1, "style": 0.5}`;
//! - `{"error": "why"}`: the plug-in could not score the group; it becomes an error row.
//!
//! A result is taken whole or not at all: a wrong number of scores, a NaN or infinite score, a
//! string or null where a number belongs, or a line that is not JSON gives error rows (kind
//! `bad_response` for the group, `bad_score` for one sample) with the reason, and the stage adds
//! no reward to that group. It never broadcasts one score to every sample and never fills in 0.

use serde::Serialize;
use serde_json::Value;
use tandem_schemas::{FinishReason, Group, Target};

use super::add_reward;
use crate::net::excerpt;

/// The JSON form of a group that plug-in rewards receive.
#[derive(Debug, Serialize)]
pub struct GroupView<'g> {
    /// The prompt's id.
    pub prompt_id: &'g str,
    /// The training step.
    pub step: u64,
    /// The question text.
    pub question: &'g str,
    /// The reference answer, if the dataset has one.
    pub answer: Option<&'g str>,
    /// The difficulty label, if the dataset has one.
    pub difficulty: Option<&'g str>,
    /// The samples, in `sample_idx` order; scores are answered in this order.
    pub samples: Vec<SampleView<'g>>,
    /// The cloud's answer (`null` when no cloud stage ran or no sample asked).
    pub cloud: Option<CloudView<'g>>,
    /// Verdicts of the verify stages that ran before.
    pub verdicts: Vec<VerdictView<'g>>,
}

/// One sample as a plug-in sees it.
#[derive(Debug, Serialize)]
pub struct SampleView<'g> {
    /// Index within the group.
    pub sample_idx: u32,
    /// The completion text.
    pub text: &'g str,
    /// Number of completion tokens (0 for samples taken from a dataset).
    pub num_tokens: usize,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Whether the sample asked the cloud for help.
    pub asked_help: bool,
}

/// The cloud answer as a plug-in sees it.
#[derive(Debug, Serialize)]
pub struct CloudView<'g> {
    /// The answer text; `null` when the call failed or was refused.
    pub answer: Option<&'g str>,
    /// Why there is no answer.
    pub error_kind: Option<&'g str>,
}

/// A verdict as a plug-in sees it.
#[derive(Debug, Serialize)]
pub struct VerdictView<'g> {
    /// The sample judged; `null` for the cloud's answer.
    pub sample_idx: Option<u32>,
    /// `local` or `cloud`.
    pub target: Target,
    /// Whether the answer is correct.
    pub correct: bool,
    /// The extracted answer.
    pub extracted: Option<&'g str>,
}

impl<'g> GroupView<'g> {
    /// The view of `group`.
    pub fn of(group: &'g Group) -> GroupView<'g> {
        let p = &group.prompt;
        GroupView {
            prompt_id: &p.prompt_id,
            step: p.step,
            question: &p.question,
            answer: p.answer.as_deref(),
            difficulty: p.difficulty.as_deref(),
            samples: group
                .samples
                .iter()
                .map(|s| SampleView {
                    sample_idx: s.sample_idx,
                    text: &s.text,
                    num_tokens: s.token_ids.len(),
                    finish_reason: s.finish_reason,
                    asked_help: s.asked_help,
                })
                .collect(),
            cloud: group.cloud.as_ref().map(|c| CloudView {
                answer: c.answer.as_deref(),
                error_kind: c.error_kind.as_deref(),
            }),
            verdicts: group
                .verdicts
                .iter()
                .map(|v| VerdictView {
                    sample_idx: v.sample_idx,
                    target: v.target,
                    correct: v.correct,
                    extracted: v.extracted.as_deref(),
                })
                .collect(),
        }
    }
}

/// Why a result was not used; becomes one error row.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The sample concerned, or `None` for the whole group.
    pub sample_idx: Option<u32>,
    /// Error kind (`bad_response`, `bad_score`, `plugin_error`, `timeout`, …).
    pub kind: String,
    /// What was wrong, in words.
    pub reason: String,
}

impl Problem {
    /// A problem with the whole group.
    pub fn group(kind: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            sample_idx: None,
            kind: kind.into(),
            reason: reason.into(),
        }
    }
}

/// The named components of one sample's score.
pub type Components = Vec<(String, f64)>;

/// Parses one result line: JSON, with Python's `NaN`/`Infinity` literals read as non-finite
/// scores so that the error names the sample rather than a column of the line.
pub fn parse_line(line: &str) -> Result<Value, Problem> {
    match serde_json::from_str(line) {
        Ok(value) => Ok(value),
        Err(first) => serde_json::from_str(&quote_non_finite(line)).map_err(|_| {
            Problem::group(
                "bad_response",
                format!("not JSON ({first}): {}", excerpt(line)),
            )
        }),
    }
}

/// Checks a result against `group` and turns it into per-sample components (in the order of
/// `group.samples`). `component` names bare-number scores.
pub fn check(
    result: &Value,
    group: &Group,
    component: &str,
) -> Result<Vec<Components>, Vec<Problem>> {
    let Some(object) = result.as_object() else {
        return Err(vec![Problem::group(
            "bad_response",
            format!(
                "expected an object {{\"scores\": [...]}} or {{\"error\": \"...\"}}, got {}",
                excerpt(&result.to_string())
            ),
        )]);
    };
    if let Some(error) = object.get("error") {
        let reason = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(vec![Problem::group("plugin_error", reason)]);
    }
    let Some(scores) = object.get("scores") else {
        return Err(vec![Problem::group(
            "bad_response",
            format!("no \"scores\" field in {}", excerpt(&result.to_string())),
        )]);
    };
    let Some(scores) = scores.as_array() else {
        return Err(vec![Problem::group(
            "bad_response",
            format!("\"scores\" must be a list, got {}", describe(scores)),
        )]);
    };
    if scores.len() != group.samples.len() {
        return Err(vec![Problem::group(
            "bad_response",
            format!(
                "{} scores for {} samples (one score per sample, in the order sent)",
                scores.len(),
                group.samples.len()
            ),
        )]);
    }
    let mut problems = Vec::new();
    let mut out = Vec::with_capacity(scores.len());
    for (sample, score) in group.samples.iter().zip(scores) {
        match components(score, component) {
            Ok(parts) => out.push(parts),
            Err(reason) => problems.push(Problem {
                sample_idx: Some(sample.sample_idx),
                kind: "bad_score".into(),
                reason,
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Adds a checked result to the group's rewards, or its problems to the group's errors.
pub fn apply(
    group: &mut Group,
    stage_id: &str,
    weight: f64,
    result: Result<Vec<Components>, Vec<Problem>>,
) {
    match result {
        Ok(per_sample) => {
            let idx: Vec<u32> = group.samples.iter().map(|s| s.sample_idx).collect();
            for (sample_idx, parts) in idx.into_iter().zip(per_sample) {
                let parts: Vec<(&str, f64)> = parts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                add_reward(group, stage_id, sample_idx, weight, &parts);
            }
        }
        Err(problems) => {
            for p in problems {
                group.push_error(stage_id, p.sample_idx, &p.kind, p.reason);
            }
        }
    }
}

/// One score: a finite number, or an object of finite numbers.
fn components(score: &Value, component: &str) -> Result<Components, String> {
    match score {
        Value::Object(parts) if !parts.is_empty() => parts
            .iter()
            .map(|(name, value)| {
                finite(value)
                    .map(|v| (name.clone(), v))
                    .map_err(|why| format!("component `{name}`: {why}"))
            })
            .collect(),
        Value::Object(_) => Err("score is an empty object".into()),
        value => finite(value).map(|v| vec![(component.to_owned(), v)]),
    }
}

fn finite(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("score {n} is not a finite number")),
        Value::String(s) if s.starts_with(NON_FINITE) => Err(format!(
            "score is {} (a reward must be a finite number)",
            &s[NON_FINITE.len()..]
        )),
        other => Err(format!("score is {}, not a number", describe(other))),
    }
}

/// What a JSON value is, for messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({})", excerpt(&format!("{s:?}"))),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Marks a non-finite literal that [`quote_non_finite`] turned into a string.
const NON_FINITE: &str = "\u{0}non-finite:";

/// Rewrites the bare `NaN`, `Infinity` and `-Infinity` tokens that Python's `json.dumps` writes
/// (outside strings) as marked strings, so a NaN score is reported as such.
fn quote_non_finite(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let mut rest = line;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if c == '\\' {
                let n = rest.chars().take(2).map(char::len_utf8).sum();
                out.push_str(&rest[..n]);
                rest = &rest[n..];
                continue;
            }
            in_string = c != '"';
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            // `\u0000` in JSON is the marker's first character.
            out.push_str(&format!("\"\\u0000non-finite:{token}\""));
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tandem_schemas::{PromptRecord, SampleRecord};

    use super::*;

    fn group(samples: u32) -> Group {
        let mut g = Group::new(PromptRecord {
            prompt_id: "p".into(),
            question: "What is 1 + 1?".into(),
            answer: Some("2".into()),
            ..Default::default()
        });
        g.samples = (0..samples)
            .map(|i| SampleRecord {
                prompt_id: "p".into(),
                sample_idx: i,
                text: format!("<answer>{i}</answer>"),
                token_ids: vec![1; i as usize],
                ..Default::default()
            })
            .collect();
        g
    }

    fn checked(line: &str, samples: u32) -> Result<Vec<Components>, Vec<Problem>> {
        let g = group(samples);
        let value = parse_line(line).map_err(|p| vec![p])?;
        check(&value, &g, "score")
    }

    fn reasons(
        result: Result<Vec<Components>, Vec<Problem>>,
    ) -> Vec<(Option<u32>, String, String)> {
        result
            .expect_err("rejected")
            .into_iter()
            .map(|p| (p.sample_idx, p.kind, p.reason))
            .collect()
    }

    #[test]
    fn the_view_carries_what_a_reward_needs() {
        let view = serde_json::to_value(GroupView::of(&group(2))).expect("json");
        assert_eq!(
            view,
            json!({
                "prompt_id": "p", "step": 0, "question": "What is 1 + 1?", "answer": "2",
                "difficulty": null, "cloud": null, "verdicts": [],
                "samples": [
                    {"sample_idx": 0, "text": "<answer>0</answer>", "num_tokens": 0,
                     "finish_reason": "eos", "asked_help": false},
                    {"sample_idx": 1, "text": "<answer>1</answer>", "num_tokens": 1,
                     "finish_reason": "eos", "asked_help": false},
                ],
            })
        );
    }

    #[test]
    fn numbers_and_named_components_are_accepted() {
        let got = checked(r#"{"scores": [1, 0.5]}"#, 2).expect("valid");
        assert_eq!(
            got,
            vec![
                vec![("score".to_owned(), 1.0)],
                vec![("score".to_owned(), 0.5)]
            ]
        );
        let got =
            checked(r#"{"scores": [{"acc": 1, "style": -0.5}, {"acc": 0}]}"#, 2).expect("valid");
        assert_eq!(
            got[0],
            vec![("acc".to_owned(), 1.0), ("style".to_owned(), -0.5)]
        );
        assert_eq!(got[1], vec![("acc".to_owned(), 0.0)]);
    }

    #[test]
    fn every_bad_result_names_its_reason() {
        let cases = [
            (
                r#"{"scores": [1, 0.5, 0]}"#,
                None,
                "bad_response",
                "3 scores for 2 samples",
            ),
            (
                r#"{"scores": [1]}"#,
                None,
                "bad_response",
                "1 scores for 2 samples",
            ),
            (
                r#"{"scores": 1}"#,
                None,
                "bad_response",
                "\"scores\" must be a list, got a number (1)",
            ),
            (r#"[1, 2]"#, None, "bad_response", "expected an object"),
            (
                r#"{"score": [1, 2]}"#,
                None,
                "bad_response",
                "no \"scores\" field",
            ),
            (
                r#"{"scores": [1, 2"#,
                None,
                "bad_response",
                "not JSON (EOF while parsing",
            ),
            ("", None, "bad_response", "not JSON"),
            (
                r#"{"error": "gold missing"}"#,
                None,
                "plugin_error",
                "gold missing",
            ),
            (
                r#"{"scores": [1, NaN]}"#,
                Some(1),
                "bad_score",
                "score is NaN (a reward must be a finite number)",
            ),
            (
                r#"{"scores": [-Infinity, 1]}"#,
                Some(0),
                "bad_score",
                "score is -Infinity",
            ),
            (
                r#"{"scores": [1, "0.5"]}"#,
                Some(1),
                "bad_score",
                "score is a string (\"0.5\"), not a number",
            ),
            (
                r#"{"scores": [null, 1]}"#,
                Some(0),
                "bad_score",
                "score is null, not a number",
            ),
            (
                r#"{"scores": [true, 1]}"#,
                Some(0),
                "bad_score",
                "score is a boolean (true), not a number",
            ),
            (
                r#"{"scores": [{}, 1]}"#,
                Some(0),
                "bad_score",
                "score is an empty object",
            ),
            (
                r#"{"scores": [{"a": NaN}, 1]}"#,
                Some(0),
                "bad_score",
                "component `a`: score is NaN",
            ),
        ];
        for (line, sample, kind, reason) in cases {
            let got = reasons(checked(line, 2));
            assert_eq!(got.len(), 1, "{line}: {got:?}");
            assert_eq!((got[0].0, got[0].1.as_str()), (sample, kind), "{line}");
            assert!(
                got[0].2.contains(reason),
                "{line}: {:?} lacks {reason:?}",
                got[0].2
            );
        }
        // Two bad samples: two rows, each naming its sample.
        let got = reasons(checked(r#"{"scores": [NaN, null]}"#, 2));
        assert_eq!(
            got.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![Some(0), Some(1)]
        );
    }

    #[test]
    fn non_finite_literals_inside_strings_are_left_alone() {
        let value = parse_line(r#"{"error": "NaN \" Infinity", "x": NaN}"#).expect("parsed");
        assert_eq!(value["error"], "NaN \" Infinity");
        assert!(
            value["x"]
                .as_str()
                .is_some_and(|s| s.starts_with(NON_FINITE))
        );
    }

    #[test]
    fn a_rejected_result_adds_no_reward_and_one_row_per_problem() {
        let mut g = group(3);
        apply(
            &mut g,
            "judge",
            1.0,
            checked(r#"{"scores": [1, NaN, 1]}"#, 3),
        );
        assert!(g.rewards.is_empty(), "never a partial or default reward");
        assert_eq!(g.errors.len(), 1);
        assert_eq!(
            (g.errors[0].sample_idx, g.errors[0].stage.as_str()),
            (Some(1), "judge")
        );
        let mut g = group(2);
        apply(
            &mut g,
            "judge",
            2.0,
            checked(r#"{"scores": [1, {"a": 0.25, "b": 1}]}"#, 2),
        );
        let rewards: Vec<_> = g.rewards.iter().map(|r| (r.sample_idx, r.reward)).collect();
        assert_eq!(rewards, vec![(0, 2.0), (1, 2.5)]);
        assert!(g.errors.is_empty());
    }
}
