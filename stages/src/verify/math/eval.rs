//! Values of expression trees: exact (big rationals, for what is rational) and numeric
//! (complex floating point, for everything else), both within the answer's budget.
//!
//! Exact arithmetic stops (`None`, not an error) as soon as a value would need more than
//! `max_bits` bits, so `2^(10^9)` and `10^10^10` cost nothing; the numeric value then reports
//! the overflow instead of a wrong number, and the comparison falls back to strings. A float
//! that underflows (`1/2006!`) is also reported, never silently 0.

use std::collections::BTreeMap;

use num_bigint::BigInt;
use num_complex::Complex64;
use num_integer::Integer;
use num_traits::{Signed, ToPrimitive, Zero};

use super::budget::{Budget, Timeout};
use super::parse::{Constant, Expr, Func};
use super::rational::{Rational, add, mul, recip};

/// The largest root index taken exactly (`x^(p/q)` with `q` up to this).
const MAX_EXACT_ROOT: u32 = 64;

/// The largest `n` for which `n!` is computed in floating point (171! overflows `f64`).
const MAX_FLOAT_FACTORIAL: f64 = 170.0;

/// The exact value of `e`, if it is a rational within `max_bits` (numerator and denominator
/// together).
pub(crate) fn exact(
    e: &Expr,
    max_bits: u64,
    budget: &mut Budget,
) -> Result<Option<Rational>, Timeout> {
    Exact { max_bits, budget }.value(e)
}

struct Exact<'b> {
    max_bits: u64,
    budget: &'b mut Budget,
}

fn bits(q: &Rational) -> u64 {
    q.numer().bits() + q.denom().bits()
}

