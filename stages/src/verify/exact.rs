//! `verify.exact`: the extracted answer equals the reference after light normalisation
//! (whitespace, case, a trailing period). Judges every sample, and the cloud answer if present.

use serde::Deserialize;
use tandem_schemas::{Facet, Facets, Group};

use crate::Result;
use crate::contract::{BuildContext, Built, GroupStage, StepContext};
use crate::registry::StageConfig;
use crate::verify::{Judgement, judge_group};

/// Where the answer is in a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extract {
    /// The last `<answer>…</answer>` block.
    #[default]
    AnswerTag,
    /// The last `\boxed{…}` (balanced braces).
    Boxed,
    /// The whole response.
    Whole,
}

/// Parameters of `verify.exact`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactConfig {
    /// Where the answer is (`answer_tag`, `boxed`, `whole`).
    #[serde(default)]
    pub extract: Extract,
    /// Compare case-sensitively (default `false`).
    #[serde(default)]
    pub case_sensitive: bool,
}

impl StageConfig for ExactConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Group(Box::new(ExactVerifier { config: self })))
    }
}

/// Judges answers by normalised string equality.
pub struct ExactVerifier {
    config: ExactConfig,
}

impl ExactVerifier {
    /// The answer in `text`, if there is one where the config says.
    pub fn extract(&self, text: &str) -> Option<String> {
        match self.config.extract {
            Extract::Whole => Some(text.to_owned()),
            Extract::AnswerTag => {
                let start = text.rfind("<answer>")? + "<answer>".len();
                let end = text[start..].find("</answer>")? + start;
                Some(text[start..end].to_owned())
            }
            Extract::Boxed => {
                let start = text.rfind("\\boxed{")? + "\\boxed{".len();
                let mut depth = 1usize;
                for (i, c) in text[start..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(text[start..start + i].to_owned());
                            }
                        }
                        _ => {}
                    }
                }
                None
            }
        }
    }

    /// Trims, folds inner whitespace, drops one trailing period, and lower-cases unless asked not to.
    pub fn normalize(&self, answer: &str) -> String {
        let folded = answer.split_whitespace().collect::<Vec<_>>().join(" ");
        let trimmed = folded.strip_suffix('.').unwrap_or(&folded);
        if self.config.case_sensitive {
            trimmed.to_owned()
        } else {
            trimmed.to_lowercase()
        }
    }

    fn judge(&self, text: &str, reference: &str) -> Judgement {
        let extracted = self.extract(text);
        let normalized = extracted.as_deref().map(|a| self.normalize(a));
        Judgement {
            correct: normalized.as_deref() == Some(&self.normalize(reference)),
            method: if extracted.is_some() {
                "exact"
            } else {
                "no_answer"
            }
            .to_owned(),
            extracted,
            normalized,
        }
    }
}

impl GroupStage for ExactVerifier {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Prompt, Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Verdicts])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        for group in groups {
            let Some(reference) = super::reference_answer(group, &ctx.stage_id) else {
                continue;
            };
            let verdicts = judge_group(group, |text| self.judge(text, &reference));
            group.verdicts.extend(verdicts);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tandem_schemas::{PromptRecord, SampleRecord};

    use super::*;

    fn verifier(extract: Extract) -> ExactVerifier {
        ExactVerifier {
            config: ExactConfig {
                extract,
                case_sensitive: false,
            },
        }
    }

    #[test]
    fn extracts_the_last_answer_tag_and_balanced_boxed() {
        let v = verifier(Extract::AnswerTag);
        assert_eq!(
            v.extract("<answer>1</answer> then <answer> 2 </answer>")
                .as_deref(),
            Some(" 2 ")
        );
        assert_eq!(v.extract("<answer>unclosed"), None);
        let b = verifier(Extract::Boxed);
        assert_eq!(
            b.extract(r"so \boxed{\frac{1}{2}} done").as_deref(),
            Some(r"\frac{1}{2}")
        );
        assert_eq!(b.extract(r"\boxed{unbalanced"), None);
    }

    #[test]
    fn judges_samples_and_reports_missing_reference() {
        let mut v = verifier(Extract::AnswerTag);
        let sample = |i, text: &str| SampleRecord {
            prompt_id: "p".into(),
            sample_idx: i,
            text: text.into(),
            ..Default::default()
        };
        let mut groups = vec![
            Group {
                samples: vec![
                    sample(0, "<answer>Paris.</answer>"),
                    sample(1, "<answer>Lyon</answer>"),
                    sample(2, "none"),
                ],
                ..Group::new(PromptRecord {
                    prompt_id: "p".into(),
                    answer: Some("paris".into()),
                    ..Default::default()
                })
            },
            Group::new(PromptRecord {
                prompt_id: "q".into(),
                ..Default::default()
            }),
        ];
        let ctx = StepContext::single_worker("r", "check", 0);
        v.process(&mut groups, &ctx).expect("process");
        let correct: Vec<_> = groups[0]
            .verdicts
            .iter()
            .map(|v| (v.correct, v.method.as_str()))
            .collect();
        assert_eq!(
            correct,
            vec![(true, "exact"), (false, "exact"), (false, "no_answer")]
        );
        assert_eq!(groups[1].errors.len(), 1);
        assert_eq!(groups[1].errors[0].stage, "check");
        assert_eq!(groups[1].errors[0].kind, "no_reference");
    }
}
