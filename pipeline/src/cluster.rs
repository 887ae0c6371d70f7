//! Runs of several processes: the hostfile, timely's cluster configuration, the handshake that
//! refuses a process started with another pipeline or binary before anything runs, the
//! operator that carries each policy version to the other processes, and the name of a
//! process whose connection was lost.
//!
//! Every process runs the same binary on the same pipeline with the same number of worker
//! threads; timely connects them over TCP (process `i` listens on line `i` of the hostfile) and
//! numbers the workers `process * threads + thread`. Groups are exchanged by `prompt_id` across
//! all of them, exactly as across the threads of one process.

use std::io::{BufRead, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_schemas::Group;
use tandem_stages::policy::PolicyHub;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Stream};

/// Where this process sits in a cluster run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index (its line in the hostfile, from 0). Process 0 runs the source, the
    /// whole-step stages, the sinks (the learner) and writes the manifest.
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
}

impl Cluster {
    /// Processes in the cluster.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Reads a hostfile: one `host:port` per line, line `i` for process `i`; blank lines and
    /// `#` comments are skipped. `processes`, when given, must equal the number of addresses.
    pub fn from_hostfile(
        path: &Path,
        process: usize,
        processes: Option<usize>,
    ) -> Result<Cluster, String> {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("{}: cannot read the hostfile: {e}", path.display()))?;
        let mut addresses = Vec::new();
        for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            let text = line.split('#').next().unwrap_or_default().trim();
            if text.is_empty() {
                continue;
            }
            let column = line.find(text).unwrap_or(0) + 1;
            let valid = text
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid || text.contains(char::is_whitespace) {
                return Err(format!(
                    "{}:{}:{column}: `{text}` is not `host:port`",
                    path.display(),
                    number + 1
                ));
            }
            addresses.push(text.to_owned());
        }
        if addresses.is_empty() {
            return Err(format!("{}: the hostfile lists no process", path.display()));
        }
        if let Some(n) = processes
            && n != addresses.len()
        {
            return Err(format!(
                "--processes {n}, but {} lists {} address(es)",
                path.display(),
                addresses.len()
            ));
        }
        if process >= addresses.len() {
            return Err(format!(
                "--process {process}, but {} lists processes 0 to {}",
                path.display(),
                addresses.len() - 1
            ));
        }
        Ok(Cluster { process, addresses })
    }

    /// `n` loopback addresses with ports free now (for `--local-cluster`).
    pub fn loopback(n: usize) -> std::io::Result<Vec<String>> {
        // Hold every listener until all ports are chosen, so that no two are the same.
        let listeners = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect()
    }

    /// A hostfile's text for `addresses`.
    pub fn hostfile_text(addresses: &[String]) -> String {
        addresses.iter().map(|a| format!("{a}\n")).collect()
    }
}

/// The timely configuration of a run: `threads` workers in this process, and the cluster's
/// connections when there is one.
pub(crate) fn config(threads: usize, cluster: Option<&Cluster>) -> timely::Config {
    match cluster {
        None => timely::Config::process(threads),
        Some(cluster) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads,
                process: cluster.process,
                addresses: cluster.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
    }
}

/// What a process says about itself before a run starts. Every field but `process` and
/// `run_id` must be the same on every process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub process: usize,
    /// The run id: process 0's for a new run (the others adopt it), the resumed run's otherwise.
    pub run_id: Option<String>,
    /// tandem's version and the XXH3-128 of the running executable.
    pub binary: String,
    /// The SHA-256 of the resolved pipeline.
    pub pipeline: String,
    /// Worker threads per process.
    pub threads: usize,
    /// The first step the run computes (after a resume, the resume point).
    pub first_step: u64,
}

impl Hello {
    /// This process's hello: `config` is the resolved pipeline as the manifest stores it.
    pub fn new(
        process: usize,
        run_id: Option<String>,
        config: &serde_json::Value,
        threads: usize,
        first_step: u64,
    ) -> Hello {
        Hello {
            process,
            run_id,
            binary: binary_fingerprint(),
            pipeline: hex::encode(Sha256::digest(config.to_string().as_bytes())),
            threads,
            first_step,
        }
    }
}

