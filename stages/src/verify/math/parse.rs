//! The expression tree of a normalised answer, and the parser that builds it.
//!
//! What is read: integers and decimals (exact rationals), `\frac`, `\sqrt`, `\sqrt[n]`, powers
//! (`^`, and `**` as written in code), `+ - * /` with `\cdot`, `\times`, `\div`, implicit
//! multiplication (`2x`, `3\sqrt{2}`, `2(x+1)`, `\pi r^2`), `±`/`∓`, factorials, `\binom`,
//! `|x|`, floor and ceiling, π, e, i, ∞, trig, hyperbolic and log functions (`\sin^2 x`,
//! `\sin^{-1} x`, `\log_2 8`, `\ln x`), variables (letters, Greek letters, subscripts), mixed
//! numbers (`2\frac{1}{2}`), tuples `(a, b)`, intervals `[a, b)`, sets `\{a, b\}`, bare lists
//! `a, b`, unions `\cup`, matrices (`pmatrix`, `bmatrix`, …) and relations (`=`, `<`, `\le`, …,
//! chained).
//!
//! A run of two or three letters is a product of variables (`xy`); a longer word, or one of a
//! few short English words (`no`, `yes`, …), is text and does not parse, so such answers are
//! compared as strings. `\log` without a base is the natural logarithm, as in SymPy.
//!
//! The parser recurses only into brackets, signs, exponents and function arguments, each of
//! which counts against `max_depth`; every token is a tick of the [`Budget`].

use num_bigint::BigInt;
use num_traits::One;

use super::budget::{Budget, Timeout};
use super::normalize::is_greek;
pub(crate) use super::rational::Rational;
use super::rational::{add, mul, ratio, recip};

/// Number literals longer than this do not parse (the answer is compared as a string):
/// converting decimal digits to binary costs quadratic time.
const MAX_LITERAL_DIGITS: usize = 10_000;

/// Named constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Constant {
    Pi,
    E,
    I,
    Infinity,
}

/// Functions of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Exp,
    Ln,
    Abs,
    Floor,
    Ceil,
}

impl Func {
    /// `\sin^{-1}` is `\arcsin`, and so on.
    fn inverse(self) -> Option<Func> {
        Some(match self {
            Func::Sin => Func::Asin,
            Func::Cos => Func::Acos,
            Func::Tan => Func::Atan,
            _ => return None,
        })
    }
}

/// Relations between expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rel {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The bounds of an interval.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Interval {
    pub(crate) lo: Expr,
    pub(crate) hi: Expr,
    pub(crate) lo_closed: bool,
    pub(crate) hi_closed: bool,
}

/// A parsed answer. Sums and products are flat lists, so long chains do not nest.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Num(Rational),
    Const(Constant),
    Var(String),
    Neg(Box<Expr>),
    /// `±x`: stands for both `x` and `-x`.
    PlusMinus(Box<Expr>),
    Sum(Vec<Expr>),
    Product(Vec<Expr>),
    /// `1 / x`.
    Inv(Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    /// `(index, radicand)`.
    Root(Box<Expr>, Box<Expr>),
    Func(Func, Box<Expr>),
    /// `(base, argument)`.
    Log(Box<Expr>, Box<Expr>),
    Factorial(Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    /// `a, b` without brackets: the answers to a "find all" question, in any order.
    List(Vec<Expr>),
    Tuple(Vec<Expr>),
    Set(Vec<Expr>),
    Interval(Box<Interval>),
    Union(Vec<Expr>),
    Matrix(Vec<Vec<Expr>>),
    /// `first op1 e1 op2 e2 …`.
    Relation(Box<Expr>, Vec<(Rel, Expr)>),
}

impl Expr {
    /// The direct sub-expressions.
    pub(crate) fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Num(_) | Expr::Const(_) | Expr::Var(_) => vec![],
            Expr::Neg(a)
            | Expr::PlusMinus(a)
            | Expr::Inv(a)
            | Expr::Func(_, a)
            | Expr::Factorial(a) => vec![a],
            Expr::Pow(a, b) | Expr::Root(a, b) | Expr::Log(a, b) | Expr::Binom(a, b) => {
                vec![a, b]
            }
            Expr::Sum(items)
            | Expr::Product(items)
            | Expr::List(items)
            | Expr::Tuple(items)
            | Expr::Set(items)
            | Expr::Union(items) => items.iter().collect(),
            Expr::Interval(i) => vec![&i.lo, &i.hi],
            Expr::Matrix(rows) => rows.iter().flatten().collect(),
            Expr::Relation(first, rest) => std::iter::once(&**first)
                .chain(rest.iter().map(|(_, e)| e))
                .collect(),
        }
    }

    /// The same node with each direct sub-expression replaced by `f` of it.
    pub(crate) fn map_children(&self, f: &mut dyn FnMut(&Expr) -> Expr) -> Expr {
        let mut b = |e: &Expr| Box::new(f(e));
        match self {
            Expr::Num(_) | Expr::Const(_) | Expr::Var(_) => self.clone(),
            Expr::Neg(a) => Expr::Neg(b(a)),
            Expr::PlusMinus(a) => Expr::PlusMinus(b(a)),
            Expr::Inv(a) => Expr::Inv(b(a)),
            Expr::Func(func, a) => Expr::Func(*func, b(a)),
            Expr::Factorial(a) => Expr::Factorial(b(a)),
            Expr::Pow(x, y) => Expr::Pow(b(x), b(y)),
            Expr::Root(x, y) => Expr::Root(b(x), b(y)),
            Expr::Log(x, y) => Expr::Log(b(x), b(y)),
            Expr::Binom(x, y) => Expr::Binom(b(x), b(y)),
            Expr::Sum(items) => Expr::Sum(items.iter().map(&mut *f).collect()),
            Expr::Product(items) => Expr::Product(items.iter().map(&mut *f).collect()),
            Expr::List(items) => Expr::List(items.iter().map(&mut *f).collect()),
            Expr::Tuple(items) => Expr::Tuple(items.iter().map(&mut *f).collect()),
            Expr::Set(items) => Expr::Set(items.iter().map(&mut *f).collect()),
            Expr::Union(items) => Expr::Union(items.iter().map(&mut *f).collect()),
            Expr::Interval(i) => Expr::Interval(Box::new(Interval {
                lo: f(&i.lo),
                hi: f(&i.hi),
                ..**i
            })),
            Expr::Matrix(rows) => Expr::Matrix(
                rows.iter()
                    .map(|row| row.iter().map(&mut *f).collect())
                    .collect(),
            ),
            Expr::Relation(first, rest) => {
                Expr::Relation(b(first), rest.iter().map(|(op, e)| (*op, f(e))).collect())
            }
        }
    }

    /// Whether this is one value (not a collection or a relation).
    pub(crate) fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Expr::List(_)
                | Expr::Tuple(_)
                | Expr::Set(_)
                | Expr::Interval(_)
                | Expr::Union(_)
                | Expr::Matrix(_)
                | Expr::Relation(..)
        )
    }
}

