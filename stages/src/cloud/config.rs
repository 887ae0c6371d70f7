//! Parameters of `cloud.openai`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{Result, StageError};

/// Parameters of `cloud.openai`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// The API's base URL, up to and including `/v1` (e.g. `https://api.openai.com/v1`,
    /// `http://127.0.0.1:8000/v1` for vLLM, `http://127.0.0.1:11434/v1` for Ollama).
    pub base_url: String,
    /// The cloud model's name.
    pub model: String,
    /// Name of the environment variable that holds the API key (the key itself never goes in
    /// the YAML). Leave out for servers that need none.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Or a file whose first line is the key.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// A system message before the question (default none, as in the paper).
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// The user message; `{question}` is replaced by the prompt's question (default
    /// `{question}`: the cloud sees only the original question, as in the paper).
    #[serde(default = "default_template")]
    pub prompt_template: String,
    /// Sampling temperature (default 0: the paper treats the cloud as deterministic).
    #[serde(default)]
    pub temperature: f64,
    /// Longest answer in tokens (default: the server's).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Extra fields of the request body (`top_p`, `reasoning_effort`, a vLLM `guided_regex`, …).
    #[serde(default)]
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// Requests in flight at once, over all workers (default 64).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Requests per minute (default: unlimited).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute, counted as the request's estimated prompt tokens plus `max_tokens`
    /// (default: unlimited).
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Connect time limit in milliseconds (default 10000).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time limit of one attempt in milliseconds (default 120000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after the first attempt, for failures that heal (default 5).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff in milliseconds; doubles per retry, with jitter, up to 60 s (default 500).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// The persistent answer cache, shared between runs (default `runs/cloud-cache`); `null`
    /// keeps answers for this run only.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: Option<PathBuf>,
    /// Caps on calls and tokens (default: none).
    #[serde(default)]
    pub budget: BudgetConfig,
    /// Prices for the cost ledger (default 0).
    #[serde(default)]
    pub prices: Prices,
    /// Which prompts go to the cloud: `help` (default), those a sample asked help for; `all`,
    /// every prompt (the cloud-only baseline, and what an evaluation needs to know the cloud's
    /// answer to every question).
    #[serde(default)]
    pub ask: Ask,
}

/// Which prompts the cloud stage sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ask {
    /// Prompts a sample asked help for.
    #[default]
    Help,
    /// Every prompt.
    All,
}

/// Caps on cloud use; a call past one is refused and recorded with `error_kind: budget`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Calls per training step.
    #[serde(default)]
    pub calls_per_step: Option<u64>,
    /// Calls per run.
    #[serde(default)]
    pub calls_per_run: Option<u64>,
    /// Tokens (in + out) per training step; a call starts only while the step is under it.
    #[serde(default)]
    pub tokens_per_step: Option<u64>,
    /// Tokens (in + out) per run; a call starts only while the run is under it.
    #[serde(default)]
    pub tokens_per_run: Option<u64>,
}

/// US dollars per million tokens.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Per million prompt tokens.
    #[serde(default)]
    pub input_per_million: f64,
    /// Per million completion tokens.
    #[serde(default)]
    pub output_per_million: f64,
}

impl Prices {
    /// The cost of a call.
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.input_per_million + tokens_out as f64 * self.output_per_million)
            / 1e6
    }
}

fn default_template() -> String {
    "{question}".into()
}