/// tandem's version and the hash of the executable that runs (computed once per process; a
/// few tens of milliseconds for a release binary).
fn binary_fingerprint() -> String {
    static FINGERPRINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FINGERPRINT
        .get_or_init(|| {
            let version = env!("CARGO_PKG_VERSION");
            let hash = std::env::current_exe()
                .and_then(std::fs::File::open)
                .and_then(|mut file| {
                    let mut hasher = twox_hash::XxHash3_128::new();
                    let mut buffer = vec![0u8; 1 << 20];
                    loop {
                        let n = file.read(&mut buffer)?;
                        if n == 0 {
                            return Ok(format!("{:032x}", hasher.finish_128()));
                        }
                        hasher.write(&buffer[..n]);
                    }
                });
            match hash {
                Ok(hash) => format!("{version} {hash}"),
                // An executable that cannot be read is compared by version only.
                Err(_) => version.to_owned(),
            }
        })
        .clone()
}

/// Exits this process with status 2 if the returned flag is not set within `timeout`: timely's
/// connection loop retries forever and cannot be interrupted, and nothing has been written
/// while the processes connect.
pub(crate) fn connect_watchdog(
    processes: usize,
    timeout: Duration,
) -> Result<Arc<std::sync::atomic::AtomicBool>, String> {
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = connected.clone();
    std::thread::Builder::new()
        .name("tandem-connect".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!(
                    "error: the {processes} processes of the cluster did not all connect within {} s; nothing was run",
                    timeout.as_secs()
                );
                std::process::exit(2);
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    Ok(connected)
}

/// How long the processes of a cluster wait for one another at start-up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Connects the cluster and exchanges every process's [`Hello`]. Returns the run id every
/// process will use, or says which process differs from process 0 and how. If the other
/// processes do not all connect within `timeout`, this process exits (see
/// [`connect_watchdog`]).
pub(crate) fn handshake(
    cluster: &Cluster,
    threads: usize,
    mine: Hello,
    timeout: Duration,
) -> Result<String, String> {
    watch_connections(&cluster.addresses);
    let connected = connect_watchdog(cluster.processes(), timeout)?;
    let heard: Arc<Mutex<Vec<Hello>>> = Arc::default();
    let sink = heard.clone();
    let flag = connected.clone();
    // timely panics (rather than returning an error) when a peer misbehaves while the
    // processes connect: a stray connection, a process that dies meanwhile.
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        timely::execute(config(threads, Some(cluster)), move |worker| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        let first_thread = worker.index().is_multiple_of(threads);
        let mut input =
            InputHandle::<u64, timely::container::CapacityContainerBuilder<Vec<Hello>>>::new();
        let probe = ProbeHandle::new();
        let sink = sink.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .broadcast()
                .inspect(move |hello| {
                    if first_thread {
                        sink.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(hello.clone());
                    }
                })
                .probe_with(&probe);
        });
        if worker.index() == mine.process * threads {
            input.send(mine.clone());
        }
        drop(input);
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(5)));
        }
        })
    }))
    .map_err(|_| match lost() {
        Some(lost) => format!("while the processes connected, {lost}"),
        None => {
            let why = COMMUNICATION
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            format!(
                "the processes of the cluster could not connect: a peer closed, or sent something else than timely's greeting ({why})"
            )
        }
    })?;
    let guards = started?;
    // A process lost during the handshake makes timely's threads panic, joining them too.
    let lost_during = || {
        lost().map_or_else(
            || "the start-up handshake failed".to_owned(),
            |lost| format!("during the start-up handshake, {lost}"),
        )
    };
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()))
        .map_err(|_| lost_during())?;
    for result in joined {
        result.map_err(|panic| match lost() {
            Some(_) => lost_during(),
            None => format!("the start-up handshake failed: {panic}"),
        })?;
    }
    let mut heard = std::mem::take(&mut *heard.lock().unwrap_or_else(|e| e.into_inner()));
    heard.sort_by_key(|h| h.process);
    agree(&heard)
}

