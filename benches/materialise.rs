//! Where the time of storing a step goes: the phases a Store operator and its writer run for
//! 32,768 sample rows (clone out of the groups, sort, serde_arrow → Arrow, Parquet with zstd).
//!
//!     cargo bench --bench materialise

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tandem_schemas::io::Rows;
use tandem_schemas::{FinishReason, SampleRecord};

const ROWS: usize = 32_768;

fn samples() -> Vec<SampleRecord> {
    (0..ROWS)
        .map(|i| SampleRecord {
            run_id: "bench-20261120-000000".into(),
            step: 0,
            prompt_id: format!("p{}", i / 8),
            sample_idx: (i % 8) as u32,
            policy_version: 0,
            text: format!("<think>{i} plus {} makes a few words of reasoning text here</think> <answer>{i}</answer>", i % 8),
            token_ids: Vec::new(),
            logprobs: Vec::new(),
            finish_reason: FinishReason::External,
            asked_help: false,
        })
        .collect()
}

fn phases(c: &mut Criterion) {
    let rows = samples();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir
        .path()
        .join("samples")
        .join("step=0")
        .join("part-0.parquet");
    let mut group = c.benchmark_group("materialise_32768_samples");
    group
        .throughput(Throughput::Elements(ROWS as u64))
        .sample_size(20);
    group.bench_function("clone", |b| b.iter(|| rows.clone()));
    group.bench_function("sort", |b| {
        b.iter_batched(
            || Rows::Samples(rows.iter().rev().cloned().collect()),
            |mut r| r.sort(),
            BatchSize::LargeInput,
        )
    });
    let sorted = Rows::Samples(rows.clone());
    group.bench_function("to_arrow", |b| b.iter(|| sorted.to_batch().expect("arrow")));
    group.bench_function("write_part", |b| {
        b.iter(|| sorted.write_part(&path).expect("write"))
    });
    group.finish();
}

criterion_group!(benches, phases);
criterion_main!(benches);
