//! Where a run keeps its files, and its manifest. Both the pipeline (which writes runs) and
//! `source.replay` (which reads them) use this one description.
//!
//! ```text
//! runs/<run_id>/manifest.json
//! runs/<run_id>/streams/<stream>/step=<n>/part-<worker>.parquet
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stream::StreamKind;

/// The paths of one run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLayout {
    root: PathBuf,
}

impl RunLayout {
    /// The layout of the run stored at `root` (`runs/<run_id>`).
    pub fn new(root: impl Into<PathBuf>) -> RunLayout {
        RunLayout { root: root.into() }
    }

    /// The run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `manifest.json`.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    /// `checkpoints/`, where a learner saves `step-<n>` directories.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The checkpoint saved after step `step`.
    pub fn checkpoint(&self, step: u64) -> PathBuf {
        self.checkpoints().join(format!("step-{step}"))
    }

    /// The directory of one stream.
    pub fn stream_dir(&self, stream: &str) -> PathBuf {
        self.root.join("streams").join(stream)
    }

    /// The part file one worker writes for one step of a stream.
    pub fn part(&self, stream: &str, step: u64, worker: usize) -> PathBuf {
        self.stream_dir(stream)
            .join(format!("step={step}"))
            .join(format!("part-{worker}.parquet"))
    }

    /// The complete part files of one step of a stream, in name order (temporaries skipped).
    pub fn parts(&self, stream: &str, step: u64) -> std::io::Result<Vec<PathBuf>> {
        let dir = self.stream_dir(stream).join(format!("step={step}"));
        let mut parts = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "parquet")
                        && !crate::io::is_temporary(&path)
                    {
                        parts.push(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        parts.sort();
        Ok(parts)
    }

    /// The steps stored for a stream, ascending.
    pub fn steps(&self, stream: &str) -> std::io::Result<Vec<u64>> {
        let mut steps = Vec::new();
        match fs::read_dir(self.stream_dir(stream)) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry?.file_name();
                    if let Some(step) = name.to_str().and_then(|n| n.strip_prefix("step="))
                        && let Ok(step) = step.parse()
                    {
                        steps.push(step);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        steps.sort_unstable();
        Ok(steps)
    }

    /// Every stored part of `stream` for the steps before `before`, with its step, in step
    /// order: what a stage of a resumed run reads back of the steps it will not recompute.
    pub fn parts_before(&self, stream: &str, before: u64) -> std::io::Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        for step in self.steps(stream)?.into_iter().filter(|s| *s < before) {
            out.extend(
                self.parts(stream, step)?
                    .into_iter()
                    .map(|part| (step, part)),
            );
        }
        Ok(out)
    }
}

/// Picks a fresh run id, `<name>-<UTC yyyymmdd-hhmmss>` (with `-2`, `-3`, … if taken), and
/// creates its directory so that two runs started in the same second do not share one.
pub fn create_run_dir(out: &Path, name: &str) -> std::io::Result<(String, PathBuf)> {
    std::fs::create_dir_all(out)?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = stamp
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect::<String>()
        .replace('T', "-");
    for n in 1.. {
        let id = if n == 1 {
            format!("{name}-{stamp}")
        } else {
            format!("{name}-{stamp}-{n}")
        };
        let dir = out.join(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns or fails")
}

/// What a run directory holds and how it was made (`manifest.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The run's id (the directory name).
    pub run_id: String,
    /// `running` while the run goes, then `complete` or `failed`.
    pub status: RunStatus,
    /// The pipeline file the run was started from.
    pub pipeline_file: String,
    /// The resolved pipeline (after `${ENV}` and `--set`), exactly as the run used it.
    pub config: serde_json::Value,
    /// The run's seed.
    pub seed: u64,
    /// Worker threads the run used (in each process).
    pub workers: usize,
    /// Processes the run used (`tandem run --processes`, `--local-cluster`); the run's workers
    /// are `processes × workers`, numbered `process × workers + thread` in part file names.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub processes: usize,
    /// Versions of tandem and of the schemas.
    pub versions: BTreeMap<String, String>,
    /// The streams the run materialises.
    pub streams: Vec<StreamEntry>,
    /// Steps whose every stream is completely written.
    pub steps_completed: u64,
    /// The run this one was replayed from, if any.
    pub parent: Option<String>,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    /// Whether the run saves checkpoints (it has a learner): a resume then restarts from the
    /// newest complete one rather than from `steps_completed`.
    #[serde(default)]
    pub checkpointed: bool,
    /// The step each `tandem run --resume` of this run started from, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_at: Vec<u64>,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// The state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running (or killed: a manifest left `running` by a dead process).
    Running,
    /// Finished every step.
    Complete,
    /// Stopped by an error.
    Failed,
}

/// One materialised stream of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    /// The directory name under `streams/`.
    pub name: String,
    /// The row type.
    pub kind: StreamKind,
    /// The YAML id of the stage that writes it (`""` for the run's own streams, like `errors`).
    pub stage: String,
}

impl Manifest {
    /// Reads `manifest.json` of a run.
    pub fn read(layout: &RunLayout) -> Result<Manifest, String> {
        let path = layout.manifest();
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("{}: cannot read run manifest: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: invalid run manifest: {e}", path.display()))
    }

    /// Writes `manifest.json` atomically.
    pub fn write(&self, layout: &RunLayout) -> std::io::Result<()> {
        let path = layout.manifest();
        fs::create_dir_all(layout.root())?;
        let tmp = crate::io::temporary_name(&path);
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        fs::write(&tmp, text + "\n")?;
        fs::rename(&tmp, &path)
    }
}
