//! `tandem experiment`: every method of a comparison trained from the same warm start and
//! evaluated at the same budget, one cell per method and seed, stored as ordinary runs; the
//! table's rows, recomputed from the stored evaluation runs; resuming never recomputes a
//! finished cell; bad files are refused before anything runs; a learned αc (dual ascent)
//! moves the call rate toward its target.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::tandem;

/// The CI-sized suite made tiny: a short warm start, two RL steps, a small test split.
const TINY: &str = r#"suite_set=[data.train=200, data.test=20, threads=1, "warm_start.set=[run.steps=20, stages.2.params.schedule.total_steps=20]", "train.set=[run.steps=2, stages.1.params.max_new_tokens=16]", eval.max_new_tokens=16]"#;

/// An experiment file beside a copy of the CI suite, with two methods.
fn experiment_file(dir: &Path, methods: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let configs = dir.join("configs");
    std::fs::create_dir_all(configs.join("demo")).expect("mkdir");
    for file in ["demo-ci.yaml", "demo/warm-start.yaml", "demo/train.yaml"] {
        std::fs::copy(repo.join("configs").join(file), configs.join(file)).expect("copy");
    }
    let file = configs.join("tiny.yaml");
    std::fs::write(
        &file,
        format!("name: tiny\nsuite: demo-ci.yaml\nseeds: [3]\nmethods:\n{methods}"),
    )
    .expect("write");
    file
}

