//! What the instances of one `cloud.openai` stage share across workers, and one prompt's trip
//! to the cloud: memo, disk cache, budget, flow limits, the call with retries, the ledger row.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use tokio::sync::{OnceCell, Semaphore};

use super::cache::{CachedAnswer, DiskCache};
use super::config::{BudgetConfig, CloudConfig};
use crate::net::{self, Failure, RetryPolicy};
use crate::{Result, StageError};

/// Shared by the stage's instances on every worker.
pub struct Engine {
    pub(super) config: CloudConfig,
    runtime: Option<tokio::runtime::Runtime>,
    client: reqwest::Client,
    headers: HeaderMap,
    in_flight: Semaphore,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    budget: Budget,
    disk: Option<DiskCache>,
    /// Answers of this run by request hash: a prompt is sent at most once per run, however
    /// many of its samples (in however many steps) ask.
    memo: Mutex<HashMap<String, Arc<OnceCell<CachedAnswer>>>>,
    /// Where the key came from, for the message when the server rejects it.
    key_source: Option<String>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Calls still out (a stopped run) are abandoned, not waited for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How one prompt's trip ended.
#[derive(Debug)]
pub enum Outcome {
    /// An answer: from a call (`cache_hit` false) or the memo / disk (`cache_hit` true).
    Answer {
        answer: CachedAnswer,
        cache_hit: bool,
        latency_ms: f64,
        attempts: u32,
    },
    /// No answer: the budget refused the call, or the retries were spent.
    Failed {
        kind: String,
        message: String,
        attempts: u32,
        latency_ms: f64,
    },
    /// The server refused in a way that will not heal (bad key, bad request): the run stops.
    Fatal(String),
}

impl Engine {
    /// Builds the shared part (client, runtime, limits) from a validated config.
    pub fn new(config: CloudConfig, base: &crate::BuildContext) -> Result<Engine> {
        let key_source = net::KeySource {
            api_key_env: config.api_key_env.clone(),
            api_key_file: config.api_key_file.clone(),
        };
        let mut headers = HeaderMap::new();
        if let Some(key) = key_source.read(base)? {
            headers.insert(reqwest::header::AUTHORIZATION, net::bearer(&key)?);
        }
        let client = net::client(
            Duration::from_millis(config.connect_timeout_ms),
            Duration::from_millis(config.timeout_ms),
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("{}-io", base.stage_id))
            .enable_all()
            .build()
            .map_err(|e| StageError::Run(format!("starting the I/O runtime: {e}")))?;
        let per_minute = |n: u32| NonZeroU32::new(n).map(|n| (Quota::per_minute(n), n));
        let engine = Engine {
            in_flight: Semaphore::new(config.max_in_flight),
            requests: config
                .requests_per_minute
                .and_then(per_minute)
                .map(|(q, _)| RateLimiter::direct(q)),
            tokens: config
                .tokens_per_minute
                .and_then(per_minute)
                .map(|(q, n)| (RateLimiter::direct(q), n)),
            budget: Budget::new(config.budget.clone()),
            disk: config
                .cache_dir
                .as_ref()
                .map(|d| DiskCache::new(base.resolve(d))),
            memo: Mutex::new(HashMap::new()),
            key_source: key_source.describe(),
            runtime: Some(runtime),
            client,
            headers,
            config,
        };
        if let Some(resume) = &base.run.resume {
            engine.restore(&stored_ledger(
                &resume.run_dir,
                &base.stage_id,
                resume.step,
            )?);
        }
        Ok(engine)
    }

    /// Takes back what a resumed run's earlier steps did: their answers go into the memo (a
    /// prompt answered before the resume point is not sent again, as in an uninterrupted run)
    /// and their calls and tokens count against the run's budget.
    fn restore(&self, ledger: &[tandem_schemas::CloudRecord]) {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let mut spent = self.budget.spent.lock().unwrap_or_else(|e| e.into_inner());
        for row in ledger {
            let Some(text) = row.answer.clone().filter(|_| row.error_kind.is_none()) else {
                continue;
            };
            if !row.cache_hit {
                spent.run_calls += 1;
                spent.run_tokens += row.tokens_in + row.tokens_out;
            }
            let answer = CachedAnswer {
                request_hash: row.request_hash.clone(),
                model: row.model.clone(),
                answer: text,
                reasoning: row.reasoning.clone(),
                tokens_in: row.tokens_in,
                tokens_out: row.tokens_out,
            };
            memo.entry(row.request_hash.clone())
                .or_insert_with(|| Arc::new(OnceCell::new_with(Some(answer))));
        }
    }

