//! Benchmarks of the dataflow runtime.
//!
//! Sample rows per second through source.jsonl → generate.offline → verify.exact → four
//! pass-through group stages, with materialisation on and off, on 1 and 2 workers. The
//! pass-through kind is registered here the way a Rust user registers their own.
//!
//!     cargo bench --bench pipeline_throughput

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tandem_pipeline::{Plan, PlanOptions, RunOptions};
use tandem_schemas::{Facet, Facets, Group};
use tandem_stages::registry::{KindSpec, StageConfig, build_with};
use tandem_stages::{BuildContext, Built, GroupStage, Registry, Role, StepContext};

const PROMPTS: usize = 4096;
const GROUP: usize = 8;
const PER_STEP: usize = 512;

/// A group stage that reads samples and adds nothing: the cost of the runtime itself.
#[derive(serde::Deserialize)]
struct PassThrough {}

impl StageConfig for PassThrough {
    fn build(self, _ctx: &BuildContext) -> tandem_stages::Result<Built> {
        Ok(Built::Group(Box::new(self)))
    }
}

impl GroupStage for PassThrough {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Samples])
    }
    fn provides(&self) -> Facets {
        Facets::NONE
    }
    fn process(&mut self, groups: &mut [Group], _ctx: &StepContext) -> tandem_stages::Result<()> {
        std::hint::black_box(groups);
        Ok(())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::builtin();
    registry.register(KindSpec {
        name: "bench.pass",
        role: Role::Group,
        summary: "passes groups on",
        build: build_with::<PassThrough>,
    });
    registry
}

fn write_inputs(dir: &Path) -> PathBuf {
    let data = dir.join("data.jsonl");
    let mut lines = String::new();
    for i in 0..PROMPTS {
        let completions: Vec<String> = (0..GROUP)
            .map(|j| format!("<think>{i} plus {j} makes a few words of reasoning text here</think> <answer>{}</answer>", i + j % 2))
            .collect();
        let row = serde_json::json!({"id": format!("p{i}"), "question": format!("What is {i} + 0?"), "answer": i, "completions": completions});
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    std::fs::write(&data, lines).expect("write data");
    let pipeline = dir.join("bench.yaml");
    let pass: String = (0..4)
        .map(|i| format!("  - {{ id: pass{i}, kind: bench.pass }}\n"))
        .collect();
    let yaml = format!(
        "run: {{ seed: 1, prompts_per_step: {PER_STEP}, group_size: {GROUP} }}\nstages:\n  - {{ id: prompts, kind: source.jsonl, params: {{ path: {}, fields: {{ id: id, completions: completions }} }} }}\n  - {{ id: rollouts, kind: generate.offline }}\n  - {{ id: verdicts, kind: verify.exact }}\n{pass}",
        data.display()
    );
    std::fs::write(&pipeline, yaml).expect("write pipeline");
    pipeline
}

fn throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = write_inputs(dir.path());
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements((PROMPTS * GROUP) as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .warm_up_time(Duration::from_secs(2));
    for workers in [1, 2] {
        for materialize in [false, true] {
            group.bench_function(
                format!("workers={workers}/materialize={materialize}"),
                |b| {
                    // Loading and validating the pipeline is set-up; the run itself is timed.
                    let plan = || {
                        Plan::from_file_with(&pipeline, &PlanOptions::default(), registry())
                            .expect("plan")
                    };
                    let run = |plan| {
                        let out = dir.path().join("runs");
                        let options = RunOptions {
                            cluster: None,
                            workers,
                            out_dir: out.clone(),
                            materialize,
                            on_step: None,
                            parent: None,
                        };
                        let summary = tandem_pipeline::run(plan, options).expect("run");
                        assert_eq!(summary.samples, (PROMPTS * GROUP) as u64);
                        std::fs::remove_dir_all(&out).expect("clean");
                    };
                    b.iter_batched(plan, run, BatchSize::PerIteration)
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
