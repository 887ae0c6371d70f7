//! Cluster runs (timely's cluster mode over loopback): a run of 2 processes × 1 worker stores
//! exactly the rows and the checkpoints of 1 × 2 and 1 × 1; a process killed with SIGKILL stops
//! the other within 60 s with a message naming it, and `--resume` reproduces the uninterrupted
//! run; a process started with another pipeline is refused before anything runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus};

const STEPS: u64 = 6;

/// The staleness-1 training pipeline of `tests/learn.rs` with dual ascent (a whole-step stage
/// with state across steps), one prompt per forward batch (so any worker layout batches the
/// same), and checkpoints every 2 steps.
fn pipeline(dir: &Path, cloud_base: &str) -> PathBuf {
    let rollouts = format!(
        "kind: generate.policy\n    params: {{ model: '{}', chat: false, threads: 1, max_new_tokens: 12, temperature: 1.0, batch_prompts: 1 }}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/tandem-init")
            .display()
    );
    let path = crate::learn::training_pipeline_with(dir, cloud_base, STEPS, 2, &rollouts);
    let yaml = std::fs::read_to_string(&path).expect("read");
    let yaml = yaml
        .replace("max_staleness: 0", "max_staleness: 1")
        .replace(
            "{ id: reward, kind: reward.collab }",
            "{ id: reward, kind: reward.collab, params: { target_call_rate: 0.1, dual_lr: 0.5, dual_kp: 1.0 } }",
        );
    std::fs::write(&path, yaml).expect("write");
    path
}

/// `tandem` with `args`, in `dir`, its output captured.
fn tandem(args: &[&str], dir: &Path) -> std::process::Output {
    crate::common::tandem(args, dir)
}

/// `tandem run PIPELINE --out OUT --local-cluster 2` in `dir`, its output captured.
fn local_cluster(pipeline: &Path, out: &Path, dir: &Path) -> std::process::Output {
    tandem(
        &[
            "run",
            &pipeline.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--local-cluster",
            "2",
        ],
        dir,
    )
}

/// Starts one process of a cluster run; its stderr is kept for the test to read.
fn process(args: &[&str], dir: &Path, stderr: &Path) -> Child {
    process_of(Path::new(env!("CARGO_BIN_EXE_tandem")), args, dir, stderr)
}

/// [`process`] with another tandem executable.
fn process_of(binary: &Path, args: &[&str], dir: &Path, stderr: &Path) -> Child {
    Command::new(binary)
        .args(args)
        .current_dir(dir)
        .env("TANDEM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("spawn tandem")
}

/// Starts the 2 processes of a loopback cluster run of `pipeline` into `out`, `extra` arguments
/// added to process `i` by `extra(i)`; each one's stderr goes to `<dir>/stderr-<i>`. Returns
/// the processes, their stderr files and the cluster's addresses.
fn start_two(
    dir: &Path,
    pipeline: &Path,
    out: &Path,
    extra: impl Fn(usize) -> Vec<String>,
) -> (Vec<Child>, Vec<PathBuf>, Vec<String>) {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_tandem"));
    start_two_of(dir, pipeline, out, extra, |_| binary.clone())
}

/// [`start_two`] with the executable of process `i` given by `binary(i)`.
fn start_two_of(
    dir: &Path,
    pipeline: &Path,
    out: &Path,
    extra: impl Fn(usize) -> Vec<String>,
    binary: impl Fn(usize) -> PathBuf,
) -> (Vec<Child>, Vec<PathBuf>, Vec<String>) {
    let hostfile = dir.join("hostfile");
    let addresses = tandem_pipeline::Cluster::loopback(2).expect("ports");
    std::fs::write(
        &hostfile,
        tandem_pipeline::Cluster::hostfile_text(&addresses),
    )
    .expect("write");
    let stderr: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("stderr-{i}"))).collect();
    let children = (0..2)
        .map(|i| {
            let mut args = vec![
                "run".to_owned(),
                pipeline.display().to_string(),
                "--out".to_owned(),
                out.display().to_string(),
                "--processes".to_owned(),
                "2".to_owned(),
                "--process".to_owned(),
                i.to_string(),
                "--hostfile".to_owned(),
                hostfile.display().to_string(),
            ];
            args.extend(extra(i));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            process_of(&binary(i), &args, dir, &stderr[i])
        })
        .collect();
    (children, stderr, addresses)
}

