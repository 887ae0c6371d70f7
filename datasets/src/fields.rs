//! The mapping from a dataset's own field names to the parts of an [`Example`](crate::Example).

use serde::{Deserialize, Serialize};

/// Which field of a row feeds which part of an [`Example`](crate::Example).
///
/// Datasets from the Hugging Face hub name their fields freely (`problem`, `solution`,
/// `level`, ...), so a pipeline's YAML maps them instead of asking users to rewrite files:
///
/// ```yaml
/// fields:
///   question: problem
///   answer: solution
///   difficulty: meta.level
/// ```
///
/// A field name may be a dotted path into nested JSON objects (`meta.level`) or, for Parquet,
/// into struct columns; a name that exists as written (dots included) wins over the path.
/// Strings are used as they are; numbers and booleans become their text (`42` gives `"42"`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldMap {
    /// Field holding a unique id per row. Without it (the default), a row's id is its 0-based
    /// index in the dataset, blank JSONL lines not counted.
    pub id: Option<String>,
    /// Field holding the prompt text. Default: `question`.
    pub question: String,
    /// Field holding the reference answer the verifier compares with. Default: `answer`; set it
    /// to `null` for datasets without answers (e.g. judged by a reward model).
    pub answer: Option<String>,
    /// Field holding a difficulty label (e.g. MATH's `level`). Default: none. Unlike the other
    /// fields it may be null or absent in some rows, which then have no difficulty.
    pub difficulty: Option<String>,
    /// Field holding a list of strings: completions generated earlier (offline rollouts).
    /// Default: none.
    pub completions: Option<String>,
}

impl Default for FieldMap {
    fn default() -> Self {
        FieldMap {
            id: None,
            question: "question".to_owned(),
            answer: Some("answer".to_owned()),
            difficulty: None,
            completions: None,
        }
    }
}

/// A part of an [`Example`](crate::Example) that a [`FieldMap`] entry feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Id,
    Question,
    Answer,
    Difficulty,
    Completions,
}

impl Role {
    /// The `FieldMap` entry's name, which error messages quote so users know what to change.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Id => "id",
            Role::Question => "question",
            Role::Answer => "answer",
            Role::Difficulty => "difficulty",
            Role::Completions => "completions",
        }
    }
}

impl FieldMap {
    /// The mapped fields with their roles, so loaders can resolve and read them uniformly.
    pub(crate) fn roles(&self) -> Vec<(Role, &str)> {
        let mut roles = Vec::with_capacity(5);
        if let Some(id) = &self.id {
            roles.push((Role::Id, id.as_str()));
        }
        roles.push((Role::Question, self.question.as_str()));
        let optional = [
            (Role::Answer, &self.answer),
            (Role::Difficulty, &self.difficulty),
            (Role::Completions, &self.completions),
        ];
        for (role, field) in optional {
            if let Some(field) = field {
                roles.push((role, field.as_str()));
            }
        }
        roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_json() {
        let map: FieldMap =
            serde_json::from_str(r#"{"question": "problem", "answer": null}"#).expect("valid");
        assert_eq!(
            map,
            FieldMap {
                question: "problem".into(),
                answer: None,
                ..FieldMap::default()
            }
        );
        assert!(serde_json::from_str::<FieldMap>(r#"{"questoin": "x"}"#).is_err());
    }
}
