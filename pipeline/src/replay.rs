//! Replaying a stored run with new downstream stages (`tandem replay`).
//!
//! A replay takes a full pipeline (typically a copy of the stored run's with changed
//! parameters) and the id of its first stage to recompute. The stages before that one are not
//! run: a `source.replay` of the stored run takes their place, reading exactly the streams the
//! stored run's stages of those ids wrote. Nothing upstream is generated or called again.

use std::path::{Path, PathBuf};

use tandem_schemas::layout::{Manifest, RunLayout, RunStatus, StreamEntry};
use tandem_schemas::{Facet, StreamKind};
use tandem_stages::Registry;

use crate::plan::{Plan, PlanError, PlanOptions};
use crate::spec::PipelineSpec;
use crate::yaml::{Document, Location, Seg, YamlError};

/// Why a replay cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The new pipeline file cannot be read, or the derived pipeline is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The stored run cannot be read.
    #[error("{run}: {message}")]
    Stored {
        /// The stored run directory.
        run: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `--from` does not name a stage the replay can start at.
    #[error("{file}: {message}")]
    From {
        /// The new pipeline file.
        file: PathBuf,
        /// What is wrong and which ids there are.
        message: String,
    },
    /// A stage that is not run cannot be read back from the stored run.
    #[error("{location}: stage `{stage}` ({kind}): {message}")]
    Skipped {
        /// Where the stage is written in the new pipeline.
        location: Location,
        /// Its id.
        stage: String,
        /// Its kind in the new pipeline.
        kind: String,
        /// What the stored run lacks, and how to replay anyway.
        message: String,
    },
}

impl From<YamlError> for ReplayError {
    fn from(e: YamlError) -> Self {
        ReplayError::Plan(PlanError::Yaml(e))
    }
}

/// A stored stream a replay reads.
#[derive(Clone, Debug)]
pub struct StoredStream {
    /// Its manifest entry (name, kind, the stage that wrote it).
    pub entry: StreamEntry,
    /// The stored steps that will be replayed (those the manifest counts as complete).
    pub steps: Vec<u64>,
    /// Its rows in those steps.
    pub rows: u64,
}

/// A planned replay: the derived plan and what it reads.
pub struct ReplayPlan {
    /// The plan to run: `source.replay` of the stored run, then the stages from `--from` on.
    pub plan: Plan,
    /// The stored run's id (the new run's `parent`).
    pub parent: String,
    /// The streams read back, prompts first.
    pub reads: Vec<StoredStream>,
    /// The ids of the new pipeline's stages that are not run (their streams are read instead).
    pub skipped: Vec<String>,
    /// Things that are allowed but probably not meant (a skipped stage whose parameters
    /// differ from the stored run's).
    pub warnings: Vec<String>,
}