/// Why an answer has no tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParseFail {
    /// Not in the grammar, or nested deeper than the limit.
    Syntax,
    /// The answer's time ran out.
    Timeout,
}

impl From<Timeout> for ParseFail {
    fn from(_: Timeout) -> ParseFail {
        ParseFail::Timeout
    }
}

type Parsed<T> = Result<T, ParseFail>;

/// Parses a normalised answer; `max_depth` bounds the nesting (and so the recursion).
pub(crate) fn parse(text: &str, max_depth: usize, budget: &mut Budget) -> Parsed<Expr> {
    let tokens = lex(text, budget)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        max_depth,
        bars: 0,
        budget,
    };
    let items = parser.list()?;
    if parser.pos != parser.tokens.len() {
        return Err(ParseFail::Syntax);
    }
    Ok(one_or_list(items))
}

fn one_or_list(mut items: Vec<Expr>) -> Expr {
    if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        Expr::List(items)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// Digits with an optional decimal point.
    Num(String),
    Var(String),
    Const(Constant),
    Func(Func),
    Log,
    Frac,
    Sqrt,
    Binom,
    Plus,
    Minus,
    PlusMinus,
    Times,
    Divide,
    Caret,
    Bang,
    Comma,
    Underscore,
    Rel(Rel),
    Cup,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    SetOpen,
    SetClose,
    LAngle,
    RAngle,
    Bar,
    LFloor,
    RFloor,
    LCeil,
    RCeil,
    Amp,
    RowSep,
    Begin(String),
    End(String),
    EmptySet,
    /// Anything else (an unknown command, a word, a stray character): a syntax error wherever
    /// the parser meets it.
    Unknown,
}

/// Names that letter runs and commands may spell.
fn named(name: &str) -> Option<Tok> {
    Some(match name {
        "pi" => Tok::Const(Constant::Pi),
        "infty" | "infinity" | "inf" => Tok::Const(Constant::Infinity),
        "sin" => Tok::Func(Func::Sin),
        "cos" => Tok::Func(Func::Cos),
        "tan" => Tok::Func(Func::Tan),
        "sec" => Tok::Func(Func::Sec),
        "csc" => Tok::Func(Func::Csc),
        "cot" => Tok::Func(Func::Cot),
        "arcsin" => Tok::Func(Func::Asin),
        "arccos" => Tok::Func(Func::Acos),
        "arctan" => Tok::Func(Func::Atan),
        "sinh" => Tok::Func(Func::Sinh),
        "cosh" => Tok::Func(Func::Cosh),
        "tanh" => Tok::Func(Func::Tanh),
        "exp" => Tok::Func(Func::Exp),
        "ln" => Tok::Func(Func::Ln),
        "log" => Tok::Log,
        "sqrt" => Tok::Sqrt,
        _ => return None,
    })
}

