//! What counts as a call for help: an `<unknown> … </unknown>` block (PAPER.md: the tag decides,
//! not the words inside it).

use serde::{Deserialize, Serialize};
use tandem_schemas::Group;

/// The tags that mark a call for help.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HelpTags {
    /// Opening tag.
    pub open: String,
    /// Closing tag.
    pub close: String,
}

impl Default for HelpTags {
    fn default() -> Self {
        HelpTags {
            open: "<unknown>".into(),
            close: "</unknown>".into(),
        }
    }
}

impl HelpTags {
    /// Whether `text` holds an opening tag followed later by a closing tag.
    ///
    /// ```
    /// let tags = tandem_stages::help::HelpTags::default();
    /// assert!(tags.asks_help("no idea. <unknown> I need external assistance </unknown>"));
    /// assert!(!tags.asks_help("<unknown> cut off"));
    /// ```
    pub fn asks_help(&self, text: &str) -> bool {
        text.find(&self.open)
            .is_some_and(|start| text[start + self.open.len()..].contains(&self.close))
    }
}

/// The share of the groups' samples that asked for help (0 for no samples): a step's call
/// rate, as the learner's `help_rate` metric and `reward.collab`'s dual ascent read it.
pub fn call_rate<'a>(groups: impl IntoIterator<Item = &'a Group>) -> f64 {
    let (asked, all) = groups
        .into_iter()
        .flat_map(|g| &g.samples)
        .fold((0usize, 0usize), |(asked, all), s| {
            (asked + usize::from(s.asked_help), all + 1)
        });
    if all == 0 {
        0.0
    } else {
        asked as f64 / all as f64
    }
}
