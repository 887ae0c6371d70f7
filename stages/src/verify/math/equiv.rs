//! Whether two parsed answers are the same.
//!
//! Numbers are compared exactly when both sides are rational (`exact_rational`); otherwise
//! numerically (`numeric`): once for constants, or at several seeded random points for
//! expressions with variables, each within the configured tolerances. Collections are compared
//! by shape (`structure`) and then element by element: tuples, intervals and matrices in
//! order, sets and bare lists in any order. A comparison that cannot be decided (a value out of
//! float range, something that is not a number) is `Undecided`, and the caller compares the
//! normalised strings instead.

use std::collections::BTreeSet;

use num_complex::Complex64;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::budget::{Budget, Timeout};
use super::eval::{NumericFail, Point, exact, numeric};
use super::parse::{Constant, Expr, Interval, Rel};

/// At most this many `±` in one value are expanded (2^4 = 16 variants).
const MAX_PLUS_MINUS: usize = 4;

/// How equivalence is decided (the tolerances and points of [`super::MathConfig`]).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) rel_tol: f64,
    pub(crate) abs_tol: f64,
    pub(crate) points: usize,
    pub(crate) point_range: [f64; 2],
    pub(crate) seed: u64,
    pub(crate) max_exact_bits: u64,
}

/// What a decision rested on, from the strongest evidence to the weakest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Basis {
    /// Shapes or symbols alone (different kinds of answer, sizes, ∞).
    Structure,
    /// Exact rational arithmetic.
    ExactRational,
    /// Floating point within the tolerances.
    Numeric,
}

/// The outcome of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Same(Basis),
    Different(Basis),
    Undecided,
}

/// The form answers are compared in: each `±` expanded into the list of its values, a
/// one-variable inequality (`x > 3`, `1 \le x < 2`) turned into its interval, one-element
/// lists and unions unwrapped.
pub(crate) fn canonical(e: &Expr) -> Expr {
    match e {
        Expr::List(items) | Expr::Set(items) => {
            let mut flat = Vec::with_capacity(items.len());
            for item in items {
                match canonical(item) {
                    // `\{\pm 1\}` is the set of both values.
                    Expr::List(values) => flat.extend(values),
                    other => flat.push(other),
                }
            }
            match e {
                Expr::List(_) if flat.len() == 1 => flat.pop().expect("one item"),
                Expr::List(_) => Expr::List(flat),
                _ => Expr::Set(flat),
            }
        }
        Expr::Union(parts) if parts.len() == 1 => canonical(&parts[0]),
        Expr::Tuple(_) | Expr::Union(_) | Expr::Matrix(_) | Expr::Interval(_) => {
            e.map_children(&mut canonical)
        }
        Expr::Relation(first, rest) => as_interval(first, rest).unwrap_or_else(|| e.clone()),
        _ => expand_plus_minus(e),
    }
}

fn count_plus_minus(e: &Expr) -> usize {
    usize::from(matches!(e, Expr::PlusMinus(_)))
        + e.children()
            .into_iter()
            .map(count_plus_minus)
            .sum::<usize>()
}

fn expand_plus_minus(e: &Expr) -> Expr {
    let count = count_plus_minus(e);
    if count == 0 || count > MAX_PLUS_MINUS {
        return e.clone();
    }
    fn choose(e: &Expr, mask: u32, next: &mut u32) -> Expr {
        match e {
            Expr::PlusMinus(x) => {
                let negative = (mask >> *next) & 1 == 1;
                *next += 1;
                let inner = choose(x, mask, next);
                if negative {
                    Expr::Neg(Box::new(inner))
                } else {
                    inner
                }
            }
            _ => e.map_children(&mut |c| choose(c, mask, next)),
        }
    }
    Expr::List(
        (0..1u32 << count)
            .map(|mask| choose(e, mask, &mut 0))
            .collect(),
    )
}

fn has_vars(e: &Expr) -> bool {
    matches!(e, Expr::Var(_)) || e.children().into_iter().any(has_vars)
}

fn collect_vars(e: &Expr, out: &mut BTreeSet<String>) {
    if let Expr::Var(name) = e {
        out.insert(name.clone());
    }
    for child in e.children() {
        collect_vars(child, out);
    }
}

