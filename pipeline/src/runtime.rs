//! The timely dataflow that runs a [`Plan`]. This is the only module that knows timely.
//!
//! Timestamps are training steps. Worker 0 runs the source and feeds one step at a time;
//! groups are exchanged by `prompt_id`, then every stage is an operator named after its YAML
//! id, followed (when materialised) by an operator that stores the stage's stream for a step
//! once the frontier says the step is complete there. Sinks see whole steps on worker 0.
//! Stores hand a complete step's rows to the worker's writer thread (sorting, Arrow encoding,
//! zstd and I/O happen off the dataflow thread) and hold the step's capability until the writer
//! says the file is renamed into place, so the probe passing step t means every stream of t is
//! completely on disk.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Stream};
use timely::scheduling::SyncActivator;

use tandem_schemas::io::Rows;
use tandem_schemas::layout::{Manifest, RunLayout, RunStatus};
use tandem_schemas::{Group, StreamKind};
use tandem_stages::policy::PolicyHub;
use tandem_stages::{Built, Role, Scope, StepContext};

use crate::cluster::{self, Cluster};
use crate::plan::Plan;
use crate::resume::Resumed;
use crate::rundir;

/// Steps that may be in flight at once (fed but not yet stored) when nothing learns; bounds
/// memory. With a learner it is `1 + run.max_staleness`: step t is fed only once the learner
/// has consumed step t - 1 - max_staleness, which is what keeps generation on-policy.
const MAX_INFLIGHT_STEPS: u64 = 2;

/// How long a waiting worker parks before it looks at its probe again. Operators are woken by
/// messages and by the writer; this bound only guards against a missed wake-up.
const PARK: Duration = Duration::from_millis(5);

/// Called on worker 0 each time a step is completely stored.
pub type OnStep = Arc<dyn Fn(&StepReport) + Send + Sync>;

/// How to run a plan.
#[derive(Clone)]
pub struct RunOptions {
    /// Worker threads in this process (groups are spread over all workers of all processes
    /// by `prompt_id`).
    pub workers: usize,
    /// The cluster this process is part of (`None`: a run of one process).
    pub cluster: Option<Cluster>,
    /// The directory run directories are created in (`runs/`).
    pub out_dir: PathBuf,
    /// Store stage streams (`false` stores only the manifest and the errors stream).
    pub materialize: bool,
    /// Called on worker 0 each time a step is completely stored.
    pub on_step: Option<OnStep>,
    /// The id of the run this one derives from, for the manifest (`None`: the run a leading
    /// `source.replay` reads, if any).
    pub parent: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            cluster: None,
            out_dir: PathBuf::from("runs"),
            materialize: true,
            on_step: None,
            parent: None,
        }
    }
}

/// Counts of one completed step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// The step.
    pub step: u64,
    /// Steps the run will take.
    pub steps: u64,
    /// Groups (prompts) in the step.
    pub groups: u64,
    /// Samples in the step.
    pub samples: u64,
    /// Error rows the step produced.
    pub errors: u64,
    /// Where the step's time went: seconds per stage in pipeline order, then `step` (the wall
    /// time from feeding it to storing it). See [`tandem_stages::StepContext::stage_seconds`].
    pub seconds: Vec<(String, f64)>,
}

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// Its directory.
    pub run_dir: PathBuf,
    /// Steps completed.
    pub steps: u64,
    /// Groups processed.
    pub groups: u64,
    /// Samples processed.
    pub samples: u64,
    /// Error rows written.
    pub errors: u64,
    /// This process and the run's processes (`(0, 1)` for a run of one process). Only
    /// process 0 counts groups, samples and errors; the others report zeros.
    pub process: (usize, usize),
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run directory could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A stage failed; the steps before `completed` are stored and the manifest says `failed`.
    #[error("run {run_id} failed: {message}\n{completed} complete step(s) are stored in {}", run_dir.display())]
    Failed {
        /// The run's id.
        run_id: String,
        /// Its directory.
        run_dir: PathBuf,
        /// Steps completely stored before the failure.
        completed: u64,
        /// What failed.
        message: String,
    },
}

/// State the workers of one process share.
struct Shared {
    run_id: Arc<str>,
    layout: RunLayout,
    steps: u64,
    /// Workers of all processes.
    workers: usize,
    /// Workers in each process.
    threads: usize,
    /// This process, and how many the run has.
    process: usize,
    processes: usize,
    /// Whether this process has told the others of its failure.
    raised: AtomicBool,
    /// Steps completely stored, as this process's probe saw them.
    completed: AtomicU64,
    materialize: bool,
    plan: Mutex<Plan>,
    first_instances: Mutex<Option<Vec<Built>>>,
    /// Why the run failed, and whether another process said so (then it is not passed on).
    failure: Mutex<Option<(String, bool)>>,
    counts: Mutex<BTreeMap<u64, StepReport>>,
    /// Steps fed but not yet through every stage, at most.
    inflight: u64,
    /// The first step this process feeds (after a resume, the steps before it are stored).
    first_step: u64,
    /// Where each step's time went, until the step is stored.
    timings: Mutex<BTreeMap<u64, StepTimes>>,
    /// Stage ids in pipeline order (the order timings are reported in).
    stage_ids: Vec<Arc<str>>,
}

