//! What counts as a call for help: an `<unknown> … </unknown>` block (PAPER.md: the tag decides,
//! not the words inside it).

use serde::{Deserialize, Serialize};

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
