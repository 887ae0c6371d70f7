//! Why a report could not be made; every variant names the path concerned.

use std::path::PathBuf;

/// Errors of `tandem report`.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The directory is not a run (no readable manifest).
    #[error("{path}: not a run directory ({message})")]
    NotARun {
        /// The directory given.
        path: PathBuf,
        /// What reading its manifest said.
        message: String,
    },
    /// The run stores no samples stream, so there is nothing to measure.
    #[error("{run}: the run stores no samples stream (a generate stage's); nothing to report")]
    NoSamples {
        /// The run directory.
        run: PathBuf,
    },
    /// A stored stream could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The file or stream directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An output could not be written.
    #[error("{path}: cannot write: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}