/// Short words that are text, not products of variables.
const WORDS: &[&str] = &[
    "no", "yes", "not", "odd", "all", "any", "one", "two", "six", "ten", "the", "is", "are", "of",
    "to", "be", "it", "we", "an", "on", "in", "at", "by", "if", "so", "do",
];

fn command(name: &str) -> Tok {
    match name {
        "frac" => Tok::Frac,
        "binom" => Tok::Binom,
        "emptyset" => Tok::EmptySet,
        "cdot" | "times" => Tok::Times,
        "div" => Tok::Divide,
        "pm" | "mp" => Tok::PlusMinus,
        "le" => Tok::Rel(Rel::Le),
        "ge" => Tok::Rel(Rel::Ge),
        "ne" => Tok::Rel(Rel::Ne),
        "cup" => Tok::Cup,
        "{" => Tok::SetOpen,
        "}" => Tok::SetClose,
        "langle" => Tok::LAngle,
        "rangle" => Tok::RAngle,
        "lfloor" => Tok::LFloor,
        "rfloor" => Tok::RFloor,
        "lceil" => Tok::LCeil,
        "rceil" => Tok::RCeil,
        "\\" => Tok::RowSep,
        "log" | "lg" => Tok::Log,
        name if is_greek(name) => Tok::Var(name.to_owned()),
        name => named(name).unwrap_or(Tok::Unknown),
    }
}

fn lex(text: &str, budget: &mut Budget) -> Parsed<Vec<Tok>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        budget.tick()?;
        let b = bytes[i];
        let start = i;
        i += 1;
        let tok = match b {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'0'..=b'9' | b'.' => {
                let mut seen_point = b == b'.';
                while i < bytes.len()
                    && (bytes[i].is_ascii_digit() || (bytes[i] == b'.' && !seen_point))
                {
                    seen_point |= bytes[i] == b'.';
                    i += 1;
                }
                let literal = &text[start..i];
                // A lone point, or one that ends the number (`3.`), is not a number; nor is a
                // literal so long that reading it would take longer than judging should.
                if literal == "." || literal.ends_with('.') || literal.len() > MAX_LITERAL_DIGITS {
                    Tok::Unknown
                } else {
                    Tok::Num(literal.to_owned())
                }
            }
            b'\\' => {
                let name_end = if bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
                    let mut j = i;
                    while bytes.get(j).is_some_and(u8::is_ascii_alphabetic) {
                        j += 1;
                    }
                    j
                } else if let Some(c) = text[i..].chars().next() {
                    i + c.len_utf8()
                } else {
                    i
                };
                let name = &text[i..name_end];
                i = name_end;
                match name {
                    "begin" | "end" => {
                        let Some(env) = braced(text, &mut i) else {
                            out.push(Tok::Unknown);
                            continue;
                        };
                        if name == "begin" {
                            Tok::Begin(env.to_owned())
                        } else {
                            Tok::End(env.to_owned())
                        }
                    }
                    _ => {
                        let tok = command(name);
                        if let Tok::Var(base) = tok {
                            Tok::Var(with_subscript(base, text, &mut i))
                        } else {
                            tok
                        }
                    }
                }
            }
            b'a'..=b'z' | b'A'..=b'Z' => {
                while bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
                    i += 1;
                }
                letters(&text[start..i], text, &mut i, &mut out);
                continue;
            }
            b'+' => Tok::Plus,
            b'-' => Tok::Minus,
            b'*' if bytes.get(i) == Some(&b'*') => {
                i += 1;
                Tok::Caret
            }
            b'*' => Tok::Times,
            b'/' => Tok::Divide,
            b'^' => Tok::Caret,
            b'!' => Tok::Bang,
            b',' => Tok::Comma,
            b'_' => Tok::Underscore,
            b'=' => Tok::Rel(Rel::Eq),
            b'<' | b'>' => {
                let or_equal = bytes.get(i) == Some(&b'=');
                if or_equal {
                    i += 1;
                }
                Tok::Rel(match (b, or_equal) {
                    (b'<', false) => Rel::Lt,
                    (b'<', true) => Rel::Le,
                    (_, false) => Rel::Gt,
                    (_, true) => Rel::Ge,
                })
            }
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b'[' => Tok::LBracket,
            b']' => Tok::RBracket,
            b'{' => Tok::LBrace,
            b'}' => Tok::RBrace,
            b'|' => Tok::Bar,
            b'&' => Tok::Amp,
            _ => {
                // Skip the rest of a multi-byte character in one step.
                while i < bytes.len() && !text.is_char_boundary(i) {
                    i += 1;
                }
                Tok::Unknown
            }
        };
        out.push(tok);
    }
    Ok(out)
}

/// Reads `{name}` at `*i` (after optional spaces) and moves past it.
fn braced<'t>(text: &'t str, i: &mut usize) -> Option<&'t str> {
    let rest = &text[*i..];
    let trimmed = rest.trim_start();
    let inner = trimmed.strip_prefix('{')?;
    let close = inner.find('}')?;
    *i += rest.len() - trimmed.len() + 1 + close + 1;
    Some(inner[..close].trim())
}

