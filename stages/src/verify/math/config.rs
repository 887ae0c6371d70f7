//! The parameters of `verify.math`: where the answer is, how long and how large it may be, the
//! tolerances of numeric equivalence, and the judging mode (strict, or as math-verify judges).

use serde::Deserialize;

use super::extract::MathExtractor;
use super::stage::MathVerifier;
use crate::contract::{BuildContext, Built};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// How answers are judged: which equivalences beyond exact value hold unless set one by one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MathMode {
    /// Exact value: `0.333333` is not `1/3`, `0.25` is not `25\%` (a `%` is dropped, so `25`
    /// is). The default, because this judge is a training reward: an approximation or a
    /// misread percentage that earned reward would be learned.
    #[default]
    Strict,
    /// As math-verify (and lighteval, which uses it) judges, so accuracies compare with
    /// published numbers: `percent: true` and `decimal_places: 6` (math-verify's
    /// `float_rounding`), either of which may still be set on its own; and an answer that
    /// starts with a number followed by words is that number (`12 apples`, `5 cm`; math-verify
    /// 0.9.0 reads `3 pi` as 3 too).
    MathVerify,
}

/// Parameters of `verify.math`. Every field has a default, so `params:` may be left out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathConfig {
    /// Where to find the answer in a response, tried in this order; the first that finds one
    /// wins (default `[boxed, answer_tag, {prefix: "final answer is"}, {prefix: "the answer
    /// is"}]`: a box first, then the sentence Minerva's prompt asks for, `Final Answer: The
    /// final answer is $X$. I hope it is correct.`, then a closing "The answer is X."). Entries:
    /// `boxed` (last `\boxed{…}`/`\fbox{…}`), `answer_tag` (last `<answer>…</answer>`),
    /// `{prefix: "The answer is"}` (the rest of the sentence after the last such phrase,
    /// case-insensitive; its first `$…$` span when it has one), `whole` (the whole response).
    #[serde(default = "default_extract")]
    pub extract: Vec<MathExtractor>,
    /// The judging mode (default `strict`); `math_verify` judges as math-verify and lighteval
    /// do. `percent` and `decimal_places`, when set, override what the mode implies.
    #[serde(default)]
    pub mode: MathMode,
    /// Whether a percentage also equals its fraction: `25\%` ≡ `0.25` ≡ `25`, either side
    /// written with the `%` (default: `false` in `strict` mode, where `25\%` ≡ `25` only;
    /// `true` in `math_verify` mode). Only scalar answers are rescaled.
    #[serde(default)]
    pub percent: Option<bool>,
    /// When either answer is written as a decimal (`0.333333`), both values are rounded to
    /// this many decimal places and compared, as math-verify's `float_rounding` does: with 6,
    /// `0.333333` ≡ `1/3` but `0.33` is not (default: unset in `strict` mode, exact value;
    /// `6` in `math_verify` mode). Scalar constants only; at most 15.
    #[serde(default)]
    pub decimal_places: Option<u32>,
    /// Time allowed for judging one answer, in milliseconds (default 1000). Checked by the
    /// parser and the evaluators as they work, so it holds on any thread; an answer over it is
    /// `timeout` (wrong).
    #[serde(default = "default_time_limit_ms")]
    pub time_limit_ms: u64,
    /// Extracted answers longer than this many characters are `too_long` (wrong) without being
    /// read (default 1000).
    #[serde(default = "default_max_answer_chars")]
    pub max_answer_chars: usize,
    /// Brackets, signs, exponents and function calls nested deeper than this make an answer
    /// unparseable (it is then compared as a string; default 50).
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Exact arithmetic gives up on a value needing more bits than this (numerator and
    /// denominator together; default 65536, about 19,700 digits: `2006!` fits, `2^(10^9)`
    /// does not) and numeric comparison takes over.
    #[serde(default = "default_max_exact_bits")]
    pub max_exact_bits: u64,
    /// Relative tolerance of numeric comparison (default `1e-9`): `a` and `b` agree when
    /// `|a − b| ≤ max(abs_tol, rel_tol · max(|a|, |b|))`.
    #[serde(default = "default_rel_tol")]
    pub rel_tol: f64,
    /// Absolute tolerance of numeric comparison, for values near zero (default `1e-12`).
    #[serde(default = "default_abs_tol")]
    pub abs_tol: f64,
    /// For expressions with variables: how many random points must agree (default 5). Points
    /// where both sides are undefined or out of float range are skipped, up to four times
    /// this many tries.
    #[serde(default = "default_points")]
    pub points: usize,
    /// The range each variable is drawn from, `[low, high)` (default `[0.5, 2.5]`: positive,
    /// so `\sqrt{1/n}` and `1/\sqrt{n}` agree as they do for the positive `n` meant).
    #[serde(default = "default_point_range")]
    pub point_range: [f64; 2],
    /// Seed of the random points (default 0); the same seed gives the same verdicts.
    #[serde(default)]
    pub seed: u64,
    /// Compare case-sensitively when falling back to strings (default `false`).
    #[serde(default)]
    pub case_sensitive: bool,
}

