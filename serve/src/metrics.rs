//! Prometheus metrics at `/metrics` (prometheus-client's text format): requests by who answered
//! and how, rejections, the escalation rate and what is left of the budget, the queue, batch
//! sizes, and latency histograms.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::budget::BudgetSnapshot;

/// Labels of an answered request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Answered {
    /// `device` or `cloud`.
    pub answered_by: &'static str,
    /// `local` (no help asked), `escalated`, `capped`, `fallback` (the cloud failed).
    pub route: &'static str,
}

/// Labels of a refused request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Refusal {
    /// `queue_full`, `unauthorized`, `bad_request`, `device_error`.
    pub reason: &'static str,
}

/// Labels of a latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct By {
    /// `device` or `cloud`.
    pub answered_by: &'static str,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<Answered, Counter>,
    refused: Family<Refusal, Counter>,
    cloud_failures: Counter,
    escalation_rate: Gauge<f64, AtomicU64>,
    budget_left: Gauge,
    budget_share: Gauge<f64, AtomicU64>,
    queue_depth: Gauge,
    batch_size: Histogram,
    latency: Family<By, Histogram>,
    device_seconds: Histogram,
    cloud_seconds: Histogram,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 1 ms to about 65 s.
    exponential_buckets(0.001, 2.0, 17)
}

impl Metrics {
    /// Registers every metric; `budget` is the configured share.
    pub fn new(budget: f64) -> Metrics {
        let mut registry = Registry::with_prefix("tandem_serve");
        let requests = Family::<Answered, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by who answered and how",
            requests.clone(),
        );
        let refused = Family::<Refusal, Counter>::default();
        registry.register("refused", "Requests refused, by reason", refused.clone());
        let cloud_failures = Counter::default();
        registry.register(
            "cloud_failures",
            "Escalations whose cloud call failed (the device answered instead)",
            cloud_failures.clone(),
        );
        let escalation_rate = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "escalation_rate",
            "Share of the requests the budget counts that went to the cloud",
            escalation_rate.clone(),
        );
        let budget_left = Gauge::default();
        registry.register(
            "budget_left",
            "Escalations that may go out now within the budget",
            budget_left.clone(),
        );
        let budget_share = Gauge::<f64, AtomicU64>::default();
        budget_share.set(budget);
        registry.register(
            "budget",
            "The configured largest share of escalated requests",
            budget_share.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests waiting for the device",
            queue_depth.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "batch_size",
            "Requests per device batch",
            batch_size.clone(),
        );
        let latency =
            Family::<By, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "request_duration_seconds",
            "From a request's arrival to its answer, by who answered",
            latency.clone(),
        );
        let device_seconds = Histogram::new(latency_buckets());
        registry.register(
            "device_duration_seconds",
            "A device pass, queueing included",
            device_seconds.clone(),
        );
        let cloud_seconds = Histogram::new(latency_buckets());
        registry.register(
            "cloud_duration_seconds",
            "A cloud call, retries included",
            cloud_seconds.clone(),
        );
        Metrics {
            registry,
            requests,
            refused,
            cloud_failures,
            escalation_rate,
            budget_left,
            budget_share,
            queue_depth,
            batch_size,
            latency,
            device_seconds,
            cloud_seconds,
        }
    }

    /// Counts an answered request and its latency.
    pub fn answered(&self, labels: Answered, seconds: f64) {
        self.latency
            .get_or_create(&By {
                answered_by: labels.answered_by,
            })
            .observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a refused request.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&Refusal { reason }).inc();
    }

    /// Counts a failed escalation.
    pub fn cloud_failed(&self) {
        self.cloud_failures.inc();
    }

    /// Records a device pass's time.
    pub fn device_pass(&self, seconds: f64) {
        self.device_seconds.observe(seconds);
    }

    /// Records a cloud call's time.
    pub fn cloud_call(&self, seconds: f64) {
        self.cloud_seconds.observe(seconds);
    }

    /// Records a batch's size.
    pub fn observe_batch(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    /// The text exposition, with the budget and queue as they are now.
    pub fn encode(&self, budget: BudgetSnapshot, queue_depth: usize) -> String {
        let rate = if budget.counted == 0 {
            0.0
        } else {
            budget.escalated as f64 / budget.counted as f64
        };
        self.escalation_rate.set(rate);
        self.budget_left.set(budget.left as i64);
        self.queue_depth.set(queue_depth as i64);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The configured share (for the `budget` gauge's readers in tests).
    pub fn budget(&self) -> f64 {
        self.budget_share.get()
    }
}