/// Appends `_1` or `_{12}` at `*i` to a variable name.
fn with_subscript(mut name: String, text: &str, i: &mut usize) -> String {
    let rest = &text[*i..];
    let Some(sub) = rest.strip_prefix('_') else {
        return name;
    };
    let (content, used) = if let Some(inner) = sub.strip_prefix('{') {
        match inner.find('}') {
            Some(close) => (&inner[..close], close + 2),
            None => return name,
        }
    } else {
        match sub.chars().next() {
            Some(c) if c.is_ascii_alphanumeric() => (&sub[..1], 1),
            _ => return name,
        }
    };
    let content: String = content.chars().filter(|c| !c.is_whitespace()).collect();
    if content.is_empty() || content.contains(['{', '\\']) {
        return name;
    }
    name.push('_');
    name.push_str(&content);
    *i += 1 + used;
    name
}

/// Tokens of a run of letters: a known name, a function name with a letter or two after it
/// (`sinx`), a product of up to three single-letter variables, or text.
fn letters(run: &str, text: &str, i: &mut usize, out: &mut Vec<Tok>) {
    if let Some(tok) = named(run) {
        out.push(tok);
        return;
    }
    let prefix = [
        "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sin", "cos", "tan", "ln",
    ]
    .into_iter()
    .find(|f| run.starts_with(f) && run.len() - f.len() <= 2);
    let singles = match prefix {
        Some(f) => {
            out.push(named(f).expect("a known function"));
            &run[f.len()..]
        }
        None if run.len() <= 3 && !WORDS.contains(&run) => run,
        None => {
            out.push(Tok::Unknown);
            return;
        }
    };
    for (k, c) in singles.char_indices() {
        let last = k + 1 == singles.len();
        let name = if last {
            with_subscript(c.to_string(), text, i)
        } else {
            c.to_string()
        };
        out.push(match name.as_str() {
            "e" => Tok::Const(Constant::E),
            "i" => Tok::Const(Constant::I),
            _ => Tok::Var(name),
        });
    }
}

/// A decimal literal as an exact rational.
pub(crate) fn decimal(literal: &str) -> Option<Rational> {
    let (whole, frac) = literal.split_once('.').unwrap_or((literal, ""));
    let digits = format!("{whole}{frac}");
    let numer: BigInt = digits.parse().ok()?;
    let denom = num_traits::pow(BigInt::from(10u8), frac.len());
    ratio(numer, denom)
}