/// Plans a replay of `run_dir` with `pipeline` (after `${ENV}` and `options.sets`), recomputing
/// from its stage `from` on.
///
/// Refuses, naming the stage: `from` not a stage id of `pipeline` (or its source); a stage
/// before `from` that the stored run does not have, that has another kind there (its stream is
/// not what this stage would provide), or whose stream it did not store; two such stages that
/// provided the same facet. A skipped stage whose parameters differ is only a warning: its
/// stored stream is read as stored.
pub fn plan_replay(
    run_dir: &Path,
    pipeline: &Path,
    from: &str,
    options: &PlanOptions,
    registry: Registry,
) -> Result<ReplayPlan, ReplayError> {
    let mut document = Document::read(pipeline)?;
    document.interpolate_env(&|name| std::env::var(name).ok())?;
    for set in &options.sets {
        document.set(set)?;
    }
    let spec: PipelineSpec = document.deserialize_at(&[])?;
    let ids: Vec<&str> = spec.stages.iter().map(|s| s.id.as_str()).collect();
    let from_error = |message: String| ReplayError::From {
        file: pipeline.to_owned(),
        message,
    };
    let index = match ids.iter().position(|id| *id == from) {
        Some(0) => {
            return Err(from_error(format!(
                "`{from}` is the source; a replay starts at a later stage ({}); to run everything again use `tandem run`",
                ids[1..].join(", ")
            )));
        }
        Some(i) => i,
        None => {
            return Err(from_error(format!(
                "--from `{from}` is not a stage of this pipeline; its stages: {}",
                ids.join(", ")
            )));
        }
    };

    let stored_error = |message: String| ReplayError::Stored {
        run: run_dir.to_owned(),
        message,
    };
    let layout = RunLayout::new(run_dir);
    let manifest = Manifest::read(&layout).map_err(stored_error)?;
    let stored: PipelineSpec = serde_json::from_value(manifest.config.clone())
        .map_err(|e| stored_error(format!("the manifest's pipeline cannot be read: {e}")))?;
    let stored_ids: Vec<&str> = stored.stages.iter().map(|s| s.id.as_str()).collect();

    let mut reads: Vec<StoredStream> = Vec::new();
    let mut provided: Vec<(Facet, String)> = Vec::new();
    let mut warnings = Vec::new();
    for (i, stage) in spec.stages[..index].iter().enumerate() {
        let skipped_error = |message: String| ReplayError::Skipped {
            location: document.locate(&[Seg::Key("stages".into()), Seg::Index(i)]),
            stage: stage.id.clone(),
            kind: stage.kind.clone(),
            message,
        };
        let Some(old) = stored.stages.iter().find(|s| s.id == stage.id) else {
            return Err(skipped_error(format!(
                "run {} has no stage `{}` to read back (its stages: {}); replay --from an earlier stage",
                manifest.run_id,
                stage.id,
                stored_ids.join(", ")
            )));
        };
        if old.kind != stage.kind {
            return Err(skipped_error(format!(
                "run {} ran `{}` as {}, so its stream is not what {} provides; replay --from `{}` to recompute it, or give the new stage another id",
                manifest.run_id, stage.id, old.kind, stage.kind, stage.id
            )));
        }
        if old.params != stage.params {
            warnings.push(format!(
                "stage `{}` has other parameters than in run {}, but is not run: its stored stream is read as it is (replay --from `{}` to recompute it)",
                stage.id, manifest.run_id, stage.id
            ));
        }
        let entries: Vec<&StreamEntry> = manifest
            .streams
            .iter()
            .filter(|s| s.stage == stage.id && s.kind.facet().is_some())
            .collect();
        if entries.is_empty() {
            return Err(skipped_error(format!(
                "run {} stored no stream of this stage (it ran with `materialize: false` or --no-materialize), so it cannot be read back; replay --from `{}` or an earlier stage",
                manifest.run_id, stage.id
            )));
        }
        for entry in entries {
            let facet = entry.kind.facet().expect("filtered on facet() above");
            if let Some((_, other)) = provided.iter().find(|(f, _)| *f == facet) {
                return Err(skipped_error(format!(
                    "both `{other}` and `{}` provided {facet} in run {}, and a replay reads each facet from one stream; replay --from `{other}` to recompute both",
                    stage.id, manifest.run_id
                )));
            }
            provided.push((facet, stage.id.clone()));
            reads.push(stored_stream(&layout, &manifest, entry).map_err(stored_error)?);
        }
    }
    reads.sort_by_key(|r| r.entry.kind != StreamKind::Prompts);
    let Some(stored_steps) = reads
        .first()
        .filter(|r| r.entry.kind == StreamKind::Prompts)
        .map(|r| r.steps.len() as u64)
    else {
        return Err(stored_error(format!(
            "run {} stored no prompts stream to replay from",
            manifest.run_id
        )));
    };

    let taken: Vec<&str> = ids[index..].to_vec();
    let source_id = std::iter::once("replay".to_owned())
        .chain((2..).map(|n| format!("replay{n}")))
        .find(|id| !taken.contains(&id.as_str()))
        .expect("an endless list has a free name");
    let names: Vec<&str> = reads.iter().map(|r| r.entry.name.as_str()).collect();
    let source = serde_json::json!({
        "id": source_id,
        "kind": "source.replay",
        "params": { "run": run_dir.display().to_string(), "streams": names },
    });
    document.replace_seq_prefix(
        &[Seg::Key("stages".into())],
        index,
        &source,
        &format!("replay of {} up to `{from}`", run_dir.display()),
    )?;
    let mut plan = Plan::from_document(document, registry)?;
    // The stored run has only so many steps; `run.steps` of the new file may ask for more.
    plan.steps = plan.steps.min(stored_steps);
    Ok(ReplayPlan {
        plan,
        parent: manifest.run_id,
        reads,
        skipped: ids[..index].iter().map(|s| s.to_string()).collect(),
        warnings,
    })
}

/// The id of the stored run a plan replays, when its source is a `source.replay` whose run
/// can be read (what `tandem run` of such a pipeline records as `parent`).
pub fn replayed_run(plan: &Plan) -> Option<String> {
    let source = plan.stages.first().filter(|s| s.kind == "source.replay")?;
    let run = source.params.get("run")?.as_str()?;
    Manifest::read(&RunLayout::new(run)).ok().map(|m| m.run_id)
}

/// The steps of a stored stream that a replay reads, and their rows.
fn stored_stream(
    layout: &RunLayout,
    manifest: &Manifest,
    entry: &StreamEntry,
) -> Result<StoredStream, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = || layout.stream_dir(&entry.name).display().to_string();
    let mut steps = layout
        .steps(&entry.name)
        .map_err(|e| format!("{}: {e}", dir()))?;
    if manifest.status != RunStatus::Complete {
        // As `source.replay` reads them: only steps whose every stream was written.
        steps.retain(|&s| s < manifest.steps_completed);
    }
    let mut rows = 0u64;
    for &step in &steps {
        for part in layout
            .parts(&entry.name, step)
            .map_err(|e| format!("{}: {e}", dir()))?
        {
            let file =
                std::fs::File::open(&part).map_err(|e| format!("{}: {e}", part.display()))?;
            let reader =
                SerializedFileReader::new(file).map_err(|e| format!("{}: {e}", part.display()))?;
            rows += reader.metadata().file_metadata().num_rows().max(0) as u64;
        }
    }
    Ok(StoredStream {
        entry: entry.clone(),
        steps,
        rows,
    })
}
