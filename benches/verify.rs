//! Verifications per second of `verify.math` and `verify.countdown`, one thread, on the shipped
//! case files (the same math cases `benches/compare/verify_vs_math_verify.sh` gives the Python
//! `math-verify` package). Each math case prepares its reference and judges its response, as
//! `tandem verify` does per row.
//!
//!     cargo bench --bench verify

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use tandem_stages::verify::{
    CountdownConfig, CountdownProblem, CountdownVerifier, MathConfig, MathVerifier,
};

#[derive(Deserialize)]
struct MathCase {
    gold: String,
    prediction: String,
}

#[derive(Deserialize)]
struct CountdownCase {
    numbers: Vec<i64>,
    target: i64,
    prediction: String,
}

fn read<T: for<'de> Deserialize<'de>>(file: &str) -> Vec<T> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets/data")
        .join(file);
    std::fs::read_to_string(&path)
        .expect("the shipped case file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a case"))
        .collect()
}

fn verify(c: &mut Criterion) {
    let math: Vec<MathCase> = read("verify-math-cases.jsonl");
    let countdown: Vec<CountdownCase> = read("verify-countdown-cases.jsonl");
    let math_verifier = MathVerifier::new(MathConfig::default()).expect("defaults");
    let countdown_verifier = CountdownVerifier::new(CountdownConfig::default()).expect("defaults");

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(math.len() as u64));
    group.bench_function("math", |b| {
        b.iter(|| {
            math.iter()
                .filter(|case| {
                    let reference = math_verifier.reference(&case.gold);
                    math_verifier.judge(&case.prediction, &reference).correct
                })
                .count()
        })
    });
    group.throughput(Throughput::Elements(countdown.len() as u64));
    group.bench_function("countdown", |b| {
        b.iter(|| {
            countdown
                .iter()
                .filter(|case| {
                    let problem = CountdownProblem {
                        numbers: case.numbers.clone(),
                        target: case.target,
                    };
                    countdown_verifier.judge(&problem, &case.prediction).correct
                })
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
