//! `tandem serve` as clients see it: the binary serving a tiny model that was warm-started (a
//! few seconds of SFT) to ask for help on some questions, with cloud-sim as the cloud. The
//! official `openai` Python client (pinned by scripts/test.sh) drives it: plain and streamed
//! completions, 200 at once against the budget, a wrong token; the ledger is then read back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use tandem_schemas::io::Rows;
use tandem_schemas::{CloudRecord, RequestRecord, SampleRecord};

/// Questions the model learns to answer, and questions it learns to ask help for.
const ANSWERS: [(&str, &str); 4] = [
    ("What is 2 + 3?", "<answer>5</answer>"),
    ("What is 7 * 6?", "<answer>42</answer>"),
    ("What is 10 - 4?", "<answer>6</answer>"),
    ("What is 9 + 9?", "<answer>18</answer>"),
];
const HARD: [&str; 4] = [
    "What is 4817 * 9323?",
    "What is 5193 * 7292?",
    "What is 3461 * 8837?",
    "What is 6029 * 4413?",
];
const HELP: &str = "<unknown> I need external assistance </unknown>";
/// The template the model is fine-tuned and served with.
const TEMPLATE: &str = "arithmetic";

/// The cloud's key: it must reach the cloud and nothing else.
const CLOUD_KEY: &str = "sk-cloud-secret-7d1e0c";
const CLIENT_TOKEN: &str = "client-token-42";

/// A checkpoint of the fixture model fine-tuned on [`ANSWERS`] and, for [`HARD`], the help
/// tag; made once per test process.
fn warm_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        // One directory, replaced by each test process, so runs leave one model behind at most.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-model");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let data = dir.join("pairs.jsonl");
        let pairs: Vec<(&str, &str)> = ANSWERS
            .iter()
            .copied()
            .chain(HARD.iter().map(|q| (*q, HELP)))
            .collect();
        crate::common::write_pairs(&data, &pairs);
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tandem-init");
        let pipeline = crate::common::sft_pipeline(
            &dir,
            &data,
            &fixture,
            "name: warm, seed: 5, prompts_per_step: 8, group_size: 1, steps: 60",
            &[
                &format!("template: {TEMPLATE}"),
                "optimizer: { lr: 0.01, weight_decay: 0.0 }",
            ],
        );
        let run = crate::common::run_in_process(&pipeline, 1, &dir.join("runs"));
        run.run_dir.join("checkpoints/step-59")
    })
}

/// A running `tandem serve`; killed when dropped (a failed test leaves no server behind).
struct Server {
    child: Option<Child>,
    base: String,
    stderr: PathBuf,
}

impl Server {
    fn start(model: &Path, cloud: &str, out: &Path, extra: &[&str]) -> Server {
        let stderr = out.join("serve.stderr");
        std::fs::create_dir_all(out).expect("mkdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("serve")
            .arg(model)
            .args([
                "--cloud",
                cloud,
                "--template",
                TEMPLATE,
                "--bind",
                "127.0.0.1:0",
            ])
            .args([
                "--threads",
                "1",
                "--max-new-tokens",
                "24",
                "--exit-on-stdin-eof",
            ])
            .arg("--out")
            .arg(out)
            .args(extra)
            .env("TANDEM_LOG", "info")
            .env("SERVE_TEST_CLOUD_KEY", CLOUD_KEY)
            .env("SERVE_TEST_TOKEN", CLIENT_TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn tandem serve");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped"))
            .read_line(&mut line)
            .expect("ready line");
        let mut server = Server {
            child: Some(child),
            base: String::new(),
            stderr,
        };
        match line.trim().strip_prefix("tandem serve listening on ") {
            Some(base) => server.base = base.to_owned(),
            None => panic!(
                "no ready line (got {line:?}); stderr:\n{}",
                std::fs::read_to_string(&server.stderr).unwrap_or_default()
            ),
        }
        server
    }

    /// Closes standard input and waits for the server to finish and flush its ledger.
    fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        drop(child.stdin.take());
        // A guard against a hang, not a timing: shutting down takes well under a second.
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll") {
                break status;
            }
            if started.elapsed() > std::time::Duration::from_secs(120) {
                let _ = child.kill();
                panic!("tandem serve did not exit after its stdin closed");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(status.success(), "tandem serve failed: {stderr}");
        stderr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every row of one stream of the only serving session under `out`.
fn ledger(out: &Path) -> (PathBuf, BTreeMap<String, Rows>) {
    let sessions: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("out")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("manifest.json").exists())
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let dir = sessions[0].clone();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("read"))
            .expect("json");
    assert_eq!(manifest["status"], "complete", "{manifest}");
    let streams = crate::common::stored_streams(&dir);
    (dir, streams)
}

