//! [`Rho`]: the paper's ρ, D2 prompts allowed per D1 prompt, written as a fraction (`3/7`) or
//! a decimal (`0.4`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// ρ. The cap on D2 is `⌊ρ · |D1|⌋`; a fraction makes it exact (the paper's 3/7 × 7 = 3, where
/// the decimal 0.428571 × 7 = 2.999997 floors to 2).
///
/// ```
/// use tandem_stages::filter::Rho;
/// let paper: Rho = serde_json::from_value(serde_json::json!("3/7")).unwrap();
/// assert_eq!((paper.cap(7), paper.cap(6), paper.cap(14)), (3, 2, 6));
/// let decimal: Rho = serde_json::from_value(serde_json::json!(0.428571)).unwrap();
/// assert_eq!(decimal.cap(7), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rho {
    /// `numerator / denominator`, exact.
    Fraction {
        /// Above the bar.
        numerator: u64,
        /// Below the bar (> 0).
        denominator: u64,
    },
    /// A decimal (finite, ≥ 0).
    Decimal(f64),
}

impl Rho {
    /// The paper's ρ = 3/7: a 30% cloud budget (ρ / (1 + ρ)).
    pub const PAPER: Rho = Rho::Fraction {
        numerator: 3,
        denominator: 7,
    };

    /// ρ as a number.
    pub fn value(self) -> f64 {
        match self {
            Rho::Fraction {
                numerator,
                denominator,
            } => numerator as f64 / denominator as f64,
            Rho::Decimal(value) => value,
        }
    }

    /// `⌊ρ · d1⌋`: how many D2 prompts `d1` D1 prompts allow.
    pub fn cap(self, d1: usize) -> usize {
        match self {
            Rho::Fraction {
                numerator,
                denominator,
            } => {
                let cap = d1 as u128 * u128::from(numerator) / u128::from(denominator);
                usize::try_from(cap).unwrap_or(usize::MAX)
            }
            // The nudge absorbs binary rounding of a decimal (0.29 × 100 = 28.999999999999996),
            // not a real shortfall: nobody means 0.2899999999.
            Rho::Decimal(value) => (value * d1 as f64 + 1e-9).floor() as usize,
        }
    }
}

impl fmt::Display for Rho {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rho::Fraction {
                numerator,
                denominator,
            } => write!(f, "{numerator}/{denominator}"),
            Rho::Decimal(value) => write!(f, "{value}"),
        }
    }
}

const EXPECTED: &str = "a number >= 0 or a fraction such as \"3/7\"";

struct RhoVisitor;

impl Visitor<'_> for RhoVisitor {
    type Value = Rho;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rho, E> {
        Ok(Rho::Fraction {
            numerator: v,
            denominator: 1,
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rho, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("must be >= 0, got {v}"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rho, E> {
        if v.is_finite() && v >= 0.0 {
            Ok(Rho::Decimal(v))
        } else {
            Err(E::custom(format!("must be a finite number >= 0, got {v}")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Rho, E> {
        let Some((numerator, denominator)) = v.split_once('/') else {
            return match v.trim().parse::<f64>() {
                Ok(value) => self.visit_f64(value),
                Err(_) => Err(E::custom(format!("`{v}` is not {EXPECTED}"))),
            };
        };
        let (Ok(numerator), Ok(denominator)) = (
            numerator.trim().parse::<u64>(),
            denominator.trim().parse::<u64>(),
        ) else {
            return Err(E::custom(format!(
                "`{v}` is not a fraction of whole numbers >= 0 such as \"3/7\""
            )));
        };
        if denominator == 0 {
            return Err(E::custom(format!("`{v}` divides by zero")));
        }
        Ok(Rho::Fraction {
            numerator,
            denominator,
        })
    }
}

impl<'de> Deserialize<'de> for Rho {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rho, D::Error> {
        deserializer.deserialize_any(RhoVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: serde_json::Value) -> Result<Rho, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn fractions_and_decimals() {
        assert_eq!(parse(serde_json::json!("3/7")), Ok(Rho::PAPER));
        assert_eq!(parse(serde_json::json!(" 3 / 7 ")), Ok(Rho::PAPER));
        assert_eq!(parse(serde_json::json!("0.5")), Ok(Rho::Decimal(0.5)));
        assert_eq!(parse(serde_json::json!(0.5)), Ok(Rho::Decimal(0.5)));
        assert_eq!(
            parse(serde_json::json!(1)),
            Ok(Rho::Fraction {
                numerator: 1,
                denominator: 1
            })
        );
        assert_eq!(Rho::PAPER.to_string(), "3/7");
        assert!((Rho::PAPER.value() - 0.428_571_428_571).abs() < 1e-12);
    }

    #[test]
    fn caps_floor_rho_times_d1() {
        let caps = |rho: Rho| (0..=15).map(|d1| rho.cap(d1)).collect::<Vec<_>>();
        assert_eq!(
            caps(Rho::PAPER),
            vec![0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 6]
        );
        assert_eq!(caps(Rho::Decimal(0.0)), vec![0; 16]);
        assert_eq!(
            Rho::Decimal(0.29).cap(100),
            29,
            "binary rounding is absorbed"
        );
        assert_eq!(Rho::Decimal(0.3).cap(10), 3);
        assert_eq!(Rho::Decimal(0.428571).cap(7), 2, "a decimal just under 3/7");
        assert_eq!(Rho::Decimal(2.5).cap(3), 7);
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        for (value, message) in [
            (
                serde_json::json!(-0.5),
                "must be a finite number >= 0, got -0.5",
            ),
            (serde_json::json!(-1), "must be >= 0, got -1"),
            (serde_json::json!("3/0"), "`3/0` divides by zero"),
            (serde_json::json!("a/7"), "`a/7` is not a fraction"),
            (serde_json::json!("-3/7"), "`-3/7` is not a fraction"),
            (serde_json::json!("three"), "`three` is not a number >= 0"),
            (
                serde_json::json!(true),
                "expected a number >= 0 or a fraction",
            ),
        ] {
            let err = parse(value.clone()).expect_err("invalid");
            assert!(err.contains(message), "{value}: {err}");
        }
    }
}
