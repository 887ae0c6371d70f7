//! A plain sequential executor of a plan: every stage over all of a step's groups, in order,
//! with no dataflow. It is the oracle the dataflow is tested against, and a way to run a
//! pipeline inside another program without threads.

use tandem_schemas::Group;
use tandem_stages::{Built, StageError, StepContext};

use crate::plan::Plan;

/// Runs every step of `plan` and returns the finished groups of each step, sorted by
/// `prompt_id`. Nothing is written (sinks aside).
pub fn run_reference(mut plan: Plan, run_id: &str) -> Result<Vec<Vec<Group>>, StageError> {
    let ids: Vec<_> = plan.stages.iter().map(|s| s.id.clone()).collect();
    let mut out = Vec::new();
    for step in 0..plan.steps {
        let ctx = |i: usize| StepContext {
            run_id: run_id.into(),
            stage_id: ids[i].clone(),
            step,
            worker: 0,
            workers: 1,
            run_dir: None,
            stage_seconds: Vec::new(),
        };
        let mut groups = Vec::new();
        for (i, stage) in plan.built.iter_mut().enumerate() {
            match stage {
                // Whole-step stages and sinks see a step in prompt-id order (the contract);
                // for the others the order does not matter, so sort once here.
                Built::Source(s) => {
                    groups = s.step(&ctx(i))?;
                    groups.sort_by(|a, b| a.prompt_id().cmp(b.prompt_id()));
                }
                Built::Generator(g) => g.generate(&mut groups, &ctx(i))?,
                Built::Group(g) => g.process(&mut groups, &ctx(i))?,
                Built::Sink(s) => s.consume(&mut groups, &ctx(i))?,
            }
        }
        out.push(groups);
    }
    for stage in plan.built.iter_mut() {
        if let Built::Sink(s) = stage {
            s.finish()?;
        }
    }
    Ok(out)
}
