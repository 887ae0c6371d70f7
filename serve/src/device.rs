//! The device model behind a bounded queue, batched.
//!
//! One thread owns the model (libtorch tensors stay on the thread that made them). Requests wait
//! in a bounded channel; the thread takes the first, waits up to the batch window for more (up to
//! the batch size), and decodes them together with [`policy::generate`], one left-padded batch
//! with a KV cache. Requests with different sampling settings go in separate passes of the same
//! round. A request's prompt is rendered here, from its question, with the template the model was
//! trained with ([`PromptParams::format`], as `generate.policy` and `tandem eval` do), with or
//! without the help option.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_schemas::FinishReason;
use tandem_stages::help::HelpTags;
use tandem_stages::policy::{
    self, DeviceSpec, GenerationRequest, Policy, PromptFormat, SamplingParams,
};
use tandem_stages::prompt::PromptParams;
use tokio::sync::{mpsc, oneshot};

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// How a request wants its device answer sampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Most new tokens.
    pub max_new_tokens: usize,
    /// Temperature (0 = greedy).
    pub temperature: f64,
    /// Nucleus threshold.
    pub top_p: f64,
    /// Seed of the sampling stream.
    pub seed: u64,
}

impl Sampling {
    /// Requests whose keys are equal are decoded in one pass.
    fn key(&self) -> (usize, u64, u64) {
        (
            self.max_new_tokens,
            self.temperature.to_bits(),
            self.top_p.to_bits(),
        )
    }
}

/// One question for the device.
#[derive(Debug)]
pub struct Job {
    /// The question (the client's last user message).
    pub question: String,
    /// Render with the help option (else without, as for a capped request).
    pub with_help: bool,
    /// How to sample.
    pub sampling: Sampling,
    reply: Option<oneshot::Sender<std::result::Result<DeviceAnswer, String>>>,
}

/// Where a job's answer arrives: the answer, or why there is none.
pub type AnswerReceiver = oneshot::Receiver<std::result::Result<DeviceAnswer, String>>;

impl Job {
    /// A job and the receiver of its answer.
    pub fn new(question: String, with_help: bool, sampling: Sampling) -> (Job, AnswerReceiver) {
        let (tx, rx) = oneshot::channel();
        (
            Job {
                question,
                with_help,
                sampling,
                reply: Some(tx),
            },
            rx,
        )
    }
}

/// The device's answer to a [`Job`].
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceAnswer {
    /// The text (special tokens dropped, cut after a stop string).
    pub text: String,
    /// Token ids generated.
    pub token_ids: Vec<u32>,
    /// Their log-probabilities.
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Whether it asks for help.
    pub asked_help: bool,
    /// Time from submission to the answer.
    pub elapsed: Duration,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: the client should come back later.
    Full,
    /// The device thread is gone (the server is stopping, or the model failed).
    Stopped,
}

/// The sending side of the device's queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct DeviceQueue {
    tx: mpsc::Sender<(Job, Instant)>,
    depth: Arc<AtomicUsize>,
}