/// When a step was fed and the seconds each stage has spent on it so far.
struct StepTimes {
    fed: Instant,
    seconds: BTreeMap<Arc<str>, f64>,
}

impl Shared {
    fn fail(&self, message: String) {
        self.fail_from(message, false);
    }

    /// Records a failure (one another process reported when `remote`); the first one stays.
    fn fail_from(&self, message: String, remote: bool) {
        let mut failure = self
            .failure
            .lock()
            .expect("failure lock is never poisoned: no code panics under it");
        failure.get_or_insert((message, remote));
    }

    /// This process's own failure, once, for telling the other processes.
    fn failure_to_raise(&self) -> Option<String> {
        let failure = self.failure.lock().expect("failure lock").clone();
        match failure {
            Some((message, false)) if !self.raised.swap(true, Ordering::SeqCst) => Some(message),
            _ => None,
        }
    }

    /// Whether this is the process that runs the source and sinks and writes the manifest.
    fn leader(&self) -> bool {
        self.process == 0
    }

    fn failed(&self) -> bool {
        self.failure
            .lock()
            .expect("failure lock is never poisoned")
            .is_some()
    }

    fn context(&self, stage_id: &Arc<str>, step: u64, worker: usize) -> StepContext {
        StepContext {
            run_id: self.run_id.clone(),
            stage_id: stage_id.clone(),
            step,
            worker,
            workers: self.workers,
            run_dir: Some(self.layout.root().into()),
            stage_seconds: Vec::new(),
        }
    }

