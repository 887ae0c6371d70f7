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
    /// The file to write (created or truncated; a resumed run keeps the lines of the steps
    /// before its resume point). Relative to the working directory.
    pub path: PathBuf,
}

impl StageConfig for JsonlSinkConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Sink(Box::new(JsonlSink {
            path: ctx.resolve(&self.path),
            out: None,
            resume_step: ctx.run.resume.as_ref().map(|r| r.step),
        })))
    }
}

/// Writes groups as JSON lines; the file is opened at the first step, not at build time, so
/// `tandem validate` writes nothing.
pub struct JsonlSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    /// A resumed run's first step: lines of earlier steps are kept.
    resume_step: Option<u64>,
}

impl JsonlSink {
    /// Opens the file: truncated, or for a resumed run holding only the lines of the steps
    /// before the resume point (the later ones will be written again).
    fn open(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let kept = match (self.resume_step, std::fs::read_to_string(&self.path)) {
            (Some(first), Ok(text)) => text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|g| g["prompt"]["step"].as_u64())
                        .is_some_and(|step| step < first)
                })
                .map(|line| format!("{line}\n"))
                .collect(),
            _ => String::new(),
        };
        let mut file = File::create(&self.path)?;
        file.write_all(kept.as_bytes())?;
        Ok(file)
    }
}

impl Sink for JsonlSink {
    fn needs(&self) -> Facets {
        Facets::NONE
    }

    fn consume(&mut self, groups: &mut [Group], _ctx: &StepContext) -> Result<()> {
        let fail = |e: std::io::Error| StageError::Run(format!("{}: {e}", self.path.display()));
        if self.out.is_none() {
            self.out = Some(BufWriter::new(self.open().map_err(fail)?));
        }
        let out = self.out.as_mut().expect("opened above");
        for group in groups {
            serde_json::to_writer(&mut *out, group).map_err(|e| fail(e.into()))?;
            out.write_all(b"\n").map_err(fail)?;
        }
        out.flush().map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_schemas::PromptRecord;

    fn group(step: u64) -> Group {
        Group::new(PromptRecord {
            step,
            prompt_id: format!("p{step}"),
            ..Default::default()
        })
    }

    #[test]
    fn a_resumed_run_keeps_the_lines_of_earlier_steps_and_rewrites_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("groups.jsonl");
        let build = |resume: Option<u64>| {
            let run = crate::RunSettings {
                resume: resume.map(|step| crate::ResumePoint {
                    step,
                    run_dir: dir.path().into(),
                    checkpoint: None,
                }),
                ..Default::default()
            };
            let params = serde_json::json!({ "path": path });
            match crate::registry::build_with::<JsonlSinkConfig>(
                &params,
                &BuildContext::new("sink", run),
            ) {
                Ok(Built::Sink(sink)) => sink,
                _ => panic!("sink.jsonl builds a sink"),
            }
        };
        let steps = |path: &std::path::Path| -> Vec<u64> {
            std::fs::read_to_string(path)
                .expect("read")
                .lines()
                .map(|l| serde_json::from_str::<Group>(l).expect("group").step())
                .collect()
        };
        let mut first = build(None);
        for step in 0..4 {
            let ctx = StepContext::single_worker("r", "sink", step);
            first.consume(&mut [group(step)], &ctx).expect("consume");
        }
        assert_eq!(steps(&path), [0, 1, 2, 3]);
        let mut resumed = build(Some(2));
        let ctx = StepContext::single_worker("r", "sink", 2);
        resumed.consume(&mut [group(2)], &ctx).expect("consume");
        assert_eq!(
            steps(&path),
            [0, 1, 2],
            "steps 2 and 3 were dropped, 2 rewritten"
        );
        let mut fresh = build(None);
        fresh.consume(&mut [group(0)], &ctx).expect("consume");
        assert_eq!(steps(&path), [0], "a fresh run truncates");
    }
}