impl DeviceQueue {
    /// A queue of `capacity` and its receiving end (which [`DeviceEngine`] drains; tests may
    /// hold it to see what was queued).
    pub fn bounded(capacity: usize) -> (DeviceQueue, mpsc::Receiver<(Job, Instant)>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            DeviceQueue {
                tx,
                depth: Arc::new(AtomicUsize::new(0)),
            },
            rx,
        )
    }

    /// Queues `job` unless the queue is full (a new request: the client is told to retry).
    pub fn try_submit(&self, job: Job) -> std::result::Result<(), Refused> {
        match self.tx.try_send((job, Instant::now())) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Refused::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused::Stopped),
        }
    }

    /// Queues `job`, waiting for room (a second pass of an admitted request is not refused).
    pub async fn submit(&self, job: Job) -> std::result::Result<(), Refused> {
        self.tx
            .send((job, Instant::now()))
            .await
            .map_err(|_| Refused::Stopped)?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

/// The device thread; dropping it closes the queue and joins the thread.
pub struct DeviceEngine {
    queue: Option<DeviceQueue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeviceEngine {
    /// Loads the model on its thread and starts serving the queue; fails if the model or its
    /// template does not load.
    pub fn start(config: &ServeConfig, metrics: Arc<Metrics>) -> Result<DeviceEngine> {
        let (queue, rx) = DeviceQueue::bounded(config.queue);
        let depth = queue.depth.clone();
        let (loaded_tx, loaded) = std::sync::mpsc::channel();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("serve-device".into())
            .spawn(move || {
                let worker = match Worker::load(&config) {
                    Ok(worker) => {
                        let _ = loaded_tx.send(Ok(()));
                        worker
                    }
                    Err(e) => {
                        let _ = loaded_tx.send(Err(e));
                        return;
                    }
                };
                worker.run(rx, &depth, &metrics);
            })
            .map_err(|e| Error::Io(format!("starting the device thread: {e}")))?;
        match loaded.recv() {
            Ok(Ok(())) => Ok(DeviceEngine {
                queue: Some(queue),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Model(
                "the device thread stopped while loading".into(),
            )),
        }
    }

    /// The queue's sending side.
    pub fn queue(&self) -> DeviceQueue {
        self.queue
            .clone()
            .expect("the queue lives as long as the engine")
    }
}

impl Drop for DeviceEngine {
    fn drop(&mut self) {
        // The thread ends when every sender is gone; the handlers' clones went with the router.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the device thread holds.
struct Worker {
    policy: Policy,
    with_help: PromptFormat,
    without_help: PromptFormat,
    stop: Vec<String>,
    eos: Vec<u32>,
    help: HelpTags,
    max_batch: usize,
    window: Duration,
}

impl Worker {
    fn load(config: &ServeConfig) -> Result<Worker> {
        let model = |e: String| Error::Model(format!("{}: {e}", config.model.display()));
        let device: DeviceSpec = config
            .device
            .parse()
            .map_err(|e: policy::PolicyError| Error::Config(format!("--device: {e}")))?;
        policy::set_threads(config.threads);
        let policy =
            Policy::load(&config.model, &device, None).map_err(|e| model(e.to_string()))?;
        if config.chat && !policy.tokenizer.has_chat_template() {
            return Err(model(
                "has no chat template; serve it with --no-chat (prompts as plain text)".into(),
            ));
        }
        let format = |template| {
            PromptParams {
                chat: config.chat,
                template,
                system_prompt: None,
                prompt_template: None,
            }
            .format(&policy.tokenizer, &config.model)
            .map_err(|e| Error::Model(format!("--template: {e}")))
        };
        let with_help = format(config.template)?;
        let without_help = format(config.template.map(|t| t.without_help()))?;
        let eos = policy.eos_token_ids();
        tracing::info!(
            model = %config.model.display(),
            device = %policy::describe_device(policy.model.device()),
            "device model loaded"
        );
        Ok(Worker {
            policy,
            with_help,
            without_help,
            stop: config.stop_strings(),
            eos,
            help: HelpTags::default(),
            max_batch: config.max_batch,
            window: config.batch_window,
        })
    }

    fn run(&self, mut rx: mpsc::Receiver<(Job, Instant)>, depth: &AtomicUsize, metrics: &Metrics) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            let opened = Instant::now();
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(mpsc::error::TryRecvError::Empty) if opened.elapsed() < self.window => {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    Err(_) => break,
                }
            }
            depth.fetch_sub(batch.len(), Ordering::Relaxed);
            metrics.observe_batch(batch.len());
            self.answer(batch);
        }
    }

    /// Answers one round: one pass per distinct sampling setting.
    fn answer(&self, mut batch: Vec<(Job, Instant)>) {
        batch.sort_by_key(|(job, _)| job.sampling.key());
        let mut rest = batch.as_mut_slice();
        while let Some(((first, _), _)) = rest.split_first() {
            let key = first.sampling.key();
            let n = rest
                .iter()
                .take_while(|(j, _)| j.sampling.key() == key)
                .count();
            let (pass, tail) = std::mem::take(&mut rest).split_at_mut(n);
            self.pass(pass);
            rest = tail;
        }
    }

    fn pass(&self, jobs: &mut [(Job, Instant)]) {
        let mut requests = Vec::new();
        let mut owners = Vec::new();
        for (i, (job, _)) in jobs.iter_mut().enumerate() {
            let format = if job.with_help {
                &self.with_help
            } else {
                &self.without_help
            };
            match format.encode(&self.policy.tokenizer, &job.question) {
                Ok(ids) if !ids.is_empty() => {
                    requests.push(GenerationRequest {
                        prompt_ids: ids,
                        num_samples: 1,
                        seed: job.sampling.seed,
                    });
                    owners.push(i);
                }
                Ok(_) => send(job, Err("the question renders to no tokens".into())),
                Err(e) => send(job, Err(format!("rendering the prompt: {e}"))),
            }
        }
        let Some(&first) = owners.first() else {
            return;
        };
        let sampling = jobs[first].0.sampling;
        let params = SamplingParams {
            max_new_tokens: sampling.max_new_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: 0,
            stop: self.stop.clone(),
            eos_token_ids: self.eos.clone(),
        };
        let result = policy::generate(
            &self.policy.model,
            &self.policy.tokenizer,
            &requests,
            &params,
        );
        match result {
            Ok(completions) => {
                for ((owner, request), mut samples) in owners.iter().zip(&requests).zip(completions)
                {
                    let (job, queued) = &mut jobs[*owner];
                    let answer = samples.pop().map(|c| DeviceAnswer {
                        asked_help: self.help.asks_help(&c.text),
                        text: c.text,
                        token_ids: c.token_ids,
                        logprobs: c.logprobs,
                        finish_reason: c.finish_reason,
                        prompt_tokens: request.prompt_ids.len() as u64,
                        elapsed: queued.elapsed(),
                    });
                    send(job, answer.ok_or_else(|| "no completion".to_owned()));
                }
            }
            Err(e) => {
                let message = format!("device generation failed: {e}");
                tracing::error!("{message}");
                for owner in owners {
                    send(&mut jobs[owner].0, Err(message.clone()));
                }
            }
        }
    }
}

/// Sends a job's answer (once: a job's reply channel is taken by its first answer).
fn send(job: &mut Job, answer: std::result::Result<DeviceAnswer, String>) {
    if let Some(reply) = job.reply.take() {
        // The client may have gone; its handler then no longer waits.
        let _ = reply.send(answer);
    }
}