    fn timings(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, StepTimes>> {
        self.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `step` was fed now.
    fn fed(&self, step: u64) {
        self.timings().insert(
            step,
            StepTimes {
                fed: Instant::now(),
                seconds: BTreeMap::new(),
            },
        );
    }

    /// Adds busy time of stage `id` on `step`.
    fn add_seconds(&self, step: u64, id: &Arc<str>, seconds: f64) {
        if let Some(times) = self.timings().get_mut(&step) {
            *times.seconds.entry(id.clone()).or_default() += seconds;
        }
    }

    /// Notes a wall time of stage `id` on `step`, keeping the longest (one per worker).
    fn note_wall(&self, step: u64, id: &Arc<str>, seconds: f64) {
        if let Some(times) = self.timings().get_mut(&step) {
            let entry = times.seconds.entry(id.clone()).or_default();
            *entry = entry.max(seconds);
        }
    }

    /// The seconds of `step` so far, in pipeline order, then `step` (the wall time since fed).
    fn step_seconds(&self, step: u64) -> Vec<(String, f64)> {
        let timings = self.timings();
        let Some(times) = timings.get(&step) else {
            return Vec::new();
        };
        self.stage_ids
            .iter()
            .filter_map(|id| times.seconds.get(id).map(|s| (id.to_string(), *s)))
            .chain([("step".to_owned(), times.fed.elapsed().as_secs_f64())])
            .collect()
    }
}

/// What a worker needs to know of each stage to wire it.
struct StageWiring {
    id: Arc<str>,
    kind: String,
    role: Role,
    scope: Scope,
    streams: Vec<(String, StreamKind)>,
    /// A learner: in a cluster, its weights go to the other processes' generators.
    updates_policy: bool,
}

/// Runs the plan in a new run directory under `options.out_dir`. In a cluster, process 0 makes
/// the directory and the others adopt its run id (under their own `out_dir`: the same shared
/// directory, or a local one whose parts are gathered afterwards).
pub fn run(plan: Plan, options: RunOptions) -> Result<RunSummary, RunError> {
    let name = plan.spec.run.name.clone().unwrap_or_else(|| {
        plan.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    });
    let leader = options.cluster.as_ref().is_none_or(|c| c.process == 0);
    let created = if leader {
        Some(
            rundir::create_run_dir(&options.out_dir, &name).map_err(|e| {
                RunError::Setup(format!(
                    "{}: cannot create run directory: {e}",
                    options.out_dir.display()
                ))
            })?,
        )
    } else {
        None
    };
    let proposed = created.as_ref().map(|(id, _)| id.clone());
    let run_id = match agree(&plan, &options, proposed, 0) {
        Ok(run_id) => run_id,
        Err(e) => {
            if let Some((_, dir)) = &created {
                // Still empty: nothing ran.
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e);
        }
    };
    let run_dir = match created {
        Some((_, dir)) => dir,
        None => {
            let dir = options.out_dir.join(&run_id);
            std::fs::create_dir_all(&dir).map_err(|e| {
                RunError::Setup(format!(
                    "{}: cannot create run directory: {e}",
                    dir.display()
                ))
            })?;
            dir
        }
    };
    let mut manifest = rundir::initial_manifest(
        &plan,
        &run_id,
        options.workers.max(1),
        // A pipeline that starts with `source.replay` derives from that run too.
        options
            .parent
            .clone()
            .or_else(|| crate::replay::replayed_run(&plan)),
    );
    manifest.processes = options.cluster.as_ref().map_or(1, Cluster::processes);
    if !options.materialize {
        manifest.streams.retain(|s| s.kind == StreamKind::Errors);
    }
    execute(plan, &options, run_dir, manifest)
}

/// Continues a stored run where [`crate::resume::resume`] found it can (`options.out_dir` is
/// not used: the run stays in its directory). In a cluster every process resumes the run.
pub fn run_resumed(resumed: Resumed, options: RunOptions) -> Result<RunSummary, RunError> {
    let Resumed {
        plan,
        mut manifest,
        point,
    } = resumed;
    agree(&plan, &options, Some(manifest.run_id.clone()), point.step)?;
    manifest.workers = options.workers.max(1);
    manifest.processes = options.cluster.as_ref().map_or(1, Cluster::processes);
    execute(plan, &options, point.run_dir, manifest)
}

/// In a cluster: connects the processes and checks they run the same binary and pipeline from
/// the same step; returns the run id they share (process 0's `run_id` for a new run). Without
/// a cluster: `run_id`.
fn agree(
    plan: &Plan,
    options: &RunOptions,
    run_id: Option<String>,
    first_step: u64,
) -> Result<String, RunError> {
    let Some(cluster) = &options.cluster else {
        return Ok(run_id.expect("a run of one process makes its own run id"));
    };
    let threads = options.workers.max(1);
    let hello = cluster::Hello::new(
        cluster.process,
        run_id,
        &plan.document.to_json(),
        threads,
        first_step,
    );
    cluster::handshake(cluster, threads, hello, cluster::CONNECT_TIMEOUT).map_err(RunError::Setup)
}

/// Runs `plan` in `run_dir` from its resume point (step 0 for a new run), keeping `manifest`
/// current (process 0 writes it).
fn execute(
    mut plan: Plan,
    options: &RunOptions,
    run_dir: PathBuf,
    manifest: Manifest,
) -> Result<RunSummary, RunError> {
    let run_id = manifest.run_id.clone();
    let threads = options.workers.max(1);
    let (process, processes) = options
        .cluster
        .as_ref()
        .map_or((0, 1), |c| (c.process, c.processes()));
    let leader = process == 0;
    let layout = RunLayout::new(&run_dir);
    if leader {
        rundir::write_manifest(&layout, &manifest).map_err(RunError::Setup)?;
    }
    let first_step = plan.settings.resume.as_ref().map_or(0, |r| r.step);

    let steps = plan.steps;
    let inflight = if plan.stages.iter().any(|s| s.updates_policy) {
        1 + plan.settings.max_staleness
    } else {
        MAX_INFLIGHT_STEPS
    };
    let first = std::mem::take(&mut plan.built);
    let stage_ids = plan.stages.iter().map(|s| s.id.clone()).collect();
    let shared = Arc::new(Shared {
        run_id: run_id.as_str().into(),
        layout: layout.clone(),
        steps,
        workers: threads * processes,
        threads,
        process,
        processes,
        raised: AtomicBool::new(false),
        completed: AtomicU64::new(first_step),
        materialize: options.materialize,
        plan: Mutex::new(plan),
        first_instances: Mutex::new(Some(first)),
        failure: Mutex::new(None),
        counts: Mutex::new(BTreeMap::new()),
        inflight,
        first_step,
        timings: Mutex::new(BTreeMap::new()),
        stage_ids,
    });

    let worker_shared = shared.clone();
    let on_step = options.on_step.clone();
    // Worker 0 advances steps_completed as steps land; the final status is written below.
    let manifest = Arc::new(Mutex::new(manifest));
    let worker_manifest = manifest.clone();
    let config = cluster::config(threads, options.cluster.as_ref());
    let connected = match &options.cluster {
        Some(cluster) => {
            cluster::watch_connections(&cluster.addresses);
            Some(
                cluster::connect_watchdog(processes, cluster::CONNECT_TIMEOUT)
                    .map_err(RunError::Setup)?,
            )
        }
        None => None,
    };
    let guards = timely::execute(config, move |worker| {
        if let Some(connected) = &connected {
            connected.store(true, Ordering::SeqCst);
        }
        run_worker(worker, &worker_shared, on_step.as_deref(), &worker_manifest);
    })
    .map_err(|e| RunError::Setup(format!("cannot start {threads} worker(s): {e}")))?;
    // After a lost process, joining timely's communication threads panics too (they did).
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()))
        .unwrap_or_else(|_| {
            shared.fail(
                cluster::lost()
                    .unwrap_or_else(|| "timely's communication threads failed".to_owned()),
            );
            Vec::new()
        });
    for (i, result) in joined.into_iter().enumerate() {
        if let Err(panic) = result {
            // A lost process makes timely's threads panic: name the process, not the panic.
            match cluster::lost() {
                Some(lost) => shared.fail(lost),
                None => shared.fail(format!(
                    "worker {} panicked: {panic}",
                    process * threads + i
                )),
            }
        }
    }

