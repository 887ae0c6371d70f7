//! How a question becomes the prompt the policy sees, from the parameters `generate.policy` and
//! `learn.sft` share (`chat`, `template`, `system_prompt`, `prompt_template`), so a model
//! fine-tuned on prompts is sampled later from token-for-token the same ones.
//!
//! The named templates are the paper's (PAPER.md, "Output format"). Each is a system prompt and a
//! user turn; the `_task` variants are the same without the sentence that offers help (the "task
//! tuning only" baseline). `arithmetic` (ours) is the bare question, with one short sentence
//! offering help: the built-in demo's from-scratch models learn the tag format from their warm
//! start, and every prompt token costs them CPU time.

use serde::Deserialize;

use crate::StageError;
use crate::policy::{PromptFormat, Tokenizer};

/// The prompt parameters of a stage kind, as its YAML gives them. Each kind declares the four
/// fields itself (serde's `flatten` cannot be combined with `deny_unknown_fields`) and hands them
/// here to be checked and resolved in one place.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptParams {
    /// Render the prompt with the model's chat template (as a user message).
    pub chat: bool,
    /// One of the paper's templates by name: its system prompt and user turn, unless
    /// `system_prompt` or `prompt_template` is also given.
    pub template: Option<NamedTemplate>,
    /// A system message (with `chat`).
    pub system_prompt: Option<String>,
    /// The user message; `{question}` is replaced by the prompt's question.
    pub prompt_template: Option<String>,
}

impl PromptParams {
    /// The prompt format, checked against `tokenizer` (of the model in `model_dir`, named in
    /// errors): the user turn must hold `{question}`, a system prompt needs `chat`, and `chat`
    /// needs a chat template.
    pub fn format(
        self,
        tokenizer: &Tokenizer,
        model_dir: &std::path::Path,
    ) -> Result<PromptFormat, StageError> {
        let params = |path: &str, message: String| StageError::Params {
            path: path.into(),
            message,
        };
        let template = self.prompt_template.unwrap_or_else(|| {
            self.template
                .map_or("{question}", NamedTemplate::user_turn)
                .to_owned()
        });
        let system_prompt = self
            .system_prompt
            .or_else(|| self.template.and_then(NamedTemplate::system_prompt));
        if !template.contains("{question}") {
            return Err(params(
                "prompt_template",
                "must contain `{question}`".into(),
            ));
        }
        if system_prompt.is_some() && !self.chat {
            return Err(params(
                "chat",
                "a system prompt (from `system_prompt` or `template`) needs `chat: true`".into(),
            ));
        }
        if self.chat && !tokenizer.has_chat_template() {
            return Err(params(
                "chat",
                format!(
                    "{} has no chat template; set `chat: false`",
                    model_dir.display()
                ),
            ));
        }
        Ok(PromptFormat {
            chat: self.chat,
            system_prompt,
            template,
        })
    }
}

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

    /// The system prompt (`arithmetic` has none: its tiny models learn the format from data).
    pub fn system_prompt(self) -> Option<String> {
        match self {
            NamedTemplate::Countdown => Some(format!("{COUNTDOWN}{COUNTDOWN_HELP}")),
            NamedTemplate::CountdownTask => Some(COUNTDOWN.to_owned()),
            NamedTemplate::Math => Some(format!("{MATH}{MATH_HELP}")),
            NamedTemplate::MathTask => Some(MATH.to_owned()),
            NamedTemplate::Arithmetic | NamedTemplate::ArithmeticTask => None,
        }
    }

    /// The same template without the sentence that offers help (a `_task` variant is its own):
    /// what a question is answered with when the cloud may not be asked.
    ///
    /// ```
    /// use tandem_stages::prompt::NamedTemplate;
    /// assert_eq!(NamedTemplate::Math.without_help(), NamedTemplate::MathTask);
    /// assert_eq!(NamedTemplate::MathTask.without_help(), NamedTemplate::MathTask);
    /// ```
    pub fn without_help(self) -> NamedTemplate {
        match self {
            NamedTemplate::Countdown | NamedTemplate::CountdownTask => NamedTemplate::CountdownTask,
            NamedTemplate::Math | NamedTemplate::MathTask => NamedTemplate::MathTask,
            NamedTemplate::Arithmetic | NamedTemplate::ArithmeticTask => {
                NamedTemplate::ArithmeticTask
            }
        }
    }

    /// The texts that end an answer in this template's format (`tandem eval`'s): the closing
    /// answer tag where the answer is tagged, and the closing help tag.
    pub fn stop_strings(self) -> &'static [&'static str] {
        match self {
            NamedTemplate::Math | NamedTemplate::MathTask => &["</unknown>"],
            _ => &["</answer>", "</unknown>"],
        }
    }

    /// The template's YAML name (`math`, `countdown_task`, …).
    pub fn name(self) -> &'static str {
        match self {
            NamedTemplate::Countdown => "countdown",
            NamedTemplate::CountdownTask => "countdown_task",
            NamedTemplate::Math => "math",
            NamedTemplate::MathTask => "math_task",
            NamedTemplate::Arithmetic => "arithmetic",
            NamedTemplate::ArithmeticTask => "arithmetic_task",
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
            NamedTemplate::Arithmetic => "{question} Ask for help if you cannot solve it.",
            NamedTemplate::ArithmeticTask => "{question}",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_are_the_papers_words_and_task_variants_only_lack_the_help_sentence() {
        let system = |t: NamedTemplate| t.system_prompt().unwrap_or_default();
        let countdown = system(NamedTemplate::Countdown);
        assert!(countdown.starts_with("You are a helpful assistant. You first think"));
        assert!(countdown.ends_with(
            "you can ask for external assistance at the end, for example, <unknown> I need external assistance </unknown>."
        ));
        let math = system(NamedTemplate::Math);
        assert!(math.contains("Put your final answer within \\boxed{}. If you cannot solve the problem after 6 reasoning steps"));
        for (with, without) in [
            (NamedTemplate::Countdown, NamedTemplate::CountdownTask),
            (NamedTemplate::Math, NamedTemplate::MathTask),
        ] {
            let task = system(without);
            assert!(!task.contains("<unknown>"), "{task}");
            assert!(system(with).starts_with(&task));
            assert_eq!(with.user_turn(), without.user_turn());
            assert!(with.user_turn().starts_with("{question}. Let"));
        }
        // Ours: no system prompt, the help option offered after the question.
        let (with, without) = (NamedTemplate::Arithmetic, NamedTemplate::ArithmeticTask);
        assert_eq!(
            (with.system_prompt(), without.system_prompt()),
            (None, None)
        );
        assert_eq!(without.user_turn(), "{question}");
        assert!(with.user_turn().starts_with("{question} Ask for help"));
    }

    #[test]
    fn every_template_names_itself_as_yaml_does_and_drops_help_to_its_task_variant() {
        for t in NamedTemplate::ALL {
            let parsed: NamedTemplate =
                serde_json::from_value(serde_json::Value::from(t.name())).expect("a YAML name");
            assert_eq!(parsed, t);
            let task = t.without_help();
            assert!(task.name().ends_with("_task"), "{}", t.name());
            assert_eq!(task.without_help(), task);
            assert_eq!(
                task.user_turn(),
                t.user_turn().split(" Ask for help").next().unwrap_or("")
            );
            assert!(t.stop_strings().contains(&"</unknown>"));
        }
    }
}
