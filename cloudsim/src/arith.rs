//! Exact arithmetic for the oracle: reduced fractions of `i128`, and a small parser of
//! `+ - * / ( )` expressions over integers and decimals, with unary minus. No floats anywhere,
//! so `0.1 + 0.2` is `0.3` and `1 / 3` is `1/3`.

use std::fmt;

/// Why an expression has no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithError {
    /// Some division has a zero divisor.
    DivByZero,
    /// A value does not fit `i128` fractions.
    Overflow,
}

/// An exact fraction: reduced, denominator positive, so equality is structural.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rational {
    num: i128,
    den: i128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn checked(value: Option<i128>) -> Result<i128, ArithError> {
    value.ok_or(ArithError::Overflow)
}

impl Rational {
    /// The integer `n`.
    pub fn integer(n: i128) -> Rational {
        Rational { num: n, den: 1 }
    }

    /// `num / den`, reduced.
    pub fn new(num: i128, den: i128) -> Result<Rational, ArithError> {
        if den == 0 {
            return Err(ArithError::DivByZero);
        }
        // gcd of two i128 magnitudes can be 2^127, which is not an i128.
        let g = i128::try_from(gcd(num.unsigned_abs(), den.unsigned_abs()))
            .map_err(|_| ArithError::Overflow)?;
        let (num, den) = (num / g, den / g);
        if den < 0 {
            return Ok(Rational {
                num: checked(num.checked_neg())?,
                den: checked(den.checked_neg())?,
            });
        }
        Ok(Rational { num, den })
    }

    /// The numerator (carries the sign).
    pub fn numer(self) -> i128 {
        self.num
    }

    /// The denominator (positive).
    pub fn denom(self) -> i128 {
        self.den
    }

    /// Whether the denominator is 1.
    pub fn is_integer(self) -> bool {
        self.den == 1
    }

    /// `self + rhs`.
    pub fn add(self, rhs: Rational) -> Result<Rational, ArithError> {
        let left = checked(self.num.checked_mul(rhs.den))?;
        let right = checked(rhs.num.checked_mul(self.den))?;
        Rational::new(
            checked(left.checked_add(right))?,
            checked(self.den.checked_mul(rhs.den))?,
        )
    }

    /// `self - rhs`.
    pub fn sub(self, rhs: Rational) -> Result<Rational, ArithError> {
        self.add(rhs.neg()?)
    }

    /// `self × rhs`.
    pub fn mul(self, rhs: Rational) -> Result<Rational, ArithError> {
        Rational::new(
            checked(self.num.checked_mul(rhs.num))?,
            checked(self.den.checked_mul(rhs.den))?,
        )
    }

    /// `self ÷ rhs`.
    pub fn div(self, rhs: Rational) -> Result<Rational, ArithError> {
        if rhs.num == 0 {
            return Err(ArithError::DivByZero);
        }
        Rational::new(
            checked(self.num.checked_mul(rhs.den))?,
            checked(self.den.checked_mul(rhs.num))?,
        )
    }

    /// `-self`.
    pub fn neg(self) -> Result<Rational, ArithError> {
        Ok(Rational {
            num: checked(self.num.checked_neg())?,
            den: self.den,
        })
    }

    /// The value as a terminating decimal (`7/4` → `1.75`); `None` when it does not terminate
    /// (`1/3`) or does not fit.
    pub fn to_decimal(self) -> Option<String> {
        let mut rest = self.den;
        let (mut twos, mut fives) = (0u32, 0u32);
        while rest % 2 == 0 {
            rest /= 2;
            twos += 1;
        }
        while rest % 5 == 0 {
            rest /= 5;
            fives += 1;
        }
        if rest != 1 {
            return None;
        }
        let places = twos.max(fives);
        let scale = 10i128.checked_pow(places)?;
        let scaled = self.num.checked_mul(scale / self.den)?.unsigned_abs();
        let scale = scale.unsigned_abs();
        let sign = if self.num < 0 { "-" } else { "" };
        if places == 0 {
            return Some(format!("{sign}{scaled}"));
        }
        Some(format!(
            "{sign}{}.{:0width$}",
            scaled / scale,
            scaled % scale,
            width = places as usize
        ))
    }
}

/// `n` or `n/d`.
impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// Parentheses nested deeper than this are not an expression; it bounds the recursion.
const MAX_DEPTH: usize = 64;

/// A parsed arithmetic expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    /// Its exact value, or why it has none.
    pub value: Result<Rational, ArithError>,
    /// How many binary operators it has (`-5` has none: it is a number, not a sum).
    pub operators: usize,
    /// Whether a literal was written with a decimal point (the answer is then written so too).
    pub decimal: bool,
}

impl Expression {
    /// The value as a person would write it: an integer, a decimal when the question used
    /// decimals and the value terminates, else a reduced fraction `n/d`.
    pub fn value_text(&self) -> Option<String> {
        let value = self.value.ok()?;
        if value.is_integer() {
            return Some(value.to_string());
        }
        Some(
            self.decimal
                .then(|| value.to_decimal())
                .flatten()
                .unwrap_or_else(|| value.to_string()),
        )
    }
}

/// Parses `text` as a whole: `None` unless all of it is one expression. `×`, `·` and `÷`
/// are read as `*` and `/`, `−` as `-`.
pub fn parse(text: &str) -> Option<Expression> {
    let ascii: String = text
        .chars()
        .map(|c| match c {
            '×' | '·' => '*',
            '÷' => '/',
            '−' => '-',
            c => c,
        })
        .collect();
    if !ascii.is_ascii() {
        return None;
    }
    let mut parser = Parser {
        bytes: ascii.as_bytes(),
        pos: 0,
        depth: 0,
        operators: 0,
        decimal: false,
    };
    let value = parser.expr()?;
    parser.skip_ws();
    (parser.pos == parser.bytes.len()).then_some(Expression {
        value,
        operators: parser.operators,
        decimal: parser.decimal,
    })
}

