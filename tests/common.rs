//! Data and helpers the integration tests share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout};

/// Runs a Python script kept in `tests/` with the interpreter scripts/test.sh (what CI runs)
/// provides in `TANDEM_PYTHON`, and returns its standard output parsed as JSON; `None`, with a
/// note on stderr, when `TANDEM_PYTHON` is not set, so a plain `cargo test` skips the check.
pub fn python_json(
    script: &str,
    args: &[&std::ffi::OsStr],
    what: &str,
) -> Option<serde_json::Value> {
    let Ok(python) = std::env::var("TANDEM_PYTHON") else {
        eprintln!("TANDEM_PYTHON is not set (scripts/test.sh sets it): {what} not checked");
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("json"))
}

/// Every example equals the row the Python writer reported, its columns named by `columns`
/// (`[id, question, answer, difficulty]`), in order; `what` names the file or layout.
pub fn assert_loaded_as_written(
    examples: &[tandem_datasets::Example],
    written: &serde_json::Value,
    [id, question, answer, difficulty]: [&str; 4],
    what: &str,
) {
    assert_eq!(
        examples.len(),
        written[id].as_array().map_or(0, Vec::len),
        "{what}"
    );
    for (i, example) in examples.iter().enumerate() {
        assert_eq!(example.id, written[id][i], "{what} row {i}");
        assert_eq!(example.question, written[question][i], "{what} row {i}");
        let text = |column: &str| written[column][i].as_str();
        assert_eq!(example.answer.as_deref(), text(answer), "{what} row {i}");
        assert_eq!(
            example.difficulty.as_deref(),
            text(difficulty),
            "{what} row {i}"
        );
    }
}

/// Writes a JSONL dataset of `prompts` arithmetic questions with `completions` stored answers
/// each; ids are deliberately unordered so that the exchange really spreads them.
pub fn write_dataset(path: &Path, prompts: usize, completions: usize, seed: u64) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut lines = String::new();
    for i in 0..prompts {
        let (a, b) = (next() % 1000, next() % 1000);
        let answer = a + b;
        let texts: Vec<String> = (0..completions)
            .map(|_| match next() % 4 {
                0 => {
                    "<think>hard</think> <unknown> I need external assistance </unknown>".to_owned()
                }
                1 => format!("<answer>{}</answer>", answer + 1),
                2 => "no answer at all".to_owned(),
                _ => format!("<think>{a}+{b}</think><answer>{answer}</answer>"),
            })
            .collect();
        let row = serde_json::json!({
            "uid": format!("q{:05}", (i * 7919) % 100_003),
            "problem": format!("What is {a} + {b}?"),
            "solution": answer,
            "meta": {"level": if a > 500 { "hard" } else { "easy" }},
            "responses": texts,
        });
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).expect("write dataset");
}

/// A pipeline over a dataset written by [`write_dataset`].
pub fn pipeline_yaml(
    dataset: &Path,
    prompts_per_step: usize,
    group_size: usize,
    steps: u64,
) -> String {
    format!(
        r#"run:
  name: test
  seed: 11
  prompts_per_step: {prompts_per_step}
  group_size: {group_size}
  steps: {steps}
stages:
  - id: prompts
    kind: source.jsonl
    params:
      path: {dataset}
      fields: {{ id: uid, question: problem, answer: solution, difficulty: meta.level, completions: responses }}
  - id: rollouts
    kind: generate.offline
  - id: verdicts
    kind: verify.exact
"#,
        dataset = dataset.display()
    )
}

/// Runs the `tandem` binary.
pub fn tandem(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .current_dir(cwd)
        .env("TANDEM_LOG", "warn")
        .output()
        .expect("run tandem")
}

/// Starts the `tandem` binary in the background, its output discarded (to be killed).
pub fn spawn_tandem(args: &[&str], cwd: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .current_dir(cwd)
        .env("TANDEM_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn tandem")
}

/// Every stored row of every stream of a run, by stream name, with run ids blanked (two runs
/// of the same pipeline differ only there) and rows in key order (so the part-file split and
/// arrival order do not matter).
pub fn stored_streams(run_dir: &Path) -> BTreeMap<String, Rows> {
    let layout = RunLayout::new(run_dir);
    let manifest = Manifest::read(&layout).expect("manifest");
    let mut out = BTreeMap::new();
    for entry in manifest.streams {
        let mut all = Rows::empty(entry.kind);
        for step in layout.steps(&entry.name).expect("steps") {
            for part in layout.parts(&entry.name, step).expect("parts") {
                all.append(Rows::read_parquet(entry.kind, &part).expect("read part"));
            }
        }
        all.set_run_id("");
        all.sort();
        out.insert(entry.name, all);
    }
    out
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The only run directory under `out`.
pub fn only_run(out: &Path) -> PathBuf {
    let runs: Vec<_> = std::fs::read_dir(out)
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "expected one run in {}: {runs:?}",
        out.display()
    );
    runs[0].clone()
}

