//! The HTTP server: hyper's HTTP/1.1 over tokio, one task per connection and none per request,
//! so thousands of requests waiting out their latency cost only timers.
//!
//! Faults that HTTP cannot express are made at the connection: a truncated body is a body that
//! fails after its first half (hyper then aborts the connection), and a reset is the request
//! handler asking its connection task to drop the socket with `SO_LINGER` 0, which sends RST.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio::time::Sleep;

use super::config::SimConfig;
use super::error::Result;
use super::faults::Fault;
use super::log::{LogLine, RequestLog};
use super::openai::{self, BadRequest, ChatRequest, Completion};
use super::oracle::{GoldAnswers, Oracle, Reply};
use super::seeded::{self, Digest32, Purpose};

/// Request bodies larger than this are a 400 (no chat request is near it).
const MAX_BODY_BYTES: usize = 16 << 20;

/// How long a truncated body waits after its first half, so that hyper flushes that half
/// (and the headers) before the failure aborts the connection.
const TRUNCATE_PAUSE: Duration = Duration::from_millis(10);

/// How long to wait after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The simulator, ready to serve: settings checked, gold answers loaded, log created.
#[derive(Debug)]
pub struct Simulator {
    config: SimConfig,
    oracle: Oracle,
    gold_questions: usize,
    log: Option<RequestLog>,
    /// How many times each request hash has arrived.
    seen: Mutex<HashMap<Digest32, u64>>,
    /// Chat requests so far (the log's `seq`).
    requests: AtomicU64,
    /// Start time in Unix seconds (the model's `created`).
    started: u64,
}

impl Simulator {
    /// Checks `config`, loads its gold answers and creates its log.
    pub fn new(config: SimConfig) -> Result<Simulator> {
        config.validate()?;
        let gold = match &config.gold {
            Some(path) => GoldAnswers::load(path)?,
            None => GoldAnswers::default(),
        };
        let log = config
            .request_log
            .as_deref()
            .map(RequestLog::create)
            .transpose()?;
        Ok(Simulator {
            gold_questions: gold.len(),
            oracle: Oracle::new(gold, config.answer_format),
            config,
            log,
            seen: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            started: unix_seconds(),
        })
    }

    /// How many questions the gold-answer file holds (0 without one).
    pub fn gold_questions(&self) -> usize {
        self.gold_questions
    }

    /// The settings it runs with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }
}

