//! `tandem cloud-sim` as a client sees it: the binary on a free loopback port, real HTTP with
//! reqwest, every fault kind, the key check and the request log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_stages::verify::{CountdownProblem, Outcome, check_expression};

use crate::common::tandem;

const COUNTDOWN: &str = "Using the numbers [19, 36, 55, 7], create an equation that equals 65. \
    You can use basic arithmetic operations (+, -, *, /) and each number can only be used once.";

/// A running `tandem cloud-sim --exit-on-stdin-eof`; killed if the test ends without `stop`.
pub(crate) struct CloudSim {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`, from the ready line.
    pub(crate) base: String,
}

impl CloudSim {
    pub(crate) fn start(args: &[&str]) -> CloudSim {
        CloudSim::start_with_env(args, &[])
    }

    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> CloudSim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("cloud-sim")
            .arg("--exit-on-stdin-eof")
            .args(args)
            .envs(env.iter().copied())
            .env("TANDEM_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tandem cloud-sim");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        let Some(base) = line.trim().strip_prefix("cloud-sim listening on ") else {
            let mut stderr = String::new();
            let _ = child
                .stderr
                .take()
                .expect("piped")
                .read_to_string(&mut stderr);
            let _ = child.kill();
            panic!("no ready line (got {line:?}); stderr:\n{stderr}");
        };
        CloudSim {
            base: base.to_owned(),
            child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Closes standard input, waits for the exit, and returns what it wrote to stderr.
    pub(crate) fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "cloud-sim did not exit after stdin closed"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        let _ = self
            .child
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut stderr);
        assert!(status.success(), "cloud-sim exited with {status}: {stderr}");
        stderr
    }
}

impl Drop for CloudSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The client tandem's stages use (rustls with ring, installed once).
fn client(timeout: Duration) -> reqwest::Client {
    tandem_stages::net::client(Duration::from_secs(5), timeout).expect("client")
}

fn chat(question: &str) -> Value {
    json!({
        "model": "sim-oracle",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question},
        ],
        "temperature": 0,
        "max_tokens": 256,
    })
}

/// Sends one arithmetic question with a client of `timeout`, for the fault tests.
async fn send_one(sim: &CloudSim, timeout: Duration) -> reqwest::Result<reqwest::Response> {
    client(timeout)
        .post(sim.url("/chat/completions"))
        .json(&chat("What is 1 + 1?"))
        .send()
        .await
}

/// Sends a chat request and reads the reply as JSON (status 200 expected).
async fn ask(client: &reqwest::Client, sim: &CloudSim, body: &Value) -> Value {
    let response = client
        .post(sim.url("/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON reply")
}

fn content(reply: &Value) -> &str {
    reply["choices"][0]["message"]["content"]
        .as_str()
        .expect("a string content")
}

fn tag_answer(content: &str) -> &str {
    let start = content.find("<answer>").expect("an answer tag") + "<answer>".len();
    &content[start..content.rfind("</answer>").expect("a closing tag")]
}

fn countdown_problem() -> CountdownProblem {
    CountdownProblem {
        numbers: vec![19, 36, 55, 7],
        target: 65,
    }
}

pub(crate) fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read the request log")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect()
}

/// The first I/O error kind in an error's chain of sources.
fn io_error_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = error.source();
    }
    None
}

#[test]
fn countdown_and_arithmetic_are_answered_right_with_usage() {
    let sim = CloudSim::start(&[]);
    runtime().block_on(async {
        let client = client(Duration::from_secs(10));

        let reply = ask(&client, &sim, &chat(COUNTDOWN)).await;
        assert_eq!(reply["object"], "chat.completion");
        assert!(reply["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(reply["model"], "sim-oracle");
        assert_eq!(reply["choices"][0]["finish_reason"], "stop");
        assert_eq!(reply["choices"][0]["message"]["role"], "assistant");
        let text = content(&reply);
        assert!(
            text.starts_with("<think>") && text.contains("</think>\n<answer>"),
            "{text}"
        );
        let (outcome, _) = check_expression(&countdown_problem(), tag_answer(text));
        assert_eq!(outcome, Outcome::Correct, "{text}");
        let usage = &reply["usage"];
        let (prompt, completion) = (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
        );
        assert!(prompt >= 1 && completion >= 1);
        assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);

        let reply = ask(&client, &sim, &chat("What is 7953 + 3194?")).await;
        assert_eq!(tag_answer(content(&reply)), "11147");

        // Content as an array of text parts, as newer clients send it.
        let parts = json!({"model": "any-model", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is"}, {"type": "text", "text": "(2 + 3) * 4 / 8?"}]}]});
        let reply = ask(&client, &sim, &parts).await;
        assert_eq!(tag_answer(content(&reply)), "5/2");
        assert_eq!(reply["model"], "any-model");

        let models: Value = client
            .get(sim.url("/models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(models["data"][0]["id"], "sim-oracle");
        let model = client
            .get(sim.url("/models/sim-oracle"))
            .send()
            .await
            .unwrap();
        assert_eq!(model.status(), 200);
        let other = client.get(sim.url("/models/gpt-x")).send().await.unwrap();
        assert_eq!(other.status(), 404);
        let health = client
            .get(sim.base.replace("/v1", "/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let missing = client.get(sim.url("/nothing")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
    });
    sim.stop();
}

#[test]
fn accuracy_0_answers_wrong() {
    let sim = CloudSim::start(&["--accuracy", "0"]);
    runtime().block_on(async {
        let client = client(Duration::from_secs(10));
        let reply = ask(&client, &sim, &chat("What is 7953 + 3194?")).await;
        let answer = tag_answer(content(&reply)).to_owned();
        assert_ne!(answer, "11147");
        assert!(
            answer.parse::<i64>().is_ok(),
            "a plausible number: {answer}"
        );
        // The same question gets the same wrong answer.
        let again = ask(&client, &sim, &chat("What is 7953 + 3194?")).await;
        assert_eq!(tag_answer(content(&again)), answer);

        let reply = ask(&client, &sim, &chat(COUNTDOWN)).await;
        let (outcome, _) = check_expression(&countdown_problem(), tag_answer(content(&reply)));
        assert_eq!(outcome, Outcome::WrongValue);
    });
    sim.stop();
}

#[test]
fn gold_file_answers_wrapped_questions_boxed() {
    let dir = tempfile::tempdir().unwrap();
    let gold = dir.path().join("gold.jsonl");
    std::fs::write(
        &gold,
        "{\"question\": \"How many positive divisors does 36 have?\", \"answer\": 9}\n\
         {\"question\": \"Simplify $\\\\frac{6}{8}$.\", \"answer\": \"\\\\frac{3}{4}\"}\n",
    )
    .unwrap();
    let sim = CloudSim::start(&["--gold", gold.to_str().unwrap(), "--answer-format", "boxed"]);
    runtime().block_on(async {
        let client = client(Duration::from_secs(10));
        let wrapped = "How many positive divisors\n does 36 have?. Let's think step by step.";
        let reply = ask(&client, &sim, &chat(wrapped)).await;
        assert!(
            content(&reply).ends_with("The answer is $\\boxed{9}$."),
            "{}",
            content(&reply)
        );
        let reply = ask(&client, &sim, &chat("Simplify $\\frac{6}{8}$.")).await;
        assert!(
            content(&reply).contains("$\\boxed{\\frac{3}{4}}$"),
            "{}",
            content(&reply)
        );
    });
    sim.stop();
}

#[test]
fn api_key_required_401_without_or_with_a_wrong_key_and_never_logged() {
    let key = "sk-sim-3f9a1c77e2b84d0d";
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let sim = CloudSim::start_with_env(
        &[
            "--api-key-env",
            "TANDEM_TEST_SIM_KEY",
            "--request-log",
            log.to_str().unwrap(),
        ],
        &[("TANDEM_TEST_SIM_KEY", key)],
    );
    runtime().block_on(async {
        let client = client(Duration::from_secs(10));
        let body = chat("What is 1 + 1?");
        let url = sim.url("/chat/completions");
        let none = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(none.status(), 401);
        let error: Value = none.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");

        let wrong_key = format!("{key}x");
        let wrong = client
            .post(&url)
            .bearer_auth(&wrong_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let text = wrong.text().await.unwrap();
        assert!(
            !text.contains(&wrong_key),
            "the reply echoes the key: {text}"
        );

        let right = client
            .post(&url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
        let models = client.get(sim.url("/models")).send().await.unwrap();
        assert_eq!(models.status(), 401);
    });
    let stderr = sim.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(key) && !stderr.contains(key));
    let outcomes: Vec<Value> = read_log(&log)
        .iter()
        .map(|l| l["outcome"].clone())
        .collect();
    assert_eq!(outcomes, ["http_401", "http_401", "ok"]);
}

#[test]
fn api_key_env_unset_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = tandem(
        &[
            "cloud-sim",
            "--api-key-env",
            "TANDEM_TEST_SIM_KEY_THAT_IS_UNSET",
        ],
        dir.path(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TANDEM_TEST_SIM_KEY_THAT_IS_UNSET"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "no ready line for a server that is not ready"
    );
}

#[test]
fn fault_rates_summing_past_1_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = tandem(
        &["cloud-sim", "--fault-429", "0.6", "--fault-500", "0.6"],
        dir.path(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("add up to 1.2"), "{stderr}");
    let output = tandem(&["cloud-sim", "--faults", "0.2"], dir.path());
    assert!(!output.status.success(), "six kinds at 0.2 are 120%");
}

#[test]
fn malformed_requests_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let sim = CloudSim::start(&["--request-log", log.to_str().unwrap()]);
    runtime().block_on(async {
        let client = client(Duration::from_secs(10));
        let url = sim.url("/chat/completions");
        let bodies = [
            "this is not JSON".to_owned(),
            json!({"model": "m"}).to_string(),
            json!({"messages": [{"role": "system", "content": "no user here"}]}).to_string(),
        ];
        for body in bodies {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{body}");
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
            assert!(error["error"]["message"].as_str().is_some());
        }
    });
    sim.stop();
    assert!(read_log(&log).iter().all(|l| l["outcome"] == "http_400"));
}

#[test]
fn fault_429_rate_1_is_rate_limited_with_retry_after_3() {
    let sim = CloudSim::start(&["--fault-429", "1", "--retry-after-s", "3"]);
    runtime().block_on(async {
        let response = send_one(&sim, Duration::from_secs(10)).await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "3");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    });
    sim.stop();
}

#[test]
fn fault_500_rate_1_is_a_server_error() {
    let sim = CloudSim::start(&["--fault-500", "1"]);
    runtime().block_on(async {
        let response = send_one(&sim, Duration::from_secs(10)).await.unwrap();
        assert_eq!(response.status(), 500);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "server_error");
    });
    sim.stop();
}

#[test]
fn fault_hang_rate_1_times_out_a_300ms_client() {
    let sim = CloudSim::start(&["--fault-hang", "1"]);
    runtime().block_on(async {
        let started = Instant::now();
        let error = send_one(&sim, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    });
    // The hanging request does not hold the server up when it is told to stop.
    sim.stop();
}

#[test]
fn fault_malformed_rate_1_is_not_json() {
    let sim = CloudSim::start(&["--fault-malformed", "1"]);
    runtime().block_on(async {
        let response = send_one(&sim, Duration::from_secs(10)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        let error = response.json::<Value>().await.unwrap_err();
        assert!(error.is_decode(), "{error:?}");
    });
    sim.stop();
}

#[test]
fn fault_truncated_rate_1_breaks_the_body() {
    let sim = CloudSim::start(&["--fault-truncated", "1"]);
    runtime().block_on(async {
        let response = send_one(&sim, Duration::from_secs(10)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.content_length().expect("a Content-Length") > 0);
        // reqwest files a body that ends early under Decode, with the cause below it.
        let error = response.bytes().await.unwrap_err();
        assert_eq!(
            io_error_kind(&error),
            Some(std::io::ErrorKind::UnexpectedEof),
            "{error:?}"
        );
    });
    sim.stop();
}

#[test]
fn fault_reset_rate_1_resets_the_connection() {
    let sim = CloudSim::start(&["--fault-reset", "1"]);
    runtime().block_on(async {
        let error = send_one(&sim, Duration::from_secs(10)).await.unwrap_err();
        assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
        assert_eq!(
            io_error_kind(&error),
            Some(std::io::ErrorKind::ConnectionReset),
            "{error:?}"
        );
    });
    sim.stop();
}

/// What a client saw for one request.
fn client_outcome(result: Result<reqwest::StatusCode, reqwest::Error>) -> String {
    match result {
        Ok(status) => format!("http_{}", status.as_u16()),
        Err(error) if error.is_timeout() => "timeout".into(),
        // A reset (ConnectionReset) or a truncated body (UnexpectedEof).
        Err(error) if io_error_kind(&error).is_some() => format!("{:?}", io_error_kind(&error)),
        // A body that is not JSON.
        Err(error) if error.is_decode() => "decode".into(),
        Err(error) => format!("{error:?}"),
    }
}

async fn send_and_read(client: &reqwest::Client, url: &str, body: &Value) -> String {
    let result = async {
        let response = client.post(url).json(body).send().await?;
        let status = response.status();
        if status.is_success() {
            response.json::<Value>().await?;
        }
        Ok(status)
    }
    .await;
    client_outcome(result)
}

/// 40 questions, the first 20 asked twice, so that retries of the same request appear.
fn replay_bodies() -> Vec<Value> {
    let questions: Vec<String> = (0..40)
        .map(|i| format!("What is {} + {}?", 1000 + i * 37, 17 * i))
        .collect();
    questions
        .iter()
        .chain(&questions[..20])
        .map(|q| chat(q))
        .collect()
}

/// Runs the requests one after another (or all at once) against a fresh server with
/// `--faults 0.05 --seed 7`; returns the log's (hash, attempt) → outcome and the client's view.
fn faults_run(concurrent: bool) -> (BTreeMap<(String, u64), String>, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sim = CloudSim::start(&[
        "--faults",
        "0.05",
        "--seed",
        "7",
        "--request-log",
        log.to_str().expect("a UTF-8 path"),
    ]);
    let bodies = replay_bodies();
    let url = sim.url("/chat/completions");
    let seen = runtime().block_on(async {
        let client = client(Duration::from_millis(300));
        if !concurrent {
            let mut seen = Vec::new();
            for body in &bodies {
                seen.push(send_and_read(&client, &url, body).await);
            }
            return seen;
        }
        let tasks: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { send_and_read(&client, &url, &body).await })
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.expect("request task"));
        }
        seen
    });
    sim.stop();
    let lines = read_log(&log);
    assert_eq!(
        lines.len(),
        bodies.len(),
        "one log line per request, no silent retries"
    );
    let outcomes = lines
        .iter()
        .map(|l| {
            (
                (
                    l["hash"].as_str().expect("a hash").to_owned(),
                    l["attempt"].as_u64().expect("an attempt"),
                ),
                l["outcome"].as_str().expect("an outcome").to_owned(),
            )
        })
        .collect();
    (outcomes, seen)
}

#[test]
fn faults_0_05_seed_7_replay_the_same_outcomes_60_requests() {
    let (first, first_seen) = faults_run(false);
    let (second, second_seen) = faults_run(false);
    assert_eq!(first, second);
    assert_eq!(first_seen, second_seen);
    let faults = first.values().filter(|o| *o != "ok").count();
    assert!(
        (1..first.len()).contains(&faults),
        "about 30% of 60 requests meet a fault; got {faults}: {first:?}"
    );
    // Arrival order does not matter: all at once, the same requests meet the same faults.
    let (concurrent, _) = faults_run(true);
    assert_eq!(first, concurrent);
}
