//! `verify.choice`: multiple-choice answers. The chosen letter is read from the response and
//! compared with the reference letter. Judges every sample, and the cloud answer if present.
//!
//! Where the letter is looked for, in order (the first place that exists decides):
//! 1. the last `<answer>…</answer>` block;
//! 2. the last `\boxed{…}`;
//! 3. the last phrase "answer is X", "answer: X", "answer is (X)" (case-insensitive phrase; a
//!    bare letter must be upper-case, one in parentheses may be either);
//! 4. the whole response, when it is a lone letter (`B`, `(B)`, `B.`, `**B**`).
//!
//! Inside a block or box the letter may stand alone (`B`, `(B)`, `\text{B}`), start the text
//! (`B) 42`, `(B) 42`, `B. 42`), or follow an "answer is" phrase.

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group};

use crate::contract::{BuildContext, Built, GroupStage, StepContext};
use crate::registry::StageConfig;
use crate::verify::math::normalize;
use crate::verify::{Judgement, judge_group};
use crate::{Result, StageError};

/// Parameters of `verify.choice`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceConfig {
    /// The option letters, upper-case and distinct (default `"ABCDEFGHIJ"`). A letter outside
    /// them is not a choice (`invalid_choice`), and a reference outside them is an error row.
    #[serde(default = "default_letters")]
    pub letters: String,
}

fn default_letters() -> String {
    "ABCDEFGHIJ".into()
}

impl Default for ChoiceConfig {
    fn default() -> Self {
        ChoiceConfig {
            letters: default_letters(),
        }
    }
}

impl StageConfig for ChoiceConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Group(Box::new(ChoiceVerifier::new(self)?)))
    }
}

/// Judges multiple-choice answers.
///
/// ```
/// use tandem_stages::verify::{ChoiceConfig, ChoiceVerifier};
/// let verifier = ChoiceVerifier::new(ChoiceConfig::default()).unwrap();
/// let judgement = verifier.judge("I think the answer is (C).", 'C');
/// assert!(judgement.correct);
/// assert_eq!(judgement.normalized.as_deref(), Some("C"));
/// ```
pub struct ChoiceVerifier {
    letters: Vec<char>,
}

impl ChoiceVerifier {
    /// A verifier for these letters, once they are checked.
    pub fn new(config: ChoiceConfig) -> Result<ChoiceVerifier> {
        let letters: Vec<char> = config.letters.chars().collect();
        let distinct = letters
            .iter()
            .enumerate()
            .all(|(i, c)| !letters[..i].contains(c));
        if letters.len() < 2 || !letters.iter().all(char::is_ascii_uppercase) || !distinct {
            return Err(StageError::Params {
                path: "letters".into(),
                message: "must be at least two distinct upper-case letters, such as \"ABCD\""
                    .into(),
            });
        }
        Ok(ChoiceVerifier { letters })
    }

    /// The reference letter of a prompt's answer (`B`, `(b)`, `\text{B}`), if it is one of
    /// the letters.
    pub fn reference(&self, gold: &str) -> Option<char> {
        let letter = lone_letter(gold)?.to_ascii_uppercase();
        self.letters.contains(&letter).then_some(letter)
    }

    /// Where the answer is in a response, and the letter found there (if any).
    fn find<'t>(&self, text: &'t str) -> Option<(&'t str, Option<char>)> {
        let region = super::math::MathExtractor::AnswerTag
            .find(text)
            .or_else(|| super::math::MathExtractor::Boxed.find(text));
        if let Some(region) = region {
            let letter = lone_letter(region)
                .or_else(|| leading_letter(region))
                .or_else(|| answer_phrase(region));
            return Some((region, letter));
        }
        if let Some(letter) = answer_phrase(text) {
            return Some((text, Some(letter)));
        }
        lone_letter(text).map(|letter| (text, Some(letter)))
    }

    /// Judges one response against the reference letter.
    pub fn judge(&self, text: &str, reference: char) -> Judgement {
        let Some((region, letter)) = self.find(text) else {
            return Judgement {
                correct: false,
                extracted: None,
                normalized: None,
                method: "no_answer".into(),
            };
        };
        let letter = letter
            .map(|c| c.to_ascii_uppercase())
            .filter(|c| self.letters.contains(c));
        // A whole response is not worth storing as the extracted answer: keep its start.
        let extracted: String = region.chars().take(200).collect();
        Judgement {
            correct: letter == Some(reference),
            extracted: Some(extracted),
            normalized: letter.map(String::from),
            method: if letter.is_some() {
                "choice"
            } else {
                "invalid_choice"
            }
            .into(),
        }
    }
}

