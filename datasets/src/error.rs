//! Why a dataset did not load, phrased so a user can fix the file without a debugger.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a file a row sits, printed right after the file's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A 1-based line of a JSONL file: prints as `:12`, so editors can jump to it.
    Line(usize),
    /// A 0-based row of a Parquet or Arrow file: prints as `: row 5`.
    Row(usize),
    /// A 0-based element of a JSON array, with the 1-based line it starts on: prints as
    /// `:3 (element 7)` (a minified array is all on line 1). 32 bits each keep every error
    /// small (no array of 4 billion elements fits in memory to be read).
    Element {
        /// The element's index in the array.
        index: u32,
        /// The line it starts on.
        line: u32,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, ":{line}"),
            Location::Row(row) => write!(f, ": row {row}"),
            Location::Element { index, line } => write!(f, ":{line} (element {index})"),
        }
    }
}

/// A dataset that could not be turned into examples.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file or directory could not be opened or read.
    #[error("{}: cannot read dataset: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A JSONL line is not a JSON object.
    #[error("{}:{line}:{column}: invalid JSON: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line in the file.
        line: usize,
        /// 1-based column in the line.
        column: usize,
        /// What is wrong, without serde_json's own position suffix.
        message: String,
    },
    /// A row lacks a mapped field.
    #[error(
        "{}{location}: field `{field}` (mapped to `{role}`) is missing; this row has fields: {}. \
         Set `fields.{role}` to the right field name.",
        path.display(), available.join(", ")
    )]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The row in the file.
        location: Location,
        /// The field name (or dotted path) from the [`FieldMap`](crate::FieldMap).
        field: String,
        /// The `FieldMap` entry that names it: `question`, `answer`, ...
        role: &'static str,
        /// The fields the row does have, nested ones as dotted paths.
        available: Vec<String>,
    },
    /// A Parquet file lacks a mapped column.
    #[error(
        "{}: column `{field}` (mapped to `{role}`) does not exist; the file has columns: {}. \
         Set `fields.{role}` to the right column name.",
        path.display(), available.join(", ")
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column name (or dotted path into a struct column).
        field: String,
        /// The `FieldMap` entry that names it.
        role: &'static str,
        /// The file's columns, struct children as dotted paths.
        available: Vec<String>,
    },
    /// A row has null where a value is required (only `difficulty` may be null).
    #[error(
        "{}{location}: field `{field}` (mapped to `{role}`) is null; every row needs a value \
         for it (only `difficulty` may be null)",
        path.display()
    )]
    NullField {
        /// The file.
        path: PathBuf,
        /// The row in the file.
        location: Location,
        /// The field name from the `FieldMap`.
        field: String,
        /// The `FieldMap` entry that names it.
        role: &'static str,
    },
    /// A value has a type that cannot feed its role.
    #[error(
        "{}{location}: field `{field}` (mapped to `{role}`) must be {expected}, found {found}",
        path.display()
    )]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The row in the file.
        location: Location,
        /// The field name from the `FieldMap`.
        field: String,
        /// The `FieldMap` entry that names it.
        role: &'static str,
        /// What the role accepts, e.g. `a list of strings`.
        expected: &'static str,
        /// What the row holds, e.g. `a number`.
        found: String,
    },
    /// A preset could not build the question or take the reference answer from a row's field
    /// (a GSM8K answer without `####`, a MATH solution without `\boxed{…}`).
    #[error(
        "{}{location}: field `{field}` (mapped to `{role}`) {reason}, which the `{preset}` \
         preset needs",
        path.display()
    )]
    Preset {
        /// The file.
        path: PathBuf,
        /// The row in the file.
        location: Location,
        /// The field name from the `FieldMap`.
        field: String,
        /// The `FieldMap` entry that names it.
        role: &'static str,
        /// The preset's name (`gsm8k`).
        preset: &'static str,
        /// What the field lacks, e.g. `has no \`####\` before its final answer`.
        reason: String,
    },
    /// Two rows share an id.
    #[error("{}: id `{id}` appears twice, at {first} and at {second}; ids must be unique", path.display())]
    DuplicateId {
        /// The file or directory.
        path: PathBuf,
        /// The repeated id.
        id: String,
        /// Source of the first row with it (`train.jsonl:3`).
        first: String,
        /// Source of the second row with it.
        second: String,
    },
    /// Anything else: undecodable Parquet, unknown extension, no rows.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl DatasetError {
    /// The file (or directory) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DatasetError::Read { path, .. }
            | DatasetError::Json { path, .. }
            | DatasetError::MissingField { path, .. }
            | DatasetError::MissingColumn { path, .. }
            | DatasetError::NullField { path, .. }
            | DatasetError::WrongType { path, .. }
            | DatasetError::Preset { path, .. }
            | DatasetError::DuplicateId { path, .. }
            | DatasetError::Invalid { path, .. } => path,
        }
    }

    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        DatasetError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