    let mut manifest = manifest.lock().expect("workers have finished").clone();
    let counts = shared.counts.lock().expect("workers have finished").clone();
    let failure = shared
        .failure
        .lock()
        .expect("workers have finished")
        .clone()
        .map(|(message, _)| message);
    manifest.status = if failure.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Complete
    };
    manifest.error = failure.clone();
    if leader {
        rundir::write_manifest(&layout, &manifest).map_err(RunError::Setup)?;
    }
    let completed = shared.completed.load(Ordering::SeqCst);
    if let Some(message) = failure {
        return Err(RunError::Failed {
            run_id,
            run_dir,
            completed: if leader {
                manifest.steps_completed
            } else {
                completed
            },
            message,
        });
    }
    let total = |f: fn(&StepReport) -> u64| counts.values().map(f).sum();
    Ok(RunSummary {
        run_id,
        run_dir,
        steps: if leader {
            manifest.steps_completed
        } else {
            completed
        },
        groups: total(|c| c.groups),
        samples: total(|c| c.samples),
        errors: total(|c| c.errors),
        process: (process, processes),
    })
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    shared: &Arc<Shared>,
    on_step: Option<&(dyn Fn(&StepReport) + Send + Sync)>,
    manifest: &Mutex<tandem_schemas::layout::Manifest>,
) {
    let index = worker.index();
    let (wiring, mut instances, hub) = {
        let plan = shared
            .plan
            .lock()
            .expect("plan lock is only held to read the plan");
        // The policy the generators of this process sample from, when the pipeline has one.
        let hub = plan
            .shared
            .get_or_try_init::<PolicyHub, ()>(PolicyHub::KEY, || Err(()))
            .ok();
        let wiring: Vec<StageWiring> = plan
            .stages
            .iter()
            .map(|s| StageWiring {
                id: s.id.clone(),
                kind: s.kind.clone(),
                role: s.role,
                scope: s.scope,
                updates_policy: s.updates_policy,
                streams: if s.materialize && shared.materialize {
                    s.streams()
                        .into_iter()
                        .map(|(name, f)| (name, f.stream()))
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let instances: Vec<Option<Built>> = if index.is_multiple_of(shared.threads) {
            let first = shared.first_instances.lock().expect("taken once").take();
            first
                .expect("a process's first worker takes the instances its plan built")
                .into_iter()
                // The source and the sinks run on process 0 only.
                .map(|built| match built {
                    Built::Source(_) | Built::Sink(_) if !shared.leader() => None,
                    built => Some(built),
                })
                .collect()
        } else {
            match plan.build_worker_instances() {
                Ok(instances) => instances,
                Err(e) => {
                    shared.fail(format!("worker {index} cannot build its stages: {e}"));
                    wiring.iter().map(|_| None).collect()
                }
            }
        };
        (wiring, instances, hub)
    };
    let mut source = match instances[0].take() {
        Some(Built::Source(source)) => Some(source),
        _ => None,
    };

    let writer = spawn_writer(shared.clone(), index);
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Group>>>::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let mut stream = input.to_stream(scope);
        let source_wiring = &wiring[0];
        stream = store(
            stream,
            Exchange::new(|g: &Group| prompt_hash(g.prompt_id())),
            &source_wiring.id,
            &source_wiring.streams,
            shared,
            &writer,
            index,
        );
        for (wiring, instance) in wiring.iter().zip(instances.iter_mut()).skip(1) {
            let pipelined = wiring.scope == Scope::Group
                && match instance.as_mut() {
                    Some(Built::Group(g)) => g.pipelined().is_some(),
                    _ => false,
                };
            match (wiring.role, instance.take()) {
                (Role::Sink, sink) => {
                    // Sinks live on worker 0 only; other workers never receive a group here.
                    let sink = Rc::new(RefCell::new(match sink {
                        Some(Built::Sink(s)) => Some(s),
                        _ => None,
                    }));
                    let finisher = sink.clone();
                    let apply: ApplyFn =
                        Box::new(move |groups, ctx| match sink.borrow_mut().as_mut() {
                            Some(sink) => sink.consume(groups, ctx),
                            None => Ok(()),
                        });
                    let finish: FinishFn = Box::new(move || match finisher.borrow_mut().as_mut() {
                        Some(sink) => sink.finish(),
                        None => Ok(()),
                    });
                    stream = whole_step_operator(
                        stream,
                        wiring,
                        shared,
                        index,
                        Gather::ToFirstWorker,
                        apply,
                        Some(finish),
                    );
                    if wiring.updates_policy
                        && shared.processes > 1
                        && let Some(hub) = hub.clone()
                    {
                        let failed = shared.clone();
                        let route = cluster::WeightRoute {
                            process: shared.process,
                            processes: shared.processes,
                            threads: shared.threads,
                            fail: Rc::new(move |message| failed.fail(message)),
                        };
                        cluster::broadcast_weights(stream.clone(), hub, route).probe_with(&probe);
                    }
                }
                (Role::Group, Some(Built::Group(g))) if pipelined => {
                    let piped = pipelined_operator(stream, wiring, shared, index, g);
                    stream = store(
                        piped,
                        Pipeline,
                        &wiring.id,
                        &wiring.streams,
                        shared,
                        &writer,
                        index,
                    );
                }
                (_, instance) => {
                    let apply: ApplyFn = match instance {
                        Some(Built::Generator(mut g)) => {
                            Box::new(move |groups, ctx| g.generate(groups, ctx))
                        }
                        Some(Built::Group(mut g)) => {
                            Box::new(move |groups, ctx| g.process(groups, ctx))
                        }
                        // Only after a failed build on this worker, which is already reported.
                        _ => continue,
                    };
                    stream = match wiring.scope {
                        Scope::Group => {
                            let stream = stage_operator(stream, wiring, shared, index, apply);
                            store(
                                stream,
                                Pipeline,
                                &wiring.id,
                                &wiring.streams,
                                shared,
                                &writer,
                                index,
                            )
                        }
                        Scope::Step => {
                            let stream = whole_step_operator(
                                stream,
                                wiring,
                                shared,
                                index,
                                Gather::ByStep,
                                apply,
                                None,
                            );
                            // Spread the step's groups over the workers again for the stages after.
                            let spread = Exchange::new(|g: &Group| prompt_hash(g.prompt_id()));
                            store(
                                stream,
                                spread,
                                &wiring.id,
                                &wiring.streams,
                                shared,
                                &writer,
                                index,
                            )
                        }
                    };
                }
            }
        }
        // The errors of every group, whatever stage raised them, and the step's counts.
        let errors = vec![("errors".to_owned(), StreamKind::Errors)];
        stream = store(
            stream,
            Pipeline,
            &Arc::from("errors"),
            &errors,
            shared,
            &writer,
            index,
        );
        count(stream, shared).probe_with(&probe);
    });

    // Failures travel between processes in a dataflow of their own: a stage failing on one
    // process stops the source on process 0 and every stage everywhere.
    let mut alarms = InputHandle::<u64, CapacityContainerBuilder<Vec<(usize, String)>>>::new();
    let alarm_probe = ProbeHandle::new();
    if shared.processes > 1 {
        let heard = shared.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            alarms
                .to_stream(scope)
                .broadcast()
                .inspect(move |(process, message)| {
                    if *process != heard.process {
                        heard.fail_from(format!("process {process}: {message}"), true);
                    }
                })
                .probe_with(&alarm_probe);
        });
    }
    let raise = |alarms: &mut InputHandle<u64, _>| {
        if shared.processes > 1
            && let Some(message) = shared.failure_to_raise()
        {
            alarms.send((shared.process, message));
            alarms.flush();
        }
    };

    let mut reported = shared.first_step;
    // The worker that feeds counts the steps it fed; the others every step the probe passes
    // (the source's input holds back the steps it has not fed yet).
    let feeds = source.is_some();
    let mut report = |probe: &ProbeHandle<u64>, fed: u64| {
        let upto = if feeds { fed } else { shared.steps };
        while reported < upto && !probe.less_equal(&reported) {
            let step = reported;
            reported += 1;
            let seconds = shared.step_seconds(step);
            shared.timings().remove(&step);
            // A failed run drains its dataflow: the steps that pass then are not stored.
            if shared.failed() {
                continue;
            }
            shared.completed.fetch_max(reported, Ordering::SeqCst);
            if index != 0 {
                continue;
            }
            let counts = shared
                .counts
                .lock()
                .expect("counts lock")
                .get(&step)
                .cloned()
                .unwrap_or_default();
            let mut manifest = manifest.lock().expect("manifest lock");
            manifest.steps_completed = step + 1;
            if let Err(e) = rundir::write_manifest(&shared.layout, &manifest) {
                shared.fail(e);
            }
            if let Some(on_step) = on_step {
                on_step(&StepReport {
                    step,
                    steps: shared.steps,
                    seconds,
                    ..counts
                });
            }
        }
    };

    let mut fed = shared.first_step;
    // A resumed run starts its clock at the first step it feeds: the steps before it are stored.
    input.advance_to(fed);
    if let Some(source) = source.as_mut() {
        let source_id = wiring[0].id.clone();
        for step in shared.first_step..shared.steps {
            let inflight = shared.inflight;
            while step >= inflight && probe.less_equal(&(step - inflight)) {
                worker.step_or_park(Some(PARK));
                report(&probe, fed);
                raise(&mut alarms);
            }
            if shared.failed() {
                break;
            }
            shared.fed(step);
            let started = Instant::now();
            let groups = source.step(&shared.context(&source_id, step, index));
            shared.add_seconds(step, &source_id, started.elapsed().as_secs_f64());
            match groups {
                Ok(mut groups) => input.send_batch(&mut groups),
                Err(e) => {
                    shared.fail(format!(
                        "stage `{source_id}` ({}) at step {step}: {e}",
                        wiring[0].kind
                    ));
                    break;
                }
            }
            fed = step + 1;
            input.advance_to(fed);
            worker.step();
            report(&probe, fed);
        }
    }
    drop(input);
    while !probe.done() {
        worker.step_or_park(Some(PARK));
        report(&probe, fed);
        raise(&mut alarms);
    }
    report(&probe, fed);
    raise(&mut alarms);
    drop(alarms);
    while !alarm_probe.done() {
        worker.step_or_park(Some(PARK));
    }
}

