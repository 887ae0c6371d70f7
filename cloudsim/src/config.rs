//! The simulator's resolved settings (the CLI's flags, checked and defaulted).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;

use super::error::{Error, Result};
use super::faults::FaultRates;

/// Everything the simulator does, decided before it starts.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every draw (accuracy, latency, faults, completion ids).
    pub seed: u64,
    /// The model `GET /v1/models` lists, and the `model` of replies to requests that name none.
    pub model: String,
    /// Probability that a reply carries the right answer; otherwise it carries a wrong one.
    pub accuracy: f64,
    /// Mean latency of a reply.
    pub latency_mean: Duration,
    /// How latencies spread around their mean.
    pub latency_dist: LatencyDist,
    /// A JSON Lines file of `{"question": …, "answer": …}` rows, answered from the file.
    pub gold: Option<PathBuf>,
    /// How the answer is marked in a reply.
    pub answer_format: AnswerFormat,
    /// Probability of each fault per request.
    pub faults: FaultRates,
    /// The `Retry-After` header of a 429, in seconds.
    pub retry_after: Duration,
    /// How long a hanging request waits before it is answered after all.
    pub hang: Duration,
    /// The bearer token every `/v1` request must carry; none means no check.
    pub api_key: Option<ApiKey>,
    /// Where to append one JSON line per chat request.
    pub request_log: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            model: "sim-oracle".into(),
            accuracy: 1.0,
            latency_mean: Duration::ZERO,
            latency_dist: LatencyDist::Fixed,
            gold: None,
            answer_format: AnswerFormat::Tag,
            faults: FaultRates::default(),
            retry_after: Duration::from_secs(1),
            hang: Duration::from_secs(600),
            api_key: None,
            request_log: None,
        }
    }
}

impl SimConfig {
    /// Checks the ranges: probabilities in [0, 1], fault rates adding up to at most 1.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.accuracy) {
            return Err(Error::Config(format!(
                "accuracy must be in [0, 1], got {}",
                self.accuracy
            )));
        }
        if self.model.is_empty() {
            return Err(Error::Config("the model name must not be empty".into()));
        }
        self.faults.validate().map_err(Error::Config)
    }
}

/// How the final answer is marked in a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AnswerFormat {
    /// `<think>reasoning</think>` then `<answer>X</answer>` (Template I, Countdown).
    Tag,
    /// Reasoning, then `The answer is $\boxed{X}$.` (Template II, MATH).
    Boxed,
}

/// The distribution of per-request latency; every kind has the configured mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LatencyDist {
    /// Exactly the mean.
    Fixed,
    /// Uniform on [0, 2 × mean].
    Uniform,
    /// Exponential (memoryless, a long tail).
    Exponential,
    /// Log-normal with σ = 0.5 (a realistic service-time shape).
    Lognormal,
}

/// σ of the log-normal latency: a p99 about 2.8 times the median.
const LOGNORMAL_SIGMA: f64 = 0.5;

impl LatencyDist {
    /// One latency with mean `mean`.
    pub fn sample(self, mean: Duration, rng: &mut impl Rng) -> Duration {
        let mean = mean.as_secs_f64();
        if mean == 0.0 {
            return Duration::ZERO;
        }
        let seconds = match self {
            LatencyDist::Fixed => mean,
            LatencyDist::Uniform => 2.0 * mean * rng.random::<f64>(),
            LatencyDist::Exponential => -mean * open_unit(rng).ln(),
            LatencyDist::Lognormal => {
                // Box–Muller; E[exp(μ + σZ)] = exp(μ + σ²/2) = mean.
                let z = (-2.0 * open_unit(rng).ln()).sqrt()
                    * (std::f64::consts::TAU * rng.random::<f64>()).cos();
                let mu = mean.ln() - LOGNORMAL_SIGMA * LOGNORMAL_SIGMA / 2.0;
                (mu + LOGNORMAL_SIGMA * z).exp()
            }
        };
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
    }
}

/// Uniform on (0, 1]: its logarithm is finite.
fn open_unit(rng: &mut impl Rng) -> f64 {
    1.0 - rng.random::<f64>()
}

/// A bearer token. It is compared, never shown: `Debug` prints `ApiKey(<redacted>)`.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; `None` if it is empty (an empty key would accept `Bearer ` alone).
    pub fn new(key: String) -> Option<ApiKey> {
        (!key.is_empty()).then_some(ApiKey(key))
    }

    /// Whether an `Authorization` header value is `Bearer <this key>`. Takes the same time
    /// wherever the first difference is, so response timing does not reveal a prefix.
    pub fn accepts(&self, authorization: &[u8]) -> bool {
        let Some(token) = authorization.strip_prefix(b"Bearer ") else {
            return false;
        };
        let key = self.0.as_bytes();
        token.len() == key.len()
            && token
                .iter()
                .zip(key)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn latency_means_match_the_configured_mean() {
        let mean = Duration::from_millis(100);
        for dist in [
            LatencyDist::Fixed,
            LatencyDist::Uniform,
            LatencyDist::Exponential,
            LatencyDist::Lognormal,
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let n = 20_000;
            let total: f64 = (0..n)
                .map(|_| dist.sample(mean, &mut rng).as_secs_f64())
                .sum();
            let average = total / f64::from(n);
            // The exponential's standard error is mean/√n ≈ 0.7 ms; 5 ms is many of them.
            assert!(
                (average - 0.1).abs() < 0.005,
                "{dist:?}: average {average} s"
            );
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(
            LatencyDist::Lognormal.sample(Duration::ZERO, &mut rng),
            Duration::ZERO
        );
    }

    #[test]
    fn api_keys_match_only_the_whole_bearer_token_and_never_print() {
        let key = ApiKey::new("sk-test-123".into()).unwrap();
        assert!(key.accepts(b"Bearer sk-test-123"));
        assert!(!key.accepts(b"Bearer sk-test-12"));
        assert!(!key.accepts(b"Bearer sk-test-1234"));
        assert!(!key.accepts(b"sk-test-123"));
        assert!(!key.accepts(b"Basic sk-test-123"));
        assert!(ApiKey::new(String::new()).is_none());
        assert!(!format!("{key:?}").contains("sk-test"));
    }

    #[test]
    fn out_of_range_settings_are_rejected() {
        let config = SimConfig {
            accuracy: 1.5,
            ..SimConfig::default()
        };
        assert!(config.validate().is_err());
        assert!(SimConfig::default().validate().is_ok());
    }
}
