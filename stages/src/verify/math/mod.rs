//! `verify.math`: whether a math answer equals the reference, by value rather than by text.
//!
//! Each response goes through four steps, each in its own file:
//!
//! 1. `extract`: the answer is the last `\boxed{…}`, the last `<answer>` block, the line
//!    after a configured phrase, or the whole text, in the configured order;
//! 2. `normalize`: LaTeX that does not change the value is rewritten away (`\dfrac`,
//!    `\left`, units, `x =`, thousands separators, `**bold**`, …);
//! 3. `parse`: the normalised text becomes an expression tree (numbers as exact rationals,
//!    fractions, roots, powers, constants, functions, implicit multiplication, `±`, tuples,
//!    intervals, sets, matrices, relations);
//! 4. `equiv` (with `eval`): exact rational comparison where both sides are rational,
//!    else numeric agreement within tolerances (at seeded random points when there are
//!    variables); collections by shape, then element by element.
//!
//! What does not parse, or cannot be decided, falls back to comparing the normalised strings.
//! The judging mode (`strict` by default, or `math_verify`) adds what math-verify accepts beyond
//! exact value: a percentage equal to its fraction, decimals rounded to 6 places (`config`).
//! Every verdict records the extracted answer, its normalised form and the [`MathMethod`] that
//! decided it. A per-answer time limit (`budget`) and hard caps on length, nesting and
//! number size bound the work on any input; nothing here panics on model output.
//!
//! The traps reported against other verifiers are tests here: `1/2004!` is not `1/2006!`,
//! `±2021` is not `2021`, `\sqrt{1/n}` is `1/\sqrt{n}`, `pi/2` is `\dfrac{\pi}{2}`, `**73**` is
//! 73, and `1` is not a full answer to a question whose answer is `1, 2`.

mod budget;
mod config;
mod equiv;
mod eval;
mod extract;
mod normalize;
mod parse;
mod rational;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{MathConfig, MathMode};
pub use extract::MathExtractor;
pub use normalize::normalize;
pub use stage::{MathMethod, MathReference, MathVerifier};