const METHODS: &str = "  - name: task-tuning
    baselines: true
    set: [stages.1.params.template=arithmetic_task, stages.5.kind=advantage.grpo, \"stages.6={id: filter, kind: filter.none}\"]
  - name: gapg
";

fn run(dir: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
    run_with(dir, file, TINY, extra)
}

/// [`run`] with the suite's overrides `tiny` instead of [`TINY`].
fn run_with(dir: &Path, file: &Path, tiny: &str, extra: &[&str]) -> std::process::Output {
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let mut args = vec![
        "experiment".to_owned(),
        path(file),
        "--json".into(),
        "--out".into(),
        path(&dir.join("out")),
        "--cache".into(),
        path(&dir.join("cache")),
        "--jobs".into(),
        "2".into(),
        "--set".into(),
        tiny.into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    tandem(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir)
}

fn report(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "tandem experiment failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("experiment.json on stdout")
}

#[test]
fn an_experiment_trains_every_method_writes_the_table_and_resumes_without_recomputing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = experiment_file(dir.path(), METHODS);
    let first = report(&run(dir.path(), &file, &[]));
    assert_eq!(first["computed"], 2, "{first}");
    let cells = first["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 2);

    // Each cell is an RL run from the same warm start and an evaluation, stored under its own
    // directory with cell.json.
    let exp = PathBuf::from(first["dir"].as_str().expect("dir"));
    for cell in cells {
        let method = cell["method"].as_str().expect("method");
        let cell_dir = exp.join("seed-3").join(method);
        assert!(cell_dir.join("cell.json").is_file(), "{method}");
        let train_run = PathBuf::from(cell["train_run"].as_str().expect("train_run"));
        assert!(train_run.starts_with(&cell_dir), "{train_run:?}");
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(train_run.join("manifest.json")).expect("manifest"),
        )
        .expect("manifest parses");
        assert_eq!(manifest["steps_completed"], 2, "{manifest}");
        assert_eq!(cell["budget"], 0.3);
        assert_eq!(cell["help_per_step"].as_array().expect("per step").len(), 2);
    }
    // The method trained without the help option is the baselines' model: it has a router,
    // and its cloud-only figure is the row's.
    let tuning = cells
        .iter()
        .find(|c| c["method"] == "task-tuning")
        .expect("task-tuning cell");
    assert!(tuning["router"].is_object(), "{tuning}");
    let gapg = cells.iter().find(|c| c["method"] == "gapg").expect("gapg");
    assert!(gapg["router"].is_null(), "{gapg}");

    let rows: Vec<&str> = first["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        rows,
        [
            "cloud only",
            "task-tuning (device only)",
            "task-tuning + naive offloading",
            "task-tuning + learned router",
            "gapg"
        ]
    );
    let row = |name: &str| {
        first["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == name)
            .expect("row")
            .clone()
    };
    // Naive offloading sends exactly the budget, and its accuracy mixes device and cloud.
    let naive = row("task-tuning + naive offloading");
    assert_eq!(naive["call_ratio"][0], 0.3);
    let local = tuning["local_only"].as_f64().expect("local");
    let cloud = tuning["cloud_only"].as_f64().expect("cloud");
    let mixed = naive["overall_accuracy"][0].as_f64().expect("overall");
    assert!(
        (mixed - (0.7 * local + 0.3 * cloud)).abs() < 1e-9,
        "{naive}"
    );
    assert_eq!(
        row("cloud only")["overall_accuracy"][0],
        tuning["cloud_only"]
    );
    // The table equals a recomputation from the stored evaluation runs: each cell's two runs
    // (with and without the help option) read back from Parquet, the policy's asks sent in
    // the seeded order up to the budget.
    for cell in cells {
        let cell_dir = exp
            .join("seed-3")
            .join(cell["method"].as_str().expect("method"));
        let local = std::fs::read_dir(&cell_dir)
            .expect("cell dir")
            .map(|e| e.expect("entry").path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("eval-local-"))
            })
            .expect("the evaluation without the help option");
        let help = PathBuf::from(cell["eval_run"].as_str().expect("eval_run"));
        let (joined, _) = tandem_stages::eval::joined_outcomes(&help, &local).expect("runs");
        let n = joined.len() as f64;
        let outcomes: Vec<_> = joined.iter().map(|(o, _)| *o).collect();
        let ranking = tandem_stages::eval::ranking_for_policy(&outcomes, 3);
        let at = tandem_stages::eval::AtBudget::new(&outcomes, &ranking, 0.3);
        let device_only = joined.iter().filter(|(_, l)| *l).count() as f64 / n;
        let cloud_only = outcomes.iter().filter(|o| o.cloud_correct).count() as f64 / n;
        let close = |row: &Value, key: &str, want: f64| {
            let got = row[key][0].as_f64().expect("figure");
            assert!(
                (got - want).abs() < 1e-12,
                "{key}: {got}, recomputed {want}: {row}"
            );
            assert_eq!(row[key][1], 0.0, "one seed: no spread");
        };
        if cell["method"] == "gapg" {
            let policy = row("gapg");
            close(&policy, "call_ratio", at.call_rate);
            close(&policy, "conditional_accuracy", at.conditional_accuracy);
            close(&policy, "overall_accuracy", at.overall_accuracy);
        } else {
            close(
                &row("task-tuning (device only)"),
                "overall_accuracy",
                device_only,
            );
            close(&row("cloud only"), "overall_accuracy", cloud_only);
        }
    }
    for file in [
        "table.md",
        "experiment.json",
        "help_rate.png",
        "settings.json",
    ] {
        assert!(exp.join(file).is_file(), "{file}");
    }

    // The same command again: nothing is computed, the table is the same.
    let again = report(&run(dir.path(), &file, &[]));
    assert_eq!(again["computed"], 0, "{again}");
    assert_eq!(again["rows"], first["rows"]);

    // Other settings in the same directory are refused, and nothing is overwritten.
    let changed = run(dir.path(), &file, &["--set", "seeds=[4]"]);
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success(), "{stderr}");
    assert!(stderr.contains("other settings"), "{stderr}");
    assert!(exp.join("seed-3/gapg/cell.json").is_file());
}

#[test]
fn bad_experiment_files_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A method's override that the pipeline does not accept: named, with the method.
    let file = experiment_file(
        dir.path(),
        "  - name: gapg\n    set: [stages.4.params.alpha_cloud=high]\n",
    );
    let output = run(dir.path(), &file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("method gapg"), "{stderr}");
    assert!(stderr.contains("alpha_cloud"), "{stderr}");
    assert!(!dir.path().join("out/tiny").exists(), "nothing is written");

    // A method named twice, and an unknown key with its line.
    let file = experiment_file(dir.path(), "  - name: gapg\n  - name: gapg\n");
    let output = run(dir.path(), &file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("method \"gapg\" twice"), "{stderr}");
    let file = experiment_file(dir.path(), "  - name: gapg\n    sett: []\n");
    let output = run(dir.path(), &file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("tiny.yaml:"), "{stderr}");
    assert!(stderr.contains("unknown field `sett`"), "{stderr}");

    // A seed twice would compute the same cells twice.
    let file = experiment_file(dir.path(), "  - name: gapg\n");
    let output = run(dir.path(), &file, &["--set", "seeds=[3, 3]"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("seed 3 twice"), "{stderr}");
}