fn requests(streams: &BTreeMap<String, Rows>) -> Vec<RequestRecord> {
    match &streams["requests"] {
        Rows::Requests(rows) => rows.clone(),
        other => panic!("requests holds {}", other.kind()),
    }
}

/// The cloud-sim oracle's answer to "What is a * b?".
fn product(question: &str) -> String {
    let numbers: Vec<u64> = question
        .trim_end_matches('?')
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0] * numbers[1]).to_string()
}

/// An in-process cloud-sim that wants `CLOUD_KEY` and logs every request.
fn cloud(log: &Path) -> tandem_cloudsim::SimHandle {
    let config = tandem_cloudsim::SimConfig {
        api_key: tandem_cloudsim::ApiKey::new(CLOUD_KEY.to_owned()),
        request_log: Some(log.to_owned()),
        ..Default::default()
    };
    tandem_cloudsim::spawn(config, "127.0.0.1:0".parse().expect("addr")).expect("cloud-sim")
}

#[test]
fn openai_client_plain_streamed_and_200_concurrent_within_budget_0_3_and_the_ledger_has_them_all() {
    let Ok(_) = std::env::var("TANDEM_PYTHON") else {
        eprintln!(
            "TANDEM_PYTHON is not set (scripts/test.sh sets it): the openai client test is skipped"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let model = warm_model();
    let sim_log = dir.path().join("sim.jsonl");
    let sim = cloud(&sim_log);
    let out = dir.path().join("serve");
    let server = Server::start(
        model,
        &sim.base_url(),
        &out,
        &[
            "--budget",
            "0.3",
            "--api-key-env",
            "SERVE_TEST_CLOUD_KEY",
            "--token-env",
            "SERVE_TEST_TOKEN",
            "--ledger-flush-secs",
            "0.5",
        ],
    );
    let questions: Vec<&str> = ANSWERS.iter().map(|(q, _)| *q).chain(HARD).collect();
    let concurrent = 200;
    let report = crate::common::python_json(
        "serve_client.py",
        &[
            server.base.as_ref(),
            CLIENT_TOKEN.as_ref(),
            serde_json::to_string(&questions).expect("json").as_ref(),
            concurrent.to_string().as_ref(),
        ],
        "tandem serve with the openai client",
    )
    .expect("TANDEM_PYTHON is set");
    let stderr = server.stop();
    sim.shutdown();

    assert_eq!(report["models"], serde_json::json!(["step-59"]));
    assert_eq!(
        report["wrong_token_status"], 401,
        "a wrong token is refused"
    );
    let answers: Vec<&Value> = report["sequential"]
        .as_array()
        .expect("sequential")
        .iter()
        .chain(report["concurrent"].as_array().expect("concurrent"))
        .collect();
    assert_eq!(answers.len(), 2 * questions.len() + concurrent);
    let mut by = BTreeMap::<&str, usize>::new();
    for a in &answers {
        let who = a["answered_by"]
            .as_str()
            .expect("every answer says who answered");
        assert_eq!(a["header"], a["answered_by"], "{a}");
        *by.entry(who).or_default() += 1;
        let question = a["question"].as_str().expect("question");
        let content = a["content"].as_str().expect("content");
        match who {
            // The cloud's answer, not the device's: the oracle's exact product.
            "cloud" => {
                assert!(HARD.contains(&question), "only asks go to the cloud: {a}");
                assert!(
                    content.ends_with(&format!("<answer>{}</answer>", product(question))),
                    "{a}"
                );
                assert_eq!(a["capped"], false);
            }
            // An answer given as it came asked for no help; asks are answered elsewhere.
            "device" if a["route"] == "local" => assert!(!content.contains(HELP), "{a}"),
            "device" => assert!(
                ["capped", "fallback"].contains(&a["route"].as_str().unwrap_or("")),
                "{a}"
            ),
            other => panic!("answered by {other}"),
        }
        if a["capped"] == true {
            assert_eq!(who, "device", "{a}");
            assert_eq!(a["route"], "capped");
        }
    }
    // The model learned both actions, so both kinds of answer occur; more asks than the budget
    // allows came in the burst, so some were capped.
    let capped = answers.iter().filter(|a| a["capped"] == true).count();
    let cloud_answers = by.get("cloud").copied().unwrap_or(0);
    eprintln!("answered by {by:?}, capped {capped}");
    assert!(
        cloud_answers > 0 && by.get("device").copied().unwrap_or(0) > 0,
        "{by:?}"
    );
    assert!(
        capped > 0,
        "the burst asked more than 30% of the time: {by:?}"
    );
    // The budget holds: at most 30% of the requests went to the cloud.
    assert!(
        cloud_answers * 10 <= 3 * answers.len(),
        "{cloud_answers} of {} escalated",
        answers.len()
    );
    // A streamed device answer is the same text as the plain one (greedy decoding).
    let sequential = report["sequential"].as_array().expect("sequential");
    for (plain, streamed) in sequential.iter().zip(&sequential[questions.len()..]) {
        assert_eq!(streamed["stream"], true);
        if plain["route"] == "local" && streamed["route"] == "local" {
            assert_eq!(plain["content"], streamed["content"]);
        }
        assert!(streamed["finish_reason"].as_str().is_some(), "{streamed}");
    }

    // The ledger holds exactly the requests answered, with who answered as the client saw it.
    let (session, streams) = ledger(&out);
    let rows = requests(&streams);
    let seen: BTreeSet<(String, String, bool)> = answers
        .iter()
        .map(|a| {
            let id = a["id"]
                .as_str()
                .expect("id")
                .trim_start_matches("chatcmpl-");
            (
                id.to_owned(),
                a["answered_by"].as_str().expect("who").to_owned(),
                a["capped"] == true,
            )
        })
        .collect();
    let stored: BTreeSet<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.prompt_id.clone(), r.answered_by.clone(), r.capped))
        .collect();
    assert_eq!(rows.len(), answers.len());
    assert_eq!(stored, seen);
    for r in &rows {
        assert_eq!(r.question_hash.len(), 64);
        assert_eq!(
            r.escalated,
            r.answered_by == "cloud",
            "no cloud call failed: {r:?}"
        );
        assert_eq!(r.capped, r.asked_help && !r.escalated, "{r:?}");
        assert!(r.device_tokens_in > 0 && r.latency_ms > 0.0, "{r:?}");
        if r.answered_by == "cloud" {
            assert!(r.cloud_tokens_out > 0, "{r:?}");
        }
    }
    let Rows::Samples(samples) = &streams["samples"] else {
        panic!("samples")
    };
    let asked: Vec<&SampleRecord> = samples.iter().filter(|s| s.asked_help).collect();
    assert_eq!(asked.len(), rows.iter().filter(|r| r.asked_help).count());
    let Rows::Cloud(cloud_rows) = &streams["cloud"] else {
        panic!("cloud")
    };
    let refused: Vec<&CloudRecord> = cloud_rows
        .iter()
        .filter(|c| c.error_kind.as_deref() == Some("budget"))
        .collect();
    assert_eq!(refused.len(), capped);
    // The cloud saw one request per escalation, no more.
    let calls = std::fs::read_to_string(&sim_log)
        .expect("sim log")
        .lines()
        .count();
    assert_eq!(calls, cloud_answers);

    // Prometheus counters agree with the client.
    let metrics = report["metrics"].as_str().expect("metrics");
    let total: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tandem_serve_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total as usize, answers.len(), "{metrics}");
    assert!(metrics.contains("tandem_serve_refused_total{reason=\"unauthorized\"} 1"));
    assert!(metrics.contains("tandem_serve_request_duration_seconds_bucket"));

    // The cloud's key appears nowhere: not in the ledger, the manifest, the log or the answers.
    for file in crate::common::files_under(&session) {
        let bytes = std::fs::read(&file).expect("read");
        assert!(
            !bytes
                .windows(CLOUD_KEY.len())
                .any(|w| w == CLOUD_KEY.as_bytes())
                && !bytes
                    .windows(CLIENT_TOKEN.len())
                    .any(|w| w == CLIENT_TOKEN.as_bytes()),
            "{} holds a secret",
            file.display()
        );
    }
    assert!(!stderr.contains(CLOUD_KEY) && !stderr.contains(CLIENT_TOKEN));
    assert!(!report.to_string().contains(CLOUD_KEY));

    // `tandem report` reads the session like a run: the help rate is the device's.
    let report_out = crate::common::tandem(
        &["report", session.to_str().expect("utf-8"), "--json"],
        dir.path(),
    );
    assert!(
        report_out.status.success(),
        "{}",
        String::from_utf8_lossy(&report_out.stderr)
    );
}

