//! `reward.http`: a reward computed by an HTTP service.
//!
//! The stage POSTs batches of groups as `{"groups": [GroupView, …]}` (see [`super::plugin`]) and
//! expects `{"results": [result, …]}`, one result per group in the order sent, each checked like a
//! `reward.command` line. Timeouts, connection failures, 408/429/5xx and bodies that are not
//! JSON are retried with exponential backoff and jitter (honouring `Retry-After`); when the
//! retries are spent every group of the batch gets an error row with the failure's kind, and the
//! run goes on. Any other 4xx (bad request, bad key, no such path) stops the run: it will not
//! heal.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::Retryable;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::{Deserialize, Serialize};
use tandem_schemas::{Facet, Facets, Group};

use super::command::default_component;
use super::plugin::{self, GroupView, Problem};
use super::{non_negative, one};
use crate::contract::{BuildContext, Built, GroupStage, StepContext};
use crate::net::{self, Failure};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `reward.http`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The endpoint, e.g. `http://127.0.0.1:8000/score`.
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Name of an environment variable holding a key sent as `Authorization: Bearer …` (the
    /// key itself never goes in the YAML).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Or a file whose first line is that key.
    #[serde(default)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Groups per request (default 64).
    #[serde(default = "default_groups_per_request")]
    pub groups_per_request: usize,
    /// Total time limit of one attempt, in milliseconds (default 30000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect time limit, in milliseconds (default 5000).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Retries after the first attempt (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The component name of bare-number scores (default `score`).
    #[serde(default = "default_component")]
    pub component: String,
    /// Multiplier of this stage's contribution to the summed reward (default 1.0).
    #[serde(default = "one")]
    pub weight: f64,
}

fn default_groups_per_request() -> usize {
    64
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_retries() -> u32 {
    3
}

/// The first retry waits about this long; later ones double it.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// No wait between attempts exceeds this, whatever a server's `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl StageConfig for HttpConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        non_negative("weight", self.weight)?;
        let url = reqwest::Url::parse(&self.url).map_err(|e| StageError::Params {
            path: "url".into(),
            message: format!("not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(StageError::Params {
                path: "url".into(),
                message: format!("scheme must be http or https, got `{}`", url.scheme()),
            });
        }
        for (path, value) in [
            ("groups_per_request", self.groups_per_request as u64),
            ("timeout_ms", self.timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if value == 0 {
                return Err(StageError::Params {
                    path: path.into(),
                    message: "must be > 0".into(),
                });
            }
        }
        let mut headers = net::headers("headers", &self.headers)?;
        if let Some(key) = self.key_source().read(ctx)? {
            headers.insert(AUTHORIZATION, net::bearer(&key)?);
        }
        let client = net::client(
            Duration::from_millis(self.connect_timeout_ms),
            Duration::from_millis(self.timeout_ms),
        )?;
        Ok(Built::Group(Box::new(HttpReward {
            config: self,
            headers,
            client,
            runtime: None,
        })))
    }
}

impl HttpConfig {
    fn key_source(&self) -> net::KeySource {
        net::KeySource {
            api_key_env: self.api_key_env.clone(),
            api_key_file: self.api_key_file.clone(),
        }
    }
}

/// Scores groups with an HTTP service.
pub struct HttpReward {
    config: HttpConfig,
    headers: HeaderMap,
    client: reqwest::Client,
    /// Started on the first call, on the worker's thread.
    runtime: Option<tokio::runtime::Runtime>,
}

/// The request body.
#[derive(Serialize)]
struct Batch<'g> {
    groups: Vec<GroupView<'g>>,
}

