//! `sink.jsonl`: every finished group as one JSON line, for tools that want whole groups
//! rather than joined Parquet streams.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use serde::Deserialize;
use tandem_schemas::{Facets, Group};

use crate::contract::{BuildContext, Built, Sink, StepContext};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `sink.jsonl`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSinkConfig {
    /// The file to write (created or truncated). Relative to the working directory.
    pub path: PathBuf,
}

impl StageConfig for JsonlSinkConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Sink(Box::new(JsonlSink {
            path: ctx.resolve(&self.path),
            out: None,
        })))
    }
}

/// Writes groups as JSON lines; the file is opened at the first step, not at build time, so
/// `tandem validate` writes nothing.
pub struct JsonlSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl Sink for JsonlSink {
    fn needs(&self) -> Facets {
        Facets::NONE
    }

    fn consume(&mut self, groups: &[Group], _ctx: &StepContext) -> Result<()> {
        let fail = |e: std::io::Error| StageError::Run(format!("{}: {e}", self.path.display()));
        if self.out.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(fail)?;
            }
            self.out = Some(BufWriter::new(File::create(&self.path).map_err(fail)?));
        }
        let out = self.out.as_mut().expect("opened above");
        for group in groups {
            serde_json::to_writer(&mut *out, group).map_err(|e| fail(e.into()))?;
            out.write_all(b"\n").map_err(fail)?;
        }
        out.flush().map_err(fail)
    }
}
