//! A run killed with SIGKILL mid-step leaves only complete Parquet files.

use std::time::{Duration, Instant};

use tandem_schemas::layout::{Manifest, RunLayout};

use crate::bad_input::assert_only_complete_parquet;
use crate::common::*;

#[test]
fn sigkill_mid_run_leaves_only_complete_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Enough work that the run is still writing when it is killed.
    generated_pipeline(dir.path(), 40_000, 8, 4_000, 8, 10);
    let mut child = spawn_tandem(
        &["run", "pipeline.yaml", "--out", "runs", "--workers", "2"],
        dir.path(),
    );
    let started = Instant::now();
    // Kill once the first step is stored and later ones are being written.
    let first_step = |_: ()| {
        std::fs::read_dir(dir.path().join("runs"))
            .ok()
            .and_then(|mut runs| runs.next())
            .and_then(|run| {
                let run = run.ok()?.path();
                run.join("streams/verdicts/step=0").exists().then_some(run)
            })
    };
    let run = loop {
        if let Some(run) = first_step(()) {
            break run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never stored a step"
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    assert_only_complete_parquet(&run);
    let manifest = Manifest::read(&RunLayout::new(&run)).expect("manifest");
    assert!(manifest.steps_completed < 10, "killed before the end");
    // Every step the manifest counts as complete is fully stored: replay can trust it.
    let layout = RunLayout::new(&run);
    for step in 0..manifest.steps_completed {
        for stream in ["prompts", "rollouts", "verdicts"] {
            assert!(
                !layout.parts(stream, step).expect("parts").is_empty(),
                "{stream} step {step} missing"
            );
        }
    }
}