fn infinity() -> Expr {
    Expr::Const(Constant::Infinity)
}

fn interval(lo: Expr, hi: Expr, lo_closed: bool, hi_closed: bool) -> Expr {
    Expr::Interval(Box::new(Interval {
        lo,
        hi,
        lo_closed,
        hi_closed,
    }))
}

/// `x < c`, `c \le x`, `a < x \le b` and the like as intervals.
fn as_interval(first: &Expr, rest: &[(Rel, Expr)]) -> Option<Expr> {
    let is_var = |e: &Expr| matches!(e, Expr::Var(_));
    let constant = |e: &Expr| e.is_scalar() && !has_vars(e);
    let below = || Expr::Neg(Box::new(infinity()));
    match rest {
        [(op, second)] if is_var(first) && constant(second) => Some(match op {
            Rel::Lt | Rel::Le => interval(below(), second.clone(), false, *op == Rel::Le),
            Rel::Gt | Rel::Ge => interval(second.clone(), infinity(), *op == Rel::Ge, false),
            _ => return None,
        }),
        [(op, second)] if constant(first) && is_var(second) => Some(match op {
            Rel::Lt | Rel::Le => interval(first.clone(), infinity(), *op == Rel::Le, false),
            Rel::Gt | Rel::Ge => interval(below(), first.clone(), false, *op == Rel::Ge),
            _ => return None,
        }),
        [(op1, middle), (op2, last)] if is_var(middle) && constant(first) && constant(last) => {
            let up = |op: &Rel| matches!(op, Rel::Lt | Rel::Le);
            let down = |op: &Rel| matches!(op, Rel::Gt | Rel::Ge);
            if up(op1) && up(op2) {
                Some(interval(
                    first.clone(),
                    last.clone(),
                    *op1 == Rel::Le,
                    *op2 == Rel::Le,
                ))
            } else if down(op1) && down(op2) {
                Some(interval(
                    last.clone(),
                    first.clone(),
                    *op2 == Rel::Ge,
                    *op1 == Rel::Ge,
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `+1` for ∞, `-1` for −∞, `None` for anything else.
fn infinity_sign(e: &Expr) -> Option<i8> {
    match e {
        Expr::Const(Constant::Infinity) => Some(1),
        Expr::Neg(x) => infinity_sign(x).map(|s| -s),
        Expr::Sum(terms) if terms.len() == 1 => infinity_sign(&terms[0]),
        _ => None,
    }
}

/// Decides whether two canonical answers are the same.
pub(crate) fn equivalent(
    gold: &Expr,
    pred: &Expr,
    settings: &Settings,
    budget: &mut Budget,
) -> Result<Decision, Timeout> {
    Comparer { settings, budget }.compare(gold, pred)
}

/// Whether two constant scalars agree once both are rounded to `places` decimal places, as
/// math-verify compares a float with a number (`float_rounding`): `0.333333` and `1/3` at 6
/// places. Anything else (collections, variables, a value with no real float) does not.
pub(crate) fn rounded_equal(
    gold: &Expr,
    pred: &Expr,
    places: u32,
    budget: &mut Budget,
) -> Result<bool, Timeout> {
    if !(gold.is_scalar() && pred.is_scalar()) || has_vars(gold) || has_vars(pred) {
        return Ok(false);
    }
    let point = Point::new();
    let scale = 10f64.powi(places as i32);
    let rounded = |z: Complex64| {
        let x = z.re * scale;
        (x.is_finite() && (z.im * scale).abs() < 0.5).then(|| x.round())
    };
    let (x, y) = match (numeric(gold, &point, budget), numeric(pred, &point, budget)) {
        (Ok(x), Ok(y)) => (rounded(x), rounded(y)),
        (Err(NumericFail::Timeout), _) | (_, Err(NumericFail::Timeout)) => return Err(Timeout),
        _ => return Ok(false),
    };
    Ok(x.is_some() && x == y)
}

struct Comparer<'s, 'b> {
    settings: &'s Settings,
    budget: &'b mut Budget,
}

/// Combines element decisions: the first difference decides; else all must be the same.
struct Tally {
    basis: Basis,
    undecided: bool,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            basis: Basis::Structure,
            undecided: false,
        }
    }

    /// Adds one decision; returns it when it settles the whole (a difference).
    fn add(&mut self, d: Decision) -> Option<Decision> {
        match d {
            Decision::Different(_) => return Some(d),
            Decision::Undecided => self.undecided = true,
            Decision::Same(b) => self.basis = self.basis.max(b),
        }
        None
    }

    fn finish(self) -> Decision {
        if self.undecided {
            Decision::Undecided
        } else {
            Decision::Same(self.basis)
        }
    }
}

fn same_or_different(same: bool, basis: Basis) -> Decision {
    if same {
        Decision::Same(basis)
    } else {
        Decision::Different(basis)
    }
}

fn flipped(op: Rel) -> Rel {
    match op {
        Rel::Lt => Rel::Gt,
        Rel::Gt => Rel::Lt,
        Rel::Le => Rel::Ge,
        Rel::Ge => Rel::Le,
        other => other,
    }
}

impl Comparer<'_, '_> {
    fn compare(&mut self, a: &Expr, b: &Expr) -> Result<Decision, Timeout> {
        self.budget.tick()?;
        use Expr::*;
        match (a, b) {
            (List(x) | Set(x), List(y) | Set(y)) => self.unordered(x, y),
            (Tuple(x), Tuple(y) | List(y)) | (List(x), Tuple(y)) => self.ordered(x, y),
            (Union(x), Union(y)) => self.unordered(x, y),
            (Interval(x), Interval(y)) => {
                if (x.lo_closed, x.hi_closed) != (y.lo_closed, y.hi_closed) {
                    return Ok(Decision::Different(Basis::Structure));
                }
                self.ordered_pairs([(&x.lo, &y.lo), (&x.hi, &y.hi)])
            }
            // `(1, 2)` is both a pair and an open interval.
            (Tuple(t), Interval(i)) | (Interval(i), Tuple(t))
                if t.len() == 2 && !i.lo_closed && !i.hi_closed =>
            {
                self.ordered_pairs([(&t[0], &i.lo), (&t[1], &i.hi)])
            }
            (Matrix(x), Matrix(y)) => {
                let shape = |m: &Vec<Vec<Expr>>| (m.len(), m.first().map_or(0, Vec::len));
                if shape(x) != shape(y) {
                    return Ok(Decision::Different(Basis::Structure));
                }
                let x: Vec<Expr> = x.iter().flatten().cloned().collect();
                let y: Vec<Expr> = y.iter().flatten().cloned().collect();
                self.ordered(&x, &y)
            }
            // A column or row vector and a tuple of the same entries.
            (Matrix(m), Tuple(t) | List(t)) | (Tuple(t) | List(t), Matrix(m))
                if m.len() == 1 || m.iter().all(|row| row.len() == 1) =>
            {
                let entries: Vec<Expr> = m.iter().flatten().cloned().collect();
                self.ordered(&entries, t)
            }
            (Relation(f1, r1), Relation(f2, r2)) => self.relation(f1, r1, f2, r2),
            // `2 + 3 = 5` as an answer means its last side.
            (Relation(first, rest), other) | (other, Relation(first, rest))
                if other.is_scalar()
                    && rest.iter().all(|(op, _)| *op == Rel::Eq)
                    && !has_vars(first)
                    && rest.iter().all(|(_, e)| !has_vars(e)) =>
            {
                let last = &rest.last().expect("a relation has a second side").1;
                self.compare(last, other)
            }
            (Set(x), other) | (other, Set(x)) if x.len() == 1 && other.is_scalar() => {
                self.compare(&x[0], other)
            }
            _ if a.is_scalar() && b.is_scalar() => self.scalar(a, b),
            _ => Ok(Decision::Different(Basis::Structure)),
        }
    }

    fn ordered(&mut self, x: &[Expr], y: &[Expr]) -> Result<Decision, Timeout> {
        if x.len() != y.len() {
            return Ok(Decision::Different(Basis::Structure));
        }
        self.ordered_pairs(x.iter().zip(y))
    }

    fn ordered_pairs<'e>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'e Expr, &'e Expr)>,
    ) -> Result<Decision, Timeout> {
        let mut tally = Tally::new();
        for (a, b) in pairs {
            if let Some(settled) = tally.add(self.compare(a, b)?) {
                return Ok(settled);
            }
        }
        Ok(tally.finish())
    }

    /// Every element of each side equals some element of the other (sets; duplicates count
    /// once).
    fn unordered(&mut self, x: &[Expr], y: &[Expr]) -> Result<Decision, Timeout> {
        if x.is_empty() || y.is_empty() {
            return Ok(same_or_different(
                x.is_empty() && y.is_empty(),
                Basis::Structure,
            ));
        }
        let mut matrix = vec![vec![Decision::Undecided; y.len()]; x.len()];
        for (i, a) in x.iter().enumerate() {
            for (j, b) in y.iter().enumerate() {
                matrix[i][j] = self.compare(a, b)?;
            }
        }
        let mut tally = Tally::new();
        let rows = (0..x.len()).map(|i| matrix[i].clone());
        let columns = (0..y.len()).map(|j| matrix.iter().map(|row| row[j]).collect::<Vec<_>>());
        for line in rows.chain(columns) {
            let best = line
                .iter()
                .filter_map(|d| match d {
                    Decision::Same(b) => Some(*b),
                    _ => None,
                })
                .min();
            let decision = match best {
                Some(b) => Decision::Same(b),
                None if line.contains(&Decision::Undecided) => Decision::Undecided,
                None => {
                    // Nothing matched: report the weakest evidence among the differences.
                    let basis = line
                        .iter()
                        .filter_map(|d| match d {
                            Decision::Different(b) => Some(*b),
                            _ => None,
                        })
                        .max()
                        .unwrap_or(Basis::Structure);
                    Decision::Different(basis)
                }
            };
            if let Some(settled) = tally.add(decision) {
                return Ok(settled);
            }
        }
        Ok(tally.finish())
    }

    fn relation(
        &mut self,
        f1: &Expr,
        r1: &[(Rel, Expr)],
        f2: &Expr,
        r2: &[(Rel, Expr)],
    ) -> Result<Decision, Timeout> {
        if r1.len() != r2.len() {
            return Ok(Decision::Different(Basis::Structure));
        }
        let ops1: Vec<Rel> = r1.iter().map(|(op, _)| *op).collect();
        let ops2: Vec<Rel> = r2.iter().map(|(op, _)| *op).collect();
        let sides1: Vec<&Expr> = std::iter::once(f1)
            .chain(r1.iter().map(|(_, e)| e))
            .collect();
        let mut sides2: Vec<&Expr> = std::iter::once(f2)
            .chain(r2.iter().map(|(_, e)| e))
            .collect();
        let reversed: Vec<Rel> = ops2.iter().rev().map(|op| flipped(*op)).collect();
        let symmetric = ops1.iter().all(|op| matches!(op, Rel::Eq | Rel::Ne));
        if ops1 == ops2 {
            // Same direction.
        } else if ops1 == reversed {
            sides2.reverse();
        } else {
            return Ok(Decision::Different(Basis::Structure));
        }
        let sidewise = self.ordered_pairs(sides1.iter().copied().zip(sides2.iter().copied()))?;
        if matches!(sidewise, Decision::Same(_)) || r1.len() != 1 {
            return Ok(sidewise);
        }
        // One relation with variables: the same set of points when `left − right` of each
        // are proportional (by a positive factor for inequalities).
        let difference =
            |l: &Expr, r: &Expr| Expr::Sum(vec![l.clone(), Expr::Neg(Box::new(r.clone()))]);
        let f = difference(sides1[0], sides1[1]);
        let g = difference(sides2[0], sides2[1]);
        if !has_vars(&f) && !has_vars(&g) {
            return Ok(sidewise);
        }
        self.proportional(&f, &g, !symmetric)
    }

    fn point_candidates(&self, a: &Expr, b: &Expr) -> Vec<Point> {
        let mut vars = BTreeSet::new();
        collect_vars(a, &mut vars);
        collect_vars(b, &mut vars);
        let [lo, hi] = self.settings.point_range;
        let mut rng = ChaCha8Rng::seed_from_u64(self.settings.seed);
        (0..self.settings.points * 4)
            .map(|_| {
                vars.iter()
                    .map(|v| (v.clone(), rng.random_range(lo..hi)))
                    .collect()
            })
            .collect()
    }

    fn close(&self, x: Complex64, y: Complex64) -> bool {
        let scale = x.norm().max(y.norm());
        (x - y).norm() <= self.settings.abs_tol.max(self.settings.rel_tol * scale)
    }

    fn scalar(&mut self, a: &Expr, b: &Expr) -> Result<Decision, Timeout> {
        let (ia, ib) = (infinity_sign(a), infinity_sign(b));
        if ia.is_some() || ib.is_some() {
            return Ok(same_or_different(ia == ib, Basis::Structure));
        }
        if !has_vars(a) && !has_vars(b) {
            let bits = self.settings.max_exact_bits;
            if let (Some(x), Some(y)) = (exact(a, bits, self.budget)?, exact(b, bits, self.budget)?)
            {
                return Ok(same_or_different(x == y, Basis::ExactRational));
            }
            let point = Point::new();
            return match (
                numeric(a, &point, self.budget),
                numeric(b, &point, self.budget),
            ) {
                (Ok(x), Ok(y)) => Ok(same_or_different(self.close(x, y), Basis::Numeric)),
                (Err(NumericFail::Timeout), _) | (_, Err(NumericFail::Timeout)) => Err(Timeout),
                _ => Ok(Decision::Undecided),
            };
        }
        let mut agreed = 0;
        for point in self.point_candidates(a, b) {
            self.budget.check()?;
            match (
                numeric(a, &point, self.budget),
                numeric(b, &point, self.budget),
            ) {
                (Ok(x), Ok(y)) => {
                    if !self.close(x, y) {
                        return Ok(Decision::Different(Basis::Numeric));
                    }
                    agreed += 1;
                }
                (Err(NumericFail::Timeout), _) | (_, Err(NumericFail::Timeout)) => {
                    return Err(Timeout);
                }
                // Defined on one side only, at a random point: not the same function.
                (Ok(_), Err(NumericFail::Domain)) | (Err(NumericFail::Domain), Ok(_)) => {
                    return Ok(Decision::Different(Basis::Numeric));
                }
                (Err(NumericFail::NotANumber), _) | (_, Err(NumericFail::NotANumber)) => {
                    return Ok(Decision::Undecided);
                }
                _ => {}
            }
            if agreed == self.settings.points {
                return Ok(Decision::Same(Basis::Numeric));
            }
        }
        Ok(Decision::Undecided)
    }

    fn proportional(&mut self, f: &Expr, g: &Expr, positive: bool) -> Result<Decision, Timeout> {
        let mut ratio: Option<Complex64> = None;
        let mut agreed = 0;
        for point in self.point_candidates(f, g) {
            self.budget.check()?;
            let (x, y) = match (
                numeric(f, &point, self.budget),
                numeric(g, &point, self.budget),
            ) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(NumericFail::Timeout), _) | (_, Err(NumericFail::Timeout)) => {
                    return Err(Timeout);
                }
                (Err(NumericFail::NotANumber), _) | (_, Err(NumericFail::NotANumber)) => {
                    return Ok(Decision::Undecided);
                }
                _ => continue,
            };
            let tiny = |z: Complex64| z.norm() <= self.settings.abs_tol;
            match (tiny(x), tiny(y)) {
                // On both curves: says nothing about the factor.
                (true, true) => continue,
                (true, false) | (false, true) => return Ok(Decision::Different(Basis::Numeric)),
                (false, false) => {}
            }
            let r = x / y;
            match ratio {
                None => {
                    if positive && !(r.re > 0.0 && r.im.abs() <= self.settings.abs_tol) {
                        return Ok(Decision::Different(Basis::Numeric));
                    }
                    ratio = Some(r);
                }
                Some(first) if !self.close(r, first) => {
                    return Ok(Decision::Different(Basis::Numeric));
                }
                Some(_) => {}
            }
            agreed += 1;
            if agreed == self.settings.points {
                return Ok(Decision::Same(Basis::Numeric));
            }
        }
        Ok(Decision::Undecided)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::normalize::normalize;
    use super::super::parse::parse;
    use super::*;

    fn settings() -> Settings {
        Settings {
            rel_tol: 1e-9,
            abs_tol: 1e-12,
            points: 5,
            point_range: [0.5, 2.5],
            seed: 0,
            max_exact_bits: 1 << 16,
        }
    }

    fn decide(a: &str, b: &str) -> Decision {
        let mut budget = Budget::new(Duration::from_secs(10));
        let a = canonical(&parse(&normalize(a), 50, &mut budget).expect(a));
        let b = canonical(&parse(&normalize(b), 50, &mut budget).expect(b));
        equivalent(&a, &b, &settings(), &mut budget).expect("in time")
    }

    #[test]
    fn decisions_table() {
        use Basis::*;
        use Decision::*;
        let table: &[(&str, &str, Decision)] = &[
            ("1/2", "0.5", Same(ExactRational)),
            ("1/2004!", "1/2006!", Different(ExactRational)),
            (r"\pm 2021", "2021", Different(Structure)),
            (r"\pm 2021", "2021, -2021", Same(ExactRational)),
            (
                r"1 \pm \sqrt{2}",
                r"1 - \sqrt{2}, 1 + \sqrt{2}",
                Same(Numeric),
            ),
            (r"\sqrt{1/n}", r"1/\sqrt{n}", Same(Numeric)),
            ("pi/2", r"\dfrac{\pi}{2}", Same(Numeric)),
            (r"\sqrt{8}", r"2\sqrt{2}", Same(Numeric)),
            (r"\sqrt{2}", "1.41421356", Different(Numeric)),
            ("2x + 2", "2(x+1)", Same(Numeric)),
            ("x^2 - 1", "(x-1)(x+1)", Same(Numeric)),
            ("2x", "2y", Different(Numeric)),
            ("x/x", "1", Same(Numeric)),
            (r"\{1, 2\}", "1, 2", Same(ExactRational)),
            (r"\{1, 2\}", "2, 1", Same(ExactRational)),
            (r"\{1, 2\}", "1", Different(Structure)),
            ("1, 2", "1", Different(Structure)),
            ("1, 2", "1, 3", Different(ExactRational)),
            (r"\{3\}", "3", Same(ExactRational)),
            ("(1, 2)", "(2, 1)", Different(ExactRational)),
            ("(1, 2)", "1, 2", Same(ExactRational)),
            ("[1, 2)", "[1, 2)", Same(ExactRational)),
            ("[1, 2)", "[1, 2]", Different(Structure)),
            (r"(-\infty, 3]", r"x \le 3", Same(ExactRational)),
            ("(3, \\infty)", "x > 3", Same(ExactRational)),
            ("(1, 2]", r"1 < x \le 2", Same(ExactRational)),
            (
                r"(-\infty, 0) \cup (1, \infty)",
                r"(1, \infty) \cup (-\infty, 0)",
                Same(ExactRational),
            ),
            (
                r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}",
                "(1, 2)",
                Same(ExactRational),
            ),
            (
                r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
                r"\begin{bmatrix} 1 & 2 \\ 3 & 5 \end{bmatrix}",
                Different(ExactRational),
            ),
            ("y = 2x + 1", "2x + 1", Same(Numeric)),
            ("x^2 + y^2 = 1", "2x^2 + 2y^2 - 2 = 0", Same(Numeric)),
            ("x^2 + y^2 = 1", "x^2 + y^2 = 2", Different(Numeric)),
            ("x + y < 1", "1 > x + y", Same(Numeric)),
            ("x + y < 1", "2x + 2y < 2", Same(Numeric)),
            ("x + y < 1", "-x - y < -1", Different(Numeric)),
            ("5", "2 + 3 = 5", Same(ExactRational)),
            (r"e^{i\pi}", "-1", Same(Numeric)),
            (r"\infty", r"\infty", Same(Structure)),
            (r"\infty", r"-\infty", Different(Structure)),
            ("2^{1000000000}", "2^{1000000000}", Undecided),
            (r"\sin(\pi/6)", "1/2", Same(Numeric)),
            ("30", "30.0", Same(ExactRational)),
            (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", Same(Numeric)),
        ];
        for (a, b, expected) in table {
            assert_eq!(decide(a, b), *expected, "{a} vs {b}");
        }
    }
}
