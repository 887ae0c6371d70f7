//! Continuing a stored run (`tandem run --resume runs/<id>`).
//!
//! A run that keeps checkpoints restarts from the newest complete one whose step is also
//! completely stored (the manifest's `steps_completed` passed it); any other run restarts after
//! its last completely stored step. Everything stored for later steps (stream parts, metrics,
//! newer or half-written checkpoints, temporaries a killed writer left) is removed first, so
//! the continued run stores each step exactly once. The pipeline is the one the manifest
//! recorded, resolved exactly as the first start resolved it.

use std::path::{Path, PathBuf};

use tandem_schemas::layout::{Manifest, RunLayout, RunStatus};
use tandem_stages::{Registry, ResumePoint};

use crate::plan::{Plan, PlanError};
use crate::yaml::Document;

/// Why a run cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The directory is not a run, or cannot be read or cleaned.
    #[error("{0}")]
    Run(String),
    /// The recorded pipeline no longer plans (a model or data file moved, say).
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// A stored run made ready to continue.
pub struct Resumed {
    /// The recorded pipeline, planned to start at the resume point.
    pub plan: Plan,
    /// The manifest, rewound to the resume point and marked running.
    pub manifest: Manifest,
    /// Where the run continues.
    pub point: ResumePoint,
}

/// Finds where the run in `run_dir` continues, plans its recorded pipeline from there with
/// `registry`, and removes what was stored past that point.
pub fn resume(run_dir: &Path, registry: Registry) -> Result<Resumed, ResumeError> {
    let layout = RunLayout::new(run_dir);
    let mut manifest = Manifest::read(&layout).map_err(ResumeError::Run)?;
    if manifest.status == RunStatus::Complete {
        return Err(ResumeError::Run(format!(
            "{}: run {} is complete ({} steps); there is nothing to resume",
            run_dir.display(),
            manifest.run_id,
            manifest.steps_completed
        )));
    }
    let point = resume_point(&layout, &manifest)?;
    let text = serde_json::to_string_pretty(&manifest.config)
        .map_err(|e| ResumeError::Run(format!("{}: {e}", layout.manifest().display())))?;
    let document = Document::parse(&layout.manifest(), &text).map_err(PlanError::from)?;
    let plan = Plan::from_document_with(document, registry, Some(point.clone()))?;
    discard_after(&layout, point.step).map_err(ResumeError::Run)?;
    manifest.steps_completed = point.step;
    manifest.status = RunStatus::Running;
    manifest.error = None;
    manifest.resumed_at.push(point.step);
    Ok(Resumed {
        plan,
        manifest,
        point,
    })
}

/// The newest checkpoint `step-<n>` holding its trainer state (written last) with
/// `n < steps_completed`, and the step after it; without checkpoints, step 0 for a run that
/// keeps them and `steps_completed` for one that does not.
pub fn resume_point(layout: &RunLayout, manifest: &Manifest) -> Result<ResumePoint, ResumeError> {
    let run_dir = layout.root().to_path_buf();
    if !manifest.checkpointed {
        return Ok(ResumePoint {
            step: manifest.steps_completed,
            run_dir,
            checkpoint: None,
        });
    }
    let newest = checkpoint_steps(layout)?
        .into_iter()
        .filter(|&n| n < manifest.steps_completed)
        .filter(|&n| layout.checkpoint(n).join(TRAINER_STATE).is_file())
        .max();
    Ok(match newest {
        Some(n) => ResumePoint {
            step: n + 1,
            run_dir,
            checkpoint: Some(layout.checkpoint(n)),
        },
        None => ResumePoint {
            step: 0,
            run_dir,
            checkpoint: None,
        },
    })
}

/// The file a learner writes last into a checkpoint; its presence makes the checkpoint whole.
const TRAINER_STATE: &str = "trainer_state.json";

/// The `n` of every `checkpoints/step-<n>` directory.
fn checkpoint_steps(layout: &RunLayout) -> Result<Vec<u64>, ResumeError> {
    Ok(entries(&layout.checkpoints())
        .map_err(ResumeError::Run)?
        .into_iter()
        .filter_map(|path| step_of(&path, "step-"))
        .collect())
}

/// Removes every stream part, checkpoint and temporary stored for steps `>= step`.
fn discard_after(layout: &RunLayout, step: u64) -> Result<(), String> {
    for stream in entries(&layout.root().join("streams"))? {
        for part_dir in entries(&stream)? {
            match step_of(&part_dir, "step=") {
                Some(n) if n >= step => remove(&part_dir)?,
                Some(_) => {
                    for file in entries(&part_dir)? {
                        if tandem_schemas::io::is_temporary(&file) {
                            remove(&file)?;
                        }
                    }
                }
                None if tandem_schemas::io::is_temporary(&part_dir) => remove(&part_dir)?,
                None => {}
            }
        }
    }
    for checkpoint in entries(&layout.checkpoints())? {
        let later = step_of(&checkpoint, "step-").is_some_and(|n| n >= step);
        if later || tandem_schemas::io::is_temporary(&checkpoint) {
            remove(&checkpoint)?;
        }
    }
    Ok(())
}

/// The number after `prefix` in a path's file name.
fn step_of(path: &Path, prefix: &str) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
}

/// The entries of a directory (none when it does not exist).
fn entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| format!("{}: {e}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

fn remove(path: &Path) -> Result<(), String> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        // The processes of a cluster run resume one run directory side by side: another may
        // have removed it first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        result => result.map_err(|e| {
            format!(
                "{}: cannot remove what a later step left: {e}",
                path.display()
            )
        }),
    }
}