impl Exact<'_> {
    fn fits(&self, q: Rational) -> Option<Rational> {
        (bits(&q) <= self.max_bits).then_some(q)
    }

    fn value(&mut self, e: &Expr) -> Result<Option<Rational>, Timeout> {
        self.budget.tick()?;
        Ok(match e {
            Expr::Num(q) => self.fits(q.clone()),
            Expr::Neg(a) => self.value(a)?.map(|q| -q),
            Expr::Sum(terms) => {
                let mut total = Rational::zero();
                for term in terms {
                    let Some(q) = self.value(term)? else {
                        return Ok(None);
                    };
                    let Some(sum) = self.fits(add(&total, &q)) else {
                        return Ok(None);
                    };
                    total = sum;
                }
                Some(total)
            }
            Expr::Product(factors) => {
                let mut total = Rational::from_integer(1.into());
                for factor in factors {
                    let Some(q) = self.value(factor)? else {
                        return Ok(None);
                    };
                    // Bits of a product are at most the sum of the bits: check before multiplying.
                    if bits(&total) + bits(&q) > 2 * self.max_bits {
                        return Ok(None);
                    }
                    let Some(product) = self.fits(mul(&total, &q)) else {
                        return Ok(None);
                    };
                    total = product;
                }
                Some(total)
            }
            Expr::Inv(a) => self.value(a)?.and_then(|q| recip(&q)),
            Expr::Pow(base, exponent) => {
                let (Some(b), Some(x)) = (self.value(base)?, self.value(exponent)?) else {
                    return Ok(None);
                };
                self.budget.check()?;
                self.pow(&b, &x)
            }
            Expr::Root(index, radicand) => {
                let (Some(n), Some(r)) = (self.value(index)?, self.value(radicand)?) else {
                    return Ok(None);
                };
                self.budget.check()?;
                match n.to_integer().to_u32() {
                    Some(n_int) if n.is_integer() && n_int >= 1 => self.root(&r, n_int),
                    _ => None,
                }
            }
            Expr::Factorial(a) => match self.value(a)? {
                Some(n) if n.is_integer() && !n.is_negative() => match n.to_integer().to_u64() {
                    Some(n) => self.factorial(n)?,
                    None => None,
                },
                _ => None,
            },
            Expr::Binom(n, k) => {
                let (Some(n), Some(k)) = (self.value(n)?, self.value(k)?) else {
                    return Ok(None);
                };
                self.binom(&n, &k)?
            }
            Expr::Func(Func::Abs, a) => self.value(a)?.map(|q| q.abs()),
            Expr::Func(Func::Floor, a) => self.value(a)?.map(|q| q.floor()),
            Expr::Func(Func::Ceil, a) => self.value(a)?.map(|q| q.ceil()),
            _ => None,
        })
    }

    fn pow(&mut self, base: &Rational, exponent: &Rational) -> Option<Rational> {
        if !exponent.is_integer() {
            // x^(p/q) = (q-th root of x)^p, when the root is rational.
            let q = exponent.denom().to_u32().filter(|&q| q <= MAX_EXACT_ROOT)?;
            let root = self.root(base, q)?;
            return self.pow(&root, &Rational::from_integer(exponent.numer().clone()));
        }
        let n = exponent.to_integer();
        if base.is_zero() {
            return match n.sign() {
                num_bigint::Sign::Minus => None,
                num_bigint::Sign::NoSign => Some(Rational::from_integer(1.into())),
                num_bigint::Sign::Plus => Some(Rational::zero()),
            };
        }
        if base.abs() == Rational::from_integer(1.into()) {
            let negative = base.is_negative() && n.is_odd();
            return Some(Rational::from_integer(if negative { -1 } else { 1 }.into()));
        }
        // Every other base has at least 2 bits, so the result has at least |n| bits.
        let magnitude = n.abs().to_u64().filter(|&m| m <= self.max_bits)?;
        if bits(base).checked_mul(magnitude)? > self.max_bits * 2 {
            return None;
        }
        let m = u32::try_from(magnitude).ok()?;
        // Powers of coprime parts stay coprime: no reduction needed.
        let raised = Rational::new_raw(
            num_traits::Pow::pow(base.numer(), m),
            num_traits::Pow::pow(base.denom(), m),
        );
        let raised = if n.is_negative() {
            recip(&raised)?
        } else {
            raised
        };
        self.fits(raised)
    }

    /// The exact `n`-th root (real; negative radicands only for odd `n`).
    fn root(&mut self, r: &Rational, n: u32) -> Option<Rational> {
        if n == 1 {
            return Some(r.clone());
        }
        if n > MAX_EXACT_ROOT || (r.is_negative() && n.is_multiple_of(2)) {
            return None;
        }
        let exact_root = |x: &BigInt| -> Option<BigInt> {
            let root = x.abs().nth_root(n);
            (num_traits::Pow::pow(&root, n) == x.abs()).then_some(root)
        };
        let numer = exact_root(r.numer())?;
        let denom = exact_root(r.denom())?;
        // Roots of coprime parts stay coprime.
        let root = Rational::new_raw(numer, denom);
        Some(if r.is_negative() { -root } else { root })
    }

    fn factorial(&mut self, n: u64) -> Result<Option<Rational>, Timeout> {
        // log2(n!) ≥ n·(log2(n) − log2(e)) (Stirling): skip what cannot fit without looping.
        if n > 1 {
            let n = n as f64;
            if n * (n.log2() - std::f64::consts::LOG2_E) > self.max_bits as f64 {
                return Ok(None);
            }
        }
        let mut product = BigInt::from(1u8);
        for k in 2..=n {
            self.budget.tick()?;
            product *= k;
            if product.bits() > self.max_bits {
                return Ok(None);
            }
        }
        Ok(Some(Rational::from_integer(product)))
    }

    fn binom(&mut self, n: &Rational, k: &Rational) -> Result<Option<Rational>, Timeout> {
        if !n.is_integer() || !k.is_integer() {
            return Ok(None);
        }
        let (n, k) = (n.to_integer(), k.to_integer());
        if k.is_negative() || k > n {
            return Ok(Some(Rational::zero()));
        }
        // C(n, k) = C(n, n - k): loop over the smaller.
        let k = k.clone().min(&n - &k);
        let Some(k) = k.to_u64() else {
            return Ok(None);
        };
        let mut value = BigInt::from(1u8);
        for i in 0..k {
            self.budget.tick()?;
            value = value * (&n - i) / (i + 1);
            if value.bits() > self.max_bits {
                return Ok(None);
            }
        }
        Ok(Some(Rational::from_integer(value)))
    }
}

/// Why a numeric value is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumericFail {
    /// Undefined there (division by zero, log of zero, a factorial of a non-integer).
    Domain,
    /// Too large or too small for a float, so the value could not be trusted.
    Range,
    /// Not a number at all (a set, ∞, a relation).
    NotANumber,
    /// The answer's time ran out.
    Timeout,
}

impl From<Timeout> for NumericFail {
    fn from(_: Timeout) -> NumericFail {
        NumericFail::Timeout
    }
}

/// Values of the variables at one point.
pub(crate) type Point = BTreeMap<String, f64>;