struct Parser<'b> {
    tokens: Vec<Tok>,
    pos: usize,
    depth: usize,
    max_depth: usize,
    /// Open `|…|` pairs: inside one, a `|` closes instead of starting a factor.
    bars: usize,
    budget: &'b mut Budget,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn advance(&mut self) -> Parsed<Option<Tok>> {
        self.budget.tick()?;
        let tok = self.tokens.get(self.pos).cloned();
        if tok.is_some() {
            self.pos += 1;
        }
        Ok(tok)
    }

    fn eat(&mut self, tok: &Tok) -> Parsed<bool> {
        if self.peek() == Some(tok) {
            self.advance()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn expect(&mut self, tok: &Tok) -> Parsed<()> {
        if self.eat(tok)? {
            Ok(())
        } else {
            Err(ParseFail::Syntax)
        }
    }

    /// Runs `f` one level deeper; past `max_depth` the answer is a syntax error.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Parsed<T>) -> Parsed<T> {
        if self.depth >= self.max_depth {
            return Err(ParseFail::Syntax);
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// list := relation (',' relation)*
    fn list(&mut self) -> Parsed<Vec<Expr>> {
        self.nested(|p| {
            let mut items = vec![p.relation()?];
            while p.eat(&Tok::Comma)? {
                items.push(p.relation()?);
            }
            Ok(items)
        })
    }

    /// A bracketed group that must hold exactly one expression.
    fn single(&mut self) -> Parsed<Expr> {
        let mut items = self.list()?;
        if items.len() != 1 {
            return Err(ParseFail::Syntax);
        }
        Ok(items.pop().expect("one item"))
    }

    /// relation := union (op union)*
    fn relation(&mut self) -> Parsed<Expr> {
        let first = self.union()?;
        let mut rest = Vec::new();
        while let Some(Tok::Rel(op)) = self.peek() {
            let op = *op;
            self.advance()?;
            rest.push((op, self.union()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Relation(Box::new(first), rest)
        })
    }

    /// union := sum ('\cup' sum)*
    fn union(&mut self) -> Parsed<Expr> {
        let mut parts = vec![self.sum()?];
        while self.eat(&Tok::Cup)? {
            parts.push(self.sum()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::Union(parts)
        })
    }

    /// sum := term (('+' | '-' | '±') term)*
    fn sum(&mut self) -> Parsed<Expr> {
        let mut terms = vec![self.term()?];
        loop {
            let term = match self.peek() {
                Some(Tok::Plus) => {
                    self.advance()?;
                    self.term()?
                }
                Some(Tok::Minus) => {
                    self.advance()?;
                    Expr::Neg(Box::new(self.term()?))
                }
                Some(Tok::PlusMinus) => {
                    self.advance()?;
                    Expr::PlusMinus(Box::new(self.term()?))
                }
                _ => break,
            };
            terms.push(term);
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one term")
        } else {
            Expr::Sum(terms)
        })
    }

    /// Whether the next token can start a factor written without an operator (`2x`).
    /// A number cannot: `2 3` is not `6`.
    fn starts_implicit_factor(&self) -> bool {
        match self.peek() {
            Some(
                Tok::Var(_)
                | Tok::Const(_)
                | Tok::Func(_)
                | Tok::Log
                | Tok::Frac
                | Tok::Sqrt
                | Tok::Binom
                | Tok::LParen
                | Tok::LBrace
                | Tok::LFloor
                | Tok::LCeil,
            ) => true,
            Some(Tok::Bar) => self.bars == 0,
            _ => false,
        }
    }

    /// term := unary (('*' | '/' | implicit) unary)*
    fn term(&mut self) -> Parsed<Expr> {
        let first_is_literal = matches!(self.peek(), Some(Tok::Num(n)) if !n.contains('.'));
        let mut factors = vec![self.unary()?];
        loop {
            match self.peek() {
                Some(Tok::Times) => {
                    self.advance()?;
                    factors.push(self.unary()?);
                }
                Some(Tok::Divide) => {
                    self.advance()?;
                    factors.push(Expr::Inv(Box::new(self.unary()?)));
                }
                Some(Tok::Frac) if first_is_literal && factors.len() == 1 => {
                    // `2\frac{1}{2}` is the mixed number 5/2 when both parts are integers.
                    let fraction = self.power()?;
                    match (&factors[0], mixed_fraction(&fraction)) {
                        (Expr::Num(whole), Some(part)) => factors[0] = Expr::Num(add(whole, &part)),
                        _ => factors.push(fraction),
                    }
                }
                _ if self.starts_implicit_factor() => factors.push(self.power()?),
                _ => break,
            }
        }
        Ok(if factors.len() == 1 {
            factors.pop().expect("one factor")
        } else {
            Expr::Product(factors)
        })
    }

    /// unary := ('-' | '+' | '±') unary | power
    fn unary(&mut self) -> Parsed<Expr> {
        match self.peek() {
            Some(Tok::Minus) => {
                self.advance()?;
                Ok(Expr::Neg(Box::new(self.nested(Self::unary)?)))
            }
            Some(Tok::Plus) => {
                self.advance()?;
                self.nested(Self::unary)
            }
            Some(Tok::PlusMinus) => {
                self.advance()?;
                Ok(Expr::PlusMinus(Box::new(self.nested(Self::unary)?)))
            }
            _ => self.power(),
        }
    }

    /// power := postfix ('^' exponent)?
    fn power(&mut self) -> Parsed<Expr> {
        let base = self.postfix()?;
        if self.eat(&Tok::Caret)? {
            let exponent = self.exponent()?;
            return Ok(Expr::Pow(Box::new(base), Box::new(exponent)));
        }
        Ok(base)
    }

    /// exponent := '{' expr '}' | ('-' | '+') exponent | power
    fn exponent(&mut self) -> Parsed<Expr> {
        self.nested(|p| match p.peek() {
            Some(Tok::LBrace) => {
                p.advance()?;
                let e = p.single()?;
                p.expect(&Tok::RBrace)?;
                Ok(e)
            }
            Some(Tok::Minus) => {
                p.advance()?;
                Ok(Expr::Neg(Box::new(p.exponent()?)))
            }
            Some(Tok::Plus) => {
                p.advance()?;
                p.exponent()
            }
            _ => p.power(),
        })
    }

    /// postfix := atom '!'*
    fn postfix(&mut self) -> Parsed<Expr> {
        let mut e = self.atom()?;
        let mut bangs = 0;
        while self.eat(&Tok::Bang)? {
            bangs += 1;
            if bangs > self.max_depth {
                return Err(ParseFail::Syntax);
            }
            e = Expr::Factorial(Box::new(e));
        }
        Ok(e)
    }

    fn atom(&mut self) -> Parsed<Expr> {
        let Some(tok) = self.advance()? else {
            return Err(ParseFail::Syntax);
        };
        match tok {
            Tok::Num(literal) => decimal(&literal).map(Expr::Num).ok_or(ParseFail::Syntax),
            Tok::Var(name) => Ok(Expr::Var(name)),
            Tok::Const(c) => Ok(Expr::Const(c)),
            Tok::EmptySet => Ok(Expr::Set(vec![])),
            Tok::Func(func) => self.function(func),
            Tok::Log => self.log(),
            Tok::Frac => {
                let numer = self.frac_arg()?;
                let denom = self.frac_arg()?;
                Ok(Expr::Product(vec![numer, Expr::Inv(Box::new(denom))]))
            }
            Tok::Binom => {
                let n = self.frac_arg()?;
                let k = self.frac_arg()?;
                Ok(Expr::Binom(Box::new(n), Box::new(k)))
            }
            Tok::Sqrt => {
                let index = if self.eat(&Tok::LBracket)? {
                    let index = self.single()?;
                    self.expect(&Tok::RBracket)?;
                    index
                } else {
                    Expr::Num(Rational::from_integer(2.into()))
                };
                let radicand = match self.peek() {
                    Some(Tok::LParen) => {
                        self.advance()?;
                        let e = self.single()?;
                        self.expect(&Tok::RParen)?;
                        e
                    }
                    _ => self.frac_arg()?,
                };
                Ok(Expr::Root(Box::new(index), Box::new(radicand)))
            }
            Tok::LParen => {
                let items = self.list()?;
                match (self.advance()?, items.len()) {
                    (Some(Tok::RParen), 1) => Ok(one_or_list(items)),
                    (Some(Tok::RParen), _) => Ok(Expr::Tuple(items)),
                    (Some(Tok::RBracket), 2) => Ok(interval(items, false, true)),
                    _ => Err(ParseFail::Syntax),
                }
            }
            Tok::LBracket => {
                let items = self.list()?;
                match (self.advance()?, items.len()) {
                    (Some(Tok::RBracket), 1) => Ok(one_or_list(items)),
                    (Some(Tok::RBracket), 2) => Ok(interval(items, true, true)),
                    (Some(Tok::RBracket), _) => Ok(Expr::List(items)),
                    (Some(Tok::RParen), 2) => Ok(interval(items, true, false)),
                    _ => Err(ParseFail::Syntax),
                }
            }
            Tok::LBrace => {
                let items = self.list()?;
                self.expect(&Tok::RBrace)?;
                Ok(if items.len() == 1 {
                    one_or_list(items)
                } else {
                    Expr::Set(items)
                })
            }
            Tok::SetOpen => {
                if self.eat(&Tok::SetClose)? {
                    return Ok(Expr::Set(vec![]));
                }
                let items = self.list()?;
                self.expect(&Tok::SetClose)?;
                Ok(Expr::Set(items))
            }
            Tok::LAngle => {
                let items = self.list()?;
                self.expect(&Tok::RAngle)?;
                Ok(Expr::Tuple(items))
            }
            Tok::Bar => {
                self.bars += 1;
                let inner = self.nested(Self::sum);
                self.bars -= 1;
                let inner = inner?;
                self.expect(&Tok::Bar)?;
                Ok(Expr::Func(Func::Abs, Box::new(inner)))
            }
            Tok::LFloor => {
                let inner = self.nested(Self::sum)?;
                self.expect(&Tok::RFloor)?;
                Ok(Expr::Func(Func::Floor, Box::new(inner)))
            }
            Tok::LCeil => {
                let inner = self.nested(Self::sum)?;
                self.expect(&Tok::RCeil)?;
                Ok(Expr::Func(Func::Ceil, Box::new(inner)))
            }
            Tok::Begin(env) => self.matrix(&env),
            _ => Err(ParseFail::Syntax),
        }
    }

    /// An argument of `\frac`, `\binom`, `\sqrt`: a braced group, or one token (`\frac12` is
    /// `\frac{1}{2}`: one digit of a number at a time).
    fn frac_arg(&mut self) -> Parsed<Expr> {
        match self.peek().cloned() {
            Some(Tok::LBrace) => {
                self.advance()?;
                let e = self.single()?;
                self.expect(&Tok::RBrace)?;
                Ok(e)
            }
            Some(Tok::Num(literal)) => {
                let first = literal.get(..1).unwrap_or_default();
                if first == "." {
                    return Err(ParseFail::Syntax);
                }
                if literal.len() > 1 {
                    self.tokens[self.pos] = Tok::Num(literal[1..].to_owned());
                    self.budget.tick()?;
                } else {
                    self.advance()?;
                }
                decimal(first).map(Expr::Num).ok_or(ParseFail::Syntax)
            }
            Some(Tok::Var(_) | Tok::Const(_)) => self.atom(),
            _ => Err(ParseFail::Syntax),
        }
    }

    /// A power written on a function name (`\sin^2`), if any.
    fn function_power(&mut self) -> Parsed<Option<Expr>> {
        if self.eat(&Tok::Caret)? {
            Ok(Some(self.exponent()?))
        } else {
            Ok(None)
        }
    }

    /// The argument of a function: parenthesised, braced, or the implicit product that follows
    /// (`\sin 2x` is `\sin(2x)`; it stops at the next function, so `\sin x \cos x` is a product).
    fn function_arg(&mut self) -> Parsed<Expr> {
        self.nested(|p| match p.peek() {
            Some(Tok::LParen) => {
                p.advance()?;
                let e = p.single()?;
                p.expect(&Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::LBrace) => {
                p.advance()?;
                let e = p.single()?;
                p.expect(&Tok::RBrace)?;
                Ok(e)
            }
            _ => {
                let mut factors = vec![p.power()?];
                while p.starts_implicit_factor()
                    && !matches!(p.peek(), Some(Tok::Func(_) | Tok::Log))
                {
                    factors.push(p.power()?);
                }
                Ok(if factors.len() == 1 {
                    factors.pop().expect("one factor")
                } else {
                    Expr::Product(factors)
                })
            }
        })
    }

    fn function(&mut self, func: Func) -> Parsed<Expr> {
        let power = self.function_power()?;
        let (func, power) = match (&power, func.inverse()) {
            (Some(Expr::Neg(one)), Some(inverse)) if is_one(one) => (inverse, None),
            _ => (func, power),
        };
        let applied = Expr::Func(func, Box::new(self.function_arg()?));
        Ok(match power {
            Some(p) => Expr::Pow(Box::new(applied), Box::new(p)),
            None => applied,
        })
    }

    fn log(&mut self) -> Parsed<Expr> {
        let base = if self.eat(&Tok::Underscore)? {
            Some(match self.peek() {
                Some(Tok::LBrace) => {
                    self.advance()?;
                    let e = self.single()?;
                    self.expect(&Tok::RBrace)?;
                    e
                }
                _ => self.atom()?,
            })
        } else {
            None
        };
        let power = self.function_power()?;
        let arg = self.function_arg()?;
        let applied = match base {
            Some(base) => Expr::Log(Box::new(base), Box::new(arg)),
            None => Expr::Func(Func::Ln, Box::new(arg)),
        };
        Ok(match power {
            Some(p) => Expr::Pow(Box::new(applied), Box::new(p)),
            None => applied,
        })
    }

    /// `\begin{pmatrix} a & b \\ c & d \end{pmatrix}` and its kin (`matrix`, `bmatrix`,
    /// `Bmatrix`, `smallmatrix`, `array` with its column spec skipped).
    fn matrix(&mut self, env: &str) -> Parsed<Expr> {
        if !matches!(
            env,
            "matrix" | "pmatrix" | "bmatrix" | "Bmatrix" | "smallmatrix" | "array"
        ) {
            return Err(ParseFail::Syntax);
        }
        if env == "array" && self.eat(&Tok::LBrace)? {
            while !self.eat(&Tok::RBrace)? {
                if self.advance()?.is_none() {
                    return Err(ParseFail::Syntax);
                }
            }
        }
        let mut rows: Vec<Vec<Expr>> = Vec::new();
        let mut row = Vec::new();
        loop {
            row.push(self.nested(Self::relation)?);
            match self.advance()? {
                Some(Tok::Amp) => {}
                Some(Tok::RowSep) => {
                    rows.push(std::mem::take(&mut row));
                    if let Some(Tok::End(_)) = self.peek() {
                        self.advance()?;
                        break;
                    }
                }
                Some(Tok::End(end)) if end == env => {
                    rows.push(std::mem::take(&mut row));
                    break;
                }
                _ => return Err(ParseFail::Syntax),
            }
        }
        let width = rows[0].len();
        if rows.iter().any(|r| r.len() != width) {
            return Err(ParseFail::Syntax);
        }
        Ok(Expr::Matrix(rows))
    }
}

fn is_one(e: &Expr) -> bool {
    matches!(e, Expr::Num(n) if n.is_one())
}

fn interval(mut items: Vec<Expr>, lo_closed: bool, hi_closed: bool) -> Expr {
    let hi = items.pop().expect("two items");
    let lo = items.pop().expect("two items");
    Expr::Interval(Box::new(Interval {
        lo,
        hi,
        lo_closed,
        hi_closed,
    }))
}

/// The value of `\frac{p}{q}` when both are integer literals.
fn mixed_fraction(e: &Expr) -> Option<Rational> {
    let Expr::Product(parts) = e else { return None };
    match parts.as_slice() {
        [Expr::Num(p), Expr::Inv(q)] => match &**q {
            Expr::Num(q) if p.is_integer() && q.is_integer() => recip(q).map(|r| mul(p, &r)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn n(v: i64) -> Expr {
        Expr::Num(Rational::from_integer(v.into()))
    }

    fn v(name: &str) -> Expr {
        Expr::Var(name.into())
    }

    fn parsed(text: &str) -> Parsed<Expr> {
        parse(text, 50, &mut Budget::new(Duration::from_secs(10)))
    }

    #[test]
    fn shapes_table() {
        use Expr::*;
        let half = Product(vec![n(1), Inv(Box::new(n(2)))]);
        let table: Vec<(&str, Expr)> = vec![
            ("42", n(42)),
            ("1.25", Num(Rational::new(5.into(), 4.into()))),
            (".5", Num(Rational::new(1.into(), 2.into()))),
            (r"\frac{1}{2}", half.clone()),
            (r"\frac12", half.clone()),
            ("1/2", half.clone()),
            ("2x", Product(vec![n(2), v("x")])),
            ("xy", Product(vec![v("x"), v("y")])),
            ("x_1", v("x_1")),
            ("a_{12}", v("a_12")),
            (r"\alpha", v("alpha")),
            ("-x^2", Neg(Box::new(Pow(Box::new(v("x")), Box::new(n(2)))))),
            ("2^34", Pow(Box::new(n(2)), Box::new(n(34)))),
            ("2**3", Pow(Box::new(n(2)), Box::new(n(3)))),
            (
                "2^3^2",
                Pow(
                    Box::new(n(2)),
                    Box::new(Pow(Box::new(n(3)), Box::new(n(2)))),
                ),
            ),
            (r"2\frac{1}{2}", Num(Rational::new(5.into(), 2.into()))),
            (r"\pi", Const(Constant::Pi)),
            ("pi", Const(Constant::Pi)),
            (
                r"e^{i\pi}",
                Pow(
                    Box::new(Const(Constant::E)),
                    Box::new(Product(vec![Const(Constant::I), Const(Constant::Pi)])),
                ),
            ),
            (r"\sqrt{2}", Root(Box::new(n(2)), Box::new(n(2)))),
            (r"\sqrt[3]{x}", Root(Box::new(n(3)), Box::new(v("x")))),
            (r"\sin^{-1} x", Func(super::Func::Asin, Box::new(v("x")))),
            (
                r"\sin^2 x",
                Pow(
                    Box::new(Func(super::Func::Sin, Box::new(v("x")))),
                    Box::new(n(2)),
                ),
            ),
            (
                r"\sin x \cos x",
                Product(vec![
                    Func(super::Func::Sin, Box::new(v("x"))),
                    Func(super::Func::Cos, Box::new(v("x"))),
                ]),
            ),
            (r"\log_2 8", Log(Box::new(n(2)), Box::new(n(8)))),
            (r"\ln x", Func(super::Func::Ln, Box::new(v("x")))),
            ("|x|", Func(super::Func::Abs, Box::new(v("x")))),
            ("5!", Factorial(Box::new(n(5)))),
            (r"\pm 3", PlusMinus(Box::new(n(3)))),
            ("1, 2", List(vec![n(1), n(2)])),
            ("(1, 2)", Tuple(vec![n(1), n(2)])),
            (r"\{1, 2\}", Set(vec![n(1), n(2)])),
            (r"\emptyset", Set(vec![])),
            (r"\{\}", Set(vec![])),
            (
                "[1, 2)",
                Interval(Box::new(super::Interval {
                    lo: n(1),
                    hi: n(2),
                    lo_closed: true,
                    hi_closed: false,
                })),
            ),
            (
                r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
                Matrix(vec![vec![n(1), n(2)], vec![n(3), n(4)]]),
            ),
            ("x<3", Relation(Box::new(v("x")), vec![(Rel::Lt, n(3))])),
            (
                r"1\le x<3",
                Relation(Box::new(n(1)), vec![(Rel::Le, v("x")), (Rel::Lt, n(3))]),
            ),
        ];
        for (text, expected) in table {
            assert_eq!(parsed(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn syntax_errors_table() {
        for text in [
            "",
            "(",
            ")",
            "1 2",
            "no",
            "hello",
            "\\unknown",
            "1,",
            "3.",
            "()",
            "[1,2,3)",
            "x^",
            r"\frac{1}",
            r"\begin{vmatrix}1\end{vmatrix}",
            r"\begin{pmatrix}1&2\\3\end{pmatrix}",
            "é",
            "|x",
            "1 @ 2",
        ] {
            assert_eq!(parsed(text), Err(ParseFail::Syntax), "{text:?}");
        }
    }

    #[test]
    fn depth_is_capped_before_recursing() {
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(parsed(&deep), Err(ParseFail::Syntax));
        let ok = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(parsed(&ok), Ok(n(1)));
        assert_eq!(parsed(&"-".repeat(10_000)), Err(ParseFail::Syntax));
        assert_eq!(
            parsed(&format!("2{}", "^2".repeat(10_000))),
            Err(ParseFail::Syntax)
        );
        assert_eq!(
            parsed(&format!("{}x", r"\sin".repeat(10_000))),
            Err(ParseFail::Syntax)
        );
        assert_eq!(
            parsed(&format!("3{}", "!".repeat(10_000))),
            Err(ParseFail::Syntax)
        );
    }

    #[test]
    fn a_spent_budget_is_a_timeout() {
        let mut spent = Budget::new(Duration::ZERO);
        let long = vec!["1"; 1000].join("+");
        assert_eq!(parse(&long, 50, &mut spent), Err(ParseFail::Timeout));
    }
}
