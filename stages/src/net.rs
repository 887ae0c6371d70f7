//! HTTP plumbing shared by the stages that call servers (`reward.http`, `cloud.openai`): one
//! client set-up (rustls with the ring provider, timeouts), one classification of failures
//! (which heal with a retry and which never will), `Retry-After`, and the backoff policy.
//!
//! Secrets: header values built with [`bearer`] are marked sensitive, so neither `Debug` output
//! nor reqwest's errors show them; error messages name the URL and status, never headers.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::{Result, StageError};

/// An HTTP client with rustls (ring) and the given connect and total timeouts.
pub fn client(connect: Duration, total: Duration) -> Result<reqwest::Client> {
    // reqwest is built without a default crypto provider (ring builds in seconds where aws-lc
    // takes minutes); install ring once per process. A second install fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| StageError::Run(format!("building the HTTP client: {e}")))
}

/// A runtime for one stage's requests, on the calling thread (stages run on timely workers).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StageError::Run(format!("starting the I/O runtime: {e}")))
}

/// `Authorization: Bearer <key>`, marked sensitive.
pub fn bearer(key: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
        .map_err(|_| StageError::Run("the API key holds characters a header cannot".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Where an API key comes from: an environment variable or a file (its first line), never the
/// pipeline file itself.
/// Stages keep the two as their own `api_key_env` / `api_key_file` params (serde's `flatten`
/// does not combine with `deny_unknown_fields`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySource {
    /// Name of the environment variable that holds the key.
    pub api_key_env: Option<String>,
    /// A file whose first line is the key (relative to the working directory).
    pub api_key_file: Option<std::path::PathBuf>,
}

impl KeySource {
    /// The key, if one is configured; an error names the variable or file, never a value.
    pub fn read(&self, base: &crate::BuildContext) -> Result<Option<String>> {
        match (&self.api_key_env, &self.api_key_file) {
            (Some(_), Some(_)) => Err(StageError::Params {
                path: "api_key_file".into(),
                message: "give api_key_env or api_key_file, not both".into(),
            }),
            (Some(name), None) => match std::env::var(name) {
                Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
                _ => Err(StageError::Params {
                    path: "api_key_env".into(),
                    message: format!(
                        "environment variable `{name}` is not set (it should hold the API key)"
                    ),
                }),
            },
            (None, Some(file)) => {
                let path = base.resolve(file);
                let text = std::fs::read_to_string(&path).map_err(|e| StageError::Params {
                    path: "api_key_file".into(),
                    message: format!("reading {}: {e}", path.display()),
                })?;
                match text.lines().next().map(str::trim) {
                    Some(key) if !key.is_empty() => Ok(Some(key.to_owned())),
                    _ => Err(StageError::Params {
                        path: "api_key_file".into(),
                        message: format!(
                            "{} is empty (its first line should be the API key)",
                            path.display()
                        ),
                    }),
                }
            }
            (None, None) => Ok(None),
        }
    }

    /// Where the key came from, for messages: `` `NAME` `` or the file's path.
    pub fn describe(&self) -> Option<String> {
        match (&self.api_key_env, &self.api_key_file) {
            (Some(name), _) => Some(format!("environment variable `{name}`")),
            (None, Some(file)) => Some(format!("key file {}", file.display())),
            (None, None) => None,
        }
    }
}

/// Extra headers from the config; `path` names the parameter in errors.
pub fn headers(
    path: &str,
    pairs: &std::collections::BTreeMap<String, String>,
) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let bad = |what: &str| StageError::Params {
            path: format!("{path}.{name}"),
            message: format!("not a valid header {what}"),
        };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
        map.insert(
            header,
            HeaderValue::from_str(value).map_err(|_| bad("value"))?,
        );
    }
    Ok(map)
}

/// Why a request did not give a usable answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// No (whole) HTTP answer: `timeout`, `connect`, `body` (truncated or reset mid-body),
    /// `malformed` (the body is not what the protocol says), `request`, or an answer without
    /// what the caller needs: `unsupported`.
    Transport {
        /// The short kind, as written to error rows.
        kind: &'static str,
        /// What happened.
        message: String,
    },
    /// An HTTP status other than success.
    Status {
        /// The status code.
        status: u16,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// The start of the body (servers explain errors there).
        body: String,
    },
}

impl Failure {
    /// The kind written to rows: `timeout`, `connect`, …, or `http_<status>`.
    pub fn kind(&self) -> String {
        match self {
            Failure::Transport { kind, .. } => (*kind).to_owned(),
            Failure::Status { status, .. } => format!("http_{status}"),
        }
    }