/// The numeric value of `e` with the variables at `point`.
pub(crate) fn numeric(
    e: &Expr,
    point: &Point,
    budget: &mut Budget,
) -> Result<Complex64, NumericFail> {
    Numeric { point, budget }.value(e)
}

struct Numeric<'p, 'b> {
    point: &'p Point,
    budget: &'b mut Budget,
}

/// The float nearest to a rational, or `Range` when it is not a normal float.
pub(crate) fn to_f64(q: &Rational) -> Result<f64, NumericFail> {
    if q.is_zero() {
        return Ok(0.0);
    }
    // Keep 64 significant bits of each part, and the scale apart, so huge parts do not overflow
    // on the way to a representable ratio.
    let shift = |x: &BigInt| x.bits().saturating_sub(64);
    let (sn, sd) = (shift(q.numer()), shift(q.denom()));
    let numer = (q.numer() >> sn).to_f64().ok_or(NumericFail::Range)?;
    let denom = (q.denom() >> sd).to_f64().ok_or(NumericFail::Range)?;
    let scale = i32::try_from(sn as i64 - sd as i64).map_err(|_| NumericFail::Range)?;
    let value = numer / denom * 2f64.powi(scale.clamp(-1100, 1100));
    if scale.abs() > 1100 || !value.is_normal() {
        return Err(NumericFail::Range);
    }
    Ok(value)
}

fn finite(z: Complex64) -> Result<Complex64, NumericFail> {
    if z.re.is_finite() && z.im.is_finite() {
        // Adding +0.0 turns −0.0 into +0.0: `-4` must sit above the branch cut of `sqrt`, as
        // the real number it is, not below it as −4 − 0i.
        Ok(Complex64::new(z.re + 0.0, z.im + 0.0))
    } else {
        Err(NumericFail::Range)
    }
}

/// A result that came out (nearly) zero from operands that are not: an underflow.
fn not_underflowed(z: Complex64) -> Result<Complex64, NumericFail> {
    if z.norm() < f64::MIN_POSITIVE {
        Err(NumericFail::Range)
    } else {
        finite(z)
    }
}

fn real_integer(z: Complex64) -> Option<f64> {
    (z.im == 0.0 && z.re.fract() == 0.0).then_some(z.re)
}

impl Numeric<'_, '_> {
    fn value(&mut self, e: &Expr) -> Result<Complex64, NumericFail> {
        self.budget.tick()?;
        let z = match e {
            Expr::Num(q) => Complex64::new(to_f64(q)?, 0.0),
            Expr::Const(Constant::Pi) => Complex64::new(std::f64::consts::PI, 0.0),
            Expr::Const(Constant::E) => Complex64::new(std::f64::consts::E, 0.0),
            Expr::Const(Constant::I) => Complex64::new(0.0, 1.0),
            Expr::Const(Constant::Infinity) => return Err(NumericFail::NotANumber),
            Expr::Var(name) => {
                Complex64::new(*self.point.get(name).ok_or(NumericFail::NotANumber)?, 0.0)
            }
            Expr::Neg(a) => -self.value(a)?,
            Expr::Sum(terms) => {
                let mut total = Complex64::new(0.0, 0.0);
                for term in terms {
                    total = finite(total + self.value(term)?)?;
                }
                total
            }
            Expr::Product(factors) => {
                let values = factors
                    .iter()
                    .map(|f| self.value(f))
                    .collect::<Result<Vec<_>, _>>()?;
                let product = values.iter().product::<Complex64>();
                if values.iter().any(|v| *v == Complex64::new(0.0, 0.0)) {
                    Complex64::new(0.0, 0.0)
                } else {
                    not_underflowed(product)?
                }
            }
            Expr::Inv(a) => {
                let z = self.value(a)?;
                if z.norm() == 0.0 {
                    return Err(NumericFail::Domain);
                }
                not_underflowed(z.inv())?
            }
            Expr::Pow(base, exponent) => {
                let (b, x) = (self.value(base)?, self.value(exponent)?);
                self.pow(b, x)?
            }
            Expr::Root(index, radicand) => {
                let (n, r) = (self.value(index)?, self.value(radicand)?);
                match real_integer(n) {
                    // The real odd root of a negative number, as `\sqrt[3]{-8}` means.
                    Some(n) if r.im == 0.0 && r.re < 0.0 && n % 2.0 != 0.0 => {
                        Complex64::new(-(-r.re).powf(1.0 / n), 0.0)
                    }
                    Some(2.0) => r.sqrt(),
                    _ => self.pow(r, n.inv())?,
                }
            }
            Expr::Func(func, a) => {
                let z = self.value(a)?;
                self.function(*func, z)?
            }
            Expr::Log(base, a) => {
                let (b, z) = (self.value(base)?, self.value(a)?);
                let ln_b = b.ln();
                if z.norm() == 0.0 || b.norm() == 0.0 || ln_b.norm() == 0.0 {
                    return Err(NumericFail::Domain);
                }
                z.ln() / ln_b
            }
            Expr::Factorial(a) => {
                let n = real_integer(self.value(a)?).ok_or(NumericFail::Domain)?;
                if n < 0.0 {
                    return Err(NumericFail::Domain);
                }
                if n > MAX_FLOAT_FACTORIAL {
                    return Err(NumericFail::Range);
                }
                Complex64::new((2..=n as u64).map(|k| k as f64).product(), 0.0)
            }
            Expr::Binom(n, k) => {
                let n = real_integer(self.value(n)?).ok_or(NumericFail::Domain)?;
                let k = real_integer(self.value(k)?).ok_or(NumericFail::Domain)?;
                if k < 0.0 || k > n {
                    return Ok(Complex64::new(0.0, 0.0));
                }
                let k = k.min(n - k);
                if k > 1000.0 {
                    return Err(NumericFail::Range);
                }
                let mut value = 1.0;
                for i in 0..k as u64 {
                    value = value * (n - i as f64) / (i as f64 + 1.0);
                }
                Complex64::new(value, 0.0)
            }
            // ± should have been expanded; collections and relations are not numbers.
            _ => return Err(NumericFail::NotANumber),
        };
        finite(z)
    }