/// `B`, `(B)`, `b.`, `**B**`, `\text{(B)}`: the text is one letter, perhaps in parentheses.
fn lone_letter(text: &str) -> Option<char> {
    if text.len() > 64 {
        return None;
    }
    let normalized = normalize(text);
    let inner = normalized
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(&normalized);
    let mut chars = inner.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => Some(c),
        _ => None,
    }
}

/// `B) 42`, `(B) 42`, `B. 42`, `B: 42`: a letter that starts the text, set off by punctuation.
fn leading_letter(text: &str) -> Option<char> {
    let text = text.trim_start().trim_start_matches("**");
    let (text, parenthesised) = match text.strip_prefix('(') {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let mut chars = text.chars();
    let letter = chars.next().filter(char::is_ascii_uppercase)?;
    match chars.next() {
        Some(')') => Some(letter),
        Some('.' | ':') if !parenthesised => Some(letter),
        _ => None,
    }
}

/// The letter of the last "answer is X" / "answer: (X)" phrase.
fn answer_phrase(text: &str) -> Option<char> {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut end = lower.len();
    while let Some(at) = lower[..end].rfind("answer") {
        end = at;
        let mut i = at + "answer".len();
        let skip_spaces = |i: &mut usize| {
            while bytes.get(*i).is_some_and(u8::is_ascii_whitespace) {
                *i += 1;
            }
        };
        skip_spaces(&mut i);
        if lower[i..].starts_with("is") {
            i += 2;
        }
        if bytes.get(i) == Some(&b':') {
            i += 1;
        }
        // Spaces and decorations between the phrase and the letter, in any order.
        loop {
            skip_spaces(&mut i);
            let decoration = ["**", "$", "\\text{", "\\boxed{", "\\textbf{"]
                .into_iter()
                .find(|d| text[i..].starts_with(d));
            match decoration {
                Some(d) => i += d.len(),
                None => break,
            }
        }
        let parenthesised = bytes.get(i) == Some(&b'(');
        if parenthesised {
            i += 1;
        }
        let Some(&letter) = bytes.get(i) else {
            continue;
        };
        let after = bytes.get(i + 1).copied();
        let set_off = match after {
            None => true,
            Some(b) => !b.is_ascii_alphanumeric(),
        };
        let closed = !parenthesised || after == Some(b')');
        let case_ok = letter.is_ascii_uppercase() || (parenthesised && letter.is_ascii_lowercase());
        if set_off && closed && case_ok {
            return Some(char::from(letter));
        }
    }
    None
}

impl GroupStage for ChoiceVerifier {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Prompt, Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Verdicts])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        for group in groups {
            let Some(gold) = super::reference_answer(group, &ctx.stage_id) else {
                continue;
            };
            let gold = gold.as_str();
            let Some(reference) = self.reference(gold) else {
                let letters: String = self.letters.iter().collect();
                group.push_error(
                    &ctx.stage_id,
                    None,
                    "bad_reference",
                    format!("the reference answer {gold:?} is not one of the letters {letters}"),
                );
                continue;
            };
            let verdicts = judge_group(group, |text| self.judge(text, reference));
            group.verdicts.extend(verdicts);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::{PromptRecord, SampleRecord};

    use super::*;

    fn verifier(letters: &str) -> ChoiceVerifier {
        ChoiceVerifier::new(ChoiceConfig {
            letters: letters.into(),
        })
        .expect("valid letters")
    }

