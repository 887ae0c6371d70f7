//! `source.replay`: the stored groups of a previous run, step by step, with no generation and
//! no cloud call. Downstream stages then recompute what they provide (a new reward, say).

use std::path::PathBuf;

use serde::Deserialize;
use tandem_schemas::io::{Rows, assemble_groups};
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus, StreamEntry};
use tandem_schemas::{Facet, Facets, Group, StreamKind};

use crate::contract::{BuildContext, Built, Source, StepContext};
use crate::registry::StageConfig;
use crate::{Result, StageError};

/// Parameters of `source.replay`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySourceConfig {
    /// The stored run directory (`runs/<run_id>`). Relative to the working directory.
    pub run: PathBuf,
    /// The stored streams to read back, by name (the stage ids of that run). Default: every
    /// group stream it stored, except `errors`. Each facet may come from one stream only.
    #[serde(default)]
    pub streams: Option<Vec<String>>,
}

impl StageConfig for ReplaySourceConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        Ok(Built::Source(Box::new(ReplaySource::open(
            &ctx.resolve(&self.run),
            self.streams.as_deref(),
        )?)))
    }
}

/// Reads a stored run back as groups.
pub struct ReplaySource {
    layout: RunLayout,
    /// The chosen streams, prompts first.
    streams: Vec<StreamEntry>,
    /// Stored steps, ascending; replay step `t` reads `stored_steps[t]`.
    stored_steps: Vec<u64>,
    parent: String,
}

impl ReplaySource {
    /// Opens a stored run and chooses the streams to read.
    pub fn open(root: &std::path::Path, names: Option<&[String]>) -> Result<ReplaySource> {
        let layout = RunLayout::new(root);
        let manifest = Manifest::read(&layout).map_err(StageError::Data)?;
        let stored = &manifest.streams;
        let chosen: Vec<StreamEntry> = match names {
            Some(names) => names
                .iter()
                .map(|name| {
                    stored
                        .iter()
                        .find(|s| &s.name == name)
                        .cloned()
                        .ok_or_else(|| {
                            let known: Vec<_> = stored.iter().map(|s| s.name.as_str()).collect();
                            StageError::Params {
                                path: "streams".into(),
                                message: format!(
                                    "run {} has no stream `{name}`; it has: {}",
                                    root.display(),
                                    known.join(", ")
                                ),
                            }
                        })
                })
                .collect::<Result<_>>()?,
            None => stored
                .iter()
                .filter(|s| s.kind.facet().is_some())
                .cloned()
                .collect(),
        };
        let mut seen: Vec<(Facet, &str)> = Vec::new();
        for entry in &chosen {
            let facet = entry.kind.facet().ok_or_else(|| StageError::Params {
                path: "streams".into(),
                message: format!(
                    "stream `{}` holds {} rows, which are not part of a group",
                    entry.name, entry.kind
                ),
            })?;
            if let Some((_, other)) = seen.iter().find(|(f, _)| *f == facet) {
                return Err(StageError::Params {
                    path: "streams".into(),
                    message: format!(
                        "streams `{other}` and `{}` both hold {facet}; list the one to replay in `streams`",
                        entry.name
                    ),
                });
            }
            seen.push((facet, &entry.name));
        }
        let mut streams = chosen.clone();
        streams.sort_by_key(|s| s.kind != StreamKind::Prompts);
        let prompts = streams
            .first()
            .filter(|s| s.kind == StreamKind::Prompts)
            .ok_or_else(|| {
                StageError::Data(format!(
                    "run {} stored no prompts stream to replay from",
                    root.display()
                ))
            })?;
        let mut stored_steps = layout.steps(&prompts.name).map_err(|e| {
            StageError::Data(format!(
                "{}: {e}",
                layout.stream_dir(&prompts.name).display()
            ))
        })?;
        if manifest.status != RunStatus::Complete {
            // A killed or failed run: only the steps whose every stream was written count.
            stored_steps.retain(|&s| s < manifest.steps_completed);
        }
        Ok(ReplaySource {
            layout,
            streams,
            stored_steps,
            parent: manifest.run_id,
        })
    }

    /// The id of the run being replayed.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    fn read(&self, entry: &StreamEntry, stored_step: u64) -> Result<Rows> {
        let mut all = Rows::empty(entry.kind);
        let parts = self.layout.parts(&entry.name, stored_step).map_err(|e| {
            StageError::Run(format!(
                "{}: {e}",
                self.layout.stream_dir(&entry.name).display()
            ))
        })?;
        for part in parts {
            all.append(
                Rows::read_parquet(entry.kind, &part)
                    .map_err(|e| StageError::Run(e.to_string()))?,
            );
        }
        Ok(all)
    }
}

impl Source for ReplaySource {
    fn provides(&self) -> Facets {
        self.streams
            .iter()
            .filter_map(|s| s.kind.facet())
            .fold(Facets::NONE, Facets::with)
    }

    fn natural_steps(&self) -> u64 {
        self.stored_steps.len() as u64
    }

    fn step(&mut self, ctx: &StepContext) -> Result<Vec<Group>> {
        let Some(&stored_step) = self.stored_steps.get(ctx.step as usize) else {
            return Ok(Vec::new());
        };
        let mut facets = Vec::with_capacity(self.streams.len());
        for entry in &self.streams {
            facets.push(self.read(entry, stored_step)?);
        }
        let prompts = match facets.remove(0) {
            Rows::Prompts(p) => p,
            _ => unreachable!("streams are sorted with prompts first"),
        };
        let mut groups = assemble_groups(prompts, facets).map_err(|e| {
            StageError::Run(format!(
                "{} step {stored_step}: {e}",
                self.layout.root().display()
            ))
        })?;
        for g in &mut groups {
            g.rekey(&ctx.run_id, ctx.step);
        }
        Ok(groups)
    }
}