/// A port nothing listens on.
fn dead_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// One plain completion through reqwest (no Python needed).
fn complete(base: &str, question: &str) -> (reqwest::StatusCode, Value, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The client tandem's stages use: rustls with ring, installed once per process.
        let client = tandem_stages::net::client(
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(60),
        )
        .expect("client");
        let response = client
            .post(format!("{base}/chat/completions"))
            .json(&serde_json::json!({
                "model": "device",
                "messages": [{ "role": "user", "content": question }],
            }))
            .send()
            .await
            .expect("send");
        let status = response.status();
        let header = response
            .headers()
            .get("x-tandem-answered-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body: Value = response.json().await.expect("json");
        (status, body, header)
    })
}

#[test]
fn a_dead_cloud_falls_back_to_the_device_without_the_help_option_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = warm_model();
    let out = dir.path().join("serve");
    let cloud = format!("http://{}/v1", dead_port());
    let server = Server::start(
        model,
        &cloud,
        &out,
        &[
            "--budget",
            "1",
            "--cloud-retries",
            "1",
            "--cloud-timeout-ms",
            "2000",
        ],
    );
    let (status, body, header) = complete(&server.base, HARD[0]);
    let (easy_status, easy, _) = complete(&server.base, ANSWERS[0].0);
    server.stop();
    assert_eq!(
        (status.as_u16(), easy_status.as_u16()),
        (200, 200),
        "{body} {easy}"
    );
    assert_eq!(body["tandem"]["asked_help"], true, "{body}");
    assert_eq!(body["tandem"]["answered_by"], "device");
    assert_eq!(header, "device");
    assert_eq!(body["tandem"]["route"], "fallback");
    assert_eq!(body["tandem"]["cloud_error"], "connect", "{body}");
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(
        !content.contains("<unknown>"),
        "answered without the help option: {content}"
    );
    assert_eq!(
        easy["choices"][0]["message"]["content"], ANSWERS[0].1,
        "{easy}"
    );
    let (_, streams) = ledger(&out);
    let rows = requests(&streams);
    assert_eq!(rows.len(), 2);
    let failed = rows.iter().find(|r| r.asked_help).expect("the ask");
    assert_eq!(
        (
            failed.escalated,
            failed.capped,
            failed.cloud_error.as_deref()
        ),
        (true, false, Some("connect"))
    );
    let Rows::Cloud(cloud_rows) = &streams["cloud"] else {
        panic!("cloud")
    };
    assert_eq!(cloud_rows.len(), 1);
    assert_eq!(cloud_rows[0].attempts, 2, "one retry of a connect failure");
    assert_eq!(cloud_rows[0].answer, None);
}