/// Streams of two runs are the same rows; the cloud's latencies and the learner's timings are
/// the only figures that may differ.
fn assert_same_rows(a: &Path, b: &Path, why: &str) {
    let (a, b) = (
        crate::common::stored_streams(a),
        crate::common::stored_streams(b),
    );
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{why}"
    );
    for (name, rows) in &a {
        match (rows, &b[name]) {
            (Rows::Cloud(_), y) => assert_eq!(
                crate::common::without_latency(rows),
                crate::common::without_latency(y),
                "{why}: cloud"
            ),
            (Rows::Metrics(x), Rows::Metrics(y)) => assert_eq!(
                crate::common::without_timings(x),
                crate::common::without_timings(y),
                "{why}: metrics"
            ),
            (x, y) => assert_eq!(x, y, "{why}: stream {name}"),
        }
    }
}

#[test]
fn two_processes_store_what_one_process_with_one_or_two_workers_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let pipeline = pipeline(dir.path(), &sim.base);
    let one = crate::common::run_in_process(&pipeline, 1, &dir.path().join("1x1"));
    let two_workers = crate::common::run_in_process(&pipeline, 2, &dir.path().join("1x2"));
    let out = dir.path().join("2x1");
    let cluster = local_cluster(&pipeline, &out, dir.path());
    sim.stop();
    let stdout = String::from_utf8_lossy(&cluster.stdout);
    assert!(
        cluster.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&cluster.stderr)
    );
    assert!(stdout.contains("process 1 of 2: run "), "{stdout}");
    let run = crate::common::only_run(&out);
    let manifest = Manifest::read(&RunLayout::new(&run)).expect("manifest");
    assert_eq!(
        (
            manifest.status,
            manifest.steps_completed,
            manifest.processes,
            manifest.workers
        ),
        (RunStatus::Complete, STEPS, 2, 1)
    );
    // Both processes wrote parts: worker 1 is process 1's.
    let parts: Vec<String> = crate::common::files_under(&run.join("streams/rollouts"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(parts.iter().any(|p| p == "part-1.parquet"), "{parts:?}");

    // The readers read a cluster run as any other.
    let inspect = tandem(&["inspect", &run.display().to_string()], dir.path());
    let shown = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        shown.contains("workers 1 in each of 2 processes"),
        "{shown}"
    );
    let report = tandem(&["report", &run.display().to_string()], dir.path());
    assert!(
        report.status.success() && run.join("report/report.md").is_file(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );

    assert_same_rows(&one.run_dir, &two_workers.run_dir, "1 × 2 against 1 × 1");
    assert_same_rows(&one.run_dir, &run, "2 × 1 against 1 × 1");
    for step in [1, 3, 5] {
        crate::common::assert_same_checkpoint(&one.run_dir, &two_workers.run_dir, step, "1 × 2");
        crate::common::assert_same_checkpoint(&one.run_dir, &run, step, "2 × 1");
    }
    // Generation on process 1 sampled from the versions the learner on process 0 sent: with
    // staleness 1, step t used the version after step t - 2.
    let streams = crate::common::stored_streams(&run);
    let Rows::Samples(samples) = &streams["rollouts"] else {
        panic!("samples")
    };
    for s in samples {
        assert_eq!(
            s.policy_version,
            s.step.saturating_sub(1),
            "step {}",
            s.step
        );
    }
}

#[test]
fn a_killed_process_stops_the_other_with_its_name_and_resume_reproduces_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = crate::cloud_sim::CloudSim::start(&[]);
    let pipeline = pipeline(dir.path(), &sim.base);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos() as usize;
    let victim = seed % 2;
    let survivor = 1 - victim;
    let why = format!("kill seed {seed}: process {victim} killed");

    let out = dir.path().join("killed");
    let (mut children, stderr, addresses) = start_two(dir.path(), &pipeline, &out, |_| Vec::new());
    // Kill once 3 steps are stored: the learner has sent versions, steps are in flight, and
    // the resume starts after a checkpoint (step 2 or 4), where generation samples from the
    // versions that checkpoint kept beside its own (staleness 1).
    let run = crate::common::wait_for_stored_steps(&out, 3, &why);
    children[victim].kill().expect("SIGKILL");
    children[victim].wait().expect("reap");
    let killed_at = Instant::now();
    let status = loop {
        if let Some(status) = children[survivor].try_wait().expect("wait") {
            break status;
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            let _ = children[survivor].kill();
            panic!("{why}: process {survivor} still runs 60 s after the kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped_in = killed_at.elapsed();
    let message = std::fs::read_to_string(&stderr[survivor]).expect("stderr");
    assert!(!status.success(), "{why}: {message}");
    assert!(
        message.contains(&format!("lost process {victim} ({})", addresses[victim])),
        "{why}: {message}"
    );
    assert!(
        !message.contains("panicked"),
        "{why}: no panic backtrace: {message}"
    );
    eprintln!("{why}: process {survivor} stopped {stopped_in:?} after the kill");
    let manifest = Manifest::read(&RunLayout::new(&run)).expect("manifest");
    if victim == 1 {
        assert_eq!(manifest.status, RunStatus::Failed, "{why}");
        assert!(
            manifest
                .error
                .unwrap_or_default()
                .contains("lost process 1")
        );
    }
    crate::bad_input::assert_only_complete_parquet(&run.join("streams"));

    // Every process resumes the run; here both at once, as a local cluster.
    let resumed = tandem(
        &[
            "run",
            "--resume",
            &run.display().to_string(),
            "--local-cluster",
            "2",
        ],
        dir.path(),
    );
    assert!(
        resumed.status.success(),
        "{why}: {}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let whole = crate::common::run_in_process(&pipeline, 1, &dir.path().join("whole"));
    sim.stop();
    let manifest = Manifest::read(&RunLayout::new(&run)).expect("manifest");
    assert_eq!(
        (manifest.status, manifest.steps_completed),
        (RunStatus::Complete, STEPS)
    );
    assert!(
        manifest.resumed_at[0] >= 2,
        "{why}: resumed at {:?}",
        manifest.resumed_at
    );
    assert_same_rows(&run, &whole.run_dir, &why);
    crate::common::assert_same_checkpoint(&run, &whole.run_dir, STEPS - 1, &why);
}

#[test]
fn a_process_with_another_pipeline_or_binary_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No cloud is needed: nothing may run.
    let pipeline = pipeline(dir.path(), "http://127.0.0.1:9");
    let out = dir.path().join("runs");
    let (children, stderr, _) = start_two(dir.path(), &pipeline, &out, |i| {
        if i == 1 {
            vec!["--set".to_owned(), "run.seed=6".to_owned()]
        } else {
            Vec::new()
        }
    });
    assert_both_refused(children, &stderr, &out, "another pipeline");

    // Another build of tandem (here the same executable with a byte appended, which runs as
    // before but hashes differently) is refused the same way.
    let other = dir.path().join("tandem-other");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_tandem")).expect("read the binary");
    bytes.push(0);
    std::fs::write(&other, bytes).expect("write");
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (children, stderr, _) = start_two_of(
        dir.path(),
        &pipeline,
        &out,
        |_| Vec::new(),
        |i| {
            if i == 1 {
                other.clone()
            } else {
                PathBuf::from(env!("CARGO_BIN_EXE_tandem"))
            }
        },
    );
    assert_both_refused(children, &stderr, &out, "another tandem binary");
}

/// Both processes exit non-zero saying process 1 was started with `what` than process 0, and
/// nothing is left under `out` (process 0 made the run directory to propose its id, and
/// removed it: nothing ran).
fn assert_both_refused(children: Vec<Child>, stderr: &[PathBuf], out: &Path, what: &str) {
    for (i, mut child) in children.into_iter().enumerate() {
        let status = child.wait().expect("wait");
        let message = std::fs::read_to_string(&stderr[i]).expect("stderr");
        assert!(!status.success(), "process {i}: {message}");
        assert!(
            message.contains(&format!("process 1 was started with {what} than process 0")),
            "process {i}: {message}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(out)
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_peer_lost_while_the_processes_connect_is_named_and_nothing_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = pipeline(dir.path(), "http://127.0.0.1:9");
    let out = dir.path().join("runs");
    let hostfile = dir.path().join("hostfile");
    let addresses = tandem_pipeline::Cluster::loopback(2).expect("ports");
    std::fs::write(
        &hostfile,
        tandem_pipeline::Cluster::hostfile_text(&addresses),
    )
    .expect("write");
    let stderr = dir.path().join("stderr-0");
    let mut leader = process(
        &[
            "run",
            &pipeline.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--processes",
            "2",
            "--process",
            "0",
            "--hostfile",
            &hostfile.display().to_string(),
        ],
        dir.path(),
        &stderr,
    );
    // Process 1 greets as timely does (its index, big-endian), then dies.
    let started = Instant::now();
    let mut peer = loop {
        match std::net::TcpStream::connect(&addresses[0]) {
            Ok(peer) => break peer,
            Err(_) if started.elapsed() < Duration::from_secs(120) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("process 0 never listened: {e}"),
        }
    };
    std::io::Write::write_all(&mut peer, &1u64.to_be_bytes()).expect("greet");
    drop(peer);
    let status = leader.wait().expect("wait");
    let message = std::fs::read_to_string(&stderr).expect("stderr");
    assert_eq!(status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!("lost process 1 ({})", addresses[1])),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_lora_learners_adapters_reach_the_other_process_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = crate::lora::lora_pipeline(dir.path(), 4, 2);
    let yaml = std::fs::read_to_string(&pipeline).expect("read");
    let yaml = yaml.replace(
        "max_new_tokens: 8, temperature: 1.0 }",
        "max_new_tokens: 8, temperature: 1.0, batch_prompts: 1 }",
    );
    std::fs::write(&pipeline, yaml).expect("write");
    let one = crate::common::run_in_process(&pipeline, 1, &dir.path().join("1x1"));
    let out = dir.path().join("2x1");
    let cluster = local_cluster(&pipeline, &out, dir.path());
    assert!(
        cluster.status.success(),
        "{}",
        String::from_utf8_lossy(&cluster.stderr)
    );
    let run = crate::common::only_run(&out);
    assert_same_rows(&one.run_dir, &run, "LoRA, 2 × 1 against 1 × 1");
    // Samples after the first update used the adapters the learner sent (version t at step t).
    let streams = crate::common::stored_streams(&run);
    let Rows::Samples(samples) = &streams["rollouts"] else {
        panic!("samples")
    };
    assert!(samples.iter().any(|s| s.step == 3 && s.policy_version == 3));
    for step in [1, 3] {
        for file in [
            tandem_stages::policy::ADAPTER_WEIGHTS,
            tandem_stages::policy::OPTIMIZER_FILE,
            tandem_stages::policy::STATE_FILE,
        ] {
            assert_eq!(
                std::fs::read(RunLayout::new(&one.run_dir).checkpoint(step).join(file))
                    .expect("1x1"),
                std::fs::read(RunLayout::new(&run).checkpoint(step).join(file)).expect("2x1"),
                "{file} of checkpoint step-{step}"
            );
        }
    }
}

#[test]
fn a_stage_failing_on_one_process_stops_the_other_with_its_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/data/offline-arithmetic.jsonl");
    // The reward command dies on one prompt, on whichever process holds it; no restarts.
    let pipeline = dir.path().join("fail.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"run: {{ name: fail, seed: 7, prompts_per_step: 32, group_size: 4, steps: 8 }}
stages:
  - {{ id: prompts, kind: source.jsonl, params: {{ path: '{}', fields: {{ id: id, completions: completions }} }} }}
  - {{ id: rollouts, kind: generate.offline }}
  - {{ id: verdicts, kind: verify.exact }}
  - id: score
    kind: reward.command
    params:
      max_restarts: 0
      command: [python3, -c, "import json, sys\nfor line in sys.stdin:\n    if 'arith-0077' in line: sys.exit(3)\n    print(json.dumps({{'scores': [0.0] * len(json.loads(line)['samples'])}}), flush=True)"]
"#,
            data.display()
        ),
    )
    .expect("write");
    let out = dir.path().join("runs");
    let (children, stderr, _) = start_two(dir.path(), &pipeline, &out, |_| Vec::new());
    let mut told = 0;
    for (i, mut child) in children.into_iter().enumerate() {
        let status = child.wait().expect("wait");
        let message = std::fs::read_to_string(&stderr[i]).expect("stderr");
        assert!(!status.success(), "process {i}: {message}");
        assert!(
            message.contains("stage `score` (reward.command) at step 2"),
            "process {i}: {message}"
        );
        told += usize::from(message.contains(&format!("failed: process {}: stage `score`", 1 - i)));
    }
    assert_eq!(told, 1, "exactly one process heard of the other's failure");
    let manifest =
        Manifest::read(&RunLayout::new(crate::common::only_run(&out))).expect("manifest");
    assert_eq!(manifest.status, RunStatus::Failed);
    assert!(manifest.steps_completed < 8);
}
