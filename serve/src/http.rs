//! The routes: `POST /v1/chat/completions`, `GET /v1/models` (both behind the optional client
//! token), `GET /metrics`, `GET /health`.
//!
//! A completion's life: the token is checked (401), the body parsed (400, naming the field),
//! the question queued for the device with the help option (429 with `Retry-After` when the
//! queue is full), then the request is admitted to the budget and answered on a task of its
//! own, so it is answered and recorded in the ledger even if the client leaves. An answer is
//! returned whole as JSON, or as Server-Sent Events with `stream: true`. Both say who answered:
//! `tandem.answered_by` in the body (every chunk of a stream) and `x-tandem-answered-by`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;
use tandem_schemas::{CloudRecord, FinishReason, RequestRecord, SampleRecord};

use crate::budget::Budget;
use crate::cloud::CloudClient;
use crate::config::ServeConfig;
use crate::device::{AnswerReceiver, DeviceAnswer, DeviceQueue, Job, Refused, Sampling};
use crate::ledger::{Entry, LedgerSender};
use crate::metrics::{Answered, Metrics};

/// Header naming who answered: `device` or `cloud`.
pub const ANSWERED_BY: &str = "x-tandem-answered-by";
/// Header saying whether the budget capped the request: `true` or `false`.
pub const CAPPED: &str = "x-tandem-capped";

/// What every handler shares.
pub struct AppState {
    model_name: String,
    device: DeviceQueue,
    cloud: CloudClient,
    budget: Budget,
    ledger: LedgerSender,
    metrics: Arc<Metrics>,
    token: Option<String>,
    max_new_tokens: usize,
    temperature: f64,
    next_id: AtomicU64,
    /// A prefix that keeps ids unique across restarts writing to the same ledger directory.
    id_prefix: String,
}

/// What a server's state is made of, besides its settings.
pub struct Parts {
    /// The device's queue.
    pub device: DeviceQueue,
    /// The cloud.
    pub cloud: CloudClient,
    /// The ledger.
    pub ledger: LedgerSender,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The token clients must send, if any.
    pub token: Option<String>,
}

impl AppState {
    /// The state of a server of `config`.
    pub fn new(config: &ServeConfig, parts: Parts) -> AppState {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        AppState {
            model_name: config.model_name.clone(),
            device: parts.device,
            cloud: parts.cloud,
            budget: Budget::new(config.budget, config.budget_window),
            ledger: parts.ledger,
            metrics: parts.metrics,
            token: parts.token,
            max_new_tokens: config.max_new_tokens,
            temperature: config.temperature,
            next_id: AtomicU64::new(0),
            id_prefix: format!("{started:x}"),
        }
    }

    /// The budget (tests read its figures).
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

/// The router of a server.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn bad_request(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.to_owned()),
            retry_after: None,
        }
    }

    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": Value::Null,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Checks the client's bearer token, in time that does not depend on where it differs.
fn authorize(state: &AppState, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        state.metrics.refused("unauthorized");
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        ))
    }
}

async fn models(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> std::result::Result<Response, ApiError> {
    authorize(&state, &headers)?;
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{ "id": state.model_name, "object": "model", "created": 0, "owned_by": "tandem" }],
    }))
    .into_response())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state
        .metrics
        .encode(state.budget.snapshot(), state.device.depth());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The fields of a Chat Completions request the server uses; others are accepted and ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// A request, checked.
#[derive(Debug)]
struct Parsed {
    question: String,
    /// The client's messages, as sent (what the cloud gets).
    messages: Value,
    sampling: Sampling,
    /// Sampling fields passed on to the cloud.
    cloud_extra: serde_json::Map<String, Value>,
    stream: bool,
    include_usage: bool,
}

