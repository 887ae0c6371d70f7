//! The four stage contracts and the contexts stages are built and run with.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tandem_schemas::{Facet, Facets, Group};

use crate::Result;

/// Settings of the run every stage may read (from the pipeline's `run:` section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSettings {
    /// Prompts per training step.
    pub batch_size: usize,
    /// Samples per prompt (G).
    pub group_size: usize,
    /// Steps to run; `None` means one epoch of the source.
    pub steps: Option<u64>,
    /// The run's seed; stages derive their randomness from it.
    pub seed: u64,
    /// Steps generation may run ahead of the learner (0 = on-policy).
    pub max_staleness: u64,
    /// Set when the run continues a stored one (`tandem run --resume`).
    pub resume: Option<ResumePoint>,
}

/// Where a resumed run picks up: the first step it runs, and the checkpoint whose weights,
/// optimiser moments and counters stages that keep state across steps load (a learner and the
/// generator it feeds). Stages without such state need nothing: every step's randomness is
/// derived from the seed and the step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// The first step the resumed run computes; steps before it are stored.
    pub step: u64,
    /// The run directory being continued.
    pub run_dir: PathBuf,
    /// The newest complete checkpoint (`checkpoints/step-<step - 1>`), if the run keeps them.
    pub checkpoint: Option<PathBuf>,
}

/// What a stage kind is built with, besides its own parameters.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The stage's YAML id.
    pub stage_id: Arc<str>,
    /// The directory relative paths in parameters are resolved against (the working directory).
    pub base_dir: PathBuf,
    /// The run's settings.
    pub run: RunSettings,
    /// State shared by the instances of one stage on every worker of a run.
    pub shared: SharedState,
}

/// State that the instances of a stage on different workers share (a budget, a rate limit, a
/// connection pool). The pipeline hands every build of one plan the same `SharedState`, so
/// a stage reaches its siblings by a key, usually its own id.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let shared = tandem_stages::SharedState::default();
/// let a = shared.get_or_init("cloud", || AtomicU64::new(0));
/// let b = shared.get_or_init("cloud", || AtomicU64::new(7));
/// a.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(b.load(Ordering::Relaxed), 1, "the same value, made once");
/// ```
#[derive(Clone, Default)]
pub struct SharedState(Arc<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>>);

impl SharedState {
    /// The value under `key`, made by `init` on first use. A key holding another type is
    /// replaced (keys are stage ids, so that only happens when a stage changes its own type).
    pub fn get_or_init<T: Any + Send + Sync>(&self, key: &str, init: impl FnOnce() -> T) -> Arc<T> {
        match self.get_or_try_init(key, || Ok::<T, std::convert::Infallible>(init())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// As [`SharedState::get_or_init`], for an `init` that can fail (nothing is stored then).
    pub fn get_or_try_init<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        init: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<Arc<T>, E> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = map.get(key).cloned()
            && let Ok(value) = value.downcast::<T>()
        {
            return Ok(value);
        }
        let value = Arc::new(init()?);
        map.insert(key.to_owned(), value.clone());
        Ok(value)
    }
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_set().entries(map.keys()).finish()
    }
}

/// Figures a stage measured for a step that belong in that step's metrics row, which the
/// learner writes: `generate.openai` puts its weight-sync time and probe gap here. Shared
/// under [`StepFigures::KEY`].
#[derive(Debug, Default)]
pub struct StepFigures(Mutex<BTreeMap<u64, Vec<(String, f64)>>>);

impl StepFigures {
    /// The key in the run's [`SharedState`].
    pub const KEY: &'static str = "step-figures";

    /// Records `value` as `name` for `step`.
    pub fn add(&self, step: u64, name: &str, value: f64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(step).or_default().push((name.to_owned(), value));
    }

    /// The figures recorded for `step`, removed (with any of earlier steps nobody took).
    pub fn take(&self, step: u64) -> Vec<(String, f64)> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let later = map.split_off(&(step + 1));
        let mine = std::mem::replace(&mut *map, later).remove(&step);
        mine.unwrap_or_default()
    }
}

