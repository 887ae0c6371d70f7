//! `tandem cloud-sim`: a simulated OpenAI-compatible cloud, for offline runs, demos and tests
//! (docs/cloud.md). Prints one ready line with its base URL on standard output, then serves
//! until SIGINT or SIGTERM (or, with `--exit-on-stdin-eof`, until standard input closes).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use tandem_cloudsim::{AnswerFormat, ApiKey, FaultRates, LatencyDist, SimConfig, Simulator, serve};

/// Arguments of `tandem cloud-sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one (the ready line says which). Anything but
    /// loopback lets other machines use it.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Seeds every draw: the same seed and the same requests give the same answers, latencies
    /// and faults, whatever the concurrency.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The model `/v1/models` lists (a request may name any model; the reply repeats it).
    #[arg(long, default_value = "sim-oracle")]
    model: String,
    /// Probability that a reply carries the right answer; otherwise it carries a wrong one.
    /// Drawn per question, so asking again gets the same answer.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    accuracy: f64,
    /// Mean latency of a reply, in milliseconds.
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    latency_ms: f64,
    /// How latencies spread around the mean.
    #[arg(long, value_enum, default_value_t = LatencyDist::Fixed)]
    latency_dist: LatencyDist,
    /// A JSON Lines file of `{"question": ..., "answer": ...}` rows: a message that is (or
    /// contains) one of the questions gets its answer.
    #[arg(long, value_name = "FILE.jsonl")]
    gold: Option<PathBuf>,
    /// How the answer is marked: `<answer>X</answer>` or `\boxed{X}`.
    #[arg(long, value_enum, default_value_t = AnswerFormat::Tag)]
    answer_format: AnswerFormat,
    /// Rate of `429 Too Many Requests` (with `Retry-After`).
    #[arg(long = "fault-429", value_name = "RATE")]
    fault_429: Option<f64>,
    /// The `Retry-After` of a 429, in seconds.
    #[arg(long, default_value_t = 1, value_name = "SECONDS")]
    retry_after_s: u64,
    /// Rate of `500 Internal Server Error`.
    #[arg(long = "fault-500", value_name = "RATE")]
    fault_500: Option<f64>,
    /// Rate of requests that hang for `--hang-s` before they are answered.
    #[arg(long, value_name = "RATE")]
    fault_hang: Option<f64>,
    /// How long a hanging request hangs, in seconds.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
    hang_s: f64,
    /// Rate of `200` replies whose body is not JSON.
    #[arg(long, value_name = "RATE")]
    fault_malformed: Option<f64>,
    /// Rate of `200` replies whose body stops half-way (the connection then closes).
    #[arg(long, value_name = "RATE")]
    fault_truncated: Option<f64>,
    /// Rate of connections reset (TCP RST) instead of a reply.
    #[arg(long, value_name = "RATE")]
    fault_reset: Option<f64>,
    /// Every fault kind at this rate (six kinds: `--faults 0.05` fails 30% of requests);
    /// a `--fault-*` flag given as well sets its own kind.
    #[arg(long, value_name = "RATE")]
    faults: Option<f64>,
    /// Require `Authorization: Bearer <key>`, the key read from this environment variable
    /// (the variable's name, never the key, goes on the command line).
    #[arg(long, value_name = "NAME")]
    api_key_env: Option<String>,
    /// Write one JSON line per chat request here (sequence, request hash, attempt, outcome,
    /// latency, token counts; never the key or the text).
    #[arg(long, value_name = "FILE.jsonl")]
    request_log: Option<PathBuf>,
    /// Stop when standard input reaches end of file, so a harness that dies takes the server
    /// with it.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

fn duration(value: f64, unit: Duration, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(unit.as_secs_f64() * value)
        .map_err(|_| anyhow::anyhow!("{flag} must be a finite number of at least 0, got {value}"))
}