/// Recursive descent; only parentheses and unary signs recurse, and [`MAX_DEPTH`] caps both.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    operators: usize,
    decimal: bool,
}

type Value = Result<Rational, ArithError>;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// The next non-space byte, consumed if it is one of `ops`.
    fn operator(&mut self, ops: &[u8]) -> Option<u8> {
        self.skip_ws();
        let op = self.peek().filter(|b| ops.contains(b))?;
        self.pos += 1;
        Some(op)
    }

    /// expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Option<Value> {
        let mut value = self.term()?;
        while let Some(op) = self.operator(b"+-") {
            self.operators += 1;
            let rhs = self.term()?;
            value = value.and_then(|v| {
                let rhs = rhs?;
                if op == b'+' { v.add(rhs) } else { v.sub(rhs) }
            });
        }
        Some(value)
    }

    /// term := unary (('*' | '/') unary)*
    fn term(&mut self) -> Option<Value> {
        let mut value = self.unary()?;
        while let Some(op) = self.operator(b"*/") {
            self.operators += 1;
            let rhs = self.unary()?;
            value = value.and_then(|v| {
                let rhs = rhs?;
                if op == b'*' { v.mul(rhs) } else { v.div(rhs) }
            });
        }
        Some(value)
    }

    /// unary := ('-' | '+') unary | atom
    fn unary(&mut self) -> Option<Value> {
        let Some(sign) = self.operator(b"+-") else {
            return self.atom();
        };
        self.nested(|p| p.unary()).map(|v| {
            if sign == b'-' {
                v.and_then(Rational::neg)
            } else {
                v
            }
        })
    }

    /// atom := number | '(' expr ')'
    fn atom(&mut self) -> Option<Value> {
        self.skip_ws();
        if self.peek() == Some(b'(') {
            self.pos += 1;
            let value = self.nested(|p| p.expr())?;
            return (self.operator(b")") == Some(b')')).then_some(value);
        }
        self.number()
    }

    fn nested(&mut self, inner: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        if self.depth == MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let value = inner(self);
        self.depth -= 1;
        value
    }

    /// number := digits ('.' digits?)? | '.' digits
    fn number(&mut self) -> Option<Value> {
        let start = self.pos;
        let whole = self.digits();
        let mut fraction = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            fraction = self.digits();
            self.decimal = true;
        }
        if whole + fraction == 0 {
            return None;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).ok()?;
        let digits: String = text.chars().filter(|c| *c != '.').collect();
        let value = match (digits.parse::<i128>(), u32::try_from(fraction)) {
            (Ok(num), Ok(places)) => 10i128
                .checked_pow(places)
                .ok_or(ArithError::Overflow)
                .and_then(|den| Rational::new(num, den)),
            _ => Err(ArithError::Overflow),
        };
        Some(value)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<String> {
        parse(text)?.value_text()
    }

    #[test]
    fn expressions_evaluate_exactly() {
        let cases = [
            ("7953 + 3194", Some("11147")),
            ("2 + 3 * 4", Some("14")),
            ("(2 + 3) * 4", Some("20")),
            ("10 - 4 - 3", Some("3")),
            ("100 / 10 / 5", Some("2")),
            ("2 * (3 + (4 - 1)) / 3", Some("4")),
            ("7 / 2", Some("7/2")),
            ("6 / 4", Some("3/2")),
            ("1 / 3 + 1 / 6", Some("1/2")),
            ("-3 + 5", Some("2")),
            ("2 * -4", Some("-8")),
            ("-(2 - 7)", Some("5")),
            ("0.1 + 0.2", Some("0.3")),
            ("1.5 * 3", Some("4.5")),
            ("1.0 / 3", Some("1/3")),
            (".5 + 1.", Some("1.5")),
            ("12 × 3 ÷ 4", Some("9")),
            ("8 − 10", Some("-2")),
            ("  42  ", Some("42")),
        ];
        for (text, expected) in cases {
            assert_eq!(value(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn operators_are_counted_and_non_expressions_rejected() {
        assert_eq!(parse("-5").unwrap().operators, 0);
        assert_eq!(parse("1 + 2 * 3").unwrap().operators, 2);
        for text in [
            "", "2 +", "(1 + 2", "1 + 2)", "2 ^ 3", "x + 1", "1 2", "..5", "é",
        ] {
            assert!(parse(text).is_none(), "{text:?}");
        }
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).is_none());
    }

    #[test]
    fn division_by_zero_and_overflow_have_no_value() {
        let by_zero = parse("5 / (3 - 3)").unwrap();
        assert_eq!(by_zero.value, Err(ArithError::DivByZero));
        assert_eq!(by_zero.value_text(), None);
        assert_eq!(
            parse("99999999999999999999 * 99999999999999999999 * 99")
                .unwrap()
                .value,
            Err(ArithError::Overflow)
        );
        assert_eq!(
            parse("1000000000000000000000000000000000000000000")
                .unwrap()
                .value,
            Err(ArithError::Overflow)
        );
    }

    #[test]
    fn decimals_terminate_only_over_twos_and_fives() {
        let r = |n, d| Rational::new(n, d).unwrap();
        assert_eq!(r(7, 4).to_decimal().as_deref(), Some("1.75"));
        assert_eq!(r(-3, 20).to_decimal().as_deref(), Some("-0.15"));
        assert_eq!(r(6, 3).to_decimal().as_deref(), Some("2"));
        assert_eq!(r(1, 3).to_decimal(), None);
        assert_eq!(r(2, -4), r(-1, 2));
    }
}