#[test]
fn dual_ascent_moves_the_call_rate_toward_its_target() {
    // The same warm start trained toward a call rate of 0 and of 1: the price of a call rises
    // in the first and falls in the second, and the policies ask accordingly.
    let dir = tempfile::tempdir().expect("temp dir");
    let method = |target: &str| {
        format!(
            "  - name: dual-{target}\n    set: [stages.4.params.target_call_rate={target}, \
             stages.4.params.dual_lr=0.1, stages.4.params.dual_kp=1.0, \
             \"stages.6={{id: filter, kind: filter.none}}\"]\n"
        )
    };
    let file = experiment_file(dir.path(), &(method("0") + &method("1")));
    let steps = 16;
    // A warm start long enough to ask for help, and room in a sample for a help block.
    let tiny = TINY
        .replace("run.steps=2,", &format!("run.steps={steps},"))
        .replace(
            "run.steps=20, stages.2.params.schedule.total_steps=20",
            "run.steps=300, stages.2.params.schedule.total_steps=300",
        )
        .replace("max_new_tokens=16]", "max_new_tokens=48]");
    let report = report(&run_with(dir.path(), &file, &tiny, &[]));
    let cells = report["cells"].as_array().expect("cells");
    let cell = |name: &str| {
        cells
            .iter()
            .find(|c| c["method"] == name)
            .unwrap_or_else(|| panic!("{name} in {report}"))
    };
    let help = |name: &str| -> Vec<f64> {
        cell(name)["help_per_step"]
            .as_array()
            .expect("per step")
            .iter()
            .map(|p| p[1].as_f64().expect("rate"))
            .collect()
    };
    let gammas = |name: &str| -> Vec<f64> {
        let run = PathBuf::from(cell(name)["train_run"].as_str().expect("train_run"));
        let streams = crate::common::stored_streams(&run);
        let tandem_schemas::io::Rows::Metrics(metrics) = &streams["metrics"] else {
            panic!("metrics")
        };
        metrics.iter().map(|m| m.values["reward.gamma"]).collect()
    };
    let late =
        |rates: &[f64]| rates[rates.len() / 2..].iter().sum::<f64>() / (rates.len() / 2) as f64;
    let (never, always) = (help("dual-0"), help("dual-1"));
    let (priced, free) = (gammas("dual-0"), gammas("dual-1"));
    assert_eq!((never.len(), always.len()), (steps, steps));
    // The same start (αc 0.4 of the suite: γ 0.6), and the same first step.
    assert_eq!((priced[0], free[0]), (0.6, 0.6));
    assert_eq!(never[0], always[0]);
    // Above the target the price of a call rises, below it falls, within [0, αa].
    let context = format!("γ toward 0: {priced:?}\nγ toward 1: {free:?}");
    assert!(priced.iter().all(|g| (0.6..=1.0).contains(g)), "{context}");
    assert!(priced.iter().any(|g| *g > 0.6), "{context}");
    assert!(
        free.iter().skip(1).all(|g| (0.0..0.6).contains(g)),
        "{context}"
    );
    eprintln!("call rates toward 1: {always:?}\ntoward 0: {never:?}\n{context}");
    assert!(
        late(&always) > late(&never) + 0.1,
        "call rate over the second half: {:.3} toward 1, {:.3} toward 0\n{always:?}\n{never:?}",
        late(&always),
        late(&never)
    );
    // Toward 0 the call rate turns back down once the price is up.
    let peak = never.iter().copied().fold(0.0, f64::max);
    let end = never[steps - 4..].iter().sum::<f64>() / 4.0;
    assert!(
        end < peak - 0.1,
        "toward 0: peak {peak:.3}, last 4 steps {end:.3}"
    );
}
