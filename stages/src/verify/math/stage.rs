//! The `verify.math` stage: judges each sample (and the cloud answer) against the prompt's
//! reference answer.

use std::time::Duration;

use tandem_schemas::{Facet, Facets, Group};

use super::budget::{Budget, Timeout};
use super::config::{MathConfig, MathMode};
use super::equiv::{Basis, Decision, Settings, canonical, equivalent, rounded_equal};
use super::extract::last_boxed;
use super::normalize::normalize_within;
use super::parse::{Expr, ParseFail, parse};
use super::rational::Rational;
use crate::Result;
use crate::contract::{GroupStage, StepContext};
use crate::verify::{Judgement, judge_group};
use tandem_datasets::answers::after_last_hashes;

/// How a verdict of `verify.math` was decided: `VerdictRecord.method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MathMethod {
    /// Both answers are rational numbers (or collections of them), compared exactly.
    ExactRational,
    /// Compared in floating point within the tolerances (constants, or random points for
    /// expressions with variables).
    Numeric,
    /// Decided by shape alone: a different kind of answer (a number against a set, two
    /// answers against one), different sizes or interval ends, or ∞.
    Structure,
    /// At least one side does not parse, or the comparison could not be decided: the
    /// normalised strings were compared.
    String,
    /// No answer was found where `extract` looks.
    NoAnswer,
    /// The extracted answer is longer than `max_answer_chars`.
    TooLong,
    /// Judging took longer than `time_limit_ms`.
    Timeout,
}

impl MathMethod {
    /// The name stored in `VerdictRecord.method`.
    pub fn as_str(self) -> &'static str {
        match self {
            MathMethod::ExactRational => "exact_rational",
            MathMethod::Numeric => "numeric",
            MathMethod::Structure => "structure",
            MathMethod::String => "string",
            MathMethod::NoAnswer => "no_answer",
            MathMethod::TooLong => "too_long",
            MathMethod::Timeout => "timeout",
        }
    }
}

impl From<Basis> for MathMethod {
    fn from(basis: Basis) -> MathMethod {
        match basis {
            Basis::Structure => MathMethod::Structure,
            Basis::ExactRational => MathMethod::ExactRational,
            Basis::Numeric => MathMethod::Numeric,
        }
    }
}

/// A reference answer, prepared once for all the answers judged against it.
#[derive(Clone, Debug)]
pub struct MathReference {
    normalized: String,
    parsed: Option<Expr>,
    /// Written as a percentage (`25\%`): with `percent`, its fraction (`0.25`) also counts.
    percent: bool,
}

impl MathReference {
    /// The reference after normalisation.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// Whether the reference parsed (else answers are compared with it as strings).
    pub fn parsed(&self) -> bool {
        self.parsed.is_some()
    }
}

/// Judges math answers against references (see [`MathConfig`] and the module documentation).
///
/// ```
/// use tandem_stages::verify::{MathConfig, MathVerifier};
/// let verifier = MathVerifier::new(MathConfig::default()).unwrap();
/// let reference = verifier.reference(r"\frac{\pi}{2}");
/// let judgement = verifier.judge(r"So the angle is $\boxed{pi/2}$.", &reference);
/// assert!(judgement.correct);
/// assert_eq!(judgement.method, "numeric");
/// assert_eq!(judgement.extracted.as_deref(), Some("pi/2"));
/// ```
pub struct MathVerifier {
    config: MathConfig,
    settings: Settings,
}

/// A parsed answer with what its text said about it.
struct Side<'e> {
    expr: &'e Expr,
    /// Written with a decimal point (`0.25`).
    decimal: bool,
    /// Written with a `%`.
    percent: bool,
}

/// Whether normalised text has a decimal number in it (`0.5`, `.5`), as math-verify's floats.
fn has_decimal(normalized: &str) -> bool {
    let bytes = normalized.as_bytes();
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
}

impl MathVerifier {
    /// A verifier with these parameters, once they are checked.
    pub fn new(config: MathConfig) -> Result<MathVerifier> {
        config.validate()?;
        let settings = Settings {
            rel_tol: config.rel_tol,
            abs_tol: config.abs_tol,
            points: config.points,
            point_range: config.point_range,
            seed: config.seed,
            max_exact_bits: config.max_exact_bits,
        };
        Ok(MathVerifier { config, settings })
    }

    fn budget(&self) -> Budget {
        Budget::new(Duration::from_millis(self.config.time_limit_ms))
    }