fn parse(state: &AppState, body: &[u8]) -> std::result::Result<Parsed, ApiError> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("body", format!("body: not JSON: {e}")))?;
    if !raw.is_object() {
        return Err(ApiError::bad_request(
            "body",
            "body: expected a JSON object",
        ));
    }
    if raw.get("messages").is_none() {
        return Err(ApiError::bad_request(
            "messages",
            "messages: required (the conversation; its last user message is the question)",
        ));
    }
    let request: ChatRequest = serde_path_to_error::deserialize(&raw).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(&path, format!("{path}: {}", e.inner()))
    })?;
    let mut question = None;
    for (i, message) in request.messages.iter().enumerate() {
        if message.role == "user" {
            question = Some(text_of(&message.content).ok_or_else(|| {
                ApiError::bad_request(
                    &format!("messages[{i}].content"),
                    format!("messages[{i}].content: expected a string or a list of text parts"),
                )
            })?);
        }
    }
    let Some(question) = question.filter(|q| !q.trim().is_empty()) else {
        return Err(ApiError::bad_request(
            "messages",
            "messages: no user message with text (the last one is the question)",
        ));
    };
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(
            "n",
            "n: only 1 completion per request",
        ));
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    if max_tokens == Some(0) {
        return Err(ApiError::bad_request(
            "max_tokens",
            "max_tokens: must be at least 1",
        ));
    }
    let temperature = request.temperature.unwrap_or(state.temperature);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::bad_request(
            "temperature",
            format!("temperature: {temperature} is not between 0 and 2"),
        ));
    }
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(
            "top_p",
            format!("top_p: {top_p} is not in (0, 1]"),
        ));
    }
    let mut cloud_extra = serde_json::Map::new();
    for key in [
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "seed",
    ] {
        if let Some(v) = raw.get(key).filter(|v| !v.is_null()) {
            cloud_extra.insert(key.to_owned(), v.clone());
        }
    }
    Ok(Parsed {
        messages: raw["messages"].clone(),
        question,
        sampling: Sampling {
            max_new_tokens: max_tokens.map_or(state.max_new_tokens, |m| {
                (m as usize).min(state.max_new_tokens)
            }),
            temperature,
            top_p,
            seed: request.seed.unwrap_or(0),
        },
        cloud_extra,
        stream: request.stream,
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// A message's text: a string, or the text parts of a list.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match (p["type"].as_str(), p["text"].as_str()) {
                (Some("text"), Some(t)) => Some(t.to_owned()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|t| t.join("\n")),
        _ => None,
    }
}

/// How a request was answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `chatcmpl-…`.
    pub id: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// The answer.
    pub content: String,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// `device` or `cloud`.
    pub answered_by: &'static str,
    /// `local`, `escalated`, `capped` or `fallback`.
    pub route: &'static str,
    /// The device's first answer asked for help.
    pub asked_help: bool,
    /// The budget was spent: answered on the device without the help option.
    pub capped: bool,
    /// Why the cloud gave no answer, when it failed.
    pub cloud_error: Option<String>,
    /// Usage of the answer returned.
    pub prompt_tokens: u64,
    /// Usage of the answer returned.
    pub completion_tokens: u64,
}

impl Outcome {
    fn tandem(&self) -> Value {
        json!({
            "answered_by": self.answered_by,
            "route": self.route,
            "asked_help": self.asked_help,
            "capped": self.capped,
            "cloud_error": self.cloud_error,
        })
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ANSWERED_BY, HeaderValue::from_static(self.answered_by));
        headers.insert(
            CAPPED,
            HeaderValue::from_static(if self.capped { "true" } else { "false" }),
        );
        headers
    }
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> std::result::Result<Response, ApiError> {
    let arrived = Instant::now();
    authorize(&state, &headers)?;
    let parsed = parse(&state, &body).inspect_err(|_| state.metrics.refused("bad_request"))?;
    let (job, first) = Job::new(parsed.question.clone(), true, parsed.sampling);
    match state.device.try_submit(job) {
        Ok(()) => {}
        Err(Refused::Full) => {
            state.metrics.refused("queue_full");
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "the device's queue is full; retry shortly",
            );
            error.retry_after = Some(1);
            return Err(error);
        }
        Err(Refused::Stopped) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the server is stopping",
            ));
        }
    }
    let seq = state.budget.admit();
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n:06}", state.id_prefix);
    let (stream, include_usage) = (parsed.stream, parsed.include_usage);
    // On a task of its own: a client that leaves does not cancel the answer or its ledger row.
    let task = tokio::spawn(answer(state.clone(), parsed, first, seq, id, arrived));
    let outcome = task.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("the request's task failed: {e}"),
        )
    })??;
    let model = state.model_name.clone();
    if stream {
        Ok((outcome.headers(), sse(&outcome, &model, include_usage)).into_response())
    } else {
        let body = json!({
            "id": format!("chatcmpl-{}", outcome.id),
            "object": "chat.completion",
            "created": outcome.created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": outcome.content },
                "finish_reason": outcome.finish_reason,
            }],
            "usage": usage(&outcome),
            "tandem": outcome.tandem(),
        });
        Ok((outcome.headers(), axum::Json(body)).into_response())
    }
}

