//! Running the demo's pipeline files: the demo's values fill their `${VARS}` (the environment
//! fills the rest), then `set` overrides apply, then the run goes as `tandem run` would.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use tandem_pipeline::yaml::Document;
use tandem_pipeline::{Plan, RunOptions, RunSummary};
use tandem_schemas::layout::RunLayout;
use tandem_stages::Registry;
use tandem_stages::policy;

use super::config::{PipelineRef, Source};
use crate::progress::progress_labelled;

/// Plans `pipeline` with `vars` (the environment fills the rest), then its `set` overrides:
/// everything `tandem run` checks before it starts.
pub fn plan_pipeline(
    source: &Source,
    pipeline: &PipelineRef,
    vars: &[(&str, String)],
) -> Result<Plan> {
    let path = source.path(&pipeline.pipeline);
    let mut document = Document::parse(&path, &source.read(&pipeline.pipeline)?)?;
    document.interpolate_env(&|name| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var(name).ok())
    })?;
    for set in &pipeline.set {
        document.set(set)?;
    }
    Ok(Plan::from_document(document, Registry::builtin())?)
}

/// Plans `pipeline` with `vars`, runs it into `runs` with a progress bar labelled `label`.
pub fn run_pipeline(
    source: &Source,
    pipeline: &PipelineRef,
    vars: &[(&str, String)],
    runs: &Path,
    label: &str,
) -> Result<RunSummary> {
    let plan = plan_pipeline(source, pipeline, vars)?;
    let path = source.path(&pipeline.pipeline);
    eprintln!("{label}: {} step(s) of {}", plan.steps, path.display());
    let (bar, on_step) = progress_labelled(plan.steps, 0, label);
    let result = tandem_pipeline::run(
        plan,
        RunOptions {
            cluster: None,
            workers: 1,
            out_dir: runs.to_owned(),
            materialize: true,
            on_step: Some(on_step),
            parent: None,
        },
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = result?;
    eprintln!("{label}: {}", summary.run_dir.display());
    Ok(summary)
}

/// The checkpoint a finished learning run saved after its last step, as a whole model
/// directory; `learner` names the kind the pipeline must end with, for the error. A LoRA run's
/// checkpoint is an adapter: it is merged into the base it names, at `<run>/merged/step-<n>`,
/// so the evaluations load it like any model.
pub fn final_checkpoint(summary: &RunSummary, learner: &str) -> Result<PathBuf> {
    let run = summary.run_dir.display();
    let Some(last) = summary.steps.checked_sub(1) else {
        bail!("{run}: the run took no step");
    };
    let checkpoint = RunLayout::new(&summary.run_dir).checkpoint(last);
    if policy::is_adapter_dir(&checkpoint) {
        let (_, base) = policy::read_adapter_config(&checkpoint)?;
        let Some(base) = base else {
            bail!(
                "{}: the adapter names no base_model_name_or_path",
                checkpoint.display()
            );
        };
        let merged = summary.run_dir.join("merged").join(format!("step-{last}"));
        policy::merge_adapter(Path::new(&base), &checkpoint, &merged, None)?;
        return Ok(merged);
    }
    if !checkpoint.join("config.json").exists() {
        bail!(
            "{run}: no final checkpoint at {}; the pipeline must end with {learner}",
            checkpoint.display()
        );
    }
    Ok(checkpoint)
}