/// What a stage operator calls on each batch: a generator's or a group stage's method.
type ApplyFn = Box<dyn FnMut(&mut [Group], &StepContext) -> tandem_stages::Result<()>>;

/// A deterministic hash of a prompt id (the same on every worker and every run).
fn prompt_hash(id: &str) -> u64 {
    // FNV-1a: stable across processes and Rust versions, unlike the std hasher.
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Applies a stage to each batch of groups as it arrives.
fn stage_operator<'s, F>(
    stream: Stream<'s, u64, Vec<Group>>,
    wiring: &StageWiring,
    shared: &Arc<Shared>,
    worker: usize,
    mut apply: F,
) -> Stream<'s, u64, Vec<Group>>
where
    F: FnMut(&mut [Group], &StepContext) -> tandem_stages::Result<()> + 'static,
{
    let shared = shared.clone();
    let id = wiring.id.clone();
    let kind = wiring.kind.clone();
    stream.unary(Pipeline, &id.clone(), move |_, _| {
        move |input, output| {
            input.for_each_time(|time, data| {
                let mut batch: Vec<Group> = data.flat_map(std::mem::take).collect();
                let step = *time.time();
                let started = Instant::now();
                if !shared.failed()
                    && let Err(e) = apply(&mut batch, &shared.context(&id, step, worker))
                {
                    shared.fail(format!("stage `{id}` ({kind}) at step {step}: {e}"));
                }
                shared.add_seconds(step, &id, started.elapsed().as_secs_f64());
                output.session(&time).give_container(&mut batch);
            });
        }
    })
}

