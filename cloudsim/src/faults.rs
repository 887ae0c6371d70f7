//! Fault injection: per request, at most one fault, drawn with the configured rates.

use rand::Rng;

/// What happens to one chat request on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// No fault: the reply, after its latency.
    None,
    /// `429 Too Many Requests` with a `Retry-After` header, at once.
    RateLimited,
    /// `500 Internal Server Error` after the latency.
    ServerError,
    /// The reply only after the hang time (a client should time out first).
    Hang,
    /// `200` with a JSON content type and a body that is not JSON.
    Malformed,
    /// `200` whose body stops part-way, then the connection closes.
    Truncated,
    /// The TCP connection is reset (RST) without a reply.
    Reset,
}

impl Fault {
    /// The kinds of fault, in the order their rates are laid out on [0, 1).
    pub const ALL: [Fault; 6] = [
        Fault::RateLimited,
        Fault::ServerError,
        Fault::Hang,
        Fault::Malformed,
        Fault::Truncated,
        Fault::Reset,
    ];

    /// The name in the request log's `outcome`.
    pub fn outcome(self) -> &'static str {
        match self {
            Fault::None => "ok",
            Fault::RateLimited => "http_429",
            Fault::ServerError => "http_500",
            Fault::Hang => "hang",
            Fault::Malformed => "malformed",
            Fault::Truncated => "truncated",
            Fault::Reset => "reset",
        }
    }
}

/// The probability of each fault per request; they add up to at most 1 (the rest is no fault).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    /// `429` with `Retry-After`.
    pub rate_limited: f64,
    /// `500`.
    pub server_error: f64,
    /// Answer only after the hang time.
    pub hang: f64,
    /// Not JSON.
    pub malformed: f64,
    /// Body cut short.
    pub truncated: f64,
    /// Connection reset.
    pub reset: f64,
}

/// Slack for rates like 6 × 1/6 whose float sum lands a hair above 1.
const SUM_SLACK: f64 = 1e-9;

impl FaultRates {
    /// Every kind of fault at rate `rate`.
    pub fn every_kind(rate: f64) -> FaultRates {
        FaultRates {
            rate_limited: rate,
            server_error: rate,
            hang: rate,
            malformed: rate,
            truncated: rate,
            reset: rate,
        }
    }

    /// The rate of one kind (0 for [`Fault::None`]).
    pub fn rate(&self, fault: Fault) -> f64 {
        match fault {
            Fault::None => 0.0,
            Fault::RateLimited => self.rate_limited,
            Fault::ServerError => self.server_error,
            Fault::Hang => self.hang,
            Fault::Malformed => self.malformed,
            Fault::Truncated => self.truncated,
            Fault::Reset => self.reset,
        }
    }

    /// The probability that a request meets some fault.
    pub fn total(&self) -> f64 {
        Fault::ALL.iter().map(|&f| self.rate(f)).sum()
    }

    /// Each rate in [0, 1], and all of them together at most 1.
    pub fn validate(&self) -> Result<(), String> {
        for fault in Fault::ALL {
            let rate = self.rate(fault);
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "the {} fault rate must be in [0, 1], got {rate}",
                    fault.outcome()
                ));
            }
        }
        let total = self.total();
        if total > 1.0 + SUM_SLACK {
            let parts: Vec<String> = Fault::ALL
                .iter()
                .filter(|&&f| self.rate(f) > 0.0)
                .map(|&f| format!("{} {}", f.outcome(), self.rate(f)))
                .collect();
            // Rounded so that 6 × 0.2 reads 1.2, not 1.2000000000000002.
            let shown = (total * 1e9).round() / 1e9;
            return Err(format!(
                "the fault rates add up to {shown} ({}), more than 1: a request meets at most one fault",
                parts.join(" + ")
            ));
        }
        Ok(())
    }

    /// The fault of one request: one uniform draw, laid over the rates in [`Fault::ALL`] order.
    pub fn draw(&self, rng: &mut impl Rng) -> Fault {
        let u: f64 = rng.random();
        let mut edge = 0.0;
        for fault in Fault::ALL {
            edge += self.rate(fault);
            if u < edge {
                return fault;
            }
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::seeded::{Purpose, rng};

    fn key(i: u64) -> [u8; 32] {
        let mut key = [0; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        key
    }

    #[test]
    fn the_same_request_and_attempt_draw_the_same_fault() {
        let rates = FaultRates::every_kind(0.1);
        for i in 0..200 {
            let first = rates.draw(&mut rng(7, Purpose::Fault, &key(i), 1));
            let again = rates.draw(&mut rng(7, Purpose::Fault, &key(i), 1));
            assert_eq!(first, again, "request {i}");
        }
        // Another attempt, or another seed, is another draw: over many requests some differ.
        let differs = |seed: u64, attempt: u64| {
            (0..200).any(|i| {
                rates.draw(&mut rng(7, Purpose::Fault, &key(i), 1))
                    != rates.draw(&mut rng(seed, Purpose::Fault, &key(i), attempt))
            })
        };
        assert!(differs(7, 2));
        assert!(differs(8, 1));
    }

    #[test]
    fn fault_frequencies_match_rates_200000_draws() {
        let rates = FaultRates {
            rate_limited: 0.2,
            server_error: 0.05,
            hang: 0.01,
            malformed: 0.1,
            truncated: 0.0,
            reset: 0.3,
        };
        let n = 200_000u64;
        let mut counts: HashMap<Fault, u64> = HashMap::new();
        for i in 0..n {
            // Requests and attempts both vary, as they do in a run with retries.
            let fault = rates.draw(&mut rng(1, Purpose::Fault, &key(i / 4), i % 4));
            *counts.entry(fault).or_default() += 1;
        }
        let none_rate = 1.0 - rates.total();
        for (fault, rate) in Fault::ALL
            .iter()
            .map(|&f| (f, rates.rate(f)))
            .chain([(Fault::None, none_rate)])
        {
            let seen = counts.get(&fault).copied().unwrap_or(0) as f64 / n as f64;
            let standard_error = (rate * (1.0 - rate) / n as f64).sqrt();
            assert!(
                (seen - rate).abs() <= 5.0 * standard_error + 1e-12,
                "{fault:?}: rate {rate}, seen {seen} (standard error {standard_error})"
            );
        }
    }

    #[test]
    fn rates_outside_0_1_or_summing_past_1_are_rejected() {
        assert!(FaultRates::every_kind(1.0 / 6.0).validate().is_ok());
        let error = FaultRates::every_kind(0.2).validate().unwrap_err();
        assert!(error.contains("add up to 1.2"), "{error}");
        let negative = FaultRates {
            hang: -0.1,
            ..FaultRates::default()
        };
        assert!(negative.validate().unwrap_err().contains("hang"));
        let nan = FaultRates {
            reset: f64::NAN,
            ..FaultRates::default()
        };
        assert!(nan.validate().is_err());
    }
}