    /// Runs `future` on the engine's I/O thread.
    pub fn spawn(&self, future: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(runtime) = &self.runtime {
            runtime.spawn(future);
        }
    }

    /// The answer to `body` (whose hash is `hash`) for a prompt of `step`.
    pub async fn answer(&self, hash: String, body: serde_json::Value, step: u64) -> Outcome {
        let cell = {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            memo.entry(hash.clone()).or_default().clone()
        };
        let called = AtomicBool::new(false);
        let mut trip = Trip::default();
        let result = cell
            .get_or_try_init(|| async {
                if let Some(cached) = self.disk.as_ref().and_then(|d| d.get(&hash)) {
                    return Ok(cached);
                }
                called.store(true, Ordering::Relaxed);
                self.call(&hash, &body, step, &mut trip).await
            })
            .await;
        match result {
            Ok(answer) if called.load(Ordering::Relaxed) => Outcome::Answer {
                answer: answer.clone(),
                cache_hit: false,
                latency_ms: trip.latency_ms,
                attempts: trip.attempts,
            },
            Ok(answer) => Outcome::Answer {
                answer: answer.clone(),
                cache_hit: true,
                latency_ms: 0.0,
                attempts: 0,
            },
            Err(outcome) => outcome,
        }
    }

    /// One call with retries, within the budget and the flow limits.
    async fn call(
        &self,
        hash: &str,
        body: &serde_json::Value,
        step: u64,
        trip: &mut Trip,
    ) -> std::result::Result<CachedAnswer, Outcome> {
        if let Err(reason) = self.budget.reserve(step) {
            return Err(Outcome::Failed {
                kind: "budget".into(),
                message: reason,
                attempts: 0,
                latency_ms: 0.0,
            });
        }
        let _permit = self.in_flight.acquire().await.ok();
        let started = Instant::now();
        let endpoint = self.config.endpoint();
        let estimate = estimated_tokens(body, self.config.max_tokens);
        let wait_for_limits = || async {
            if let Some(limiter) = &self.requests {
                limiter.until_ready().await;
            }
            if let Some((limiter, burst)) = &self.tokens {
                let n = NonZeroU32::new(estimate.clamp(1, burst.get())).unwrap_or(*burst);
                // Cannot fail: n is at most the burst.
                let _ = limiter.until_n_ready(n).await;
            }
        };
        let retry = RetryPolicy {
            retries: self.config.retries,
            backoff: Duration::from_millis(self.config.backoff_ms),
        };
        let (result, attempts) = call_with_retries(
            &self.client,
            &endpoint,
            &self.headers,
            body,
            retry,
            wait_for_limits,
        )
        .await;
        trip.attempts = attempts;
        trip.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(reply) => {
                self.budget.spend(step, reply.tokens_in + reply.tokens_out);
                let answer = CachedAnswer {
                    request_hash: hash.to_owned(),
                    model: reply.model.unwrap_or_else(|| self.config.model.clone()),
                    answer: reply.content,
                    reasoning: reply.reasoning,
                    tokens_in: reply.tokens_in,
                    tokens_out: reply.tokens_out,
                };
                if let Some(disk) = &self.disk
                    && let Err(e) = disk.put(&answer)
                {
                    tracing::warn!("cloud cache: cannot store an answer: {e}");
                }
                Ok(answer)
            }
            Err(failure) => {
                self.budget.release(step);
                if failure.retryable() {
                    Err(Outcome::Failed {
                        kind: failure.kind(),
                        message: format!(
                            "{} attempt(s) to {endpoint}; last: {failure}",
                            trip.attempts
                        ),
                        attempts: trip.attempts,
                        latency_ms: trip.latency_ms,
                    })
                } else {
                    let mut message = format!(
                        "{endpoint} refused the request ({failure}); not retried, since it will not heal"
                    );
                    if let (
                        Failure::Status {
                            status: 401 | 403, ..
                        },
                        Some(source),
                    ) = (&failure, &self.key_source)
                    {
                        message.push_str(&format!("; check the API key in {source}"));
                    }
                    Err(Outcome::Fatal(message))
                }
            }
        }
    }
}

