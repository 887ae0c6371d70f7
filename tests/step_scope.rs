//! A step-scope group stage sees every group of a step at once, whatever the worker count.

use tandem_pipeline::reference::run_reference;
use tandem_pipeline::{Plan, PlanOptions, RunOptions};
use tandem_schemas::io::{Rows, facet_rows};
use tandem_schemas::{Facet, Facets, FilterRecord, Group};
use tandem_stages::registry::{KindSpec, StageConfig, build_with};
use tandem_stages::{BuildContext, Built, GroupStage, Registry, Role, Scope, StepContext};

use crate::common::*;

/// Keeps the first half of each step's prompts (in prompt-id order), as a batch-level filter
/// does; its reason records how many groups it saw, which only a whole step gets right.
#[derive(serde::Deserialize)]
struct KeepFirstHalf {}

impl StageConfig for KeepFirstHalf {
    fn build(self, _ctx: &BuildContext) -> tandem_stages::Result<Built> {
        Ok(Built::Group(Box::new(self)))
    }
}

impl GroupStage for KeepFirstHalf {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }
    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Filter])
    }
    fn scope(&self) -> Scope {
        Scope::Step
    }
    fn process(&mut self, groups: &mut [Group], _ctx: &StepContext) -> tandem_stages::Result<()> {
        let n = groups.len();
        for (rank, group) in groups.iter_mut().enumerate() {
            group.filter = Some(FilterRecord {
                run_id: group.prompt.run_id.clone(),
                step: group.prompt.step,
                prompt_id: group.prompt.prompt_id.clone(),
                kept: rank < n / 2,
                bucket: if rank < n / 2 {
                    "first_half"
                } else {
                    "dropped"
                }
                .into(),
                reason: format!("rank {rank} of {n}"),
            });
        }
        Ok(())
    }
}

fn plan(pipeline: &std::path::Path) -> Plan {
    let mut registry = Registry::builtin();
    registry.register(KindSpec {
        name: "test.keep_first_half",
        role: Role::Group,
        summary: "",
        build: build_with::<KeepFirstHalf>,
    });
    Plan::from_file_with(pipeline, &PlanOptions::default(), registry).expect("plan")
}

#[test]
fn step_scope_stage_sees_whole_steps_with_1_and_4_workers_120_prompts_batch24() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = generated_pipeline(dir.path(), 120, 2, 24, 2, 5);
    // The filter sits between the generator and the verifier, so the groups must be spread
    // over the workers again after it.
    let yaml = std::fs::read_to_string(&pipeline).expect("read").replace(
        "  - id: verdicts\n",
        "  - id: half\n    kind: test.keep_first_half\n  - id: verdicts\n",
    );
    std::fs::write(&pipeline, yaml).expect("write");

    let mut stored = Vec::new();
    for workers in [1, 4] {
        let options = RunOptions {
            cluster: None,
            workers,
            out_dir: dir.path().join(format!("runs{workers}")),
            ..RunOptions::default()
        };
        let run = tandem_pipeline::run(plan(&pipeline), options).expect("run");
        stored.push(stored_streams(&run.run_dir));
    }
    assert_eq!(stored[0], stored[1], "1 and 4 workers store the same rows");

    let reference: Vec<Group> = run_reference(plan(&pipeline), "")
        .expect("reference")
        .into_iter()
        .flatten()
        .collect();
    let mut expected = facet_rows(Facet::Filter, &reference);
    expected.sort();
    assert_eq!(stored[1]["half"], expected);
    let Rows::Filter(filter) = &stored[1]["half"] else {
        unreachable!()
    };
    assert_eq!(filter.len(), 120);
    assert!(
        filter.iter().all(|f| f.reason.ends_with(" of 24")),
        "every call saw a whole step"
    );
    assert_eq!(filter.iter().filter(|f| f.kept).count(), 60);
    // The stage after the filter judged every sample.
    assert_eq!(stored[1]["verdicts"].len(), 240);
}