fn default_in_flight() -> usize {
    64
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

fn default_timeout_ms() -> u64 {
    120_000
}

fn default_retries() -> u32 {
    5
}

fn default_backoff_ms() -> u64 {
    500
}

fn default_cache_dir() -> Option<PathBuf> {
    Some(PathBuf::from("runs/cloud-cache"))
}

impl CloudConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |path: &str, message: String| {
            Err(StageError::Params {
                path: path.into(),
                message,
            })
        };
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => {
                return bad(
                    "base_url",
                    format!("scheme must be http or https, got `{}`", url.scheme()),
                );
            }
            Err(e) => return bad("base_url", format!("not a URL: {e}")),
        }
        if self.model.trim().is_empty() {
            return bad("model", "must name the cloud model".into());
        }
        if !self.prompt_template.contains("{question}") {
            return bad("prompt_template", "must contain {question}".into());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                format!("must be a finite number >= 0, got {}", self.temperature),
            );
        }
        for key in ["model", "messages", "stream", "n"] {
            if self.extra_body.contains_key(key) {
                return bad(
                    &format!("extra_body.{key}"),
                    format!("`{key}` is set by the stage; it cannot be overridden"),
                );
            }
        }
        for (path, value) in [
            ("max_in_flight", self.max_in_flight as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if value == 0 {
                return bad(path, "must be > 0".into());
            }
        }
        for (path, value) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
        ] {
            if value == Some(0) {
                return bad(path, "must be > 0 (leave it out for no limit)".into());
            }
        }
        for (path, price) in [
            ("prices.input_per_million", self.prices.input_per_million),
            ("prices.output_per_million", self.prices.output_per_million),
        ] {
            if !(price.is_finite() && price >= 0.0) {
                return bad(path, format!("must be a finite number >= 0, got {price}"));
            }
        }
        Ok(())
    }

    /// The Chat Completions endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    /// The chat messages for `question`.
    pub fn messages(&self, question: &str) -> serde_json::Value {
        let user = self.prompt_template.replace("{question}", question);
        let mut messages = Vec::new();
        if let Some(system) = &self.system_prompt {
            messages.push(serde_json::json!({ "role": "system", "content": system }));
        }
        messages.push(serde_json::json!({ "role": "user", "content": user }));
        serde_json::Value::Array(messages)
    }

    /// The request body for `question`.
    pub fn body(&self, question: &str) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), self.model.clone().into());
        body.insert("messages".into(), self.messages(question));
        body.insert("temperature".into(), self.temperature.into());
        if let Some(max) = self.max_tokens {
            body.insert("max_tokens".into(), max.into());
        }
        for (k, v) in &self.extra_body {
            body.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(body)
    }

    /// The cache key of a request body: SHA-256 of (endpoint, body), hex. The body holds the
    /// model, the messages and every parameter; the key is not part of it.
    pub fn request_hash(&self, body: &serde_json::Value) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.endpoint().as_bytes());
        hasher.update([0]);
        hasher.update(body.to_string().as_bytes());
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> Result<CloudConfig> {
        let mut params = serde_json::json!({ "base_url": "http://127.0.0.1:9/v1/", "model": "m" });
        for (k, v) in extra.as_object().expect("object") {
            params[k] = v.clone();
        }
        let config: CloudConfig = crate::params::parse(&params)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn the_request_is_the_question_alone_by_default() {
        let c = config(serde_json::json!({})).expect("valid");
        assert_eq!(c.endpoint(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(
            c.body("What is 2 + 2?"),
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": "What is 2 + 2?"}],
                "temperature": 0.0,
            })
        );
        let c = config(serde_json::json!({
            "system_prompt": "Be brief.", "prompt_template": "Q: {question}\nA:",
            "max_tokens": 64, "extra_body": {"top_p": 0.9},
        }))
        .expect("valid");
        let body = c.body("x");
        assert_eq!(body["messages"][0]["content"], "Be brief.");
        assert_eq!(body["messages"][1]["content"], "Q: x\nA:");
        assert_eq!(
            (body["max_tokens"].as_u64(), body["top_p"].as_f64()),
            (Some(64), Some(0.9))
        );
    }

    #[test]
    fn the_hash_changes_with_anything_that_changes_the_answer() {
        let c = config(serde_json::json!({})).expect("valid");
        let base = c.request_hash(&c.body("q"));
        assert_eq!(base, c.request_hash(&c.body("q")), "stable");
        assert_eq!(base.len(), 64);
        assert_ne!(base, c.request_hash(&c.body("q2")));
        let hot = config(serde_json::json!({ "temperature": 0.7 })).expect("valid");
        assert_ne!(base, hot.request_hash(&hot.body("q")));
        let other = config(serde_json::json!({ "model": "m2" })).expect("valid");
        assert_ne!(base, other.request_hash(&other.body("q")));
        let elsewhere =
            config(serde_json::json!({ "base_url": "http://127.0.0.2:9/v1" })).expect("valid");
        assert_ne!(base, elsewhere.request_hash(&elsewhere.body("q")));
    }

    #[test]
    fn bad_values_name_their_param() {
        let cases = [
            (
                serde_json::json!({ "base_url": "ftp://x" }),
                "base_url: scheme must be http or https",
            ),
            (
                serde_json::json!({ "prompt_template": "no slot" }),
                "prompt_template: must contain {question}",
            ),
            (
                serde_json::json!({ "extra_body": {"messages": []} }),
                "extra_body.messages: `messages` is set by the stage",
            ),
            (
                serde_json::json!({ "max_in_flight": 0 }),
                "max_in_flight: must be > 0",
            ),
            (
                serde_json::json!({ "requests_per_minute": 0 }),
                "requests_per_minute: must be > 0",
            ),
            (
                serde_json::json!({ "temperature": -1.0 }),
                "temperature: must be a finite number >= 0",
            ),
            (
                serde_json::json!({ "prices": {"input_per_million": -1.0} }),
                "prices.input_per_million: must be",
            ),
            (
                serde_json::json!({ "budget": {"calls": 3} }),
                "budget.calls: unknown field `calls`",
            ),
        ];
        for (extra, message) in cases {
            let err = config(extra).expect_err("rejected").to_string();
            assert!(
                err.starts_with(message),
                "{err} does not start with {message}"
            );
        }
    }
}