fn usage(o: &Outcome) -> Value {
    json!({
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "total_tokens": o.prompt_tokens + o.completion_tokens,
    })
}

/// The answer as a stream of chunks: the role, the text in pieces of a few words, the finish
/// reason, the usage when asked, `[DONE]`.
fn sse(
    o: &Outcome,
    model: &str,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = std::result::Result<Event, Infallible>> + use<>> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": format!("chatcmpl-{}", o.id),
            "object": "chat.completion.chunk",
            "created": o.created,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            "tandem": o.tandem(),
        })
    };
    let mut events = vec![chunk(
        json!({ "role": "assistant", "content": "" }),
        Value::Null,
    )];
    let words: Vec<&str> = o.content.split_inclusive(char::is_whitespace).collect();
    for piece in words.chunks(4) {
        events.push(chunk(json!({ "content": piece.concat() }), Value::Null));
    }
    events.push(chunk(json!({}), Value::from(o.finish_reason)));
    if include_usage {
        let mut last = chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = usage(o);
        events.push(last);
    }
    let mut events: Vec<Event> = events
        .into_iter()
        .map(|v| Event::default().data(v.to_string()))
        .collect();
    events.push(Event::default().data("[DONE]"));
    Sse::new(futures_util::stream::iter(events.into_iter().map(Ok)))
}

fn hash(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn finish(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// Waits for a device answer.
async fn device_answer(
    state: &AppState,
    rx: AnswerReceiver,
) -> std::result::Result<DeviceAnswer, ApiError> {
    let answer = rx
        .await
        .map_err(|_| "the device stopped before answering".to_owned())
        .and_then(|a| a);
    match answer {
        Ok(answer) => {
            state.metrics.device_pass(answer.elapsed.as_secs_f64());
            Ok(answer)
        }
        Err(message) => {
            state.metrics.refused("device_error");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                message,
            ))
        }
    }
}

/// A second device pass, without the help option (capped, or the cloud failed).
async fn without_help(
    state: &AppState,
    parsed: &Parsed,
) -> std::result::Result<DeviceAnswer, ApiError> {
    let (job, rx) = Job::new(parsed.question.clone(), false, parsed.sampling);
    state.device.submit(job).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is stopping",
        )
    })?;
    device_answer(state, rx).await
}

