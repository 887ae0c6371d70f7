//! Typed stage parameters from the pipeline's JSON form, with error paths the pipeline can
//! point at in the YAML.

use serde::de::DeserializeOwned;

use crate::StageError;

/// Deserializes a stage's `params` into its config type. On failure the error carries the path
/// of the offending value relative to `params` (e.g. `fields.question`).
///
/// ```
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config { limit: u32 }
/// let err = tandem_stages::params::parse::<Config>(&serde_json::json!({"limit": "x"})).err().unwrap();
/// assert!(err.to_string().starts_with("limit: invalid type"));
/// ```
pub fn parse<C: DeserializeOwned>(params: &serde_json::Value) -> Result<C, StageError> {
    // A stage written with no `params:` at all reads as an empty mapping, so defaults apply.
    let empty = serde_json::Value::Object(Default::default());
    let params = if params.is_null() { &empty } else { params };
    serde_path_to_error::deserialize(params).map_err(|e| StageError::Params {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}