/// Serves `listener` until `shutdown` completes. Connections still open then (a hanging
/// request, say) are dropped.
pub async fn serve(sim: Simulator, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let sim = Arc::new(sim);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(Arc::clone(&sim), stream));
                }
                Err(e) => {
                    tracing::warn!("cloud-sim: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reaps finished connections so the set does not grow with every one ever served.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A server on its own thread and runtime, for use in-process (tests, demos).
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a server on `bind` (port 0 picks a free one) on a thread of its own with a two-worker
/// runtime; it stops when the handle is shut down or dropped.
pub fn spawn(config: SimConfig, bind: SocketAddr) -> Result<SimHandle> {
    let sim = Simulator::new(config)?;
    let listener = std::net::TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cloud-sim")
        .enable_all()
        .build()?;
    let listener = {
        let _context = runtime.enter();
        TcpListener::from_std(listener)?
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cloud-sim".into())
        .spawn(move || {
            runtime.block_on(serve(sim, listener, async {
                // A dropped sender stops the server as a sent stop does.
                let _ = stopped.await;
            }));
        })?;
    Ok(SimHandle {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl SimHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL: `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("cloud-sim: the server thread panicked");
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// A request handler's way to have its connection reset.
#[derive(Debug, Default)]
struct ConnectionReset {
    requested: AtomicBool,
    wake: Notify,
}

impl ConnectionReset {
    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// A TCP stream that, once a reset was requested, closes with `SO_LINGER` 0: an RST instead
/// of a FIN. Set only then: a normal close must not throw away a reply still in flight.
struct ResettableStream {
    stream: TcpStream,
    reset: Arc<ConnectionReset>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.requested.load(Ordering::SeqCst)
            && let Err(e) = self.stream.set_zero_linger()
        {
            tracing::debug!("cloud-sim: cannot set SO_LINGER for a reset: {e}");
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Serves one connection (HTTP/1.1, keep-alive) until the client closes it or a request
/// asks for a reset.
async fn connection(sim: Arc<Simulator>, stream: TcpStream) {
    // Replies are small and written at once: no reason to let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(ConnectionReset::default());
    let io = TokioIo::new(ResettableStream {
        stream,
        reset: Arc::clone(&reset),
    });
    let handler_reset = Arc::clone(&reset);
    let service = hyper::service::service_fn(move |request| {
        let sim = Arc::clone(&sim);
        let reset = Arc::clone(&handler_reset);
        async move { Ok::<_, Infallible>(respond(&sim, request, &reset).await) }
    });
    let serving = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::select! {
        served = serving => {
            if let Err(e) = served {
                tracing::debug!("cloud-sim: connection ended: {e}");
            }
        }
        // Dropping `serving` drops the stream, which now lingers 0: the peer gets an RST.
        () = reset.wake.notified() => {}
    }
}

/// A response body: all of it, or (the truncated fault) its first part then a failure.
pub enum SimBody {
    /// The whole body, taken when sent.
    Full(Option<Bytes>),
    /// Announces `declared` bytes, sends `prefix`, waits `pause`, then fails.
    Truncated {
        /// The part that is sent.
        prefix: Option<Bytes>,
        /// The announced length (the whole body's).
        declared: u64,
        /// The wait between the part and the failure.
        pause: Pin<Box<Sleep>>,
    },
}

/// The error that ends a truncated body.
#[derive(Debug, thiserror::Error)]
#[error("cloud-sim: body truncated on purpose")]
pub struct Truncation;

impl Body for SimBody {
    type Data = Bytes;
    type Error = Truncation;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Truncation>>> {
        match self.get_mut() {
            SimBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            SimBody::Truncated { prefix, pause, .. } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                ready!(pause.as_mut().poll(cx));
                Poll::Ready(Some(Err(Truncation)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            SimBody::Truncated { declared, .. } => SizeHint::with_exact(*declared),
        }
    }
}

fn json_response(status: StatusCode, body: SimBody) -> Response<SimBody> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a status and a static header make a valid response")
}

fn full(body: Vec<u8>) -> SimBody {
    SimBody::Full(Some(Bytes::from(body)))
}

fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<SimBody> {
    json_response(status, full(openai::error_body(message, kind, param, code)))
}

fn bad_request(error: &BadRequest) -> Response<SimBody> {
    error_response(
        StatusCode::BAD_REQUEST,
        &error.message,
        "invalid_request_error",
        error.param.as_deref(),
        None,
    )
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn respond(
    sim: &Simulator,
    request: Request<Incoming>,
    reset: &ConnectionReset,
) -> Response<SimBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match (&method, path.as_str()) {
        (&Method::GET, "/health") => {
            json_response(StatusCode::OK, full(br#"{"status":"ok"}"#.to_vec()))
        }
        (&Method::GET, "/v1/models") => match sim.unauthorized(request.headers()) {
            Some(refusal) => refusal,
            None => json_response(
                StatusCode::OK,
                full(openai::models_body(&sim.config.model, sim.started)),
            ),
        },
        (&Method::GET, _) if path.starts_with("/v1/models/") => {
            if let Some(refusal) = sim.unauthorized(request.headers()) {
                return refusal;
            }
            let model = &path["/v1/models/".len()..];
            if model == sim.config.model {
                json_response(StatusCode::OK, full(openai::model_body(model, sim.started)))
            } else {
                error_response(
                    StatusCode::NOT_FOUND,
                    &format!("The model `{model}` does not exist or you do not have access to it."),
                    "invalid_request_error",
                    None,
                    Some("model_not_found"),
                )
            }
        }
        (&Method::POST, "/v1/chat/completions") => sim.chat(request, reset).await,
        (_, "/health" | "/v1/models" | "/v1/chat/completions") => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Invalid method for URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            Some("unknown_url"),
        ),
    }
}

/// A reply worked out for a request, before any fault is applied to it.
struct Answered {
    reply: Reply,
    body: Vec<u8>,
    completion_tokens: u64,
}

impl Simulator {
    /// A 401 if a key is required and the request does not carry it. The messages never
    /// repeat what was sent.
    fn unauthorized(&self, headers: &HeaderMap) -> Option<Response<SimBody>> {
        let key = self.config.api_key.as_ref()?;
        let (message, code) = match headers.get(AUTHORIZATION) {
            None => (
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                None,
            ),
            Some(value) if key.accepts(value.as_bytes()) => return None,
            Some(_) => ("Incorrect API key provided.", Some("invalid_api_key")),
        };
        Some(error_response(
            StatusCode::UNAUTHORIZED,
            message,
            "invalid_request_error",
            None,
            code,
        ))
    }

    async fn chat(&self, request: Request<Incoming>, reset: &ConnectionReset) -> Response<SimBody> {
        let seq = self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(refusal) = self.unauthorized(request.headers()) {
            self.log_refusal(seq, "http_401");
            return refusal;
        }
        let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                self.log_refusal(seq, "http_400");
                return bad_request(&BadRequest {
                    message: format!("Could not read the request body: {e}"),
                    param: None,
                });
            }
        };
        let chat = match ChatRequest::parse(&body) {
            Ok(chat) => chat,
            Err(error) => {
                self.log_refusal(seq, "http_400");
                return bad_request(&error);
            }
        };
        let hash = chat.request_hash();
        let attempt = self.attempt(&hash);
        let seed = self.config.seed;
        let fault = self
            .config
            .faults
            .draw(&mut seeded::rng(seed, Purpose::Fault, &hash, attempt));
        let latency = match fault {
            Fault::RateLimited | Fault::Reset => Duration::ZERO,
            Fault::Hang => self.config.hang,
            Fault::None | Fault::ServerError | Fault::Malformed | Fault::Truncated => {
                self.config.latency_dist.sample(
                    self.config.latency_mean,
                    &mut seeded::rng(seed, Purpose::Latency, &hash, attempt),
                )
            }
        };
        let answered = matches!(
            fault,
            Fault::None | Fault::Hang | Fault::Malformed | Fault::Truncated
        )
        .then(|| self.answer(&chat, &hash, attempt));
        if let Some(log) = &self.log {
            log.write(&LogLine {
                seq,
                hash: Some(hex::encode(hash)),
                attempt: Some(attempt),
                outcome: fault.outcome(),
                task: answered.as_ref().map(|a| a.reply.task.name()),
                correct: answered.as_ref().and_then(|a| a.reply.correct),
                // Whole microseconds, so the log reads 87.1, not 87.100000000000001.
                latency_ms: latency.as_micros() as f64 / 1e3,
                prompt_tokens: Some(chat.prompt_tokens()),
                completion_tokens: answered.as_ref().map(|a| a.completion_tokens),
            });
        }
        match fault {
            Fault::RateLimited => return self.rate_limited(),
            Fault::Reset => {
                reset.request();
                // The connection task drops this request with its connection.
                return std::future::pending().await;
            }
            _ => {}
        }
        tokio::time::sleep(latency).await;
        let Some(answered) = answered else {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request. Sorry about that! \
                 (simulated by cloud-sim)",
                "server_error",
                None,
                None,
            );
        };
        let body = match fault {
            // Half of a JSON object is never JSON: its closing brace is in the other half.
            Fault::Malformed => full(answered.body[..answered.body.len() / 2].to_vec()),
            Fault::Truncated => SimBody::Truncated {
                declared: answered.body.len() as u64,
                prefix: Some(Bytes::from(
                    answered.body[..answered.body.len() / 2].to_vec(),
                )),
                pause: Box::pin(tokio::time::sleep(TRUNCATE_PAUSE)),
            },
            _ => full(answered.body),
        };
        json_response(StatusCode::OK, body)
    }

    /// The 1-based count of arrivals of the request `hash`, this one included.
    fn attempt(&self, hash: &Digest32) -> u64 {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let count = seen.entry(*hash).or_insert(0);
        *count += 1;
        *count
    }

    /// The oracle's reply as a completion body. Right or wrong is drawn per question (not
    /// per attempt): asking again gets the same answer.
    fn answer(&self, chat: &ChatRequest, hash: &Digest32, attempt: u64) -> Answered {
        let seed = self.config.seed;
        let mut rng = seeded::rng(seed, Purpose::Answer, &chat.question_hash(), 0);
        let right = rng.random::<f64>() < self.config.accuracy;
        let reply = self.oracle.reply(chat.question(), right, &mut rng);
        let (content, finish_reason) =
            openai::limit_content(reply.content.clone(), chat.max_tokens);
        let completion_tokens = openai::estimate_tokens(content.len());
        let id_bytes: [u8; 12] = seeded::rng(seed, Purpose::Id, hash, attempt).random();
        let body = Completion {
            id: &format!("chatcmpl-{}", hex::encode(id_bytes)),
            created: unix_seconds(),
            model: chat.model.as_deref().unwrap_or(&self.config.model),
            content: &content,
            finish_reason,
            prompt_tokens: chat.prompt_tokens(),
            completion_tokens,
        }
        .body();
        Answered {
            reply,
            body,
            completion_tokens,
        }
    }

    fn rate_limited(&self) -> Response<SimBody> {
        let seconds = self.config.retry_after.as_secs();
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Rate limit reached for {} (simulated by cloud-sim). Please try again in {seconds}s.",
                self.config.model
            ),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        );
        response.headers_mut().insert(RETRY_AFTER, seconds.into());
        response
    }

    /// Logs a request refused before it was read (401) or because it could not be (400).
    fn log_refusal(&self, seq: u64, outcome: &'static str) {
        if let Some(log) = &self.log {
            log.write(&LogLine {
                seq,
                hash: None,
                attempt: None,
                outcome,
                task: None,
                correct: None,
                latency_ms: 0.0,
                prompt_tokens: None,
                completion_tokens: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdTcpStream;

    use super::*;
    use crate::FaultRates;

    const QUESTION: &str = r#"{"messages": [{"role": "user", "content": "What is 2 + 2?"}]}"#;

    fn start(faults: FaultRates) -> SimHandle {
        let config = SimConfig {
            faults,
            ..SimConfig::default()
        };
        spawn(config, "127.0.0.1:0".parse().unwrap()).unwrap()
    }

    /// Sends one chat request on a fresh connection and reads until the server closes it.
    fn exchange(sim: &SimHandle) -> io::Result<Vec<u8>> {
        let mut stream = StdTcpStream::connect(sim.addr())?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{QUESTION}",
            QUESTION.len()
        )?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received)?;
        Ok(received)
    }

    fn split_response(received: &[u8]) -> (String, &[u8]) {
        let text = std::str::from_utf8(received).unwrap_or("");
        let end = text.find("\r\n\r\n").expect("a complete head") + 4;
        (text[..end].to_ascii_lowercase(), &received[end..])
    }

    fn question(i: usize, temperature: f64) -> ChatRequest {
        let body = serde_json::json!({
            "messages": [{"role": "user", "content": format!("What is {i} * 3?")}],
            "temperature": temperature,
        });
        ChatRequest::parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn accuracy_draws_are_per_question_400_questions() {
        let sim = Simulator::new(SimConfig {
            accuracy: 0.5,
            ..SimConfig::default()
        })
        .unwrap();
        let mut right = 0;
        for i in 0..400 {
            let first = question(i, 0.0);
            let answered = sim.answer(&first, &first.request_hash(), 1);
            // Another attempt, another temperature: another request, the same question.
            let warmer = question(i, 1.0);
            let again = sim.answer(&warmer, &warmer.request_hash(), 3);
            assert_eq!(answered.reply, again.reply, "question {i}");
            right += usize::from(answered.reply.correct == Some(true));
        }
        // 400 draws at p = 0.5: standard error 10.
        assert!((150..=250).contains(&right), "{right} of 400 right");
    }

    #[test]
    fn replies_close_cleanly_without_faults() {
        let sim = start(FaultRates::default());
        assert!(sim.base_url().starts_with("http://127.0.0.1:"));
        let received = exchange(&sim).unwrap();
        let (head, body) = split_response(&received);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let reply: serde_json::Value = serde_json::from_slice(body).unwrap();
        let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.ends_with("<answer>4</answer>"), "{content}");
        sim.shutdown();
    }

    #[test]
    fn reset_fault_sends_rst() {
        let sim = start(FaultRates {
            reset: 1.0,
            ..FaultRates::default()
        });
        let error = exchange(&sim).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    }

    #[test]
    fn truncated_fault_announces_the_whole_body_and_sends_half() {
        let sim = start(FaultRates {
            truncated: 1.0,
            ..FaultRates::default()
        });
        let received = exchange(&sim).unwrap();
        let (head, body) = split_response(&received);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a Content-Length")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(body.len(), declared / 2, "declared {declared}");
    }

    #[test]
    fn a_hanging_request_does_not_hold_up_shutdown() {
        let sim = start(FaultRates {
            hang: 1.0,
            ..FaultRates::default()
        });
        let addr = sim.addr();
        let client = std::thread::spawn(move || {
            let mut stream = StdTcpStream::connect(addr).unwrap();
            write!(
                stream,
                "POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Length: {}\r\n\r\n{QUESTION}",
                QUESTION.len()
            )
            .unwrap();
            let mut received = Vec::new();
            // Ends (EOF) when the server drops the connection at shutdown.
            let _ = stream.read_to_end(&mut received);
            received
        });
        std::thread::sleep(Duration::from_millis(100));
        let started = std::time::Instant::now();
        sim.shutdown();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            client.join().unwrap().is_empty(),
            "no reply to a hanging request"
        );
    }
}