/// Runs a stage that waits on I/O: batches are submitted as they arrive and passed on when the
/// stage hands them back, so the worker keeps going meanwhile. A step's capability is held
/// until every batch submitted for it has come back.
fn pipelined_operator<'s>(
    stream: Stream<'s, u64, Vec<Group>>,
    wiring: &StageWiring,
    shared: &Arc<Shared>,
    worker: usize,
    mut stage: Box<dyn tandem_stages::GroupStage>,
) -> Stream<'s, u64, Vec<Group>> {
    let shared = shared.clone();
    let id = wiring.id.clone();
    let kind = wiring.kind.clone();
    let scope = stream.scope();
    stream.unary_frontier(Pipeline, &id.clone(), move |_, info| {
        let activator = scope.worker().sync_activator_for(info.address.to_vec());
        let wake: tandem_stages::Wake = Arc::new(move || {
            // Fails only once the dataflow is gone, when nobody waits for the answer.
            let _ = activator.activate();
        });
        // Per step: its capability, the number of batches still out, and the first submit.
        let mut held: BTreeMap<u64, (Capability<u64>, usize, Instant)> = BTreeMap::new();
        move |(input, frontier), output| {
            let Some(stage) = stage.pipelined() else {
                unreachable!("wired only for stages that are pipelined");
            };
            input.for_each_time(|time, data| {
                let step = *time.time();
                let mut batch: Vec<Group> = data.flat_map(std::mem::take).collect();
                if shared.failed() {
                    output.session(&time).give_container(&mut batch);
                    return;
                }
                let entry = held
                    .entry(step)
                    .or_insert_with(|| (time.retain(0), 0, Instant::now()));
                match stage.submit(batch, &shared.context(&id, step, worker), wake.clone()) {
                    Ok(()) => entry.1 += 1,
                    Err(e) => shared.fail(format!("stage `{id}` ({kind}) at step {step}: {e}")),
                }
            });
            match stage.ready() {
                Ok(done) => {
                    for (step, mut groups) in done {
                        let Some(entry) = held.get_mut(&step) else {
                            shared.fail(format!("stage `{id}` ({kind}) returned groups of step {step}, which it was not given"));
                            continue;
                        };
                        output.session(&entry.0).give_container(&mut groups);
                        entry.1 = entry.1.saturating_sub(1);
                        shared.note_wall(step, &id, entry.2.elapsed().as_secs_f64());
                    }
                }
                Err(e) => shared.fail(format!("stage `{id}` ({kind}): {e}")),
            }
            // A failed run does not wait for answers still out.
            let failed = shared.failed();
            held.retain(|step, (_, out, _)| (*out > 0 && !failed) || frontier.less_equal(step));
        }
    })
}