/// One Chat Completions request (`body` POSTed to `endpoint`) with `cloud.openai`'s retry
/// policy ([`net::post_with_retries`]): failures that heal are retried with backoff, honouring
/// `Retry-After`; others are returned at once. `before_attempt` runs before every attempt (the
/// stage waits for its rate limits there). Returns the reply or the last failure, and the
/// attempts made.
pub async fn call_with_retries<W, F>(
    client: &reqwest::Client,
    endpoint: &str,
    headers: &HeaderMap,
    body: &serde_json::Value,
    retry: RetryPolicy,
    before_attempt: W,
) -> (std::result::Result<Reply, Failure>, u32)
where
    W: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    net::post_with_retries(
        client,
        endpoint,
        headers,
        body,
        retry,
        before_attempt,
        parse_response,
    )
    .await
}

/// What one call measured.
#[derive(Default)]
struct Trip {
    attempts: u32,
    latency_ms: f64,
}

/// A prompt's token estimate for the tokens/min limit: ~4 bytes a token, plus `max_tokens`.
fn estimated_tokens(body: &serde_json::Value, max_tokens: Option<u32>) -> u32 {
    let prompt = body["messages"].to_string().len() / 4;
    u32::try_from(prompt)
        .unwrap_or(u32::MAX)
        .saturating_add(max_tokens.unwrap_or(256))
}

/// The part of a Chat Completions reply the stage keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The first choice's text.
    pub content: String,
    /// Its reasoning, for servers that return it separately.
    pub reasoning: Option<String>,
    /// The model that answered, as the server names it.
    pub model: Option<String>,
    /// Prompt tokens billed.
    pub tokens_in: u64,
    /// Completion tokens billed.
    pub tokens_out: u64,
}

/// Parses a Chat Completions body. A body without a first choice's text is `malformed` (worth
/// another attempt: truncated and garbled bodies look like that).
pub fn parse_response(text: &str) -> std::result::Result<Reply, Failure> {
    #[derive(Deserialize)]
    struct Body {
        model: Option<String>,
        choices: Vec<Choice>,
        usage: Option<Usage>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        content: Option<String>,
        reasoning_content: Option<String>,
        reasoning: Option<String>,
    }
    #[derive(Deserialize)]
    struct Usage {
        prompt_tokens: u64,
        completion_tokens: u64,
    }
    let body: Body = serde_json::from_str(text).map_err(|e| {
        Failure::malformed(format!(
            "not a chat completion ({e}): {}",
            net::excerpt(text)
        ))
    })?;
    let Some(choice) = body.choices.into_iter().next() else {
        return Err(Failure::malformed("the reply has no choices"));
    };
    let Some(content) = choice.message.content else {
        return Err(Failure::malformed("the reply's message has no content"));
    };
    let usage = body
        .usage
        .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    Ok(Reply {
        content,
        reasoning: choice
            .message
            .reasoning_content
            .or(choice.message.reasoning),
        model: body.model,
        tokens_in: usage.0,
        tokens_out: usage.1,
    })
}

/// The ledger rows stage `stage_id` stored in `run_dir` for the steps before `first_step`.
fn stored_ledger(
    run_dir: &std::path::Path,
    stage_id: &str,
    first_step: u64,
) -> Result<Vec<tandem_schemas::CloudRecord>> {
    use tandem_schemas::io::Rows;
    let layout = tandem_schemas::layout::RunLayout::new(run_dir);
    let mut rows = Vec::new();
    // The stream is named after the stage, or `<id>.cloud` when the stage provides more.
    for stream in [stage_id.to_owned(), format!("{stage_id}.cloud")] {
        let parts = layout
            .parts_before(&stream, first_step)
            .map_err(|e| StageError::Run(format!("resuming: stream {stream}: {e}")))?;
        for (_, part) in parts {
            let read = Rows::read_parquet(tandem_schemas::StreamKind::Cloud, &part)
                .map_err(|e| StageError::Run(format!("resuming: {}: {e}", part.display())))?;
            if let Rows::Cloud(part_rows) = read {
                rows.extend(part_rows);
            }
        }
    }
    Ok(rows)
}