    #[test]
    fn responses_table() {
        let v = verifier("ABCDEFGHIJ");
        // (response, reference, correct, normalized, method)
        let table: &[(&str, char, bool, Option<&str>, &str)] = &[
            ("<answer>B</answer>", 'B', true, Some("B"), "choice"),
            ("<answer>(B)</answer>", 'B', true, Some("B"), "choice"),
            ("<answer> b </answer>", 'B', true, Some("B"), "choice"),
            ("<answer>B) 42</answer>", 'B', true, Some("B"), "choice"),
            ("<answer>(C) 42</answer>", 'B', false, Some("C"), "choice"),
            (
                "<answer>The answer is D</answer>",
                'D',
                true,
                Some("D"),
                "choice",
            ),
            ("<answer>42</answer>", 'B', false, None, "invalid_choice"),
            ("<answer>K</answer>", 'B', false, None, "invalid_choice"),
            (
                "<answer>A</answer> then <answer>C</answer>",
                'C',
                true,
                Some("C"),
                "choice",
            ),
            (r"so $\boxed{C}$", 'C', true, Some("C"), "choice"),
            (r"\boxed{\text{(C)}}", 'C', true, Some("C"), "choice"),
            (r"\boxed{\textbf{C}}", 'C', true, Some("C"), "choice"),
            ("Thus the answer is (B).", 'B', true, Some("B"), "choice"),
            ("Thus the answer is (b).", 'B', true, Some("B"), "choice"),
            ("The correct answer is C.", 'C', true, Some("C"), "choice"),
            ("Answer: A", 'A', true, Some("A"), "choice"),
            ("**Answer:** **E**", 'E', true, Some("E"), "choice"),
            ("The answer is $B$", 'B', true, Some("B"), "choice"),
            // "a" in prose is an article, not a choice.
            (
                "The answer is a number, so D",
                'D',
                false,
                None,
                "no_answer",
            ),
            (
                "the answer is C, not A; final answer is A",
                'A',
                true,
                Some("A"),
                "choice",
            ),
            ("B", 'B', true, Some("B"), "choice"),
            ("(B)", 'B', true, Some("B"), "choice"),
            (" B. ", 'B', true, Some("B"), "choice"),
            ("**B**", 'B', true, Some("B"), "choice"),
            ("I am not sure.", 'B', false, None, "no_answer"),
            ("", 'B', false, None, "no_answer"),
            ("Because of B we get C", 'B', false, None, "no_answer"),
        ];
        for (text, reference, correct, normalized, method) in table {
            let j = v.judge(text, *reference);
            assert_eq!(
                (j.correct, j.normalized.as_deref(), j.method.as_str()),
                (*correct, *normalized, *method),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_prose_trap_is_not_a_choice() {
        // "a number" gives no letter, so the earlier phrase decides.
        let v = verifier("ABCD");
        assert_eq!(answer_phrase("The answer is a number"), None);
        assert_eq!(
            v.judge("answer is C. The answer is a number", 'C')
                .normalized
                .as_deref(),
            Some("C")
        );
    }

    #[test]
    fn letters_are_configurable_and_checked() {
        let v = verifier("ABCD");
        assert_eq!(v.judge("<answer>E</answer>", 'A').method, "invalid_choice");
        assert_eq!(v.reference("(d)"), Some('D'));
        assert_eq!(v.reference("E"), None);
        assert_eq!(v.reference("42"), None);
        for bad in ["", "A", "AA", "Ab", "A1"] {
            assert!(
                ChoiceVerifier::new(ChoiceConfig {
                    letters: bad.into()
                })
                .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn judges_groups_and_flags_bad_references() {
        let mut v = verifier("ABCD");
        let sample = |i, text: &str| SampleRecord {
            prompt_id: "p".into(),
            sample_idx: i,
            text: text.into(),
            ..Default::default()
        };
        let prompt = |id: &str, answer: Option<&str>| PromptRecord {
            prompt_id: id.into(),
            answer: answer.map(str::to_owned),
            ..Default::default()
        };
        let mut groups = vec![
            Group {
                samples: vec![sample(0, "<answer>B</answer>"), sample(1, "answer: C")],
                ..Group::new(prompt("p", Some("B")))
            },
            Group::new(prompt("q", Some("F"))),
            Group::new(prompt("r", None)),
        ];
        let ctx = StepContext::single_worker("r", "choice", 0);
        v.process(&mut groups, &ctx).expect("process");
        let got: Vec<_> = groups[0].verdicts.iter().map(|v| v.correct).collect();
        assert_eq!(got, vec![true, false]);
        assert_eq!(groups[1].errors[0].kind, "bad_reference");
        assert_eq!(groups[2].errors[0].kind, "no_reference");
    }
}
