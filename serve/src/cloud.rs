//! The cloud call of an escalated request: the client's own messages, sent to the cloud model
//! through `cloud.openai`'s HTTP layer ([`tandem_stages::cloud::call_with_retries`]: timeouts,
//! retries with backoff and `Retry-After`, the same failure classes). The key goes in a header
//! marked sensitive and nowhere else.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap};
use tandem_stages::cloud::{Prices, Reply, RetryPolicy, call_with_retries};
use tandem_stages::net;

use crate::config::ServeConfig;
use crate::{Error, Result};

/// A client of the cloud endpoint.
#[derive(Clone, Debug)]
pub struct CloudClient {
    client: reqwest::Client,
    endpoint: String,
    headers: HeaderMap,
    model: String,
    retry: RetryPolicy,
    prices: Prices,
}

/// How an escalation ended.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudOutcome {
    /// The reply, or the failure's kind (`timeout`, `http_500`, …) and message.
    pub result: std::result::Result<Reply, (String, String)>,
    /// Attempts made.
    pub attempts: u32,
    /// Time of the call with its retries.
    pub elapsed: Duration,
}

impl CloudClient {
    /// The client of `config`'s cloud; reads the key from its environment variable.
    pub fn new(config: &ServeConfig) -> Result<CloudClient> {
        let mut headers = HeaderMap::new();
        if let Some(name) = &config.cloud_key_env {
            let key = std::env::var(name).unwrap_or_default();
            if key.trim().is_empty() {
                return Err(Error::Config(format!(
                    "--api-key-env {name}: the environment variable is not set (it should hold the cloud's API key)"
                )));
            }
            let value = net::bearer(&key)
                .map_err(|e| Error::Config(format!("--api-key-env {name}: {e}")))?;
            headers.insert(AUTHORIZATION, value);
        }
        // The connect limit is the attempt's own limit when that is shorter: a dead cloud
        // answers no later than the attempts' time limits and backoffs allow.
        let connect = config.cloud_timeout.min(Duration::from_secs(10));
        let client = net::client(connect, config.cloud_timeout)
            .map_err(|e| Error::Config(format!("--cloud: {e}")))?;
        Ok(CloudClient {
            client,
            endpoint: format!(
                "{}/chat/completions",
                config.cloud_url.trim_end_matches('/')
            ),
            headers,
            model: config.cloud_model.clone(),
            retry: RetryPolicy {
                retries: config.cloud_retries,
                backoff: config.cloud_backoff,
            },
            prices: config.prices.clone(),
        })
    }

    /// The request body: the client's messages and sampling fields, the cloud's model.
    pub fn body(
        &self,
        messages: &serde_json::Value,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), self.model.clone().into());
        body.insert("messages".into(), messages.clone());
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(body)
    }

    /// The cloud model's name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Cost of a reply at the configured prices.
    pub fn cost(&self, reply: &Reply) -> f64 {
        self.prices.cost(reply.tokens_in, reply.tokens_out)
    }

    /// Sends `body` with retries.
    pub async fn ask(&self, body: &serde_json::Value) -> CloudOutcome {
        let started = Instant::now();
        let (result, attempts) = call_with_retries(
            &self.client,
            &self.endpoint,
            &self.headers,
            body,
            self.retry,
            || async {},
        )
        .await;
        CloudOutcome {
            result: result.map_err(|f| {
                (
                    f.kind(),
                    format!("{attempts} attempt(s) to {}; last: {f}", self.endpoint),
                )
            }),
            attempts,
            elapsed: started.elapsed(),
        }
    }
}