/// Calls and tokens spent, per step and per run, against the caps.
struct Budget {
    caps: BudgetConfig,
    spent: Mutex<Spent>,
}

#[derive(Default)]
struct Spent {
    run_calls: u64,
    run_tokens: u64,
    steps: HashMap<u64, (u64, u64)>,
}

impl Budget {
    fn new(caps: BudgetConfig) -> Budget {
        Budget {
            caps,
            spent: Mutex::new(Spent::default()),
        }
    }

    /// Takes one call from the budget of `step`, or says which cap refuses it.
    fn reserve(&self, step: u64) -> std::result::Result<(), String> {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let (step_calls, step_tokens) = spent.steps.get(&step).copied().unwrap_or_default();
        let c = &self.caps;
        let refused = [
            (c.calls_per_run, spent.run_calls, "calls_per_run"),
            (c.calls_per_step, step_calls, "calls_per_step"),
            (c.tokens_per_run, spent.run_tokens, "tokens_per_run"),
            (c.tokens_per_step, step_tokens, "tokens_per_step"),
        ]
        .into_iter()
        .find(|(cap, used, _)| cap.is_some_and(|cap| *used >= cap));
        if let Some((cap, used, name)) = refused {
            return Err(format!(
                "budget.{name} is spent ({used} of {})",
                cap.unwrap_or_default()
            ));
        }
        spent.run_calls += 1;
        spent.steps.entry(step).or_default().0 += 1;
        Ok(())
    }

    /// Gives back a reserved call that got no answer (nothing was billed).
    fn release(&self, step: u64) {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        spent.run_calls = spent.run_calls.saturating_sub(1);
        if let Some(entry) = spent.steps.get_mut(&step) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    /// Adds an answered call's tokens.
    fn spend(&self, step: u64, tokens: u64) {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        spent.run_tokens += tokens;
        spent.steps.entry(step).or_default().1 += tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_with_reasoning_and_usage() {
        let reply = parse_response(
            r#"{"model": "deepseek-r1", "choices": [{"index": 0, "message": {"role": "assistant",
                "content": "<answer>4</answer>", "reasoning_content": "2 + 2"}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}"#,
        )
        .expect("valid");
        assert_eq!(
            reply,
            Reply {
                content: "<answer>4</answer>".into(),
                reasoning: Some("2 + 2".into()),
                model: Some("deepseek-r1".into()),
                tokens_in: 12,
                tokens_out: 7,
            }
        );
        for bad in [
            "{\"choices\": [",
            "{\"choices\": []}",
            "{\"choices\": [{\"message\": {\"content\": null}}]}",
        ] {
            let failure = parse_response(bad).expect_err(bad);
            assert_eq!(failure.kind(), "malformed", "{bad}");
            assert!(failure.retryable());
        }
    }

    #[test]
    fn the_budget_refuses_past_each_cap_and_gives_back_unanswered_calls() {
        let budget = Budget::new(BudgetConfig {
            calls_per_step: Some(2),
            calls_per_run: Some(3),
            tokens_per_step: None,
            tokens_per_run: Some(100),
        });
        assert!(budget.reserve(0).is_ok());
        assert!(budget.reserve(0).is_ok());
        assert_eq!(
            budget.reserve(0),
            Err("budget.calls_per_step is spent (2 of 2)".into())
        );
        budget.release(0);
        assert!(
            budget.reserve(0).is_ok(),
            "a call that got no answer is given back"
        );
        assert!(budget.reserve(1).is_ok());
        assert_eq!(
            budget.reserve(2),
            Err("budget.calls_per_run is spent (3 of 3)".into())
        );
        let budget = Budget::new(BudgetConfig {
            tokens_per_run: Some(100),
            ..Default::default()
        });
        assert!(budget.reserve(0).is_ok());
        budget.spend(0, 100);
        assert_eq!(
            budget.reserve(1),
            Err("budget.tokens_per_run is spent (100 of 100)".into())
        );
    }
}