    /// The answer in a response: the first extractor of `extract` that finds one.
    pub fn extract<'t>(&self, text: &'t str) -> Option<&'t str> {
        self.config.extract.iter().find_map(|e| e.find(text))
    }

    /// Prepares a reference answer: its last `\boxed{…}` when it has one (a full worked
    /// solution, as MATH's), else what follows its last `####` (GSM8K's worked solutions end in
    /// `#### 72`), else the whole text; normalised and parsed once. A reference that does not
    /// parse (or not within the time limit) is compared as a string.
    pub fn reference(&self, gold: &str) -> MathReference {
        let answer = last_boxed(gold)
            .or_else(|| after_last_hashes(gold))
            .unwrap_or(gold);
        let mut budget = self.budget();
        let percent = answer.contains('%');
        let Ok(normalized) = normalize_within(answer, &budget) else {
            return MathReference {
                normalized: answer.to_owned(),
                parsed: None,
                percent,
            };
        };
        let parsed = parse(&normalized, self.config.max_depth, &mut budget)
            .ok()
            .map(|e| canonical(&e));
        MathReference {
            normalized,
            parsed,
            percent,
        }
    }

    /// Judges one response against a prepared reference, within the time limit.
    pub fn judge(&self, text: &str, reference: &MathReference) -> Judgement {
        let mut budget = self.budget();
        let verdict =
            |correct, extracted: &str, normalized: Option<String>, method: MathMethod| Judgement {
                correct,
                extracted: Some(extracted.to_owned()),
                normalized,
                method: method.as_str().to_owned(),
            };
        let Some(answer) = self.extract(text) else {
            return Judgement {
                correct: false,
                extracted: None,
                normalized: None,
                method: MathMethod::NoAnswer.as_str().to_owned(),
            };
        };
        if answer.chars().nth(self.config.max_answer_chars).is_some() {
            // Keep the verdict row small: the start of the answer says enough.
            let start: String = answer.chars().take(self.config.max_answer_chars).collect();
            return verdict(false, &start, None, MathMethod::TooLong);
        }
        let answer = match self.config.mode {
            MathMode::MathVerify => leading_number(answer).unwrap_or(answer),
            MathMode::Strict => answer,
        };
        let Ok(normalized) = normalize_within(answer, &budget) else {
            return verdict(false, answer, None, MathMethod::Timeout);
        };
        let parsed = match parse(&normalized, self.config.max_depth, &mut budget) {
            Ok(e) => Some(canonical(&e)),
            Err(ParseFail::Syntax) => None,
            Err(ParseFail::Timeout) => {
                return verdict(false, answer, Some(normalized), MathMethod::Timeout);
            }
        };
        let decision = match (&reference.parsed, &parsed) {
            (Some(gold), Some(pred)) => {
                let pred = Side {
                    expr: pred,
                    decimal: has_decimal(&normalized),
                    percent: answer.contains('%'),
                };
                match self.decide(reference, &pred, gold, &mut budget) {
                    Ok(decision) => decision,
                    Err(_) => {
                        return verdict(false, answer, Some(normalized), MathMethod::Timeout);
                    }
                }
            }
            _ => Decision::Undecided,
        };
        let (correct, method) = match decision {
            Decision::Same(basis) => (true, basis.into()),
            Decision::Different(basis) => (false, basis.into()),
            Decision::Undecided => (
                self.same_text(&normalized, &reference.normalized),
                MathMethod::String,
            ),
        };
        verdict(correct, answer, Some(normalized), method)
    }

    /// Equivalence, then what the options add: the fraction of a percentage on either side
    /// (`percent`), and values rounded to `decimal_places` when one side is a decimal.
    fn decide(
        &self,
        reference: &MathReference,
        pred: &Side,
        gold: &Expr,
        budget: &mut Budget,
    ) -> Result<Decision, Timeout> {
        let decimal = has_decimal(&reference.normalized) || pred.decimal;
        let mut compare = |gold: &Expr, pred: &Expr| -> Result<Decision, Timeout> {
            let decision = equivalent(gold, pred, &self.settings, budget)?;
            if let (Decision::Different(_), Some(places), true) =
                (decision, self.config.rounding(), decimal)
                && rounded_equal(gold, pred, places, budget)?
            {
                return Ok(Decision::Same(Basis::Numeric));
            }
            Ok(decision)
        };
        let decision = compare(gold, pred.expr)?;
        if !self.config.percent_as_fraction()
            || matches!(decision, Decision::Same(_))
            || !(gold.is_scalar() && pred.expr.is_scalar())
        {
            return Ok(decision);
        }
        // `%` is dropped in normalising, so `25\%` already equals `25`; here it also equals
        // `0.25`, whichever side wrote it.
        let hundredth = |e: &Expr| {
            Expr::Product(vec![
                e.clone(),
                Expr::Inv(Box::new(Expr::Num(Rational::from_integer(100.into())))),
            ])
        };
        if reference.percent
            && let Decision::Same(basis) = compare(&hundredth(gold), pred.expr)?
        {
            return Ok(Decision::Same(basis));
        }
        if pred.percent
            && let Decision::Same(basis) = compare(gold, &hundredth(pred.expr))?
        {
            return Ok(Decision::Same(basis));
        }
        Ok(decision)
    }

    fn same_text(&self, a: &str, b: &str) -> bool {
        if self.config.case_sensitive {
            a == b
        } else {
            a.to_lowercase() == b.to_lowercase()
        }
    }
}

impl GroupStage for MathVerifier {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Prompt, Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Verdicts])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        for group in groups {
            let Some(gold) = crate::verify::reference_answer(group, &ctx.stage_id) else {
                continue;
            };
            let gold = gold.as_str();
            let reference = self.reference(gold);
            let verdicts = judge_group(group, |text| self.judge(text, &reference));
            group.verdicts.extend(verdicts);
        }
        Ok(())
    }
}

/// The number a sentence answer starts with when words follow it (`12 apples.` is `12`, `-2.5
/// cm` is `-2.5`), as math-verify reads such answers; `None` for anything else (`12`, `x + 1`,
/// `12+3 apples`).
pub(super) fn leading_number(answer: &str) -> Option<&str> {
    let bytes = answer.as_bytes();
    let mut end = usize::from(bytes.first() == Some(&b'-'));
    let digits_from = end;
    while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') {
        end += 1;
    }
    let number = &answer[..end];
    let rest = &answer[end..];
    let is_number = end > digits_from
        && bytes[digits_from].is_ascii_digit()
        && number.matches('.').count() <= 1
        && !number.ends_with('.');
    let words_follow = rest.starts_with(char::is_whitespace)
        && rest
            .trim_start()
            .starts_with(|c: char| c.is_ascii_alphabetic());
    (is_number && words_follow).then_some(number)
}