impl Default for RunSettings {
    /// One prompt a step, one sample a prompt, seed 0: the smallest run, for tests of a stage.
    fn default() -> Self {
        RunSettings {
            batch_size: 1,
            group_size: 1,
            steps: None,
            seed: 0,
            max_staleness: 0,
            resume: None,
        }
    }
}

impl BuildContext {
    /// The context of stage `stage_id` in a run with `run` settings, resolving paths against the
    /// working directory (as the pipeline does).
    pub fn new(stage_id: &str, run: RunSettings) -> BuildContext {
        BuildContext {
            stage_id: stage_id.into(),
            base_dir: std::env::current_dir().unwrap_or_default(),
            run,
            shared: SharedState::default(),
        }
    }

    /// Resolves a path from the parameters against [`BuildContext::base_dir`].
    pub fn resolve(&self, path: &std::path::Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Where a call happens: which run, step and worker.
#[derive(Clone, Debug)]
pub struct StepContext {
    /// The run's id (written into every row).
    pub run_id: Arc<str>,
    /// The stage's YAML id (written into error rows).
    pub stage_id: Arc<str>,
    /// The training step.
    pub step: u64,
    /// This worker's index.
    pub worker: usize,
    /// Number of workers.
    pub workers: usize,
    /// The run's directory, where a stage may keep files of its own (the learner's
    /// checkpoints); `None` when a stage is called outside a run.
    pub run_dir: Option<Arc<std::path::Path>>,
    /// For sinks: the seconds each earlier stage spent on this step, in pipeline order (busy
    /// time summed over workers; for a pipelined stage such as the cloud, the wall time from
    /// the step's first request to its last answer), then `step`: the wall time since the step
    /// was fed. Empty for other stages and outside a run.
    pub stage_seconds: Vec<(String, f64)>,
}

impl StepContext {
    /// The context of one call on a single worker: what a test of a stage passes to it.
    ///
    /// ```
    /// let ctx = tandem_stages::StepContext::single_worker("run-1", "verdicts", 3);
    /// assert_eq!((ctx.step, ctx.worker, ctx.workers), (3, 0, 1));
    /// ```
    pub fn single_worker(run_id: &str, stage_id: &str, step: u64) -> StepContext {
        StepContext {
            run_id: run_id.into(),
            stage_id: stage_id.into(),
            step,
            worker: 0,
            workers: 1,
            run_dir: None,
            stage_seconds: Vec::new(),
        }
    }
}

/// Emits the groups (usually prompt-only) of each step. Runs on one worker.
pub trait Source: Send {
    /// The facets its groups carry (at least [`Facet::Prompt`]).
    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Prompt])
    }

    /// How many steps the source has on its own (one epoch, or the steps a stored run holds);
    /// the pipeline runs `run.steps` when set, else this.
    fn natural_steps(&self) -> u64;

    /// The groups of `step`. Their rows must carry `ctx.run_id` and `ctx.step`.
    fn step(&mut self, ctx: &StepContext) -> Result<Vec<Group>>;
}

/// Fills in the G samples of prompt groups. Runs where the policy lives.
pub trait Generator: Send {
    /// What it reads (usually [`Facet::Prompt`]).
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Prompt])
    }

    /// Generates samples for every group. A group it cannot serve gets an error row.
    fn generate(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()>;
}

/// What a group stage sees in one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Batches of groups as they arrive, on every worker (most stages).
    #[default]
    Group,
    /// Every group of a step at once, in `prompt_id` order, on one worker: for stages whose
    /// decision about one group depends on the others (a filter choosing a share of the batch,
    /// batch-normalised advantages).
    Step,
}

