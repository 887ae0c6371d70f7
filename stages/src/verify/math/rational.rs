//! Exact rational arithmetic on num-rational's `Ratio<BigInt>`, reduced with Euclid's
//! algorithm. num-bigint's gcd is binary (Stein's), which takes one step per bit when one
//! operand is much smaller than the other: reducing `3 / 2006!` took milliseconds, where one
//! Euclidean remainder settles it. Values built here are always in lowest terms with a positive
//! denominator, so equal values are equal structurally.

use num_bigint::BigInt;
use num_rational::Ratio;
use num_traits::{One, Signed, Zero};

/// Exact rationals with big integers.
pub(crate) type Rational = Ratio<BigInt>;

/// The greatest common divisor (non-negative) by Euclid's remainders.
pub(crate) fn gcd(a: &BigInt, b: &BigInt) -> BigInt {
    let (mut a, mut b) = (a.abs(), b.abs());
    while !b.is_zero() {
        let r = &a % &b;
        a = std::mem::replace(&mut b, r);
    }
    a
}

/// `n / d` in lowest terms, or `None` when `d` is zero.
pub(crate) fn ratio(n: BigInt, d: BigInt) -> Option<Rational> {
    if d.is_zero() {
        return None;
    }
    let g = gcd(&n, &d);
    let (mut n, mut d) = if g.is_one() { (n, d) } else { (n / &g, d / &g) };
    if d.is_negative() {
        n = -n;
        d = -d;
    }
    Some(Rational::new_raw(n, d))
}

/// `a + b`.
pub(crate) fn add(a: &Rational, b: &Rational) -> Rational {
    if a.denom().is_one() && b.denom().is_one() {
        return Rational::from_integer(a.numer() + b.numer());
    }
    ratio(
        a.numer() * b.denom() + b.numer() * a.denom(),
        a.denom() * b.denom(),
    )
    .expect("a product of positive denominators is not zero")
}

/// `a · b`, cancelling across before multiplying.
pub(crate) fn mul(a: &Rational, b: &Rational) -> Rational {
    if a.is_zero() || b.is_zero() {
        return Rational::zero();
    }
    let g1 = gcd(a.numer(), b.denom());
    let g2 = gcd(b.numer(), a.denom());
    Rational::new_raw(
        (a.numer() / &g1) * (b.numer() / &g2),
        (a.denom() / &g2) * (b.denom() / &g1),
    )
}

/// `1 / a`, or `None` for zero.
pub(crate) fn recip(a: &Rational) -> Option<Rational> {
    if a.is_zero() {
        return None;
    }
    let (n, d) = (a.numer().clone(), a.denom().clone());
    Some(if n.is_negative() {
        Rational::new_raw(-d, -n)
    } else {
        Rational::new_raw(d, n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: i64, d: i64) -> Rational {
        ratio(n.into(), d.into()).expect("non-zero denominator")
    }

    #[test]
    fn arithmetic_stays_in_lowest_terms() {
        assert_eq!(q(6, -4), Rational::new_raw((-3).into(), 2.into()));
        assert_eq!(q(0, -5), Rational::new_raw(0.into(), 1.into()));
        assert_eq!(ratio(1.into(), 0.into()), None);
        assert_eq!(
            add(&q(1, 6), &q(1, 3)),
            Rational::new_raw(1.into(), 2.into())
        );
        assert_eq!(
            add(&q(1, 2), &q(-1, 2)),
            Rational::new_raw(0.into(), 1.into())
        );
        assert_eq!(
            mul(&q(2, 3), &q(9, 4)),
            Rational::new_raw(3.into(), 2.into())
        );
        assert_eq!(
            mul(&q(0, 1), &q(9, 4)),
            Rational::new_raw(0.into(), 1.into())
        );
        assert_eq!(
            recip(&q(-2, 3)),
            Some(Rational::new_raw((-3).into(), 2.into()))
        );
        assert_eq!(recip(&q(0, 1)), None);
        assert_eq!(gcd(&BigInt::from(-12), &BigInt::from(18)), BigInt::from(6));
    }
}