fn default_extract() -> Vec<MathExtractor> {
    vec![
        MathExtractor::Boxed,
        MathExtractor::AnswerTag,
        MathExtractor::Prefix("final answer is".into()),
        MathExtractor::Prefix("the answer is".into()),
    ]
}

fn default_time_limit_ms() -> u64 {
    1000
}

fn default_max_answer_chars() -> usize {
    1000
}

fn default_max_depth() -> usize {
    50
}

fn default_max_exact_bits() -> u64 {
    1 << 16
}

fn default_rel_tol() -> f64 {
    1e-9
}

fn default_abs_tol() -> f64 {
    1e-12
}

fn default_points() -> usize {
    5
}

fn default_point_range() -> [f64; 2] {
    [0.5, 2.5]
}

impl Default for MathConfig {
    fn default() -> Self {
        MathConfig {
            extract: default_extract(),
            mode: MathMode::default(),
            percent: None,
            decimal_places: None,
            time_limit_ms: default_time_limit_ms(),
            max_answer_chars: default_max_answer_chars(),
            max_depth: default_max_depth(),
            max_exact_bits: default_max_exact_bits(),
            rel_tol: default_rel_tol(),
            abs_tol: default_abs_tol(),
            points: default_points(),
            point_range: default_point_range(),
            seed: 0,
            case_sensitive: false,
        }
    }
}

fn invalid(path: &str, message: &str) -> StageError {
    StageError::Params {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

impl MathConfig {
    /// Whether `25\%` also equals `0.25`: `percent` if set, else what `mode` implies.
    pub fn percent_as_fraction(&self) -> bool {
        self.percent.unwrap_or(self.mode == MathMode::MathVerify)
    }

    /// The decimal places decimals are rounded to before comparing, if any: `decimal_places`
    /// if set, else what `mode` implies.
    pub fn rounding(&self) -> Option<u32> {
        self.decimal_places.or(match self.mode {
            MathMode::Strict => None,
            MathMode::MathVerify => Some(6),
        })
    }

    /// Checks the values serde cannot: non-empty lists, positive limits, sane tolerances.
    pub fn validate(&self) -> Result<()> {
        if self.extract.is_empty() {
            return Err(invalid(
                "extract",
                "list at least one place to look for the answer",
            ));
        }
        for (i, extractor) in self.extract.iter().enumerate() {
            if let MathExtractor::Prefix(prefix) = extractor
                && (prefix.trim().is_empty() || !prefix.is_ascii())
            {
                return Err(invalid(
                    &format!("extract[{i}].prefix"),
                    "the prefix must be non-empty ASCII text",
                ));
            }
        }
        if self.decimal_places.is_some_and(|d| d > 15) {
            // An f64 holds about 16 significant digits; more places would compare noise.
            return Err(invalid("decimal_places", "must be between 0 and 15"));
        }
        if self.time_limit_ms == 0 {
            return Err(invalid("time_limit_ms", "must be at least 1"));
        }
        if self.max_answer_chars == 0 {
            return Err(invalid("max_answer_chars", "must be at least 1"));
        }
        if !(1..=200).contains(&self.max_depth) {
            // Deeper nesting would risk the stack of a worker thread.
            return Err(invalid("max_depth", "must be between 1 and 200"));
        }
        if !(64..=1 << 24).contains(&self.max_exact_bits) {
            return Err(invalid("max_exact_bits", "must be between 64 and 16777216"));
        }
        for (name, tol) in [("rel_tol", self.rel_tol), ("abs_tol", self.abs_tol)] {
            if !(tol.is_finite() && (0.0..1.0).contains(&tol)) {
                return Err(invalid(name, "must be a number in [0, 1)"));
            }
        }
        if !(1..=100).contains(&self.points) {
            return Err(invalid("points", "must be between 1 and 100"));
        }
        let [lo, hi] = self.point_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(invalid(
                "point_range",
                "must be two finite numbers, low < high",
            ));
        }
        Ok(())
    }
}

impl StageConfig for MathConfig {
    fn build(self, _ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Group(Box::new(MathVerifier::new(self)?)))
    }
}
