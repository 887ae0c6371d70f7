//! `cloud.openai`: the cloud model's answer to each prompt some sample asked help for, from any
//! OpenAI-compatible Chat Completions endpoint (OpenAI, DeepSeek, vLLM, llama.cpp, Ollama, or
//! `tandem cloud-sim`).
//!
//! - **Only when needed**: a group gets a call when at least one of its samples asked for help
//!   (`asked_help`) and it holds no cloud answer yet (a replayed group keeps its stored one, so
//!   replay never calls). A prompt is sent at most once per run, however many samples or steps
//!   ask: later asks are cache hits. Answers are kept in a disk cache (`cache_dir`), keyed by a
//!   hash of (endpoint, model, messages, parameters), which survives restarts and is shared
//!   between runs.
//! - **Flow**: calls run on an I/O thread, up to `max_in_flight` at once, under requests/min and
//!   tokens/min limits; the pipeline goes on with later steps meanwhile ([`Pipelined`]).
//!   Failures that heal (timeouts, resets, 408/409/429/5xx, garbled bodies) are retried with
//!   exponential backoff and jitter, honouring `Retry-After`; 400/401/403/404 stop the run with a
//!   message that names the key's variable, never the key.
//! - **Ledger**: every ask is a row of the stage's stream ([`CloudRecord`]): tokens, cost,
//!   latency, attempts, cache hit, error kind. A call past a `budget` cap is refused and recorded
//!   with `error_kind: budget`; a call whose retries are spent has the failure's kind and an
//!   error row. Either way the group has no cloud answer, which `reward.collab` scores as a
//!   failed cloud answer. Cache hits cost nothing and count no tokens, so summing the ledger
//!   gives what was billed.

mod cache;
mod config;
mod engine;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

pub use crate::net::RetryPolicy;
pub use cache::{CachedAnswer, DiskCache};
pub use config::{Ask, BudgetConfig, CloudConfig, Prices};
use engine::{Engine, Outcome};
pub use engine::{Reply, call_with_retries, parse_response};
use tandem_schemas::{CloudRecord, Facet, Facets, Group};

use crate::contract::{BuildContext, Built, GroupStage, Pipelined, StepContext, Wake};
use crate::registry::StageConfig;
use crate::{Result, StageError};

impl StageConfig for CloudConfig {
    fn build(self, ctx: &BuildContext) -> Result<Built> {
        self.validate()?;
        // One engine (client, I/O thread, limits, budget, memo) for the stage on all workers.
        let key = format!("cloud.openai:{}", ctx.stage_id);
        let engine = ctx
            .shared
            .get_or_try_init(&key, || Engine::new(self, ctx))?;
        let (done_tx, done) = mpsc::channel();
        Ok(Built::Group(Box::new(CloudStage {
            engine,
            done_tx,
            done,
            batches: HashMap::new(),
            next_batch: 0,
            finished: Vec::new(),
        })))
    }
}

/// A call's result on its way back to the worker.
struct Done {
    batch: u64,
    index: usize,
    hash: String,
    outcome: Outcome,
}

/// Groups of one submitted batch, waiting for their answers.
struct Batch {
    ctx: StepContext,
    groups: Vec<Group>,
    pending: usize,
}

/// The stage on one worker.
pub struct CloudStage {
    engine: Arc<Engine>,
    done_tx: Sender<Done>,
    done: Receiver<Done>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    finished: Vec<(u64, Vec<Group>)>,
}

