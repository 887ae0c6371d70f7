//! The request log: one JSON line per chat request, written as the request's fate is decided
//! (before its latency or hang), so a reader sees it while the server runs.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use super::error::{Error, Result};

/// One line of the request log. Never holds the key, the `Authorization` header or the text.
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    /// Arrival order, from 0 (under concurrency, not reproducible; `hash` and `attempt` are).
    pub seq: u64,
    /// SHA-256 hex of the request's canonical JSON; null for a 401 or 400.
    pub hash: Option<String>,
    /// How many times this exact request has arrived, this one included (1 = first).
    pub attempt: Option<u64>,
    /// `ok`, `http_429`, `http_500`, `hang`, `malformed`, `truncated`, `reset`, `http_401` or
    /// `http_400`.
    pub outcome: &'static str,
    /// `countdown`, `arithmetic`, `gold` or `unknown`; null when no answer was produced.
    pub task: Option<&'static str>,
    /// Whether the answer was meant to be right; null when there was no answer to be right.
    pub correct: Option<bool>,
    /// The wait before the reply (the hang time for `hang`), in milliseconds.
    pub latency_ms: f64,
    /// Estimated prompt tokens; null when the request was not read.
    pub prompt_tokens: Option<u64>,
    /// Estimated completion tokens; null when no answer was produced.
    pub completion_tokens: Option<u64>,
}

/// An append-only JSON Lines file.
#[derive(Debug)]
pub struct RequestLog {
    file: Mutex<File>,
}

impl RequestLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: &Path) -> Result<RequestLog> {
        let file = File::create(path).map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })?;
        Ok(RequestLog {
            file: Mutex::new(file),
        })
    }

    /// Appends a line with one `write` (the file is unbuffered, so a reader sees whole lines).
    pub fn write(&self, line: &LogLine) {
        let mut text = serde_json::to_string(line).expect("a log line serialises");
        text.push('\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::warn!("cloud-sim: cannot write the request log: {e}");
        }
    }
}
