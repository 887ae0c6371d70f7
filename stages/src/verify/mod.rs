//! Verifiers: whether an answer is correct.

mod choice;
mod countdown;
mod exact;
mod math;

pub use choice::{ChoiceConfig, ChoiceVerifier};
pub use countdown::{
    CountdownConfig, CountdownMode, CountdownProblem, CountdownVerifier, MAX_ANSWER_CHARS,
    MAX_DEPTH, Outcome, check_expression, check_expression_in,
};
pub use exact::{ExactConfig, ExactVerifier, Extract};
pub use math::{
    MathConfig, MathExtractor, MathMethod, MathMode, MathReference, MathVerifier,
    normalize as normalize_math,
};

use tandem_schemas::{Group, Target, VerdictRecord};

/// What a verifier decided about one answer text.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// Whether the answer is correct.
    pub correct: bool,
    /// The answer found in the text, if any.
    pub extracted: Option<String>,
    /// The extracted answer after normalisation.
    pub normalized: Option<String>,
    /// How the verdict was decided.
    pub method: String,
}

/// The verdicts of a group: one per sample (`Target::Local`), and one for the cloud's answer
/// when the group has one (`Target::Cloud`, no `sample_idx`), each judged by `judge`.
pub fn judge_group(group: &Group, mut judge: impl FnMut(&str) -> Judgement) -> Vec<VerdictRecord> {
    let verdict = |judgement: Judgement, sample_idx: Option<u32>, target: Target| VerdictRecord {
        run_id: group.prompt.run_id.clone(),
        step: group.prompt.step,
        prompt_id: group.prompt.prompt_id.clone(),
        sample_idx,
        target,
        correct: judgement.correct,
        extracted: judgement.extracted,
        normalized: judgement.normalized,
        method: judgement.method,
    };
    let mut verdicts: Vec<VerdictRecord> = group
        .samples
        .iter()
        .map(|s| verdict(judge(&s.text), Some(s.sample_idx), Target::Local))
        .collect();
    if let Some(answer) = group.cloud.as_ref().and_then(|c| c.answer.as_deref()) {
        verdicts.push(verdict(judge(answer), None, Target::Cloud));
    }
    verdicts
}

/// The prompt's reference answer. A group whose prompt has none (or a blank one) gets a
/// `no_reference` error row and `None`: a verifier never judges against nothing.
pub(crate) fn reference_answer(group: &mut Group, stage_id: &str) -> Option<String> {
    let answer = group.prompt.answer.clone().filter(|a| !a.trim().is_empty());
    if answer.is_none() {
        group.push_error(
            stage_id,
            None,
            "no_reference",
            "the prompt has no reference answer to compare with",
        );
    }
    answer
}