impl CloudStage {
    /// Records a finished call on its group; a fatal answer stops the run.
    fn settle(&mut self, done: Done) -> Result<()> {
        let Some(batch) = self.batches.get_mut(&done.batch) else {
            return Ok(());
        };
        batch.pending -= 1;
        let config = &self.engine.config;
        let group = &mut batch.groups[done.index];
        let mut record = CloudRecord {
            run_id: group.prompt.run_id.clone(),
            step: group.prompt.step,
            prompt_id: group.prompt.prompt_id.clone(),
            model: config.model.clone(),
            request_hash: done.hash,
            ..CloudRecord::default()
        };
        match done.outcome {
            Outcome::Answer {
                answer,
                cache_hit,
                latency_ms,
                attempts,
            } => {
                record.model = answer.model;
                record.answer = Some(answer.answer);
                record.reasoning = answer.reasoning;
                record.latency_ms = latency_ms;
                record.cache_hit = cache_hit;
                record.attempts = attempts;
                if !cache_hit {
                    record.tokens_in = answer.tokens_in;
                    record.tokens_out = answer.tokens_out;
                    record.cost_usd = config.prices.cost(answer.tokens_in, answer.tokens_out);
                }
            }
            Outcome::Failed {
                kind,
                message,
                attempts,
                latency_ms,
            } => {
                if kind != "budget" {
                    group.push_error(&batch.ctx.stage_id, None, &kind, message);
                }
                record.error_kind = Some(kind);
                record.attempts = attempts;
                record.latency_ms = latency_ms;
            }
            Outcome::Fatal(message) => {
                record.error_kind = Some("refused".into());
                group.cloud = Some(record);
                return Err(StageError::Run(message));
            }
        }
        group.cloud = Some(record);
        Ok(())
    }

    /// Moves batches with nothing pending to `finished`.
    fn collect_finished(&mut self) {
        let done: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, b)| b.pending == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(batch) = self.batches.remove(&id) {
                self.finished.push((batch.ctx.step, batch.groups));
            }
        }
    }
}

/// Whether a group needs the cloud: no answer is there yet, and a sample asked (or the stage
/// asks for every prompt).
fn needs_call(group: &Group, ask: Ask) -> bool {
    group.cloud.is_none() && (ask == Ask::All || group.samples.iter().any(|s| s.asked_help))
}

impl Pipelined for CloudStage {
    fn submit(&mut self, groups: Vec<Group>, ctx: &StepContext, wake: Wake) -> Result<()> {
        let id = self.next_batch;
        self.next_batch += 1;
        let mut pending = 0;
        for (index, group) in groups.iter().enumerate() {
            if !needs_call(group, self.engine.config.ask) {
                continue;
            }
            pending += 1;
            let engine = self.engine.clone();
            let config = &self.engine.config;
            let body = config.body(&group.prompt.question);
            let hash = config.request_hash(&body);
            let tx = self.done_tx.clone();
            let wake = wake.clone();
            let step = ctx.step;
            self.engine.spawn(async move {
                let outcome = engine.answer(hash.clone(), body, step).await;
                let _ = tx.send(Done {
                    batch: id,
                    index,
                    hash,
                    outcome,
                });
                wake();
            });
        }
        self.batches.insert(
            id,
            Batch {
                ctx: ctx.clone(),
                groups,
                pending,
            },
        );
        if pending == 0 {
            wake();
        }
        Ok(())
    }

    fn ready(&mut self) -> Result<Vec<(u64, Vec<Group>)>> {
        let mut fatal = None;
        while let Ok(done) = self.done.try_recv() {
            if let Err(e) = self.settle(done) {
                fatal.get_or_insert(e);
            }
        }
        self.collect_finished();
        if let Some(e) = fatal {
            return Err(e);
        }
        Ok(std::mem::take(&mut self.finished))
    }
}

impl GroupStage for CloudStage {
    fn needs(&self) -> Facets {
        Facets::of(&[Facet::Prompt, Facet::Samples])
    }

    fn provides(&self) -> Facets {
        Facets::of(&[Facet::Cloud])
    }

    fn process(&mut self, groups: &mut [Group], ctx: &StepContext) -> Result<()> {
        let owned: Vec<Group> = groups.iter_mut().map(std::mem::take).collect();
        self.submit(owned, ctx, Arc::new(|| {}))?;
        let id = self.next_batch - 1;
        while self.batches.get(&id).is_some_and(|b| b.pending > 0) {
            let done = self
                .done
                .recv()
                .map_err(|_| StageError::Run("the cloud I/O thread stopped".into()))?;
            self.settle(done)?;
        }
        let batch = self.batches.remove(&id).expect("submitted above");
        for (slot, group) in groups.iter_mut().zip(batch.groups) {
            *slot = group;
        }
        Ok(())
    }

    fn pipelined(&mut self) -> Option<&mut dyn Pipelined> {
        Some(self)
    }
}