/// The run id all processes use, if every process's hello agrees with process 0's.
fn agree(heard: &[Hello]) -> Result<String, String> {
    let Some(first) = heard.first() else {
        return Err("no process answered the start-up handshake".into());
    };
    for other in &heard[1..] {
        let differs = |what: &str, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display| {
            format!(
                "process {} was started with another {what} than process 0 ({b} against {a}); every process must run the same binary on the same pipeline",
                other.process
            )
        };
        if other.binary != first.binary {
            return Err(differs("tandem binary", &first.binary, &other.binary));
        }
        if other.pipeline != first.pipeline {
            return Err(differs(
                "pipeline",
                &short(&first.pipeline),
                &short(&other.pipeline),
            ));
        }
        if other.threads != first.threads {
            return Err(differs("--workers", &first.threads, &other.threads));
        }
        if other.first_step != first.first_step {
            return Err(differs("resume step", &first.first_step, &other.first_step));
        }
        if other.run_id.is_some() && other.run_id != first.run_id {
            return Err(differs(
                "run to resume",
                &first.run_id.clone().unwrap_or_default(),
                &other.run_id.clone().unwrap_or_default(),
            ));
        }
    }
    first
        .run_id
        .clone()
        .ok_or_else(|| "process 0 proposed no run id".to_owned())
}

/// The first 12 hex digits of a hash, for messages.
fn short(hash: &str) -> String {
    format!("pipeline {}", &hash[..hash.len().min(12)])
}

/// Where a learner's versions go: this process's place in the cluster, and what to call when a
/// version cannot be sent or installed.
#[derive(Clone)]
pub struct WeightRoute {
    /// This process.
    pub process: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// Workers per process (the first worker of process p is `p * threads`).
    pub threads: usize,
    /// Stops the run with a message.
    pub fail: Rc<dyn Fn(String)>,
}

/// One piece of a policy version on its way to another process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WeightChunk {
    /// The process it is for (its first worker installs it).
    pub process: usize,
    /// Its place among the version's chunks.
    pub index: u32,
    /// How many chunks the version has.
    pub count: u32,
    /// The piece of the version's safetensors bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// The size of the pieces a policy version is sent in: small enough that no single message
/// holds a model, large enough that the per-message cost vanishes.
pub const WEIGHT_CHUNK: usize = 16 << 20;

/// Sends each policy version the learner publishes (after the step it learned from, which is
/// when the learner's groups come out of it on worker 0) to the first worker of every other
/// process, in chunks, and installs it there in the process's [`PolicyHub`]. The returned
/// stream is complete for step t once every process holds the version learned at t: the
/// source feeds step t + 1 + max_staleness, whose generation uses it, only after that.
pub fn broadcast_weights<'s>(
    learned: Stream<'s, u64, Vec<Group>>,
    hub: Arc<PolicyHub>,
    route: WeightRoute,
) -> Stream<'s, u64, Vec<()>> {
    let sender = route.clone();
    let exporter = hub.clone();
    let chunks = learned.unary(Pipeline, "ExportWeights", move |_, _| {
        let mut next = 0u64;
        move |input, output| {
            input.for_each_time(|time, data| {
                data.for_each(drop);
                let step = *time.time();
                if step < next {
                    return; // this step's version is already on its way
                }
                next = step + 1;
                let chunks = match exporter.export_chunks(step, WEIGHT_CHUNK) {
                    Ok(Some(chunks)) => chunks,
                    Ok(None) => return, // the learner published nothing for this step
                    Err(e) => {
                        (sender.fail)(format!("sending the weights of step {step}: {e}"));
                        return;
                    }
                };
                let count = chunks.len() as u32;
                let others: Vec<usize> = (0..sender.processes)
                    .filter(|p| *p != sender.process)
                    .collect();
                let mut session = output.session(&time);
                for (index, mut piece) in chunks.into_iter().enumerate() {
                    // The last process takes the piece itself; the others get copies.
                    for (i, &process) in others.iter().enumerate() {
                        let bytes = if i + 1 == others.len() {
                            std::mem::take(&mut piece)
                        } else {
                            piece.clone()
                        };
                        session.give(WeightChunk {
                            process,
                            index: index as u32,
                            count,
                            bytes,
                        });
                    }
                }
            });
        }
    });
    let installer = route.clone();
    let threads = route.threads as u64;
    let pact = Exchange::new(move |c: &WeightChunk| c.process as u64 * threads);
    chunks.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        pact,
        "InstallWeights",
        move |_, _| {
            let mut pending = crate::runtime::Steps::default();
            move |(input, frontier), _output| {
                input.for_each_time(|time, data| pending.add(time, data));
                for (step, _capability, mut chunks) in pending.complete(frontier) {
                    chunks.sort_by_key(|c| c.index);
                    let expected = chunks.first().map_or(0, |c| c.count) as usize;
                    if chunks.len() != expected {
                        (installer.fail)(format!(
                            "the weights of step {step} arrived in {} of {expected} chunks",
                            chunks.len()
                        ));
                        continue;
                    }
                    let pieces: Vec<&[u8]> = chunks.iter().map(|c| c.bytes.as_slice()).collect();
                    if let Err(e) = hub.import_chunks(&pieces) {
                        (installer.fail)(format!("installing the weights of step {step}: {e}"));
                    }
                    // The capability drops here: the version is in this process's hub.
                }
            }
        },
    )
}