impl Args {
    /// The simulator's settings; reads the key from the environment.
    fn config(&self) -> Result<SimConfig> {
        let every = self
            .faults
            .map_or_else(FaultRates::default, FaultRates::every_kind);
        let faults = FaultRates {
            rate_limited: self.fault_429.unwrap_or(every.rate_limited),
            server_error: self.fault_500.unwrap_or(every.server_error),
            hang: self.fault_hang.unwrap_or(every.hang),
            malformed: self.fault_malformed.unwrap_or(every.malformed),
            truncated: self.fault_truncated.unwrap_or(every.truncated),
            reset: self.fault_reset.unwrap_or(every.reset),
        };
        let api_key = match &self.api_key_env {
            None => None,
            Some(name) => {
                let key = std::env::var(name).ok().and_then(ApiKey::new);
                let Some(key) = key else {
                    bail!(
                        "--api-key-env {name}: the environment variable {name} is unset or empty"
                    );
                };
                Some(key)
            }
        };
        Ok(SimConfig {
            seed: self.seed,
            model: self.model.clone(),
            accuracy: self.accuracy,
            latency_mean: duration(self.latency_ms, Duration::from_millis(1), "--latency-ms")?,
            latency_dist: self.latency_dist,
            gold: self.gold.clone(),
            answer_format: self.answer_format,
            faults,
            retry_after: Duration::from_secs(self.retry_after_s),
            hang: duration(self.hang_s, Duration::from_secs(1), "--hang-s")?,
            api_key,
            request_log: self.request_log.clone(),
        })
    }
}

pub fn run(args: Args) -> Result<()> {
    let sim = Simulator::new(args.config()?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("cannot listen on {}", args.bind))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!("cloud-sim listens on {addr}: any machine that reaches it can use it");
        }
        describe(&sim);
        // The one line on standard output: scripts and tests read the address from it.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "cloud-sim listening on http://{addr}/v1")?;
        stdout.flush()?;
        drop(stdout);
        serve(sim, listener, stop_requested(args.exit_on_stdin_eof)).await;
        anyhow::Ok(())
    })?;
    // Requests still in flight (hanging ones, say) are dropped, not waited for.
    runtime.shutdown_background();
    Ok(())
}

/// One log line with the settings that shape the traffic.
fn describe(sim: &Simulator) {
    let config = sim.config();
    let faults: Vec<String> = tandem_cloudsim::Fault::ALL
        .iter()
        .filter(|&&f| config.faults.rate(f) > 0.0)
        .map(|&f| format!("{} {}", f.outcome(), config.faults.rate(f)))
        .collect();
    tracing::info!(
        "cloud-sim: model {}, seed {}, accuracy {}, latency {} ms ({}), faults [{}], \
         {} gold questions, key {}",
        config.model,
        config.seed,
        config.accuracy,
        config.latency_mean.as_secs_f64() * 1e3,
        format!("{:?}", config.latency_dist).to_lowercase(),
        faults.join(", "),
        sim.gold_questions(),
        if config.api_key.is_some() {
            "required"
        } else {
            "not required"
        },
    );
}

/// Completes on SIGINT, SIGTERM, or (when asked) end of standard input.
async fn stop_requested(exit_on_stdin_eof: bool) {
    let stdin_closed = async {
        if !exit_on_stdin_eof {
            return std::future::pending().await;
        }
        let (closed, on_closed) = tokio::sync::oneshot::channel::<()>();
        // Blocking reads on a thread of their own; whatever is written is ignored.
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = [0u8; 512];
            loop {
                match stdin.read(&mut buffer) {
                    Ok(0) => break,
                    Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
                    _ => {}
                }
            }
            let _ = closed.send(());
        });
        let _ = on_closed.await;
    };
    let terminated = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut terminate) = signal(SignalKind::terminate()) {
                terminate.recv().await;
                return;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => {}
        () = terminated => {}
        () = stdin_closed => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config(flags: &[&str]) -> Result<SimConfig> {
        let cli = Cli::try_parse_from(["cloud-sim"].iter().chain(flags))?;
        cli.args.config()
    }

    #[test]
    fn faults_sets_every_kind_and_fault_flags_override_it() {
        let faults = config(&[
            "--faults",
            "0.1",
            "--fault-reset",
            "0",
            "--fault-429",
            "0.3",
        ])
        .unwrap()
        .faults;
        assert_eq!(
            faults,
            FaultRates {
                rate_limited: 0.3,
                server_error: 0.1,
                hang: 0.1,
                malformed: 0.1,
                truncated: 0.1,
                reset: 0.0,
            }
        );
        assert_eq!(config(&[]).unwrap().faults, FaultRates::default());
    }

    #[test]
    fn durations_must_be_finite_and_not_negative() {
        let error = config(&["--latency-ms=-5"]).unwrap_err().to_string();
        assert!(error.contains("--latency-ms"), "{error}");
        assert!(config(&["--hang-s", "inf"]).is_err());
        let hang = config(&["--hang-s", "0.25"]).unwrap().hang;
        assert_eq!(hang, Duration::from_millis(250));
    }
}
