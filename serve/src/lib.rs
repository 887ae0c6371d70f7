//! `tandem serve`: a trained device model behind one OpenAI-compatible endpoint
//! (`/v1/chat/completions`, `/v1/models`), the cloud called only when the model asks for help.
//!
//! Each request's question (its last user message) is answered by the device model with the
//! template it was trained with, which offers the help option. An answer that asks for help
//! (the help tag, as `verify` and `tandem eval` detect it) sends the client's messages, never
//! the device's partial reasoning, to the cloud, whose answer is returned instead. The share of
//! requests escalated stays within a budget, in total or over a sliding window of requests;
//! asks past it are answered again on the device without the help option, as `tandem eval`
//! does, and are marked `capped`. Every response says who answered (`tandem.answered_by` in the
//! JSON and the `x-tandem-answered-by` header).
//!
//! The parts, one module each:
//! - [`device`]: one thread owns the model; requests queue in a bounded channel and are
//!   batched (a short window) onto [`tandem_stages::policy::generate()`];
//! - [`budget`]: the escalation budget;
//! - [`cloud`]: the cloud call, with `cloud.openai`'s retries and failure classes;
//! - [`ledger`]: every request as a row of a run-layout Parquet stream (`requests`, plus the
//!   device's `samples` and the `cloud` calls, which `tandem report` reads);
//! - [`metrics`]: Prometheus counters and histograms at `/metrics`;
//! - [`http`]: the routes (axum), streaming (SSE), client auth.
#![forbid(missing_docs)]

pub mod budget;
pub mod cloud;
pub mod config;
pub mod device;
pub mod http;
pub mod ledger;
pub mod metrics;

use std::sync::Arc;

pub use budget::{Budget, BudgetWindow};
pub use config::ServeConfig;

/// Errors that stop the server before or while it starts (a bad request is an HTTP answer, not
/// one of these).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option is wrong; the message names it.
    #[error("{0}")]
    Config(String),
    /// The model could not be loaded or its template does not fit.
    #[error("{0}")]
    Model(String),
    /// The ledger could not be written.
    #[error("ledger: {0}")]
    Ledger(String),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Serves `config` until ctrl-c, SIGTERM, or (with `exit_on_stdin_eof`) standard input closes;
/// then finishes the requests in flight, flushes the ledger and returns. `ready` is called with
/// the bound address once the server accepts connections.
pub fn serve(config: ServeConfig, ready: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.io_threads.max(1))
        .thread_name("serve-io")
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("starting the I/O runtime: {e}")))?;
    // Secrets and the cloud client first: a missing key stops the server before the model
    // loads or a ledger directory is made.
    let token = config
        .client_token
        .as_ref()
        .map(config::TokenSource::read)
        .transpose()?;
    let cloud = cloud::CloudClient::new(&config)?;
    let metrics = Arc::new(metrics::Metrics::new(config.budget));
    let device = device::DeviceEngine::start(&config, metrics.clone())?;
    let ledger = ledger::Ledger::create(&config)?;
    eprintln!("tandem serve: ledger at {}", ledger.run_dir().display());
    let state = http::AppState::new(
        &config,
        http::Parts {
            device: device.queue(),
            cloud,
            ledger: ledger.sender(),
            metrics,
            token,
        },
    );
    let app = http::router(Arc::new(state));
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.bind)
            .await
            .map_err(|e| Error::Io(format!("--bind {}: {e}", config.bind)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("--bind {}: {e}", config.bind)))?;
        ready(addr);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(config.exit_on_stdin_eof))
            .await
            .map_err(|e| Error::Io(format!("serving on {addr}: {e}")))
    });
    // Every handler has answered (graceful shutdown waits for them): stop the device, then
    // write what the ledger still holds.
    drop(device);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    let finished = ledger.finish();
    served?;
    finished
}

/// Resolves on ctrl-c, SIGTERM, or the end of standard input when asked.
async fn shutdown_signal(exit_on_stdin_eof: bool) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    let stdin_eof = async {
        if !exit_on_stdin_eof {
            return std::future::pending::<()>().await;
        }
        // A blocking read on its own thread: tokio's stdin is that too, without the feature.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
        () = stdin_eof => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
