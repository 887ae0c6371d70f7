//! What can stop the simulator from starting.

use std::path::PathBuf;

/// Why the simulator cannot start (it never fails once it serves: a bad request is an HTTP
/// error to that client).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range (a rate outside [0, 1], rates that add up to more than 1, …).
    #[error("{0}")]
    Config(String),
    /// A line of the gold-answer file is not a `{"question": …, "answer": …}` object.
    #[error("{}:{line}: {message}", path.display())]
    Gold {
        /// The gold-answer file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A file could not be opened, read or created.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Binding, accepting or starting the runtime failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The simulator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
