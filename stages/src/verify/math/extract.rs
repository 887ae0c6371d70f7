//! Finding the final answer in a response: the last `\boxed{…}`, the last `<answer>` block, the
//! line after a phrase such as "The answer is", or the whole text, in the configured order.
//!
//! Every search is one pass over the text (no backtracking), so a megabyte of adversarial
//! output costs a few milliseconds.

use serde::Deserialize;
// The scanner is shared with the dataset presets, which take MATH's gold answers out of their
// worked solutions the same way.
pub(crate) use tandem_datasets::answers::last_boxed;

/// One place to look for the answer; `extract` lists them in the order they are tried.
///
/// ```
/// use tandem_stages::verify::MathExtractor;
/// let minerva = MathExtractor::Prefix("final answer is".into());
/// let text = "Final Answer: The final answer is $42$. I hope it is correct.";
/// assert_eq!(minerva.find(text), Some("42"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MathExtractor {
    /// The content of the last complete `\boxed{…}` or `\fbox{…}` (braces balanced; `\{` and
    /// `\}` inside count as text).
    Boxed,
    /// The content of the last complete `<answer>…</answer>` block.
    AnswerTag,
    /// The rest of the line after the last occurrence of this phrase (ASCII case-insensitive),
    /// up to the end of the sentence; written `{prefix: "The answer is"}`. When that rest holds
    /// `$…$` math, the first such span is the answer.
    Prefix(String),
    /// The whole response.
    Whole,
}

impl MathExtractor {
    /// The answer this extractor finds in `text`, if any.
    pub fn find<'t>(&self, text: &'t str) -> Option<&'t str> {
        match self {
            MathExtractor::Boxed => last_boxed(text),
            MathExtractor::AnswerTag => last_between(text, "<answer>", "</answer>"),
            MathExtractor::Prefix(prefix) => after_prefix(text, prefix),
            MathExtractor::Whole => Some(text),
        }
    }
}

/// The text between the last `close` and the nearest `open` before it.
pub(crate) fn last_between<'t>(text: &'t str, open: &str, close: &str) -> Option<&'t str> {
    let end = text.rfind(close)?;
    let start = text[..end].rfind(open)? + open.len();
    Some(&text[start..end])
}

fn after_prefix<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    if prefix.is_empty() || !prefix.is_ascii() {
        return None;
    }
    // ASCII lower-casing keeps every byte where it was, so positions carry over to `text`.
    let lower = text.to_ascii_lowercase();
    let start = lower.rfind(&prefix.to_ascii_lowercase())? + prefix.len();
    let line = text[start..].lines().next().unwrap_or_default();
    let line = line.trim_start().trim_start_matches(':').trim();
    if let Some(open) = line.find('$') {
        let inner = line[open..].trim_start_matches('$');
        if let Some(close) = inner.find('$') {
            return Some(&inner[..close]);
        }
    }
    // The sentence ends at a period followed by a space (a decimal point is followed by a
    // digit), or at one that ends the line: `The answer is 42.` answers `42`.
    let end = line.find(". ").unwrap_or(line.len());
    let sentence = line[..end].trim();
    Some(sentence.strip_suffix('.').unwrap_or(sentence).trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractors_table() {
        let prefix = MathExtractor::Prefix("The answer is".into());
        let table: &[(&MathExtractor, &str, Option<&str>)] = &[
            (&MathExtractor::Boxed, r"so \boxed{5}.", Some("5")),
            (
                &MathExtractor::Boxed,
                r"\boxed{1} then \boxed{2}",
                Some("2"),
            ),
            (
                &MathExtractor::Boxed,
                r"\boxed{\frac{1}{2}}",
                Some(r"\frac{1}{2}"),
            ),
            (&MathExtractor::Boxed, r"\fbox{7}", Some("7")),
            (&MathExtractor::Boxed, r"\boxed {7}", Some("7")),
            (
                &MathExtractor::Boxed,
                r"\boxed{\{1, 2\}}",
                Some(r"\{1, 2\}"),
            ),
            (
                &MathExtractor::Boxed,
                r"\boxed{\boxed{3}}",
                Some(r"\boxed{3}"),
            ),
            // A box cut off by the length limit leaves the last complete one.
            (&MathExtractor::Boxed, r"\boxed{4} and \boxed{5", Some("4")),
            (&MathExtractor::Boxed, r"\boxed{unbalanced", None),
            (&MathExtractor::Boxed, r"\boxedx{1}", None),
            (&MathExtractor::Boxed, r"no box", None),
            (&MathExtractor::Boxed, r"}}} \boxed{}", Some("")),
            (
                &MathExtractor::AnswerTag,
                "<answer>1</answer><answer>2</answer>",
                Some("2"),
            ),
            (&MathExtractor::AnswerTag, "<answer>1", None),
            (&prefix, "Thus the answer is 42.", Some("42")),
            (&prefix, "The answer is 0.5.", Some("0.5")),
            (&prefix, "The answer is: 3.5 because", Some("3.5 because")),
            (
                &prefix,
                "The answer is $\\frac{1}{2}$. Done",
                Some("\\frac{1}{2}"),
            ),
            (&prefix, "THE ANSWER IS 7\nmore", Some("7")),
            (&prefix, "The answer is 4. Then", Some("4")),
            (&prefix, "nothing", None),
            (&MathExtractor::Whole, " 5 ", Some(" 5 ")),
        ];
        for (extractor, text, expected) in table {
            assert_eq!(extractor.find(text), *expected, "{extractor:?} on {text:?}");
        }
    }

    #[test]
    fn adversarial_boxes_are_linear() {
        let deep = format!(r"{}\boxed{{", "{".repeat(200_000)).repeat(5);
        assert_eq!(last_boxed(&deep), None);
        let many = r"\boxed{1".repeat(100_000);
        assert_eq!(last_boxed(&many), None);
        assert_eq!(last_boxed("\\"), None);
        assert_eq!(last_boxed("é\\é{}"), None);
    }
}
