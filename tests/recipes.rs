//! The paper's recipe configs (`configs/*-gapg.yaml` and the baselines) run as shipped, pointed
//! at a tiny model, a few problems and the simulated cloud through their environment variables,
//! with only the sizes turned down by `--set`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tandem_schemas::io::Rows;

use crate::cloud_sim::CloudSim;
use crate::common::{only_run, stored_streams};

fn model_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tandem-init")
}

/// Countdown problems in the paper's words, with the numbers and target as the answer.
fn countdown_data(path: &Path) {
    let lines: String = [([3, 5, 7], 22), ([2, 9, 4], 17), ([8, 6, 1], 13), ([5, 5, 2], 20)]
        .iter()
        .enumerate()
        .map(|(i, (numbers, target))| {
            let question = format!(
                "Using the numbers {numbers:?}, create an equation that equals {target}. You can use basic arithmetic operations (+, -, *, /) and each number can only be used once."
            );
            let answer = serde_json::json!({ "numbers": numbers, "target": target }).to_string();
            let difficulty = if i % 2 == 0 { "easy" } else { "hard" };
            serde_json::json!({ "id": format!("cd-{i}"), "question": question, "answer": answer, "difficulty": difficulty })
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, lines).expect("write countdown data");
}

/// A MATH-lighteval-like `data/` directory: one Parquet shard with problem, solution, level.
fn math_data(dir: &Path) {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::record_batch::RecordBatch;
    std::fs::create_dir_all(dir).expect("mkdir");
    let problems: Vec<String> = (1..=4)
        .map(|i| format!("What is {i} + {}?", i * 3))
        .collect();
    let solutions: Vec<String> = (1..=4)
        .map(|i| format!("Add them: the sum is $\\boxed{{{}}}$.", i * 4))
        .collect();
    let levels: Vec<String> = (1..=4).map(|i| format!("Level {i}")).collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("problem", Arc::new(StringArray::from(problems))),
        ("solution", Arc::new(StringArray::from(solutions))),
        ("level", Arc::new(StringArray::from(levels))),
    ];
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = std::fs::File::create(dir.join("train-00000-of-00001.parquet")).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

/// Runs a shipped config with the sizes turned down; returns its stored streams.
fn run_recipe(
    config: &str,
    data: &Path,
    cloud: &CloudSim,
    out: &Path,
) -> std::collections::BTreeMap<String, Rows> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("run")
        .arg(repo.join("configs").join(config))
        .arg("--out")
        .arg(out)
        .args([
            "--set",
            "run.steps=2",
            "--set",
            "run.prompts_per_step=4",
            "--set",
            "run.group_size=2",
            "--set",
            "stages.1.params.max_new_tokens=6",
        ])
        .env("MODEL", model_dir())
        .env("DATA", data)
        .env("CLOUD_BASE_URL", &cloud.base)
        .env("TANDEM_LOG", "warn")
        .output()
        .expect("run tandem");
    assert!(
        output.status.success(),
        "{config}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stored_streams(&only_run(out))
}

#[test]
fn the_paper_recipes_and_baselines_run_as_shipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let countdown = dir.path().join("countdown.jsonl");
    countdown_data(&countdown);
    let math = dir.path().join("math/data");
    math_data(&math);
    let tag_cloud = CloudSim::start(&[]);
    let boxed_cloud = CloudSim::start(&["--answer-format", "boxed"]);
    struct Recipe<'a> {
        config: &'a str,
        data: &'a Path,
        cloud: &'a CloudSim,
        /// Whether it offers help (and so has a cloud stage).
        helps: bool,
        estimator: &'a str,
        /// The filter buckets it may put prompts in.
        buckets: &'a [&'a str],
    }
    let recipe = |config, data, cloud, helps, estimator, buckets| Recipe {
        config,
        data,
        cloud,
        helps,
        estimator,
        buckets,
    };
    let adaptive: &[&str] = &["D1", "D2", "dropped"];
    let recipes = [
        recipe(
            "countdown-gapg.yaml",
            &countdown,
            &tag_cloud,
            true,
            "gapg",
            adaptive,
        ),
        recipe(
            "countdown-task-tuning.yaml",
            &countdown,
            &tag_cloud,
            false,
            "grpo",
            &["all"],
        ),
        recipe(
            "countdown-collab-drgrpo.yaml",
            &countdown,
            &tag_cloud,
            true,
            "dr_grpo",
            &["all"],
        ),
        recipe(
            "math-gapg.yaml",
            &math,
            &boxed_cloud,
            true,
            "gapg",
            adaptive,
        ),
        recipe(
            "math-task-tuning.yaml",
            &math,
            &boxed_cloud,
            false,
            "grpo",
            &["all"],
        ),
        recipe(
            "math-collab-drgrpo.yaml",
            &math,
            &boxed_cloud,
            true,
            "dr_grpo",
            &["all"],
        ),
    ];
    for (i, r) in recipes.iter().enumerate() {
        let (config, estimator) = (r.config, r.estimator);
        let streams = run_recipe(
            config,
            r.data,
            r.cloud,
            &dir.path().join(format!("runs-{i}")),
        );
        let Rows::Samples(samples) = &streams["rollouts"] else {
            panic!("{config}: samples")
        };
        assert_eq!(samples.len(), 16, "{config}: 2 steps × 4 prompts × 2");
        assert_eq!(
            streams.contains_key("cloud"),
            r.helps,
            "{config}: cloud stage"
        );
        let Rows::Advantages(advantages) = &streams["advantage"] else {
            panic!("{config}: advantages")
        };
        assert!(
            advantages.iter().all(|a| a.estimator == estimator),
            "{config}: {advantages:?}"
        );
        let Rows::Filter(filter) = &streams["filter"] else {
            panic!("{config}: filter")
        };
        assert!(
            filter
                .iter()
                .all(|f| r.buckets.contains(&f.bucket.as_str())),
            "{config}: {filter:?}"
        );
        let Rows::Metrics(metrics) = &streams["metrics"] else {
            panic!("{config}: metrics")
        };
        assert_eq!(metrics.len(), 2, "{config}");
        if config.starts_with("math-") {
            // `preset: math-lighteval`: the reference is the last \boxed{} of the solution.
            let Rows::Prompts(prompts) = &streams["prompts"] else {
                panic!("{config}: prompts")
            };
            assert!(
                prompts
                    .iter()
                    .all(|p| ["4", "8", "12", "16"].contains(&p.answer.as_deref().unwrap_or(""))),
                "{config}: {prompts:?}"
            );
        }
        let Rows::Verdicts(verdicts) = &streams["verdicts"] else {
            panic!("{config}: verdicts")
        };
        assert!(
            verdicts.iter().filter(|v| v.sample_idx.is_some()).count() == 16,
            "{config}: a verdict per sample"
        );
    }
    tag_cloud.stop();
    boxed_cloud.stop();
}
