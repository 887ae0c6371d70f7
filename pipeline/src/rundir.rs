//! Creating a run directory and keeping its manifest current.

use std::collections::BTreeMap;

use tandem_schemas::layout::{Manifest, RunLayout, RunStatus, StreamEntry};
use tandem_schemas::{SCHEMA_VERSION, StreamKind};

use crate::plan::Plan;

// Run directories are made the same way by runs and by `tandem serve`'s ledger, which knows
// no dataflow: the function lives with the layout.
pub use tandem_schemas::layout::create_run_dir;

/// The streams a plan materialises, as the manifest lists them.
pub fn stream_entries(plan: &Plan) -> Vec<StreamEntry> {
    let mut entries: Vec<StreamEntry> = plan
        .stages
        .iter()
        .filter(|s| s.materialize)
        .flat_map(|s| {
            s.streams().into_iter().map(|(name, facet)| StreamEntry {
                name,
                kind: facet.stream(),
                stage: s.id.to_string(),
            })
        })
        .collect();
    for stage in &plan.stages {
        for (name, kind) in &stage.sink_streams {
            entries.push(StreamEntry {
                name: name.clone(),
                kind: *kind,
                stage: stage.id.to_string(),
            });
        }
    }
    entries.push(StreamEntry {
        name: "errors".into(),
        kind: StreamKind::Errors,
        stage: String::new(),
    });
    entries
}

/// The manifest of a run that is starting.
pub fn initial_manifest(
    plan: &Plan,
    run_id: &str,
    workers: usize,
    parent: Option<String>,
) -> Manifest {
    let versions = BTreeMap::from([
        ("tandem".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("schema".to_owned(), SCHEMA_VERSION.to_string()),
    ]);
    Manifest {
        run_id: run_id.to_owned(),
        status: RunStatus::Running,
        pipeline_file: plan.file.display().to_string(),
        config: plan.document.to_json(),
        seed: plan.settings.seed,
        workers,
        processes: 1,
        versions,
        streams: stream_entries(plan),
        steps_completed: 0,
        parent,
        error: None,
        checkpointed: plan.stages.iter().any(|s| s.updates_policy),
        resumed_at: Vec::new(),
    }
}

/// Writes the manifest, turning an I/O failure into a message naming the file.
pub fn write_manifest(layout: &RunLayout, manifest: &Manifest) -> Result<(), String> {
    manifest.write(layout).map_err(|e| {
        format!(
            "{}: cannot write manifest: {e}",
            layout.manifest().display()
        )
    })
}