/// What [`time_broadcast`] measured for one version.
#[derive(Clone, Debug, Serialize)]
pub struct BroadcastTiming {
    /// The version.
    pub version: u64,
    /// Its size as sent (safetensors bytes); process 0 counts it, the others report 0.
    pub bytes: usize,
    /// Process 0: seconds to publish it (the learner's copy of its parameters).
    pub publish_s: f64,
    /// Seconds from publishing until every process installed it (what the source waits for).
    pub installed_s: f64,
    /// Other processes: seconds to copy it from the hub into the generator's model.
    pub copy_s: f64,
}

/// Measures the weight broadcast alone, on the operator cluster runs use: process 0 publishes
/// `versions` versions of `model` into `hub`, each travels to every other process, and each
/// other process copies it into its own `model` (`PolicyHub::refresh`). Every process of the
/// cluster calls this (`examples/weights_bench.rs`, `benches/cluster.sh`).
pub fn time_broadcast(
    cluster: &Cluster,
    hub: Arc<PolicyHub>,
    model: tandem_stages::policy::Transformer,
    versions: u64,
) -> Result<Vec<BroadcastTiming>, String> {
    let me = cluster.process;
    let processes = cluster.processes();
    let model = Mutex::new(Some(model));
    let timings: Arc<Mutex<Vec<BroadcastTiming>>> = Arc::default();
    let out = timings.clone();
    let guards = timely::execute(config(1, Some(cluster)), move |worker| {
        let mut model = model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("one worker per process");
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Group>>>::new();
        let probe = ProbeHandle::new();
        let route = WeightRoute {
            process: me,
            processes,
            threads: 1,
            fail: Rc::new(|message| panic!("{message}")),
        };
        let hub = hub.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            broadcast_weights(input.to_stream(scope), hub.clone(), route).probe_with(&probe);
        });
        let mut have = 0;
        for version in 0..versions {
            let started = std::time::Instant::now();
            let mut timing = BroadcastTiming {
                version: version + 1,
                bytes: 0,
                publish_s: 0.0,
                installed_s: 0.0,
                copy_s: 0.0,
            };
            if me == 0 {
                hub.publish(version, version + 1, &model);
                timing.publish_s = started.elapsed().as_secs_f64();
                input.send(Group::new(tandem_schemas::PromptRecord {
                    step: version,
                    prompt_id: "weights".into(),
                    ..Default::default()
                }));
            }
            input.advance_to(version + 1);
            while probe.less_equal(&version) {
                worker.step();
            }
            timing.installed_s = started.elapsed().as_secs_f64();
            if me != 0 {
                let copy = std::time::Instant::now();
                have = hub
                    .refresh(&mut model, have, version + 1)
                    .unwrap_or_else(|e| panic!("{e}"));
                timing.copy_s = copy.elapsed().as_secs_f64();
            }
            out.lock().unwrap_or_else(|e| e.into_inner()).push(timing);
        }
        // Every version has the same size: process 0 exports the last one once more to count
        // it, after the timings (the others would only hold another copy to learn the same).
        if me == 0 {
            let bytes = hub
                .export(versions.saturating_sub(1))
                .ok()
                .flatten()
                .map_or(0, |b| b.len());
            for timing in out.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
                timing.bytes = bytes;
            }
        }
    })?;
    for result in guards.join() {
        result?;
    }
    let timings = std::mem::take(&mut *timings.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(timings)
}

/// The first connection this process lost, as a message naming the process.
static LOST: Mutex<Option<String>> = Mutex::new(None);