    fn pow(&mut self, b: Complex64, x: Complex64) -> Result<Complex64, NumericFail> {
        if b.norm() == 0.0 {
            return if x.re > 0.0 {
                Ok(Complex64::new(0.0, 0.0))
            } else if x.norm() == 0.0 {
                Ok(Complex64::new(1.0, 0.0))
            } else {
                Err(NumericFail::Domain)
            };
        }
        let z = match real_integer(x) {
            Some(n) if n.abs() <= 1024.0 => b.powi(n as i32),
            _ if b.im == 0.0 && b.re > 0.0 && x.im == 0.0 => Complex64::new(b.re.powf(x.re), 0.0),
            _ => b.powc(x),
        };
        not_underflowed(z)
    }

    fn function(&mut self, func: Func, z: Complex64) -> Result<Complex64, NumericFail> {
        let real = |f: fn(f64) -> f64| -> Result<Complex64, NumericFail> {
            if z.im != 0.0 {
                return Err(NumericFail::Domain);
            }
            Ok(Complex64::new(f(z.re), 0.0))
        };
        let reciprocal = |w: Complex64| -> Result<Complex64, NumericFail> {
            if w.norm() == 0.0 {
                Err(NumericFail::Domain)
            } else {
                Ok(w.inv())
            }
        };
        match func {
            Func::Sin => Ok(z.sin()),
            Func::Cos => Ok(z.cos()),
            Func::Tan => Ok(z.tan()),
            Func::Sec => reciprocal(z.cos()),
            Func::Csc => reciprocal(z.sin()),
            Func::Cot => reciprocal(z.tan()),
            Func::Asin => Ok(z.asin()),
            Func::Acos => Ok(z.acos()),
            Func::Atan => Ok(z.atan()),
            Func::Sinh => Ok(z.sinh()),
            Func::Cosh => Ok(z.cosh()),
            Func::Tanh => Ok(z.tanh()),
            Func::Exp => not_underflowed(z.exp()),
            Func::Ln => {
                if z.norm() == 0.0 {
                    Err(NumericFail::Domain)
                } else {
                    Ok(z.ln())
                }
            }
            Func::Abs => Ok(Complex64::new(z.norm(), 0.0)),
            Func::Floor => real(f64::floor),
            Func::Ceil => real(f64::ceil),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::parse::parse;
    use super::super::rational::ratio;
    use super::*;

    fn budget() -> Budget {
        Budget::new(Duration::from_secs(10))
    }

    fn exact_of(text: &str) -> Option<Rational> {
        let e = parse(text, 50, &mut budget()).expect("parses");
        exact(&e, 1 << 16, &mut budget()).expect("in time")
    }

    fn q(n: i64, d: i64) -> Option<Rational> {
        ratio(n.into(), d.into())
    }

    #[test]
    fn exact_values_table() {
        let table: &[(&str, Option<Rational>)] = &[
            ("1/2 + 1/3", q(5, 6)),
            ("0.125", q(1, 8)),
            ("2^{-3}", q(1, 8)),
            ("(-2)^3", q(-8, 1)),
            ("0^0", q(1, 1)),
            ("(-1)^{1000000001}", q(-1, 1)),
            ("1^{10^{100}}", q(1, 1)),
            (r"\sqrt{16}", q(4, 1)),
            (r"\sqrt{\frac{9}{4}}", q(3, 2)),
            (r"\sqrt[3]{-27}", q(-3, 1)),
            ("8^{2/3}", q(4, 1)),
            ("5!", q(120, 1)),
            (r"\binom{5}{2}", q(10, 1)),
            (r"\binom{5}{7}", q(0, 1)),
            ("|-3|", q(3, 1)),
            (r"\lfloor 7/2 \rfloor", q(3, 1)),
            (r"\lceil 7/2 \rceil", q(4, 1)),
            (r"\sqrt{2}", None),
            (r"\sqrt{-4}", None),
            (r"\pi", None),
            ("x", None),
            ("1/0", None),
            ("0^{-1}", None),
            ("2^{1000000000}", None),
            ("10^{10^{10}}", None),
            ("100000!", None),
            ("(1/2)!", None),
        ];
        for (text, expected) in table {
            assert_eq!(exact_of(text), *expected, "{text}");
        }
        // 2006! has 19,080 bits: exact, and 2004! differs from it.
        let big = exact_of("1/2006!").expect("exact");
        assert!(bits(&big) > 19_000);
        assert_ne!(exact_of("1/2004!"), Some(big));
    }

    fn numeric_of(text: &str, x: f64) -> Result<Complex64, NumericFail> {
        let e = parse(text, 50, &mut budget()).expect("parses");
        let point = Point::from([("x".to_owned(), x)]);
        numeric(&e, &point, &mut budget())
    }

    #[test]
    fn numeric_values_and_failures() {
        let close = |text: &str, x: f64, want: Complex64| {
            let got = numeric_of(text, x).expect(text);
            assert!((got - want).norm() < 1e-12, "{text}: {got} vs {want}");
        };
        close(r"\sin(\pi/6)", 0.0, Complex64::new(0.5, 0.0));
        close(r"\sqrt{-4}", 0.0, Complex64::new(0.0, 2.0));
        close(r"\sqrt[3]{-8}", 0.0, Complex64::new(-2.0, 0.0));
        close(r"e^{i\pi}", 0.0, Complex64::new(-1.0, 0.0));
        close(r"\log_2 8", 0.0, Complex64::new(3.0, 0.0));
        close(r"\sqrt{1/x}", 4.0, Complex64::new(0.5, 0.0));
        close("x^2 + 1", 2.0, Complex64::new(5.0, 0.0));
        close(
            r"\sin^{-1}(1)",
            0.0,
            Complex64::new(std::f64::consts::FRAC_PI_2, 0.0),
        );
        assert_eq!(numeric_of("1/0", 0.0), Err(NumericFail::Domain));
        assert_eq!(numeric_of(r"\ln 0", 0.0), Err(NumericFail::Domain));
        assert_eq!(numeric_of("1/2006!", 0.0), Err(NumericFail::Range));
        assert_eq!(numeric_of("10^{10^{10}}", 0.0), Err(NumericFail::Range));
        assert_eq!(numeric_of("2^{-5000}", 0.0), Err(NumericFail::Range));
        assert_eq!(numeric_of(r"e^{-10000}", 0.0), Err(NumericFail::Range));
        assert_eq!(numeric_of(r"\infty", 0.0), Err(NumericFail::NotANumber));
        assert_eq!(numeric_of("y", 0.0), Err(NumericFail::NotANumber));
    }

    #[test]
    fn to_f64_keeps_huge_parts_apart() {
        let big = num_traits::pow(BigInt::from(10u8), 400);
        let q = Rational::new(big.clone() * 3, big * 2);
        assert_eq!(to_f64(&q), Ok(1.5));
        let tiny = Rational::new(1.into(), num_traits::pow(BigInt::from(10u8), 400));
        assert_eq!(to_f64(&tiny), Err(NumericFail::Range));
    }
}
