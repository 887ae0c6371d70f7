//! Every request, stored as a run is: a run directory (`<out>/serve-<UTC time>/`) with a
//! manifest and Parquet part files, `streams/<stream>/step=<n>/part-0.parquet`, written with the
//! schemas' own writers ([`Rows::write_part`], atomic renames) so DuckDB, pyarrow and
//! `tandem report` read it as they read a run. A "step" is one flush of the ledger.
//!
//! Three streams: `requests` ([`RequestRecord`], the ledger proper: question hash, who answered,
//! tokens, latency, cost, capped), `samples` (the device's answer with the help option, so the
//! report's help rate is the model's) and `cloud` ([`CloudRecord`], one row per escalation and
//! per capped ask, `error_kind: budget`, as the cloud stage writes a refused call).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus, StreamEntry, create_run_dir};
use tandem_schemas::{CloudRecord, RequestRecord, SCHEMA_VERSION, SampleRecord, StreamKind};

use crate::config::ServeConfig;
use crate::{Error, Result};

/// The rows one request adds.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Its ledger row (`run_id` and `step` are filled in by the writer).
    pub request: RequestRecord,
    /// The device's first answer.
    pub sample: SampleRecord,
    /// Its cloud row, when it asked.
    pub cloud: Option<CloudRecord>,
}

enum Message {
    Entry(Box<Entry>),
    Stop,
}

/// Sends entries to the ledger's writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct LedgerSender(mpsc::Sender<Message>);

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ledger message")
    }
}

impl LedgerSender {
    /// Records one request.
    pub fn record(&self, entry: Entry) {
        if self.0.send(Message::Entry(Box::new(entry))).is_err() {
            tracing::error!("the ledger writer has stopped; a request is not recorded");
        }
    }

    /// A sender whose entries go to the returned receiver (for tests of the HTTP layer).
    pub fn detached() -> (LedgerSender, impl Fn() -> Vec<Entry>) {
        let (tx, rx) = mpsc::channel();
        let drain = move || {
            rx.try_iter()
                .filter_map(|m| match m {
                    Message::Entry(e) => Some(*e),
                    Message::Stop => None,
                })
                .collect()
        };
        (LedgerSender(tx), drain)
    }
}

/// The ledger's writer thread and run directory.
pub struct Ledger {
    run_dir: PathBuf,
    sender: LedgerSender,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

/// The streams of a serving session, as its manifest lists them.
pub const STREAMS: [(&str, StreamKind, &str); 3] = [
    ("requests", StreamKind::Requests, "serve"),
    ("samples", StreamKind::Samples, "device"),
    ("cloud", StreamKind::Cloud, "cloud"),
];

impl Ledger {
    /// Creates the run directory and its manifest, and starts the writer.
    pub fn create(config: &ServeConfig) -> Result<Ledger> {
        let (run_id, run_dir) = create_run_dir(&config.out, "serve")
            .map_err(|e| Error::Ledger(format!("{}: {e}", config.out.display())))?;
        let layout = RunLayout::new(&run_dir);
        let manifest = Manifest {
            run_id: run_id.clone(),
            status: RunStatus::Running,
            pipeline_file: "tandem serve".into(),
            // The settings, without the key or the client token (only where they come from).
            config: serde_json::to_value(config).unwrap_or_default(),
            seed: 0,
            workers: 1,
            processes: 1,
            versions: BTreeMap::from([
                ("tandem".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
                ("schema".to_owned(), SCHEMA_VERSION.to_string()),
            ]),
            streams: STREAMS
                .iter()
                .map(|(name, kind, stage)| StreamEntry {
                    name: (*name).into(),
                    kind: *kind,
                    stage: (*stage).into(),
                })
                .collect(),
            steps_completed: 0,
            parent: None,
            error: None,
            checkpointed: false,
            resumed_at: Vec::new(),
        };
        write_manifest(&layout, &manifest)?;
        let (tx, rx) = mpsc::channel();
        let every = config.ledger_flush;
        let thread = std::thread::Builder::new()
            .name("serve-ledger".into())
            .spawn(move || Writer::new(layout, manifest).run(&rx, every))
            .map_err(|e| Error::Ledger(format!("starting the writer: {e}")))?;
        Ok(Ledger {
            run_dir,
            sender: LedgerSender(tx),
            thread: Some(thread),
        })
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// A sender of entries.
    pub fn sender(&self) -> LedgerSender {
        self.sender.clone()
    }

    /// Writes what is pending, marks the manifest complete, and stops the writer.
    pub fn finish(mut self) -> Result<()> {
        let _ = self.sender.0.send(Message::Stop);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Ledger("the writer panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.sender.0.send(Message::Stop);
            let _ = thread.join();
        }
    }
}

fn write_manifest(layout: &RunLayout, manifest: &Manifest) -> Result<()> {
    manifest
        .write(layout)
        .map_err(|e| Error::Ledger(format!("{}: {e}", layout.manifest().display())))
}

struct Writer {
    layout: RunLayout,
    manifest: Manifest,
    pending: Vec<Entry>,
}

impl Writer {
    fn new(layout: RunLayout, manifest: Manifest) -> Writer {
        Writer {
            layout,
            manifest,
            pending: Vec::new(),
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<Message>, every: Duration) -> Result<()> {
        let mut deadline = std::time::Instant::now() + every;
        loop {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Message::Entry(entry)) => self.pending.push(*entry),
                Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.flush() {
                        // Keep serving: the rows stay pending and the next flush tries again.
                        tracing::error!("{e}");
                    }
                    deadline = std::time::Instant::now() + every;
                }
            }
        }
        // Entries sent before the stop are all in the channel's order before it.
        self.pending.extend(rx.try_iter().filter_map(|m| match m {
            Message::Entry(e) => Some(*e),
            Message::Stop => None,
        }));
        let flushed = self.flush();
        self.manifest.status = if flushed.is_ok() {
            RunStatus::Complete
        } else {
            RunStatus::Failed
        };
        self.manifest.error = flushed.as_ref().err().map(ToString::to_string);
        write_manifest(&self.layout, &self.manifest)?;
        flushed
    }

    /// Writes the pending entries as the next step's part files.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let step = self.manifest.steps_completed;
        let run_id = self.manifest.run_id.clone();
        let (mut requests, mut samples, mut cloud) = (Vec::new(), Vec::new(), Vec::new());
        for entry in &self.pending {
            let mut request = entry.request.clone();
            (request.run_id, request.step) = (run_id.clone(), step);
            requests.push(request);
            let mut sample = entry.sample.clone();
            (sample.run_id, sample.step) = (run_id.clone(), step);
            samples.push(sample);
            if let Some(row) = &entry.cloud {
                let mut row = row.clone();
                (row.run_id, row.step) = (run_id.clone(), step);
                cloud.push(row);
            }
        }
        for rows in [
            Rows::Requests(requests),
            Rows::Samples(samples),
            Rows::Cloud(cloud),
        ] {
            let mut rows = rows;
            rows.sort();
            let name = rows.kind().name();
            let path = self.layout.part(name, step, 0);
            rows.write_part(&path)
                .map_err(|e| Error::Ledger(format!("{}: {e}", path.display())))?;
        }
        self.manifest.steps_completed = step + 1;
        write_manifest(&self.layout, &self.manifest)?;
        self.pending.clear();
        Ok(())
    }
}