/// Adds to each group (verdicts, rewards, …). Never splits, drops or reorders groups' samples.
pub trait GroupStage: Send {
    /// Facets the stage reads; the plan rejects a pipeline where they are not provided upstream.
    fn needs(&self) -> Facets;

    /// Facets the stage adds; they are its materialised stream.
    fn provides(&self) -> Facets;

    /// Whether it sees groups as they arrive or whole steps (default: as they arrive).
    fn scope(&self) -> Scope {
        Scope::Group
    }

    /// Processes a batch of groups of one step (all of them, with [`Scope::Step`]). A record
    /// that fails becomes an error row on its group; an `Err` stops the run.
    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()>;

    /// A stage that waits on I/O (a remote model, a service) returns itself here, and the
    /// pipeline then hands it batches through [`Pipelined`] instead of [`GroupStage::process`]:
    /// its worker goes on with other stages and later steps while answers are awaited. `process`
    /// stays the way to call the stage directly (submit and wait).
    fn pipelined(&mut self) -> Option<&mut dyn Pipelined> {
        None
    }
}

/// Tells the pipeline, from any thread, that a [`Pipelined`] stage has batches ready.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The asynchronous side of a group stage that waits on I/O. The pipeline holds a step open
/// until every batch it submitted for that step has come back from [`Pipelined::ready`].
pub trait Pipelined {
    /// Starts work on a batch of groups of `ctx.step` and returns without waiting; calls
    /// `wake` whenever [`Pipelined::ready`] has something new. An `Err` stops the run.
    fn submit(&mut self, groups: Vec<Group>, ctx: &StepContext, wake: Wake) -> Result<()>;

    /// The batches finished since the last call, each with its step, in any order. An `Err`
    /// (an answer that will never heal, like a rejected API key) stops the run.
    fn ready(&mut self) -> Result<Vec<(u64, Vec<Group>)>>;
}

/// Consumes finished groups (writers, the learner). Sees every group of a step, on one worker.
pub trait Sink: Send {
    /// Facets it reads.
    fn needs(&self) -> Facets;

    /// Consumes all groups of one step, sorted by `prompt_id`; called once per step in order.
    /// A group it cannot use gets an error row (stored in `errors` like any stage's); an `Err`
    /// stops the run.
    fn consume(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()>;

    /// Called once after the last step.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether it updates the policy that generates (a learner). The pipeline then lets
    /// generation run at most `run.max_staleness` steps ahead of it.
    fn updates_policy(&self) -> bool {
        false
    }

    /// Streams it writes itself (name and row type), for the run's manifest; a learner writes
    /// `metrics`. They go to `streams/<name>/step=<n>/part-0.parquet` like any other.
    fn streams(&self) -> Vec<(String, tandem_schemas::StreamKind)> {
        Vec::new()
    }
}

/// A built stage, by contract.
pub enum Built {
    /// A source.
    Source(Box<dyn Source>),
    /// A generator.
    Generator(Box<dyn Generator>),
    /// A group stage.
    Group(Box<dyn GroupStage>),
    /// A sink.
    Sink(Box<dyn Sink>),
}

impl Built {
    /// What the stage reads.
    pub fn needs(&self) -> Facets {
        match self {
            Built::Source(_) => Facets::NONE,
            Built::Generator(g) => g.needs(),
            Built::Group(g) => g.needs(),
            Built::Sink(s) => s.needs(),
        }
    }

    /// What the stage sees in one call (sinks always see whole steps).
    pub fn scope(&self) -> Scope {
        match self {
            Built::Group(g) => g.scope(),
            Built::Sink(_) => Scope::Step,
            Built::Source(_) | Built::Generator(_) => Scope::Group,
        }
    }

    /// What the stage adds (and so materialises).
    pub fn provides(&self) -> Facets {
        match self {
            Built::Source(s) => s.provides(),
            Built::Generator(_) => Facets::of(&[Facet::Samples]),
            Built::Group(g) => g.provides(),
            Built::Sink(_) => Facets::NONE,
        }
    }
}
