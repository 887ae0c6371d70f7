//! The mapping from a dataset's own field names to the parts of an [`Example`](crate::Example).

use serde::{Deserialize, Deserializer, Serialize};

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

/// The entries a pipeline sets on top of a base [`FieldMap`] (the default one, or a
/// [`Preset`](crate::Preset)'s): an entry left out keeps the base's field, one set to `null`
/// (`answer: null`) unmaps it. Over [`FieldMap::default`] it reads exactly as a `FieldMap` does.
///
/// ```
/// use tandem_datasets::{FieldMap, FieldOverrides, Preset};
///
/// let overrides: FieldOverrides = serde_json::from_str(r#"{"difficulty": "type"}"#)?;
/// let fields = overrides.over(Preset::named("math-lighteval").unwrap().fields());
/// assert_eq!(fields.question, "problem");
/// assert_eq!(fields.difficulty.as_deref(), Some("type"));
/// assert_eq!(FieldOverrides::default().over(FieldMap::default()), FieldMap::default());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldOverrides {
    /// Replaces [`FieldMap::id`]; `null` unmaps it.
    #[serde(deserialize_with = "set")]
    pub id: Option<Option<String>>,
    /// Replaces [`FieldMap::question`].
    #[serde(deserialize_with = "set")]
    pub question: Option<String>,
    /// Replaces [`FieldMap::answer`]; `null` unmaps it.
    #[serde(deserialize_with = "set")]
    pub answer: Option<Option<String>>,
    /// Replaces [`FieldMap::difficulty`]; `null` unmaps it.
    #[serde(deserialize_with = "set")]
    pub difficulty: Option<Option<String>>,
    /// Replaces [`FieldMap::completions`]; `null` unmaps it.
    #[serde(deserialize_with = "set")]
    pub completions: Option<Option<String>>,
}

/// An entry that is present is set, even to `null`; only a missing one stays `None` (through
/// `#[serde(default)]`).
fn set<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl FieldOverrides {
    /// `base` with the entries that are set replaced.
    pub fn over(&self, base: FieldMap) -> FieldMap {
        let FieldOverrides {
            id,
            question,
            answer,
            difficulty,
            completions,
        } = self.clone();
        FieldMap {
            id: id.unwrap_or(base.id),
            question: question.unwrap_or(base.question),
            answer: answer.unwrap_or(base.answer),
            difficulty: difficulty.unwrap_or(base.difficulty),
            completions: completions.unwrap_or(base.completions),
        }
    }
}

/// What a loader reads a role's field as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A string, number or boolean, as text.
    Text,
    /// A list of strings (`completions`).
    Strings,
    /// A list of strings, numbers or booleans, each as text: the inputs a preset builds a
    /// question from (Countdown's `nums`).
    Scalars,
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

    #[test]
    fn overrides_tell_unset_from_null() {
        let base = FieldMap {
            id: Some("unique_id".into()),
            difficulty: Some("level".into()),
            ..FieldMap::default()
        };
        let overrides: FieldOverrides =
            serde_json::from_str(r#"{"question": "problem", "difficulty": null}"#).expect("valid");
        assert_eq!(
            overrides.over(base.clone()),
            FieldMap {
                question: "problem".into(),
                difficulty: None,
                ..base
            }
        );
        assert!(serde_json::from_str::<FieldOverrides>(r#"{"question": null}"#).is_err());
        assert!(serde_json::from_str::<FieldOverrides>(r#"{"questoin": "x"}"#).is_err());
        let same: FieldOverrides =
            serde_json::from_str(r#"{"question": "problem", "answer": null}"#).expect("valid");
        let map: FieldMap =
            serde_json::from_str(r#"{"question": "problem", "answer": null}"#).expect("valid");
        assert_eq!(same.over(FieldMap::default()), map);
    }
}