/// Installs (once) a panic hook that turns timely's failure of a connection into a record of
/// which process was lost, without the panic messages timely's threads print as the failure
/// cascades. Other panics are printed as before.
pub(crate) fn watch_connections(addresses: &[String]) {
    static INSTALL: Once = Once::new();
    static ADDRESSES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    *ADDRESSES.lock().unwrap_or_else(|e| e.into_inner()) = addresses.to_vec();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let thread = std::thread::current();
            let peer = thread.name().and_then(|name| {
                name.strip_prefix("timely:recv-")
                    .or_else(|| name.strip_prefix("timely:send-"))
                    .and_then(|n| n.parse::<usize>().ok())
            });
            let mut lost = LOST.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(peer) = peer {
                let address = ADDRESSES
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(peer)
                    .cloned()
                    .unwrap_or_default();
                // timely addresses workers by index: a peer with another thread count sends
                // to workers this process does not have.
                let hint = if message.contains("index out of bounds") {
                    "; do all processes have the same --workers?"
                } else {
                    ""
                };
                lost.get_or_insert_with(|| {
                    format!(
                        "lost process {peer} ({address}): its connection failed ({message}){hint}"
                    )
                });
                return;
            }
            // Other panics inside timely's communication (while the processes connect) are
            // reported by the caller as an error; the first one's message is kept for it.
            if info
                .location()
                .is_some_and(|l| l.file().contains("timely_communication"))
            {
                let mut first = COMMUNICATION.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(message);
                return;
            }
            let cascade = message.contains("MergeQueue poisoned")
                || message.contains("timely communication error")
                || message.starts_with("Send thread panic")
                || message.starts_with("Recv thread panic");
            if lost.is_some() && cascade {
                return;
            }
            drop(lost);
            previous(info);
        }));
    });
}

/// The first panic inside timely's communication that was not a lost connection.
static COMMUNICATION: Mutex<Option<String>> = Mutex::new(None);

/// The process whose connection failed first, if one did.
pub(crate) fn lost() -> Option<String> {
    LOST.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(process: usize) -> Hello {
        Hello {
            process,
            run_id: (process == 0).then(|| "run-1".to_owned()),
            binary: "0.1.0 abc".into(),
            pipeline: "0123456789abcdef".into(),
            threads: 1,
            first_step: 0,
        }
    }

    #[test]
    fn processes_that_agree_adopt_process_zeros_run_id() {
        assert_eq!(agree(&[hello(0), hello(1), hello(2)]), Ok("run-1".into()));
    }

    #[test]
    fn a_process_with_another_binary_or_pipeline_is_named() {
        let mut other = hello(1);
        other.binary = "0.1.0 def".into();
        let err = agree(&[hello(0), other]).unwrap_err();
        assert!(
            err.starts_with("process 1 was started with another tandem binary"),
            "{err}"
        );
        let mut other = hello(2);
        other.pipeline = "fedcba9876543210".into();
        let err = agree(&[hello(0), hello(1), other]).unwrap_err();
        assert!(
            err.contains("process 2") && err.contains("another pipeline"),
            "{err}"
        );
        assert!(err.contains("pipeline fedcba987654"), "{err}");
        let mut other = hello(1);
        other.first_step = 3;
        assert!(
            agree(&[hello(0), other])
                .unwrap_err()
                .contains("resume step")
        );
    }

    #[test]
    fn hostfile_lines_are_checked_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "# cluster\n10.0.0.1:2101\n\n  10.0.0.2:2101  # second\n",
        )
        .unwrap();
        let cluster = Cluster::from_hostfile(&path, 1, Some(2)).unwrap();
        assert_eq!(cluster.addresses, ["10.0.0.1:2101", "10.0.0.2:2101"]);
        let err = Cluster::from_hostfile(&path, 0, Some(3)).unwrap_err();
        assert!(
            err.contains("--processes 3") && err.contains("2 address(es)"),
            "{err}"
        );
        let err = Cluster::from_hostfile(&path, 2, None).unwrap_err();
        assert!(err.contains("--process 2"), "{err}");
        std::fs::write(&path, "10.0.0.1:2101\n  10.0.0.2\n").unwrap();
        let err = Cluster::from_hostfile(&path, 0, None).unwrap_err();
        assert!(
            err.ends_with("hosts:2:3: `10.0.0.2` is not `host:port`"),
            "{err}"
        );
    }

    #[test]
    fn loopback_ports_are_distinct() {
        let addresses = Cluster::loopback(4).unwrap();
        let unique: std::collections::BTreeSet<_> = addresses.iter().collect();
        assert_eq!(unique.len(), 4);
        assert!(addresses.iter().all(|a| a.starts_with("127.0.0.1:")));
    }
}