impl GroupStage for HttpReward {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Rewards])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let runtime = match &mut self.runtime {
            Some(runtime) => runtime,
            slot @ None => slot.insert(net::runtime()?),
        };
        for chunk in groups.chunks_mut(self.config.groups_per_request) {
            let batch = Batch {
                groups: chunk.iter().map(GroupView::of).collect(),
            };
            let answer = runtime.block_on(post_with_retries(
                &self.client,
                &self.config,
                &self.headers,
                &batch,
            ));
            drop(batch);
            let results = match answer {
                Ok(text) => results(&text, chunk.len()),
                Err(failure) if !failure.retryable() => {
                    return Err(StageError::Run(stop_message(&self.config, ctx, &failure)));
                }
                Err(failure) => Err(Problem::group(
                    failure.kind(),
                    format!(
                        "POST {} failed after {} attempts: {failure}",
                        self.config.url,
                        self.config.retries + 1
                    ),
                )),
            };
            match results {
                Ok(values) => {
                    for (group, value) in chunk.iter_mut().zip(values) {
                        let checked = plugin::check(&value, group, &self.config.component);
                        plugin::apply(group, &ctx.stage_id, self.config.weight, checked);
                    }
                }
                Err(problem) => {
                    for group in chunk.iter_mut() {
                        plugin::apply(
                            group,
                            &ctx.stage_id,
                            self.config.weight,
                            Err(vec![problem.clone()]),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// One POST, retried while the failure may heal.
async fn post_with_retries(
    client: &reqwest::Client,
    config: &HttpConfig,
    headers: &HeaderMap,
    batch: &Batch<'_>,
) -> std::result::Result<String, Failure> {
    let attempt = || async {
        let text = net::post_json(client, &config.url, headers, batch).await?;
        // A body that is not JSON is a server glitch worth another attempt; checking the
        // results themselves happens once, after.
        plugin::parse_line(&text).map_err(|p| Failure::malformed(p.reason))?;
        Ok(text)
    };
    attempt
        .retry(net::backoff(config.retries, FIRST_BACKOFF, MAX_BACKOFF))
        .when(Failure::retryable)
        .adjust(|failure, delay| net::next_delay(failure, delay, MAX_BACKOFF))
        .await
}

/// The per-group results of a response body.
fn results(text: &str, groups: usize) -> std::result::Result<Vec<serde_json::Value>, Problem> {
    let value = plugin::parse_line(text)?;
    let Some(results) = value.get("results").and_then(|r| r.as_array()) else {
        return Err(Problem::group(
            "bad_response",
            format!(
                "expected {{\"results\": [...]}}, got {}",
                net::excerpt(text)
            ),
        ));
    };
    if results.len() != groups {
        return Err(Problem::group(
            "bad_response",
            format!(
                "{} results for {groups} groups (one result per group, in the order sent)",
                results.len()
            ),
        ));
    }
    Ok(results.clone())
}

/// Why the run stops on a failure that will not heal; names the key's variable, never its value.
fn stop_message(config: &HttpConfig, ctx: &StepContext, failure: &Failure) -> String {
    let mut message = format!(
        "stage `{}`: POST {} was refused ({failure}); not retried, since it will not heal",
        ctx.stage_id, config.url
    );
    if let (
        Failure::Status {
            status: 401 | 403, ..
        },
        Some(source),
    ) = (failure, config.key_source().describe())
    {
        message.push_str(&format!("; check the key in {source}"));
    }
    message
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use tandem_schemas::{PromptRecord, SampleRecord};

    use super::*;

    /// One scripted answer: status, extra header lines, body.
    type Reply = (u16, &'static str, String);

    /// A server on loopback that answers the scripted replies in order, one connection each,
    /// and returns the request bodies it read.
    fn serve(replies: Vec<Reply>) -> (String, JoinHandle<Vec<serde_json::Value>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/score", listener.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for (status, headers, body) in replies {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).expect("header");
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().expect("length");
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut request = vec![0; length];
                reader.read_exact(&mut request).expect("body");
                bodies.push(serde_json::from_slice(&request).expect("json request"));
                let mut stream = reader.into_inner();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                    body.len()
                );
                stream.write_all(reply.as_bytes()).expect("reply");
            }
            bodies
        });
        (url, handle)
    }

    fn stage(url: &str, extra: serde_json::Value) -> Result<HttpReward> {
        let mut params = serde_json::json!({ "url": url, "retries": 2 });
        for (k, v) in extra.as_object().expect("object") {
            params[k] = v.clone();
        }
        let config: HttpConfig = crate::params::parse(&params)?;
        let ctx = BuildContext::new("judge", crate::RunSettings::default());
        match config.clone().build(&ctx)? {
            Built::Group(_) => {}
            _ => unreachable!("a group stage"),
        }
        Ok(HttpReward {
            headers: HeaderMap::new(),
            client: net::client(Duration::from_secs(2), Duration::from_secs(5))?,
            runtime: None,
            config,
        })
    }

    fn groups(n: usize) -> Vec<Group> {
        (0..n)
            .map(|i| {
                let mut g = Group::new(PromptRecord {
                    prompt_id: format!("p{i}"),
                    ..Default::default()
                });
                g.samples = (0..2)
                    .map(|s| SampleRecord {
                        prompt_id: format!("p{i}"),
                        sample_idx: s,
                        ..Default::default()
                    })
                    .collect();
                g
            })
            .collect()
    }

    fn ok(results: &[[f64; 2]]) -> Reply {
        let results: Vec<_> = results
            .iter()
            .map(|s| serde_json::json!({ "scores": s }))
            .collect();
        (
            200,
            "",
            serde_json::json!({ "results": results }).to_string(),
        )
    }

    fn ctx() -> StepContext {
        StepContext::single_worker("run", "judge", 0)
    }

    fn rewards(groups: &[Group]) -> Vec<Vec<f64>> {
        groups
            .iter()
            .map(|g| g.rewards.iter().map(|r| r.reward).collect())
            .collect()
    }

    #[test]
    fn batches_are_posted_in_order_and_scored() {
        let (url, server) = serve(vec![ok(&[[1.0, 0.0], [0.5, 0.25]]), ok(&[[2.0, 3.0]])]);
        let mut s = stage(&url, serde_json::json!({ "groups_per_request": 2 })).expect("stage");
        let mut gs = groups(3);
        s.process(&mut gs, &ctx()).expect("scored");
        assert_eq!(
            rewards(&gs),
            vec![vec![1.0, 0.0], vec![0.5, 0.25], vec![2.0, 3.0]]
        );
        let bodies = server.join().expect("server");
        let ids: Vec<Vec<&str>> = bodies
            .iter()
            .map(|b| {
                b["groups"]
                    .as_array()
                    .expect("groups")
                    .iter()
                    .map(|g| g["prompt_id"].as_str().expect("id"))
                    .collect()
            })
            .collect();
        assert_eq!(ids, vec![vec!["p0", "p1"], vec!["p2"]]);
    }

    #[test]
    fn failures_that_heal_are_retried_and_retry_after_is_honoured() {
        let (url, server) = serve(vec![
            (503, "retry-after: 0\r\n", "{}".into()),
            (200, "", "{\"results\": [tru".into()),
            ok(&[[1.0, 1.0]]),
        ]);
        let mut s = stage(&url, serde_json::json!({})).expect("stage");
        let mut gs = groups(1);
        s.process(&mut gs, &ctx()).expect("scored");
        assert_eq!(rewards(&gs), vec![vec![1.0, 1.0]]);
        assert_eq!(
            server.join().expect("server").len(),
            3,
            "two retries, then success"
        );
    }

    #[test]
    fn spent_retries_leave_error_rows_and_the_run_goes_on() {
        let replies = (0..3)
            .map(|_| (500, "", "{\"error\": \"overloaded\"}".to_owned()))
            .collect();
        let (url, server) = serve(replies);
        let mut s = stage(&url, serde_json::json!({})).expect("stage");
        let mut gs = groups(2);
        s.process(&mut gs, &ctx()).expect("the run goes on");
        assert_eq!(
            server.join().expect("server").len(),
            3,
            "bounded: 1 + 2 retries"
        );
        for g in &gs {
            assert!(g.rewards.is_empty());
            assert_eq!(g.errors.len(), 1);
            assert_eq!(g.errors[0].kind, "http_500");
            assert!(
                g.errors[0].reason.contains("after 3 attempts: HTTP 500"),
                "{}",
                g.errors[0].reason
            );
        }
    }

    #[test]
    fn a_wrong_number_of_results_is_an_error_row_per_group() {
        let (url, server) = serve(vec![ok(&[[1.0, 1.0]])]);
        let mut s = stage(&url, serde_json::json!({})).expect("stage");
        let mut gs = groups(2);
        s.process(&mut gs, &ctx()).expect("the run goes on");
        server.join().expect("server");
        for g in &gs {
            assert!(g.rewards.is_empty(), "never broadcast");
            assert_eq!(g.errors[0].kind, "bad_response");
            assert!(g.errors[0].reason.contains("1 results for 2 groups"));
        }
    }

    #[test]
    fn a_refused_key_stops_the_run_naming_the_variable_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("key.txt");
        std::fs::write(&key_file, "sk-do-not-print\n").expect("key");
        let (url, server) = serve(vec![(401, "", "{\"error\": \"bad key\"}".into())]);
        let params = serde_json::json!({ "url": url, "api_key_file": key_file });
        let config: HttpConfig = crate::params::parse(&params).expect("params");
        let ctx_b = BuildContext::new("judge", crate::RunSettings::default());
        let Built::Group(mut s) = config.build(&ctx_b).expect("build") else {
            unreachable!("a group stage")
        };
        let mut gs = groups(1);
        let message = s.process(&mut gs, &ctx()).expect_err("stops").to_string();
        assert_eq!(server.join().expect("server").len(), 1, "never retried");
        assert!(message.contains("HTTP 401"), "{message}");
        assert!(message.contains("check the key in key file"), "{message}");
        assert!(!message.contains("sk-do-not-print"), "{message}");
        assert!(!format!("{gs:?}").contains("sk-do-not-print"));
    }

    #[test]
    fn key_sources_are_checked_at_build() {
        let ctx = BuildContext::new("judge", crate::RunSettings::default());
        let build = |extra: serde_json::Value| {
            let mut params = serde_json::json!({ "url": "http://127.0.0.1:9/score" });
            for (k, v) in extra.as_object().expect("object") {
                params[k] = v.clone();
            }
            let config: HttpConfig = crate::params::parse(&params).expect("params");
            config.build(&ctx).err().map(|e| e.to_string())
        };
        assert_eq!(
            build(serde_json::json!({ "api_key_env": "TANDEM_SURELY_UNSET_VARIABLE" })),
            Some("api_key_env: environment variable `TANDEM_SURELY_UNSET_VARIABLE` is not set (it should hold the API key)".into())
        );
        assert!(
            build(serde_json::json!({ "api_key_file": "/nonexistent/key" }))
                .is_some_and(|e| e.starts_with("api_key_file: reading /nonexistent/key"))
        );
        assert_eq!(
            build(serde_json::json!({ "url": "ftp://x/y" })),
            Some("url: scheme must be http or https, got `ftp`".into())
        );
        assert_eq!(build(serde_json::json!({})), None);
    }
}
