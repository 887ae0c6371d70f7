//! The paper's prompt templates (PAPER.md, "Output format"), by name, for `generate.policy`'s
//! `template` parameter. Each is a system prompt and a user turn; the `_task` variants are the
//! same without the sentence that offers help (the "task tuning only" baseline). `arithmetic`
//! (ours) is Template I's tag format in two short sentences, for the from-scratch models of the
//! built-in demo, whose every prompt token costs CPU time.

use serde::Deserialize;

/// A named prompt template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedTemplate {
    /// Template I (Countdown): think in `<think>`, answer in `<answer>`, or ask with `<unknown>`.
    Countdown,
    /// Template I without the help option.
    CountdownTask,
    /// Template II (MATH): numbered steps, `\boxed{}`, or `<unknown>` after six steps.
    Math,
    /// Template II without the help option.
    MathTask,
    /// (Ours) Template I's tags, said briefly: for the demo's tiny models.
    Arithmetic,
    /// `arithmetic` without the help option.
    ArithmeticTask,
}

const COUNTDOWN: &str = "You are a helpful assistant. You first think about the reasoning process in your mind and then provide the user with the answer. Show all your reasoning in <think> </think> tags. And return the final answer in <answer> </answer> tags at the end.";
const COUNTDOWN_HELP: &str = " If you did not find a solution after a thorough reasoning process, you can ask for external assistance at the end, for example, <unknown> I need external assistance </unknown>.";
const ARITHMETIC: &str =
    "Think in <think> </think> tags, then give the final answer in <answer> </answer> tags.";
const ARITHMETIC_HELP: &str =
    " If you cannot solve it, return <unknown> I need external assistance </unknown>.";
const MATH: &str = "You are given a math problem. Solve it step by step. Organize your thoughts using this format: Step 1: ..., Step 2: ..., Step 3: ..., and so on. Put your final answer within \\boxed{}.";
/// The paper's `{number}` is 6.
const MATH_HELP: &str = " If you cannot solve the problem after 6 reasoning steps, stop reasoning and return: <unknown> I need external assistance </unknown>.";

impl NamedTemplate {
    /// Every named template.
    pub const ALL: [NamedTemplate; 6] = [
        NamedTemplate::Countdown,
        NamedTemplate::CountdownTask,
        NamedTemplate::Math,
        NamedTemplate::MathTask,
        NamedTemplate::Arithmetic,
        NamedTemplate::ArithmeticTask,
    ];

    /// The system prompt.
    pub fn system_prompt(self) -> String {
        match self {
            NamedTemplate::Countdown => format!("{COUNTDOWN}{COUNTDOWN_HELP}"),
            NamedTemplate::CountdownTask => COUNTDOWN.to_owned(),
            NamedTemplate::Math => format!("{MATH}{MATH_HELP}"),
            NamedTemplate::MathTask => MATH.to_owned(),
            NamedTemplate::Arithmetic => format!("{ARITHMETIC}{ARITHMETIC_HELP}"),
            NamedTemplate::ArithmeticTask => ARITHMETIC.to_owned(),
        }
    }

    /// The user turn, with `{question}` where the question goes.
    pub fn user_turn(self) -> &'static str {
        match self {
            NamedTemplate::Countdown | NamedTemplate::CountdownTask => {
                "{question}. Let me solve this step by step."
            }
            NamedTemplate::Math | NamedTemplate::MathTask => {
                "{question}. Let's think step by step."
            }
            NamedTemplate::Arithmetic | NamedTemplate::ArithmeticTask => "{question}",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_are_the_papers_words_and_task_variants_only_lack_the_help_sentence() {
        let countdown = NamedTemplate::Countdown.system_prompt();
        assert!(countdown.starts_with("You are a helpful assistant. You first think"));
        assert!(countdown.ends_with(
            "you can ask for external assistance at the end, for example, <unknown> I need external assistance </unknown>."
        ));
        let math = NamedTemplate::Math.system_prompt();
        assert!(math.contains("Put your final answer within \\boxed{}. If you cannot solve the problem after 6 reasoning steps"));
        for (with, without) in [
            (NamedTemplate::Countdown, NamedTemplate::CountdownTask),
            (NamedTemplate::Math, NamedTemplate::MathTask),
            (NamedTemplate::Arithmetic, NamedTemplate::ArithmeticTask),
        ] {
            let task = without.system_prompt();
            assert!(!task.contains("<unknown>"), "{task}");
            assert!(with.system_prompt().starts_with(&task));
            assert_eq!(with.user_turn(), without.user_turn());
            assert!(with.user_turn().starts_with("{question}"));
        }
    }
}