/// A step's rows for the writer thread.
struct WriteJob {
    step: u64,
    /// (part file, stream name, rows) for each non-empty stream.
    files: Vec<(PathBuf, String, Rows)>,
    /// Where the writer says the step is stored.
    done: mpsc::Sender<u64>,
    /// Wakes the operator that waits for `done`.
    activator: SyncActivator,
}

/// Starts a worker's writer thread: it sorts, encodes and writes each job's files, then wakes
/// the operator that handed them over. It ends when every sender is dropped.
fn spawn_writer(shared: Arc<Shared>, worker: usize) -> mpsc::Sender<WriteJob> {
    let (jobs, queue) = mpsc::channel::<WriteJob>();
    std::thread::Builder::new()
        .name(format!("tandem-writer-{worker}"))
        .spawn(move || {
            for job in queue {
                for (path, name, mut rows) in job.files {
                    if shared.failed() {
                        break; // a failed run stores no further step; what is stored stays whole
                    }
                    rows.sort();
                    if let Err(e) = rows.write_part(&path) {
                        shared.fail(format!("storing stream `{name}` of step {}: {e}", job.step));
                    }
                }
                // The operator may be gone if the run is being torn down; nothing to tell then.
                let _ = job.done.send(job.step);
                let _ = job.activator.activate();
            }
        })
        .expect("the OS can start one writer thread per worker");
    jobs
}

/// Passes groups through and, once a step is complete on this worker, hands the given streams'
/// rows to the writer; holds the step's capability until the writer has stored them.
fn store<'s, P>(
    stream: Stream<'s, u64, Vec<Group>>,
    pact: P,
    stage_id: &Arc<str>,
    streams: &[(String, StreamKind)],
    shared: &Arc<Shared>,
    writer: &mpsc::Sender<WriteJob>,
    worker: usize,
) -> Stream<'s, u64, Vec<Group>>
where
    P: ParallelizationContract<u64, Vec<Group>>,
{
    let shared = shared.clone();
    let streams = streams.to_vec();
    let writer = writer.clone();
    let name = format!("Store({stage_id})");
    let scope = stream.scope();
    stream.unary_frontier(pact, &name, move |_, info| {
        let activator = scope.worker().sync_activator_for(info.address.to_vec());
        let (done, stored) = mpsc::channel::<u64>();
        let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Rows>)> = BTreeMap::new();
        let mut writing: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each_time(|time, data| {
                let step = *time.time();
                let entry = pending.entry(step).or_insert_with(|| {
                    (
                        time.retain(0),
                        streams.iter().map(|(_, k)| Rows::empty(*k)).collect(),
                    )
                });
                for batch in data {
                    for group in batch.iter() {
                        for rows in entry.1.iter_mut() {
                            rows.extend_from(group);
                        }
                    }
                    output.session(&time).give_container(batch);
                }
            });
            while let Some((&step, _)) = pending.first_key_value() {
                if frontier.less_equal(&step) {
                    break;
                }
                let (capability, rows) = pending.remove(&step).expect("first key exists");
                let files: Vec<(PathBuf, String, Rows)> = streams
                    .iter()
                    .zip(rows)
                    .filter(|(_, rows)| !rows.is_empty())
                    .map(|((name, _), rows)| {
                        (shared.layout.part(name, step, worker), name.clone(), rows)
                    })
                    .collect();
                if files.is_empty() || shared.failed() {
                    continue; // nothing to store: the capability is dropped here
                }
                let job = WriteJob {
                    step,
                    files,
                    done: done.clone(),
                    activator: activator.clone(),
                };
                if writer.send(job).is_err() {
                    shared.fail(format!("the writer of worker {worker} stopped"));
                    continue;
                }
                writing.insert(step, capability);
            }
            while let Ok(step) = stored.try_recv() {
                writing.remove(&step);
            }
        }
    })
}