/// Answers an admitted request and records it.
async fn answer(
    state: Arc<AppState>,
    parsed: Parsed,
    first: AnswerReceiver,
    seq: u64,
    id: String,
    arrived: Instant,
) -> std::result::Result<Outcome, ApiError> {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let device = device_answer(&state, first).await?;
    let mut request = RequestRecord {
        prompt_id: id.clone(),
        question_hash: hash(&parsed.question),
        asked_help: device.asked_help,
        stream: parsed.stream,
        device_tokens_in: device.prompt_tokens,
        device_tokens_out: device.token_ids.len() as u64,
        device_ms: device.elapsed.as_secs_f64() * 1e3,
        ..RequestRecord::default()
    };
    let sample = SampleRecord {
        prompt_id: id.clone(),
        text: device.text.clone(),
        token_ids: device.token_ids.clone(),
        logprobs: device.logprobs.clone(),
        finish_reason: device.finish_reason,
        asked_help: device.asked_help,
        ..SampleRecord::default()
    };
    let mut outcome = Outcome {
        id: id.clone(),
        created,
        content: device.text.clone(),
        finish_reason: finish(device.finish_reason),
        answered_by: "device",
        route: "local",
        asked_help: device.asked_help,
        capped: false,
        cloud_error: None,
        prompt_tokens: device.prompt_tokens,
        completion_tokens: device.token_ids.len() as u64,
    };
    let mut cloud_row = None;
    if device.asked_help {
        let mut row = CloudRecord {
            prompt_id: id.clone(),
            model: state.cloud.model().to_owned(),
            ..CloudRecord::default()
        };
        let mut fallback = true;
        if state.budget.try_escalate(seq) {
            request.escalated = true;
            let body = state.cloud.body(&parsed.messages, &parsed.cloud_extra);
            row.request_hash = hash(&body.to_string());
            let called = state.cloud.ask(&body).await;
            row.attempts = called.attempts;
            row.latency_ms = called.elapsed.as_secs_f64() * 1e3;
            request.cloud_ms = row.latency_ms;
            state.metrics.cloud_call(called.elapsed.as_secs_f64());
            match called.result {
                Ok(reply) => {
                    fallback = false;
                    row.cost_usd = state.cloud.cost(&reply);
                    (row.tokens_in, row.tokens_out) = (reply.tokens_in, reply.tokens_out);
                    if let Some(model) = &reply.model {
                        row.model.clone_from(model);
                    }
                    row.answer = Some(reply.content.clone());
                    row.reasoning = reply.reasoning.clone();
                    (request.cloud_tokens_in, request.cloud_tokens_out) =
                        (reply.tokens_in, reply.tokens_out);
                    request.cost_usd = row.cost_usd;
                    outcome.content = reply.content;
                    outcome.finish_reason = "stop";
                    outcome.answered_by = "cloud";
                    outcome.route = "escalated";
                    (outcome.prompt_tokens, outcome.completion_tokens) =
                        (reply.tokens_in, reply.tokens_out);
                }
                Err((kind, message)) => {
                    // The place in the budget goes back: nothing was answered by the cloud.
                    state.budget.release(seq);
                    state.metrics.cloud_failed();
                    tracing::warn!(request = %id, "escalation failed, the device answers: {message}");
                    row.error_kind = Some(kind.clone());
                    request.cloud_error = Some(kind.clone());
                    outcome.cloud_error = Some(kind);
                    outcome.route = "fallback";
                }
            }
        } else {
            row.error_kind = Some("budget".into());
            request.capped = true;
            outcome.capped = true;
            outcome.route = "capped";
        }
        if fallback {
            let again = without_help(&state, &parsed).await?;
            request.device_tokens_in += again.prompt_tokens;
            request.device_tokens_out += again.token_ids.len() as u64;
            request.device_ms += again.elapsed.as_secs_f64() * 1e3;
            outcome.content = again.text;
            outcome.finish_reason = finish(again.finish_reason);
            (outcome.prompt_tokens, outcome.completion_tokens) =
                (again.prompt_tokens, again.token_ids.len() as u64);
        }
        cloud_row = Some(row);
    }
    let seconds = arrived.elapsed().as_secs_f64();
    request.answered_by = outcome.answered_by.to_owned();
    request.latency_ms = seconds * 1e3;
    request.finish_reason = outcome.finish_reason.to_owned();
    state.metrics.answered(
        Answered {
            answered_by: outcome.answered_by,
            route: outcome.route,
        },
        seconds,
    );
    state.ledger.record(Entry {
        request,
        sample,
        cloud: cloud_row,
    });
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::device::Job;

    /// A server whose device queue holds `capacity` and is never drained (no model needed).
    fn server(capacity: usize, token: Option<&str>) -> (Router, DeviceQueue) {
        let config = ServeConfig::new("model".into(), "http://127.0.0.1:9/v1".into());
        let (queue, rx) = DeviceQueue::bounded(capacity);
        // The receiver lives as long as the test's queue: jobs stay queued, unanswered.
        std::mem::forget(rx);
        let (ledger, _) = LedgerSender::detached();
        let state = AppState::new(
            &config,
            Parts {
                device: queue.clone(),
                cloud: CloudClient::new(&config).expect("client"),
                ledger,
                metrics: Arc::new(Metrics::new(config.budget)),
                token: token.map(str::to_owned),
            },
        );
        (router(Arc::new(state)), queue)
    }

    fn completion(body: &str, token: Option<&str>) -> Request<Body> {
        let mut request =
            Request::post("/v1/chat/completions").header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::from(body.to_owned())).expect("request")
    }

    async fn json_of(response: Response) -> Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    const ASK: &str = r#"{"model":"m","messages":[{"role":"user","content":"What is 2 + 3?"}]}"#;

    #[tokio::test]
    async fn a_full_queue_answers_429_with_retry_after() {
        let (app, queue) = server(1, None);
        let sampling = Sampling {
            max_new_tokens: 1,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        };
        let (job, _answer) = Job::new("q".into(), true, sampling);
        queue.try_submit(job).expect("room for one");
        let response = app.oneshot(completion(ASK, None)).await.expect("response");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = json_of(response).await;
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
        assert_eq!(queue.depth(), 1, "the refused request was not queued");
    }

    #[tokio::test]
    async fn a_missing_or_wrong_token_is_401_and_the_right_one_passes_auth() {
        let (app, _queue) = server(1, Some("s3cret"));
        for token in [None, Some("s3cret-not"), Some("s3cre")] {
            let response = app
                .clone()
                .oneshot(completion(ASK, token))
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
            assert!(!json_of(response).await.to_string().contains("s3cret"));
        }
        let models = Request::get("/v1/models")
            .header("authorization", "Bearer s3cret")
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(models).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json_of(response).await["data"][0]["id"], "model");
        // Past auth, a bad body is a 400 (not a 401): the token was accepted.
        let response = app
            .oneshot(completion("{}", Some("s3cret")))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn bad_bodies_are_400_naming_the_field() {
        let (app, queue) = server(4, None);
        for (body, param) in [
            ("not json", "body"),
            (r#"{"model":"m"}"#, "messages"),
            (
                r#"{"messages":[{"role":"system","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"messages":[{"role":"user","content":7}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"messages":[{"role":"user","content":"q"}],"temperature":9}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"q"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (r#"{"messages":[{"role":"user","content":"q"}],"n":3}"#, "n"),
            (
                r#"{"messages":[{"role":"user","content":"q"}],"stream":"yes"}"#,
                "stream",
            ),
        ] {
            let response = app
                .clone()
                .oneshot(completion(body, None))
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
            let error = json_of(response).await;
            assert_eq!(error["error"]["param"], param, "{body}: {error}");
            assert!(
                error["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(param)),
                "{error}"
            );
        }
        assert_eq!(queue.depth(), 0, "nothing bad reached the device");
    }

    #[test]
    fn the_question_is_the_last_user_message_and_text_parts_are_joined() {
        let content =
            serde_json::json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        assert_eq!(text_of(&content).as_deref(), Some("a\nb"));
        assert_eq!(text_of(&serde_json::json!([{"type": "image_url"}])), None);
        let config = ServeConfig::new("model".into(), "http://127.0.0.1:9/v1".into());
        let (queue, _rx) = DeviceQueue::bounded(1);
        let (ledger, _) = LedgerSender::detached();
        let state = AppState::new(
            &config,
            Parts {
                device: queue,
                cloud: CloudClient::new(&config).expect("client"),
                ledger,
                metrics: Arc::new(Metrics::new(0.3)),
                token: None,
            },
        );
        let parsed = parse(
            &state,
            br#"{"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":"second"}],"max_tokens":9999,"temperature":0.5}"#,
        )
        .expect("parses");
        assert_eq!(parsed.question, "second");
        assert_eq!(
            parsed.sampling.max_new_tokens, config.max_new_tokens,
            "capped at the server's"
        );
        assert_eq!(parsed.cloud_extra["temperature"], 0.5);
        assert_eq!(
            parsed.messages.as_array().map(Vec::len),
            Some(3),
            "the cloud gets them all"
        );
    }
}