    /// Whether another attempt may succeed: transport failures, 408, 409, 429 and 5xx. Other
    /// 4xx (bad request, bad key, no such model) will not heal.
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Transport { kind, .. } => !matches!(*kind, "request" | "unsupported"),
            Failure::Status { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
        }
    }

    /// The wait the server asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            Failure::Transport { .. } => None,
        }
    }

    /// The failure of a reqwest error (sent or while reading the body).
    pub fn from_reqwest(error: &reqwest::Error) -> Failure {
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connect"
        } else if error.is_body() || error.is_decode() {
            "body"
        } else if error.is_builder() {
            "request"
        } else {
            // Resets and closed connections before a status line read as plain request errors.
            "connect"
        };
        Failure::Transport {
            kind,
            message: full_chain(error),
        }
    }

    /// An answer that says the server lacks something the caller needs (never retried).
    pub fn unsupported(message: impl Into<String>) -> Failure {
        Failure::Transport {
            kind: "unsupported",
            message: message.into(),
        }
    }

    /// A body that does not parse as the protocol says.
    pub fn malformed(message: impl Into<String>) -> Failure {
        Failure::Transport {
            kind: "malformed",
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport { kind, message } => write!(f, "{kind}: {message}"),
            Failure::Status { status, body, .. } => {
                write!(f, "HTTP {status}")?;
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
        }
    }
}

/// An error with its sources, `a: b: c` (reqwest's own message is often just "error sending
/// request").
fn full_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// POSTs `body` as JSON and returns the response text of a success status; anything else is a
/// [`Failure`].
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    body: &impl serde::Serialize,
) -> std::result::Result<String, Failure> {
    let response = client
        .post(url)
        .headers(headers.clone())
        .json(body)
        .send()
        .await
        .map_err(|e| Failure::from_reqwest(&e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let text = response.text().await.map_err(|e| Failure::from_reqwest(&e));
    if status.is_success() {
        return text;
    }
    let body = text.map(|t| excerpt(t.trim())).unwrap_or_default();
    Err(Failure::Status {
        status: status.as_u16(),
        retry_after,
        body,
    })
}

/// The first 200 characters of `text` (a response body, a plug-in's line), for messages.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3), relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// No wait between attempts exceeds this, whatever a server's `Retry-After` says.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How often and how patiently a call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, for failures that heal.
    pub retries: u32,
    /// The first backoff; it doubles per retry, with jitter, up to a minute.
    pub backoff: Duration,
}

/// POSTs `body` to `url` and parses the answer with `parse`, retrying what heals (timeouts,
/// resets, 408/409/429/5xx, bodies `parse` calls malformed) with exponential backoff and
/// jitter, honouring `Retry-After` (capped at [`MAX_BACKOFF`]); other failures are returned at
/// once. `before_attempt` runs before every attempt (rate limits wait there). Returns the
/// parsed answer or the last failure, and the attempts made.
pub async fn post_with_retries<T, W, F>(
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    body: &serde_json::Value,
    retry: RetryPolicy,
    before_attempt: W,
    parse: impl Fn(&str) -> std::result::Result<T, Failure>,
) -> (std::result::Result<T, Failure>, u32)
where
    W: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    use backon::Retryable;
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let attempt = || async {
        before_attempt().await;
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let text = post_json(client, url, headers, body).await?;
        parse(&text)
    };
    let result = attempt
        .retry(backoff(retry.retries, retry.backoff, MAX_BACKOFF))
        .when(Failure::retryable)
        .adjust(|failure, delay| next_delay(failure, delay, MAX_BACKOFF))
        .await;
    (result, attempts.load(std::sync::atomic::Ordering::Relaxed))
}

/// Exponential backoff from `min` doubling up to `max`, with jitter, for `retries` retries.
pub fn backoff(retries: u32, min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_max_times(retries as usize)
        .with_jitter()
}

/// The delay before the next attempt: the server's `Retry-After` when it sent one (capped at
/// `cap`), else the backoff's own.
pub fn next_delay(failure: &Failure, backoff: Option<Duration>, cap: Duration) -> Option<Duration> {
    let backoff = backoff?;
    Some(
        failure
            .retry_after()
            .map_or(backoff, |asked| asked.min(cap)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:27 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn only_failures_that_can_heal_are_retried() {
        let status = |s| Failure::Status {
            status: s,
            retry_after: None,
            body: String::new(),
        };
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert!(status(s).retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!status(s).retryable(), "{s}");
        }
        assert!(Failure::malformed("x").retryable());
        assert_eq!(status(503).kind(), "http_503");
        let asked = Failure::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            body: String::new(),
        };
        let cap = Duration::from_secs(60);
        assert_eq!(
            next_delay(&asked, Some(Duration::from_millis(100)), cap),
            Some(Duration::from_secs(2)),
            "the server's wait wins over the backoff"
        );
        assert_eq!(next_delay(&asked, None, cap), None, "retries spent: stop");
        let greedy = Failure::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(3600)),
            body: String::new(),
        };
        assert_eq!(next_delay(&greedy, Some(Duration::ZERO), cap), Some(cap));
    }

    #[test]
    fn bearer_values_are_hidden_from_debug_output() {
        let value = bearer("sk-secret").expect("header");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("sk-secret"));
    }
}