/// Counts each step's groups, samples and errors on worker 0 (of process 0), which reports
/// them; the returned stream carries nothing and is complete for a step once its counts are in.
fn count<'s>(
    stream: Stream<'s, u64, Vec<Group>>,
    shared: &Arc<Shared>,
) -> Stream<'s, u64, Vec<()>> {
    let shared = shared.clone();
    stream
        .unary(Pipeline, "Count", |_, _| {
            move |input, output| {
                input.for_each_time(|time, data| {
                    let mut counts = (0u64, 0u64, 0u64);
                    for group in data.flat_map(|batch| batch.iter()) {
                        counts.0 += 1;
                        counts.1 += group.samples.len() as u64;
                        counts.2 += group.errors.len() as u64;
                    }
                    output.session(&time).give(counts);
                });
            }
        })
        .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &(u64, u64, u64)| 0),
            "Counts",
            move |_, _| {
                move |input, _output| {
                    input.for_each_time(|time, data| {
                        let step = *time.time();
                        let mut all = shared.counts.lock().expect("counts lock");
                        let total = all.entry(step).or_default();
                        total.step = step;
                        for (groups, samples, errors) in data.flat_map(|batch| batch.drain(..)) {
                            total.groups += groups;
                            total.samples += samples;
                            total.errors += errors;
                        }
                    });
                }
            },
        )
}

/// Records of one input held per step, each step with its capability, until the input's
/// frontier says the step is complete (what whole-step operators wait for).
pub(crate) struct Steps<T>(BTreeMap<u64, (Capability<u64>, Vec<T>)>);

impl<T> Default for Steps<T> {
    fn default() -> Self {
        Steps(BTreeMap::new())
    }
}

impl<T> Steps<T> {
    /// Takes the records of one timestamp that the input handed over.
    pub(crate) fn add<'a>(
        &mut self,
        time: timely::dataflow::operators::InputCapability<u64>,
        data: impl Iterator<Item = &'a mut Vec<T>>,
    ) where
        T: 'a,
    {
        let entry = self
            .0
            .entry(*time.time())
            .or_insert_with(|| (time.retain(0), Vec::new()));
        for batch in data {
            entry.1.append(batch);
        }
    }

    /// The steps the frontier has passed, oldest first, with their capabilities and records.
    pub(crate) fn complete(
        &mut self,
        frontier: &timely::progress::frontier::MutableAntichain<u64>,
    ) -> Vec<(u64, Capability<u64>, Vec<T>)> {
        let mut done = Vec::new();
        while let Some((&step, _)) = self.0.first_key_value() {
            if frontier.less_equal(&step) {
                break;
            }
            let (capability, records) = self.0.remove(&step).expect("first key exists");
            done.push((step, capability, records));
        }
        done
    }

    /// Whether no step is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a whole-step operator calls once a step's groups are all in (after the last step, for
/// sinks).
type FinishFn = Box<dyn FnMut() -> tandem_stages::Result<()>>;

/// Where a whole-step operator gathers a step.
#[derive(Clone, Copy)]
enum Gather {
    /// Every step on worker 0 (sinks, which live there).
    ToFirstWorker,
    /// Step t on worker t mod N of process 0, so that consecutive steps use different workers
    /// and the stage's instances share their state (a dual variable, a filter's history) in one
    /// process.
    ByStep,
}

/// Gathers each whole step on one worker, hands its groups to `apply` in `prompt_id` order, then
/// passes them on; holds the step's capability until then.
fn whole_step_operator<'s>(
    stream: Stream<'s, u64, Vec<Group>>,
    wiring: &StageWiring,
    shared: &Arc<Shared>,
    worker: usize,
    gather: Gather,
    mut apply: ApplyFn,
    mut finish: Option<FinishFn>,
) -> Stream<'s, u64, Vec<Group>> {
    let shared = shared.clone();
    let id = wiring.id.clone();
    let kind = wiring.kind.clone();
    let steps = shared.steps;
    // Process 0's workers: stages that keep state across steps share it in that process.
    let threads = shared.threads as u64;
    let pact = Exchange::new(move |g: &Group| match gather {
        Gather::ToFirstWorker => 0,
        Gather::ByStep => g.step() % threads,
    });
    stream.unary_frontier(pact, &id.clone(), move |_, _| {
        let mut pending = Steps::default();
        move |(input, frontier), output| {
            input.for_each_time(|time, data| pending.add(time, data));
            for (step, capability, mut groups) in pending.complete(frontier) {
                groups.sort_by(|a, b| a.prompt_id().cmp(b.prompt_id()));
                let mut ctx = shared.context(&id, step, worker);
                if let Gather::ToFirstWorker = gather {
                    ctx.stage_seconds = shared.step_seconds(step);
                }
                let started = Instant::now();
                if !shared.failed()
                    && let Err(e) = apply(&mut groups, &ctx)
                {
                    shared.fail(format!("stage `{id}` ({kind}) at step {step}: {e}"));
                }
                shared.add_seconds(step, &id, started.elapsed().as_secs_f64());
                output.session(&capability).give_container(&mut groups);
            }
            if frontier.is_empty()
                && pending.is_empty()
                && let Some(mut finish) = finish.take()
                && !shared.failed()
                && steps > 0
                && let Err(e) = finish()
            {
                shared.fail(format!("stage `{id}` ({kind}) finishing: {e}"));
            }
        }
    })
}