/// Writes a dataset of `prompts` questions with `completions` stored answers each, and a pipeline
/// over it (`per_step` prompts × `group_size`, `steps` steps) into `dir`; returns the pipeline.
pub fn generated_pipeline(
    dir: &Path,
    prompts: usize,
    completions: usize,
    per_step: usize,
    group_size: usize,
    steps: u64,
) -> PathBuf {
    let data = dir.join("data.jsonl");
    write_dataset(&data, prompts, completions, prompts as u64);
    let pipeline = dir.join("pipeline.yaml");
    std::fs::write(&pipeline, pipeline_yaml(&data, per_step, group_size, steps))
        .expect("write pipeline");
    pipeline
}

/// Plans and runs a pipeline in-process with `workers` threads, under `out`.
pub fn run_in_process(pipeline: &Path, workers: usize, out: &Path) -> tandem_pipeline::RunSummary {
    let plan = tandem_pipeline::Plan::from_file(pipeline, &tandem_pipeline::PlanOptions::default())
        .expect("plan");
    let options = tandem_pipeline::RunOptions {
        workers,
        out_dir: out.to_owned(),
        ..Default::default()
    };
    tandem_pipeline::run(plan, options).expect("run")
}

/// Asserts that checkpoint `step` of runs `a` and `b` holds the same weights, optimiser state
/// and counters, byte for byte (`why` leads the message).
pub fn assert_same_checkpoint(a: &Path, b: &Path, step: u64, why: &str) {
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert_eq!(
            std::fs::read(RunLayout::new(a).checkpoint(step).join(file)).expect("a"),
            std::fs::read(RunLayout::new(b).checkpoint(step).join(file)).expect("b"),
            "{why}: {file} of checkpoint step-{step}"
        );
    }
}

/// Caps torch's threads in a test: `TANDEM_TEST_TORCH_THREADS`, else 1.
pub fn torch_threads() {
    let n = std::env::var("TANDEM_TEST_TORCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    tandem_stages::policy::set_threads(n);
}

/// Token ids from a JSON array (the parity fixtures').
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Floats from a JSON array (the parity fixtures' logits and log-probs).
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("floats")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

/// The largest elementwise |a - b| of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Writes (question, completion) pairs as the JSON Lines `learn.sft` pipelines read.
pub fn write_pairs(path: &Path, pairs: &[(&str, &str)]) {
    let lines: String = pairs
        .iter()
        .map(|(q, r)| serde_json::json!({ "question": q, "completions": [r] }).to_string() + "\n")
        .collect();
    std::fs::write(path, lines).expect("write pairs");
}

/// `dir/sft.yaml`: fine-tuning `model` (one torch thread) on the pairs at `data`, the shape
/// every SFT test shares. `run` is the run mapping's items (`name: sft, seed: 3, …`), `learn`
/// more of `learn.sft`'s params, one `key: value` each.
pub fn sft_pipeline(dir: &Path, data: &Path, model: &Path, run: &str, learn: &[&str]) -> PathBuf {
    let learn: String = learn.iter().map(|l| format!("      {l}\n")).collect();
    let yaml = format!(
        r#"run: {{ {run} }}
stages:
  - id: prompts
    kind: source.jsonl
    params: {{ path: '{data}', fields: {{ answer: null, completions: completions }} }}
  - {{ id: responses, kind: generate.offline }}
  - id: sft
    kind: learn.sft
    params:
      model: '{model}'
      threads: 1
{learn}"#,
        data = data.display(),
        model = model.display(),
    );
    let path = dir.join("sft.yaml");
    std::fs::write(&path, yaml).expect("write the pipeline");
    path
}

/// The cloud ledger without the latencies (the clock's, different in any two runs).
pub fn without_latency(rows: &Rows) -> Vec<tandem_schemas::CloudRecord> {
    let Rows::Cloud(rows) = rows else {
        panic!("cloud holds {:?}", rows.kind())
    };
    rows.iter()
        .map(|r| tandem_schemas::CloudRecord {
            latency_ms: 0.0,
            ..r.clone()
        })
        .collect()
}

/// The learner's metrics rows without the figures of time (`*seconds*`, `*per_second*`), which
/// differ in any two runs: what two runs of one pipeline must agree on.
pub fn without_timings(
    rows: &[tandem_schemas::MetricsRecord],
) -> Vec<(u64, u64, BTreeMap<String, f64>)> {
    rows.iter()
        .map(|m| {
            let mut values = m.values.clone();
            values.retain(|k, _| !k.contains("seconds") && !k.contains("per_second"));
            (m.step, m.policy_version, values)
        })
        .collect()
}

/// The run directory under `out` once its manifest says `steps` steps are stored (a run being
/// watched to be killed); fails after 300 s (`why` leads the message).
pub fn wait_for_stored_steps(out: &Path, steps: u64, why: &str) -> PathBuf {
    let started = std::time::Instant::now();
    loop {
        let stored = std::fs::read_dir(out)
            .ok()
            .and_then(|mut runs| runs.next())
            .and_then(|run| {
                let run = run.ok()?.path();
                let manifest = Manifest::read(&RunLayout::new(&run)).ok()?;
                (manifest.steps_completed >= steps).then_some(run)
            });
        if let Some(run) = stored {
            return run;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "{why}: no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