#[test]
fn bad_flags_stop_serve_before_it_listens_with_the_flag_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tandem-init");
    let model = fixture.to_str().expect("utf-8");
    for (args, expected) in [
        (
            vec!["--cloud", "http://127.0.0.1:1/v1", "--budget", "2"],
            "--budget 2",
        ),
        (vec!["--cloud", "localhost:9/v1"], "--cloud localhost:9/v1"),
        (
            vec![
                "--cloud",
                "http://127.0.0.1:1/v1",
                "--template",
                "arithmatic",
            ],
            "--template arithmatic: no such template",
        ),
        (
            vec![
                "--cloud",
                "http://127.0.0.1:1/v1",
                "--api-key-env",
                "SERVE_TEST_UNSET_KEY",
            ],
            "--api-key-env SERVE_TEST_UNSET_KEY",
        ),
        (
            vec![
                "--cloud",
                "http://127.0.0.1:1/v1",
                "--token-file",
                "no-such-file",
            ],
            "--token-file no-such-file",
        ),
    ] {
        let mut full = vec!["serve", model, "--bind", "127.0.0.1:0", "--out", "runs"];
        full.extend(args);
        let output = crate::common::tandem(&full, dir.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{full:?} started");
        assert!(stderr.contains(expected), "{full:?}: {stderr}");
        let mut stdout = String::new();
        let _ = output.stdout.as_slice().read_to_string(&mut stdout);
        assert!(!stdout.contains("listening"), "{stdout}");
    }
}
