//! `tandem report`: its metrics equal a plain recomputation from the stored Parquet, a re-run
//! after more steps reads only the new steps' rows, the plots are valid PNG and SVG, and the
//! comparison of two runs counts exactly the prompts that changed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus, StreamEntry};
use tandem_schemas::{
    CloudRecord, PromptRecord, RewardRecord, SampleRecord, StreamKind, Target, VerdictRecord,
};

use crate::common::{stored_streams, tandem};

/// Who asks, who is right: functions of (step, prompt index, sample index).
struct Behaviour {
    prompts: usize,
    group: u32,
    asked: fn(u64, usize, u32) -> bool,
    local: fn(u64, usize, u32) -> bool,
    cloud: fn(u64, usize) -> bool,
}

fn mix(step: u64, p: usize, s: u32) -> u64 {
    let mut x = step
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(p as u64 * 1_000_003 + u64::from(s) * 7919);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

fn random() -> Behaviour {
    Behaviour {
        prompts: 6,
        group: 4,
        asked: |st, p, s| mix(st, p, s).is_multiple_of(3),
        local: |st, p, s| mix(st + 17, p, s).is_multiple_of(2),
        cloud: |st, p| !mix(st + 31, p, 0).is_multiple_of(4),
    }
}

/// Writes steps `steps` of a run (every stream the report reads); returns the rows written.
fn write_steps(run: &Path, steps: std::ops::Range<u64>, b: &Behaviour) -> u64 {
    let layout = RunLayout::new(run);
    let mut written = 0;
    for step in steps {
        let (mut prompts, mut samples, mut verdicts, mut rewards, mut cloud) =
            (vec![], vec![], vec![], vec![], vec![]);
        for p in 0..b.prompts {
            let prompt_id = format!("q{p}");
            prompts.push(PromptRecord {
                step,
                prompt_id: prompt_id.clone(),
                source: format!("{}:{p}", if p % 3 == 0 { "a.jsonl" } else { "b.jsonl" }),
                difficulty: (p % 4 != 3).then(|| ["easy", "hard"][p % 2].to_owned()),
                ..PromptRecord::default()
            });
            let mut any_asked = false;
            for s in 0..b.group {
                let asked_help = (b.asked)(step, p, s);
                any_asked |= asked_help;
                samples.push(SampleRecord {
                    step,
                    prompt_id: prompt_id.clone(),
                    sample_idx: s,
                    asked_help,
                    text: "some text".into(),
                    ..SampleRecord::default()
                });
                verdicts.push(VerdictRecord {
                    step,
                    prompt_id: prompt_id.clone(),
                    sample_idx: Some(s),
                    target: Target::Local,
                    correct: (b.local)(step, p, s),
                    method: "exact".into(),
                    ..VerdictRecord::default()
                });
                rewards.push(RewardRecord {
                    step,
                    prompt_id: prompt_id.clone(),
                    sample_idx: s,
                    reward: (mix(step, p, s) % 1000) as f64 / 997.0 - 0.3,
                    ..RewardRecord::default()
                });
            }
            if any_asked {
                verdicts.push(VerdictRecord {
                    step,
                    prompt_id: prompt_id.clone(),
                    sample_idx: None,
                    target: Target::Cloud,
                    correct: (b.cloud)(step, p),
                    method: "exact".into(),
                    ..VerdictRecord::default()
                });
                cloud.push(CloudRecord {
                    step,
                    prompt_id,
                    tokens_in: 100 + p as u64,
                    tokens_out: 7 * step,
                    cost_usd: 0.001 * (p as f64 + 1.0) / 3.0,
                    ..CloudRecord::default()
                });
            }
        }
        // Two parts a step for samples, as two workers would write them.
        let half = samples.len() / 2;
        let parts = [
            ("prompts", Rows::Prompts(prompts), 0),
            ("rollouts", Rows::Samples(samples[..half].to_vec()), 0),
            ("rollouts", Rows::Samples(samples[half..].to_vec()), 1),
            ("verdicts", Rows::Verdicts(verdicts), 0),
            ("reward", Rows::Rewards(rewards), 0),
            ("cloud", Rows::Cloud(cloud), 0),
        ];
        for (stream, mut rows, worker) in parts {
            rows.set_run_id(&run.file_name().expect("name").to_string_lossy());
            written += rows.len() as u64;
            rows.write_part(&layout.part(stream, step, worker))
                .expect("write part");
        }
    }
    written
}

fn write_manifest(run: &Path, steps_completed: u64, streams: &[(&str, StreamKind)]) {
    let manifest = Manifest {
        run_id: run
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned(),
        status: RunStatus::Running,
        pipeline_file: "synthetic.yaml".into(),
        config: Value::Null,
        seed: 0,
        workers: 2,
        processes: 1,
        versions: BTreeMap::new(),
        streams: streams
            .iter()
            .map(|(name, kind)| StreamEntry {
                name: (*name).into(),
                kind: *kind,
                stage: (*name).into(),
            })
            .collect(),
        steps_completed,
        parent: None,
        error: None,
        checkpointed: false,
        resumed_at: vec![],
    };
    manifest.write(&RunLayout::new(run)).expect("manifest");
}

const STREAMS: &[(&str, StreamKind)] = &[
    ("prompts", StreamKind::Prompts),
    ("rollouts", StreamKind::Samples),
    ("cloud", StreamKind::Cloud),
    ("verdicts", StreamKind::Verdicts),
    ("reward", StreamKind::Rewards),
];

fn report_json(args: &[&str], cwd: &Path) -> Value {
    let mut all = vec!["report", "--json"];
    all.extend_from_slice(args);
    let out = tandem(&all, cwd);
    assert!(
        out.status.success(),
        "tandem report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report prints JSON")
}

/// The reference: counts from every stored row of steps `< steps`, without the report's code.
#[derive(Debug, Default, Clone, Copy)]
struct Plain {
    samples: u64,
    asked: u64,
    local_correct: u64,
    kept_correct: u64,
    cloud_correct: u64,
    rewards: u64,
    reward_sum: f64,
    cloud_calls: u64,
    cloud_tokens: u64,
    cloud_cost: f64,
}

/// (step or None for overall, breakdown) → counts.
fn plain(run: &Path, steps: u64) -> BTreeMap<(Option<u64>, String), Plain> {
    let streams = stored_streams(run);
    let (Rows::Prompts(prompts), Rows::Samples(samples), Rows::Verdicts(verdicts)) = (
        &streams["prompts"],
        &streams["rollouts"],
        &streams["verdicts"],
    ) else {
        panic!("streams of the wrong kind")
    };
    let (Rows::Rewards(rewards), Rows::Cloud(cloud)) = (&streams["reward"], &streams["cloud"])
    else {
        panic!("streams of the wrong kind")
    };
    let mut labels: BTreeMap<(u64, &str), Vec<String>> = BTreeMap::new();
    for p in prompts {
        let source = p
            .source
            .rsplit_once(':')
            .map_or(p.source.as_str(), |(s, _)| s);
        labels.insert(
            (p.step, &p.prompt_id),
            vec![
                "all".into(),
                format!("difficulty={}", p.difficulty.as_deref().unwrap_or("(none)")),
                format!("source={source}"),
            ],
        );
    }
    let mut out: BTreeMap<(Option<u64>, String), Plain> = BTreeMap::new();
    let mut add = |step: u64, prompt: &str, f: &dyn Fn(&mut Plain)| {
        for label in &labels[&(step, prompt)] {
            f(out.entry((Some(step), label.clone())).or_default());
            f(out.entry((None, label.clone())).or_default());
        }
    };
    for s in samples.iter().filter(|s| s.step < steps) {
        let local = verdicts.iter().any(|v| {
            v.step == s.step
                && v.prompt_id == s.prompt_id
                && v.sample_idx == Some(s.sample_idx)
                && v.correct
        });
        let cloud = verdicts.iter().any(|v| {
            v.step == s.step && v.prompt_id == s.prompt_id && v.target == Target::Cloud && v.correct
        });
        let asked = s.asked_help;
        add(s.step, &s.prompt_id, &|t| {
            t.samples += 1;
            t.asked += u64::from(asked);
            t.local_correct += u64::from(local);
            t.kept_correct += u64::from(!asked && local);
            t.cloud_correct += u64::from(asked && cloud);
        });
    }
    for r in rewards.iter().filter(|r| r.step < steps) {
        add(r.step, &r.prompt_id, &|t| {
            t.rewards += 1;
            t.reward_sum += r.reward;
        });
    }
    for c in cloud.iter().filter(|c| c.step < steps) {
        add(c.step, &c.prompt_id, &|t| {
            t.cloud_calls += 1;
            t.cloud_tokens += c.tokens_in + c.tokens_out;
            t.cloud_cost += c.cost_usd;
        });
    }
    out
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn close(found: &Value, want: Option<f64>, what: &str) {
    match want {
        None => assert!(found.is_null(), "{what}: {found} where nothing to divide"),
        Some(want) => {
            let found = found.as_f64().unwrap_or_else(|| panic!("{what}: {found}"));
            assert!((found - want).abs() < 1e-12, "{what}: {found} != {want}");
        }
    }
}

/// Every per-step and overall row of the report equals the plain recomputation.
fn assert_matches_plain(report: &Value, run: &Path, steps: u64) {
    let want = plain(run, steps);
    let run_report = &report["runs"][0];
    let mut seen = 0;
    let rows = run_report["per_step"]
        .as_array()
        .expect("per_step")
        .iter()
        .chain(run_report["overall"].as_array().expect("overall"));
    for row in rows {
        let key = (
            row["step"].as_u64(),
            row["breakdown"].as_str().expect("breakdown").to_owned(),
        );
        let p = want
            .get(&key)
            .unwrap_or_else(|| panic!("report has {key:?}, reference not"));
        let what = format!("{key:?}");
        for (field, value) in [
            ("samples", p.samples),
            ("asked", p.asked),
            ("local_correct", p.local_correct),
            ("kept_correct", p.kept_correct),
            ("cloud_correct", p.cloud_correct),
            ("rewards", p.rewards),
            ("cloud_calls", p.cloud_calls),
            ("cloud_tokens", p.cloud_tokens),
        ] {
            assert_eq!(row[field].as_u64(), Some(value), "{what} {field}");
        }
        close(&row["reward_sum"], Some(p.reward_sum), &what);
        close(&row["cloud_cost_usd"], Some(p.cloud_cost), &what);
        close(&row["help_rate"], ratio(p.asked, p.samples), &what);
        close(
            &row["local_accuracy"],
            ratio(p.local_correct, p.samples),
            &what,
        );
        close(
            &row["conditional_accuracy"],
            ratio(p.kept_correct, p.samples - p.asked),
            &what,
        );
        close(
            &row["overall_accuracy"],
            ratio(p.kept_correct + p.cloud_correct, p.samples),
            &what,
        );
        close(
            &row["mean_reward"],
            (p.rewards > 0).then(|| p.reward_sum / p.rewards as f64),
            &what,
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        want.len(),
        "the report has every (step, breakdown) of the reference"
    );
}

#[test]
fn report_equals_plain_recomputation_then_reads_only_new_steps_5_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run-a");
    let behaviour = random();
    let first = write_steps(&run, 0..5, &behaviour);
    // Step 5 is on disk but not final: the report must not read it yet.
    let partial = write_steps(&run, 5..6, &behaviour);
    write_manifest(&run, 5, STREAMS);
    let run_arg = run.to_str().expect("utf-8 path");

    // Two steps at a time through the dataflow: batches must not change a single bit.
    let cold = report_json(&["--batch-steps", "2", run_arg], dir.path());
    assert_eq!(cold["runs"][0]["rows_read"].as_u64(), Some(first));
    assert_eq!(cold["runs"][0]["steps_processed"].as_u64(), Some(5));
    assert_matches_plain(&cold, &run, 5);

    let again = report_json(&[run_arg], dir.path());
    assert_eq!(
        again["runs"][0]["rows_read"].as_u64(),
        Some(0),
        "nothing new, nothing read"
    );
    assert_eq!(again["runs"][0]["per_step"], cold["runs"][0]["per_step"]);

    let more = write_steps(&run, 6..8, &behaviour);
    write_manifest(&run, 8, STREAMS);
    let incremental = report_json(&[run_arg], dir.path());
    assert_eq!(
        incremental["runs"][0]["rows_read"].as_u64(),
        Some(partial + more),
        "only steps 5..8 are read"
    );
    assert_eq!(incremental["runs"][0]["steps_processed"].as_u64(), Some(3));
    assert_matches_plain(&incremental, &run, 8);

    let scratch = report_json(&["--from-scratch", run_arg], dir.path());
    assert_eq!(
        scratch["runs"][0]["rows_read"].as_u64(),
        Some(first + partial + more)
    );
    assert_eq!(
        scratch["runs"][0]["per_step"],
        incremental["runs"][0]["per_step"]
    );
    assert_eq!(
        scratch["runs"][0]["overall"],
        incremental["runs"][0]["overall"]
    );
}

#[test]
fn report_writes_markdown_and_valid_png_and_svg_plots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run-p");
    write_steps(&run, 0..4, &random());
    write_manifest(&run, 4, STREAMS);
    let out = tandem(&["report", run.to_str().expect("utf-8")], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = run.join("report");
    let md = std::fs::read_to_string(report.join("report.md")).expect("report.md");
    assert!(
        md.contains("difficulty=hard") && md.contains("source=a.jsonl"),
        "{md}"
    );
    for name in ["reward", "help_rate", "accuracy", "accuracy_vs_call_rate"] {
        let png = std::fs::read(report.join(format!("{name}.png"))).expect("png written");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png signature");
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .expect("png header decodes");
        let mut pixels = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut pixels).expect("png pixels decode");
        assert_eq!((frame.width, frame.height), (800, 480));
        let svg = std::fs::read_to_string(report.join(format!("{name}.svg"))).expect("svg");
        let doc = roxmltree::Document::parse(&svg).expect("svg is XML");
        assert_eq!(
            doc.root_element().tag_name().name(),
            "svg",
            "{name}.svg root"
        );
        assert!(
            md.contains(&format!("{name}.svg")),
            "report.md links {name}.svg"
        );
    }
}

#[test]
fn comparison_counts_prompts_that_changed_routing_and_correctness_10() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("base"), dir.path().join("tuned"));
    // Baseline: nobody asks; even prompts are right.
    write_steps(
        &a,
        0..1,
        &Behaviour {
            prompts: 10,
            group: 1,
            asked: |_, _, _| false,
            local: |_, p, _| p % 2 == 0,
            cloud: |_, _| true,
        },
    );
    // Tuned: q0..q3 ask (the cloud is right: q1, q3 fixed); q9 is now right locally; q8 now
    // wrong; q10 is new.
    write_steps(
        &b,
        0..1,
        &Behaviour {
            prompts: 11,
            group: 1,
            asked: |_, p, _| p < 4,
            local: |_, p, _| (p % 2 == 0 && p != 8) || p == 9,
            cloud: |_, _| true,
        },
    );
    write_manifest(&a, 1, STREAMS);
    write_manifest(&b, 1, STREAMS);
    let out = dir.path().join("cmp");
    let report = report_json(
        &[
            a.to_str().expect("utf-8"),
            b.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    let c = &report["comparisons"][0];
    let ids = |key: &str| -> Vec<String> {
        c[key]
            .as_array()
            .expect(key)
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(c["common"], 10);
    assert_eq!(c["only_run"], 1);
    assert_eq!(c["only_baseline"], 0);
    assert_eq!(ids("to_cloud"), ["q0", "q1", "q2", "q3"]);
    assert!(ids("to_local").is_empty());
    assert_eq!(ids("fixed"), ["q1", "q3", "q9"]);
    assert_eq!(ids("broken"), ["q8"]);
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(
        md.contains("| `tuned` | 10 | 0 | 1 | local → cloud | 4 | q0, q1, q2, q3 |"),
        "{md}"
    );
    assert!(out.join("accuracy.png").is_file());
}

#[test]
fn report_refuses_a_non_run_and_a_run_without_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_run = dir.path().join("nothing-here");
    std::fs::create_dir_all(&not_run).expect("mkdir");
    let out = tandem(&["report", not_run.to_str().expect("utf-8")], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("nothing-here") && stderr.contains("not a run directory"),
        "{stderr}"
    );

    let run = dir.path().join("no-samples");
    write_manifest(&run, 0, &[("prompts", StreamKind::Prompts)]);
    let out = tandem(&["report", run.to_str().expect("utf-8")], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no-samples") && stderr.contains("no samples stream"),
        "{stderr}"
    );

    let out = tandem(
        &[
            "report",
            run.to_str().expect("utf-8"),
            not_run.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}

#[test]
fn report_on_a_pipeline_run_counts_its_stored_samples_2_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = crate::common::generated_pipeline(dir.path(), 24, 4, 8, 4, 3);
    let out = dir.path().join("runs");
    crate::common::run_in_process(&pipeline, 2, &out);
    let run = crate::common::only_run(&out);
    let report = report_json(&[run.to_str().expect("utf-8")], dir.path());
    let streams = stored_streams(&run);
    let Rows::Samples(samples) = &streams["rollouts"] else {
        panic!("rollouts is a samples stream")
    };
    let Rows::Verdicts(verdicts) = &streams["verdicts"] else {
        panic!("verdicts is a verdicts stream")
    };
    let all = report["runs"][0]["overall"]
        .as_array()
        .expect("overall")
        .iter()
        .find(|row| row["breakdown"] == "all")
        .expect("an `all` row")
        .clone();
    let asked = samples.iter().filter(|s| s.asked_help).count() as u64;
    let correct = verdicts
        .iter()
        .filter(|v| v.target == Target::Local && v.correct)
        .count() as u64;
    assert_eq!(all["samples"].as_u64(), Some(samples.len() as u64));
    assert_eq!(all["asked"].as_u64(), Some(asked));
    assert_eq!(all["local_correct"].as_u64(), Some(correct));
    let breakdowns: Vec<&str> = report["runs"][0]["overall"]
        .as_array()
        .expect("overall")
        .iter()
        .map(|row| row["breakdown"].as_str().expect("breakdown"))
        .collect();
    assert_eq!(
        breakdowns,
        [
            "all",
            "difficulty=easy",
            "difficulty=hard",
            "source=data.jsonl"
        ]
    );
}
