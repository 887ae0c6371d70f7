//! LaTeX normalisation: the extracted answer rewritten so that notation that does not change
//! the value does not change the text either. The result is what the parser reads and what the
//! string fallback compares.
//!
//! The text is split into pieces (`\command`, character, space) so that rewrites never cut a
//! command in half (`\right]` is not `\]`), then each rule below rewrites pieces:
//!
//! - math delimiters `$`, `\(`, `\)`, `\[`, `\]` are dropped, and so are `\%`, `%`, `\$`;
//! - `\dfrac`, `\tfrac`, `\cfrac` become `\frac` (`\dbinom`, `\tbinom`: `\binom`); `\leq`,
//!   `\geq`, `\neq`, `\lt`, `\gt`, `\lbrace`, `\vert`, … their short forms;
//! - spacing and sizing are dropped: `\left`, `\right` (with a `.` delimiter), `\big`…,
//!   `\!`, `\,`, `\;`, `\:`, `\ `, `~`, `\quad`, `\displaystyle`;
//! - degrees (`^\circ`, `^{\circ}`, `\circ`, `\degree`, `°`) are dropped;
//! - `\text{…}`, `\textbf{…}`, `\mathrm{…}`, `\mbox{…}`, `\operatorname{…}`, `\boxed{…}` and
//!   their kin are unwrapped; a unit word left at the end (`cm`, `dollars`, `square feet`, …)
//!   is dropped when something comes before it;
//! - Markdown bold around the whole answer (`**73**`) is dropped;
//! - the words `or` and `and` between answers become commas;
//! - thousands separators (`1,000,000`, `1{,}000`, `1\,000`) are removed when the answer has no
//!   brackets (inside brackets, `1,000` could be a pair);
//! - a leading `x =`, `f(x) =`, `(x, y) =` or `x \in` (a name, then `=` once) is dropped, per
//!   comma-separated answer (`x = 1, y = 2` is `1,2`);
//! - trailing periods, commas, semicolons and `\\` are dropped;
//! - whitespace is dropped except between two letters or two digits, and after a command
//!   name followed by a letter (`\pi r`).
//!
//! Some rules reveal work for others (a unit after a trailing period), so the rules run again
//! until the text stops changing (at most a few rounds); `normalize(normalize(x)) ==
//! normalize(x)` is a property test.

use std::time::Duration;

use super::budget::{Budget, Timeout};

/// How many rounds of the rules run at most; in practice the second round changes nothing.
const MAX_ROUNDS: usize = 8;

/// The normalised form of an extracted answer (see the module documentation for the rules).
///
/// ```
/// use tandem_stages::verify::normalize_math;
/// assert_eq!(normalize_math(r"$x = \dfrac{1}{2}$."), r"\frac{1}{2}");
/// assert_eq!(normalize_math(r"**1,000** \text{ dollars}"), "1000");
/// assert_eq!(normalize_math(r"\left( 1, 2 \right]"), "(1,2]");
/// ```
pub fn normalize(answer: &str) -> String {
    normalize_within(answer, &Budget::new(Duration::MAX)).expect("no deadline to miss")
}

/// [`normalize`] within an answer's budget: the clock is read after every rule, so a
/// megabyte-long answer stops soon after its deadline.
pub(crate) fn normalize_within(answer: &str, budget: &Budget) -> Result<String, Timeout> {
    let mut current = round(answer, budget)?;
    for _ in 1..MAX_ROUNDS {
        let next = round(&current, budget)?;
        if next == current {
            break;
        }
        current = next;
    }
    Ok(current)
}

/// A piece of LaTeX text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// `\name` or `\c`, without the backslash.
    Cmd(&'a str),
    Ch(char),
    Space,
}

use Piece::{Ch, Cmd, Space};

fn round(text: &str, budget: &Budget) -> Result<String, Timeout> {
    let pieces = lex(text);
    budget.check()?;
    let pieces = rewrite_commands(&pieces);
    let pieces = unwrap_text(&pieces);
    budget.check()?;
    let pieces = strip_markdown_bold(pieces);
    let pieces = words_to_commas(pieces);
    let pieces = trim_with_units(pieces);
    budget.check()?;
    let pieces = merge_thousands(pieces);
    budget.check()?;
    let pieces = drop_name_prefixes(pieces);
    let rendered = render(&trim(pieces));
    budget.check()?;
    Ok(rendered)
}

fn lex(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        let piece = match c {
            '\\' => match chars.peek().copied() {
                Some((j, next)) if next.is_ascii_alphabetic() => {
                    let mut end = j;
                    while let Some(&(k, l)) = chars.peek() {
                        if !l.is_ascii_alphabetic() {
                            break;
                        }
                        end = k + l.len_utf8();
                        chars.next();
                    }
                    Cmd(&text[j..end])
                }
                Some((j, next)) => {
                    chars.next();
                    if next.is_whitespace() {
                        Space
                    } else {
                        Cmd(&text[j..j + next.len_utf8()])
                    }
                }
                None => continue,
            },
            '$' | '%' | '°' => continue,
            '~' => Space,
            c if c.is_whitespace() => Space,
            'π' => Cmd("pi"),
            '∞' => Cmd("infty"),
            '√' => Cmd("sqrt"),
            '×' => Cmd("times"),
            '·' | '⋅' => Cmd("cdot"),
            '÷' => Cmd("div"),
            '≤' => Cmd("le"),
            '≥' => Cmd("ge"),
            '≠' => Cmd("ne"),
            '±' => Cmd("pm"),
            '∓' => Cmd("mp"),
            '∪' => Cmd("cup"),
            '∅' => Cmd("emptyset"),
            '−' | '–' | '—' => Ch('-'),
            c => Ch(c),
        };
        if piece == Space && out.last() == Some(&Space) {
            continue;
        }
        out.push(piece);
    }
    out
}

/// Commands that only space, size or delimit math, and are dropped.
const DROPPED: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "$",
    "%",
    "!",
    ",",
    ";",
    ":",
    ">",
    "quad",
    "qquad",
    "displaystyle",
    "textstyle",
    "scriptstyle",
    "limits",
    "nolimits",
    "big",
    "Big",
    "bigg",
    "Bigg",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "biggl",
    "biggr",
    "Biggl",
    "Biggr",
    "degree",
    "circ",
    "middle",
    "mathstrut",
    "strut",
    "phantom",
];

fn renamed(name: &str) -> Option<Piece<'static>> {
    Some(match name {
        "dfrac" | "tfrac" | "cfrac" => Cmd("frac"),
        "dbinom" | "tbinom" => Cmd("binom"),
        "leq" | "leqslant" | "leqq" => Cmd("le"),
        "geq" | "geqslant" | "geqq" => Cmd("ge"),
        "neq" => Cmd("ne"),
        "lt" => Ch('<'),
        "gt" => Ch('>'),
        "lbrace" => Cmd("{"),
        "rbrace" => Cmd("}"),
        "vert" | "lvert" | "rvert" | "mid" => Ch('|'),
        "varnothing" => Cmd("emptyset"),
        "infin" => Cmd("infty"),
        "ast" => Ch('*'),
        "colon" => Ch(':'),
        "dots" | "ldots" | "cdots" => Cmd("dots"),
        _ => return None,
    })
}

fn rewrite_commands<'a>(pieces: &[Piece<'a>]) -> Vec<Piece<'a>> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut i = 0;
    while i < pieces.len() {
        let piece = pieces[i];
        i += 1;
        match piece {
            // `^\circ` and `^{\circ}`: the caret goes with the degree sign.
            Ch('^') if pieces.get(i) == Some(&Cmd("circ")) => i += 1,
            Ch('^') if pieces[i..].starts_with(&[Ch('{'), Cmd("circ"), Ch('}')]) => i += 3,
            Cmd("left" | "right") => {
                if pieces.get(i) == Some(&Ch('.')) {
                    i += 1;
                }
            }
            Cmd(name) if DROPPED.contains(&name) => {}
            Cmd(name) => out.push(renamed(name).unwrap_or(piece)),
            _ => out.push(piece),
        }
    }
    out
}

/// Commands whose braced argument is kept and the command dropped.
const UNWRAPPED: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "textsf",
    "texttt",
    "textnormal",
    "textup",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathtt",
    "mathbb",
    "mathcal",
    "mathnormal",
    "mbox",
    "hbox",
    "operatorname",
    "boxed",
    "fbox",
    "emph",
    "bm",
    "boldsymbol",
    "underline",
    "overline",
];

/// For each `{` (a `Ch`, not the escaped `\{`), the index of its matching `}`.
fn matching_braces(pieces: &[Piece<'_>]) -> Vec<Option<usize>> {
    let mut matches = vec![None; pieces.len()];
    let mut stack = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Ch('{') => stack.push(i),
            Ch('}') => {
                if let Some(open) = stack.pop() {
                    matches[open] = Some(i);
                }
            }
            _ => {}
        }
    }
    matches
}

fn unwrap_text<'a>(pieces: &[Piece<'a>]) -> Vec<Piece<'a>> {
    let matches = matching_braces(pieces);
    let mut keep = vec![true; pieces.len()];
    for (i, piece) in pieces.iter().enumerate() {
        let Cmd(name) = piece else { continue };
        if !UNWRAPPED.contains(name) {
            continue;
        }
        keep[i] = false;
        let open = if pieces.get(i + 1) == Some(&Space) {
            i + 2
        } else {
            i + 1
        };
        if let Some(close) = matches.get(open).copied().flatten() {
            keep[open] = false;
            keep[close] = false;
            if open == i + 2 {
                keep[i + 1] = false;
            }
        }
    }
    pieces
        .iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(*p))
        .collect()
}

fn strip_markdown_bold(mut pieces: Vec<Piece<'_>>) -> Vec<Piece<'_>> {
    while pieces.first() == Some(&Space) {
        pieces.remove(0);
    }
    while pieces.last() == Some(&Space) {
        pieces.pop();
    }
    let bold = [Ch('*'), Ch('*')];
    let mut bolds = 0;
    while pieces.len() > 4 + 4 * bolds
        && pieces[2 * bolds..].starts_with(&bold)
        && pieces[..pieces.len() - 2 * bolds].ends_with(&bold)
    {
        bolds += 1;
    }
    pieces.truncate(pieces.len() - 2 * bolds);
    pieces.drain(..2 * bolds);
    pieces
}

/// The bounds `[start, end)` of each maximal run of ASCII letters (`Ch` pieces).
fn letter_runs(pieces: &[Piece<'_>]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < pieces.len() {
        if matches!(pieces[i], Ch(c) if c.is_ascii_alphabetic()) {
            let start = i;
            while matches!(pieces.get(i), Some(Ch(c)) if c.is_ascii_alphabetic()) {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

fn word(pieces: &[Piece<'_>]) -> String {
    pieces
        .iter()
        .filter_map(|p| match p {
            Ch(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn words_to_commas(mut pieces: Vec<Piece<'_>>) -> Vec<Piece<'_>> {
    // A whole run of letters only: `\text{or}` between two numbers (`1or2`) counts, `order`
    // does not.
    for (start, end) in letter_runs(&pieces).into_iter().rev() {
        if matches!(word(&pieces[start..end]).as_str(), "or" | "and") {
            pieces.splice(start..end, [Ch(',')]);
        }
    }
    pieces
}

fn trim(mut pieces: Vec<Piece<'_>>) -> Vec<Piece<'_>> {
    while matches!(
        pieces.last(),
        Some(Space | Ch('.') | Ch(',') | Ch(';') | Cmd("\\"))
    ) {
        pieces.pop();
    }
    let leading = pieces
        .iter()
        .take_while(|p| matches!(p, Space | Ch(',') | Ch(';')))
        .count();
    pieces.drain(..leading);
    pieces
}

/// Trailing punctuation and unit words, until neither is left (`5. cm.` is `5`).
fn trim_with_units(mut pieces: Vec<Piece<'_>>) -> Vec<Piece<'_>> {
    loop {
        let before = pieces.len();
        pieces = drop_trailing_units(trim(pieces));
        if pieces.len() == before {
            return pieces;
        }
    }
}

/// Unit words dropped from the end of an answer (after a number or expression).
const UNITS: &[&str] = &[
    "cm",
    "mm",
    "km",
    "meter",
    "meters",
    "metre",
    "metres",
    "centimeter",
    "centimeters",
    "millimeter",
    "millimeters",
    "kilometer",
    "kilometers",
    "inch",
    "inches",
    "foot",
    "feet",
    "ft",
    "yard",
    "yards",
    "yd",
    "mile",
    "miles",
    "sq",
    "square",
    "cubic",
    "unit",
    "units",
    "degree",
    "degrees",
    "deg",
    "radian",
    "radians",
    "rad",
    "dollar",
    "dollars",
    "cent",
    "cents",
    "hour",
    "hours",
    "hr",
    "hrs",
    "minute",
    "minutes",
    "mins",
    "second",
    "seconds",
    "secs",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "gram",
    "grams",
    "kg",
    "mg",
    "pound",
    "pounds",
    "lb",
    "lbs",
    "ounce",
    "ounces",
    "oz",
    "liter",
    "liters",
    "litre",
    "litres",
    "ml",
    "mph",
    "kph",
    "percent",
    "cm2",
    "m2",
];

fn drop_trailing_units(mut pieces: Vec<Piece<'_>>) -> Vec<Piece<'_>> {
    loop {
        let mut end = pieces.len();
        // An exponent on the unit: `cm^2`, `m^{3}`.
        if end >= 2
            && matches!(pieces[end - 1], Ch(c) if c.is_ascii_digit())
            && pieces[end - 2] == Ch('^')
        {
            end -= 2;
        } else if end >= 4
            && pieces[end - 1] == Ch('}')
            && matches!(pieces[end - 2], Ch(c) if c.is_ascii_digit())
            && pieces[end - 3] == Ch('{')
            && pieces[end - 4] == Ch('^')
        {
            end -= 4;
        }
        let mut start = end;
        while start > 0 && matches!(pieces[start - 1], Ch(c) if c.is_ascii_alphabetic()) {
            start -= 1;
        }
        // A unit is a whole word: a command name just before (`\pi`) would make it part of it.
        let whole = start == 0 || !matches!(pieces[start - 1], Cmd(_));
        let before_is_empty = pieces[..start].iter().all(|p| *p == Space);
        if start == end
            || !whole
            || before_is_empty
            || !UNITS.contains(&word(&pieces[start..end]).as_str())
        {
            return pieces;
        }
        pieces.truncate(start);
        while pieces.last() == Some(&Space) {
            pieces.pop();
        }
    }
}

fn is_digit(piece: Option<&Piece<'_>>) -> bool {
    matches!(piece, Some(Ch(c)) if c.is_ascii_digit())
}

fn merge_thousands(pieces: Vec<Piece<'_>>) -> Vec<Piece<'_>> {
    // `1{,}000` is LaTeX for a thousands comma.
    let mut flat = Vec::with_capacity(pieces.len());
    let mut i = 0;
    while i < pieces.len() {
        if pieces[i..].starts_with(&[Ch('{'), Ch(','), Ch('}')]) {
            flat.push(Ch(','));
            i += 3;
        } else {
            flat.push(pieces[i]);
            i += 1;
        }
    }
    let bracketed = flat
        .iter()
        .any(|p| matches!(p, Ch('(' | '[') | Cmd("{" | "langle")));
    if bracketed {
        return flat;
    }
    let mut drop = vec![false; flat.len()];
    let mut i = 0;
    while i < flat.len() {
        let starts_number = is_digit(flat.get(i))
            && (i == 0 || !(is_digit(flat.get(i - 1)) || matches!(flat[i - 1], Ch('.' | ','))));
        if !starts_number {
            i += 1;
            continue;
        }
        let mut j = i;
        while is_digit(flat.get(j)) {
            j += 1;
        }
        let lead = j - i;
        let mut commas = Vec::new();
        while lead <= 3
            && flat.get(j) == Some(&Ch(','))
            && (1..=3).all(|k| is_digit(flat.get(j + k)))
            && !is_digit(flat.get(j + 4))
        {
            commas.push(j);
            j += 4;
        }
        if !commas.is_empty() && flat.get(j) != Some(&Ch(',')) {
            for c in commas {
                drop[c] = true;
            }
        }
        i = j.max(i + 1);
    }
    flat.into_iter()
        .zip(drop)
        .filter_map(|(p, d)| (!d).then_some(p))
        .collect()
}

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

/// Whether the command names a Greek letter used as a variable (`\pi` is the constant).
pub(crate) fn is_greek(name: &str) -> bool {
    GREEK.contains(&name)
}

/// The length of a variable name at the start of `pieces`: a letter or Greek letter, with an
/// optional subscript (`x_1`, `a_{n}`), or a name applied to names (`f(x)`, `g(x, y)`).
fn simple_name(pieces: &[Piece<'_>]) -> Option<usize> {
    let mut n = match pieces.first()? {
        Ch(c) if c.is_ascii_alphabetic() => 1,
        Cmd(name) if is_greek(name) => 1,
        _ => return None,
    };
    if pieces.get(n) == Some(&Ch('_')) {
        match pieces.get(n + 1)? {
            Ch('{') => {
                let close = pieces[n + 1..].iter().position(|p| *p == Ch('}'))?;
                n += close + 2;
            }
            Ch(c) if c.is_ascii_alphanumeric() => n += 2,
            _ => return None,
        }
    }
    if pieces.get(n) == Some(&Ch('(')) {
        let close = n + pieces[n..].iter().position(|p| *p == Ch(')'))?;
        let args_are_names = pieces[n + 1..close]
            .iter()
            .all(|p| matches!(p, Ch(c) if c.is_ascii_alphabetic() || *c == ',') || *p == Space);
        if !args_are_names || close == n + 1 {
            return None;
        }
        n = close + 1;
    }
    Some(n)
}

/// The length of `x`, `(x, y)` and the like at the start of `pieces`.
fn name_prefix(pieces: &[Piece<'_>]) -> Option<usize> {
    if pieces.first() != Some(&Ch('(')) {
        return simple_name(pieces);
    }
    let mut n = 1;
    loop {
        while pieces.get(n) == Some(&Space) {
            n += 1;
        }
        n += simple_name(&pieces[n..])?;
        while pieces.get(n) == Some(&Space) {
            n += 1;
        }
        match pieces.get(n)? {
            Ch(',') => n += 1,
            Ch(')') => return Some(n + 1),
            _ => return None,
        }
    }
}

fn drop_name_prefixes(pieces: Vec<Piece<'_>>) -> Vec<Piece<'_>> {
    // Split at top-level commas; each part may start with its own `x =`.
    let mut parts: Vec<&[Piece<'_>]> = Vec::new();
    let mut depth = 0i64;
    let mut start = 0;
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Ch('(' | '[' | '{') | Cmd("{" | "langle") => depth += 1,
            Ch(')' | ']' | '}') | Cmd("}" | "rangle") => depth -= 1,
            Ch(',') if depth == 0 => {
                parts.push(&pieces[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&pieces[start..]);
    let mut out = Vec::with_capacity(pieces.len());
    for (k, part) in parts.into_iter().enumerate() {
        if k > 0 {
            out.push(Ch(','));
        }
        // `x \in y \in [1, 2]` loses one name at a time.
        let mut part = part;
        loop {
            let stripped = strip_name(part);
            if stripped.len() == part.len() {
                break;
            }
            part = stripped;
        }
        out.extend_from_slice(part);
    }
    out
}

fn strip_name<'p, 'a>(part: &'p [Piece<'a>]) -> &'p [Piece<'a>] {
    let lead = part.iter().take_while(|p| **p == Space).count();
    let body = &part[lead..];
    let Some(mut n) = name_prefix(body) else {
        return part;
    };
    while body.get(n) == Some(&Space) {
        n += 1;
    }
    let rest = match body.get(n) {
        Some(Ch('=')) if !body[n + 1..].contains(&Ch('=')) => &body[n + 1..],
        Some(Cmd("in")) => &body[n + 1..],
        _ => return part,
    };
    if rest.iter().all(|p| *p == Space) {
        part
    } else {
        rest
    }
}

fn render(pieces: &[Piece<'_>]) -> String {
    let mut out = String::with_capacity(pieces.len() + 8);
    // What the last emitted piece was, for the spacing rules.
    let mut after_word_command = false;
    let mut last: Option<char> = None;
    for (i, piece) in pieces.iter().enumerate() {
        match *piece {
            Cmd(name) => {
                out.push('\\');
                out.push_str(name);
                after_word_command = name.starts_with(|c: char| c.is_ascii_alphabetic());
                last = None;
            }
            Ch(c) => {
                if after_word_command && c.is_alphabetic() {
                    out.push(' ');
                }
                out.push(c);
                after_word_command = false;
                last = Some(c);
            }
            Space => {
                let next = pieces[i + 1..].iter().find(|p| **p != Space);
                let keep = match (last, next) {
                    (Some(a), Some(Ch(b))) => {
                        (a.is_alphabetic() && b.is_alphabetic())
                            || (a.is_ascii_digit() && b.is_ascii_digit())
                    }
                    _ => false,
                };
                if keep {
                    out.push(' ');
                    last = Some(' ');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn normalisation_table() {
        let table: &[(&str, &str)] = &[
            // Delimiters and fraction forms.
            (r"$\frac{1}{2}$", r"\frac{1}{2}"),
            (r"\(\dfrac{1}{2}\)", r"\frac{1}{2}"),
            (r"\[\tfrac{1}{2}\]", r"\frac{1}{2}"),
            (r"\cfrac{a}{b}", r"\frac{a}{b}"),
            (r"\dbinom{5}{2}", r"\binom{5}{2}"),
            // Sizing and spacing.
            (r"\left( 1, 2 \right)", "(1,2)"),
            (r"\left\{ 1, 2 \right\}", r"\{1,2\}"),
            (r"\left. x \right|_{0}", "x|_{0}"),
            (r"\Big( x \Big)", "(x)"),
            (r"2\!\sqrt{3}", r"2\sqrt{3}"),
            (r"3\,\pi", r"3\pi"),
            (r"3\;\mathrm{cm}", "3"),
            (r"3~\text{units}", "3"),
            (r"\displaystyle \frac12", r"\frac12"),
            // Degrees, percent, dollars.
            (r"30^\circ", "30"),
            (r"30^{\circ}", "30"),
            ("30°", "30"),
            (r"30\degree", "30"),
            (r"50\%", "50"),
            ("50%", "50"),
            (r"\$5.00", "5.00"),
            // Text and units.
            (r"5\text{ cm}", "5"),
            (r"5 \text{cm}^2", "5"),
            (r"12 \mbox{ square feet}", "12"),
            (r"\text{Monday}", "Monday"),
            (r"\textbf{(B)}", "(B)"),
            (r"\text{cm}", "cm"),
            (r"\pi \text{ radians}", r"\pi"),
            (r"\operatorname{lcm}(2, 3)", "lcm(2,3)"),
            ("no solution", "no solution"),
            // Thousands separators.
            ("1,000,000", "1000000"),
            ("1{,}000", "1000"),
            (r"1\,000", "1000"),
            ("12,345.5", "12345.5"),
            ("1,2", "1,2"),
            ("1,000,00", "1,000,00"),
            ("(1,000)", "(1,000)"),
            // Names before the answer.
            ("x = 5", "5"),
            ("x=5", "5"),
            (r"\theta = \frac{\pi}{2}", r"\frac{\pi}{2}"),
            ("a_1 = 3", "3"),
            ("a_{10} = 3", "3"),
            ("f(x) = 2x + 1", "2x+1"),
            ("(x, y) = (1, 2)", "(1,2)"),
            ("x = 1, y = 2", "1,2"),
            (r"x = 1 \text{ or } x = 2", "1,2"),
            ("x = 1 and x = 2", "1,2"),
            (r"1\text{or}2", "1,2"),
            ("order", "order"),
            (r"x \in [1, 2]", "[1,2]"),
            ("x^2 + y^2 = 1", "x^2+y^2=1"),
            ("x = y = 2", "x=y=2"),
            ("x =", "x="),
            ("x > 3", "x>3"),
            // Trailing punctuation, Markdown.
            ("5.", "5"),
            ("5. ", "5"),
            ("$5$.", "5"),
            (r"5\\", "5"),
            ("**73**", "73"),
            ("** 73 **", "73"),
            ("**", "**"),
            ("****73****", "73"),
            (&format!("{}\\", "*".repeat(70)), "**"),
            ("**73**.", "73"),
            ("5. cm. cm", "5"),
            (r"x \in y \in z \in [1, 2]", "[1,2]"),
            ("2**3", "2**3"),
            // Unicode.
            ("π/2", r"\pi/2"),
            ("−3", "-3"),
            ("2×3", r"2\times3"),
            ("x ≤ 3", r"x\le3"),
            ("±2", r"\pm2"),
            // Renamed commands; whitespace kept only between words and between digits.
            (r"x \leq 3", r"x\le3"),
            (r"x \geq 3", r"x\ge3"),
            (r"x \neq 3", r"x\ne3"),
            (r"2 \lt x", "2<x"),
            (r"\lvert x \rvert", "|x|"),
            (r"\varnothing", r"\emptyset"),
            (r"\pi r^2", r"\pi r^2"),
            ("2 x + 1", "2x+1"),
            (r"\frac 1 2", r"\frac1 2"),
            ("", ""),
            ("   ", ""),
            ("\\", ""),
        ];
        for (input, expected) in table {
            assert_eq!(normalize(input), *expected, "{input:?}");
        }
    }

    /// Text built from the pieces the rules look at, so that they interact.
    fn latexish() -> impl Strategy<Value = String> {
        let atoms = prop_oneof![
            Just("\\frac".to_owned()),
            Just("\\dfrac".to_owned()),
            Just("\\left(".to_owned()),
            Just("\\right)".to_owned()),
            Just("\\left.".to_owned()),
            Just("\\text{".to_owned()),
            Just("\\boxed{".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("{,}".to_owned()),
            Just("\\{".to_owned()),
            Just("\\,".to_owned()),
            Just("\\!".to_owned()),
            Just("^\\circ".to_owned()),
            Just("^{\\circ}".to_owned()),
            Just("\\%".to_owned()),
            Just("\\$".to_owned()),
            Just("$".to_owned()),
            Just("**".to_owned()),
            Just(" cm".to_owned()),
            Just(" units".to_owned()),
            Just(" or ".to_owned()),
            Just(" and ".to_owned()),
            Just("x =".to_owned()),
            Just("=".to_owned()),
            Just("\\in".to_owned()),
            Just(",".to_owned()),
            Just(".".to_owned()),
            Just(" ".to_owned()),
            Just("\\pi".to_owned()),
            Just("\\sqrt".to_owned()),
            Just("(".to_owned()),
            Just(")".to_owned()),
            Just("^".to_owned()),
            Just("_".to_owned()),
            Just("\\\\".to_owned()),
            Just("\\".to_owned()),
            "[0-9]{1,4}",
            "[a-z]{1,3}",
            "[ -~]{1,3}",
            "\\PC{1,2}",
        ];
        prop::collection::vec(atoms, 0..24).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn normalisation_is_stable(text in latexish()) {
            let once = normalize(&text);
            prop_assert_eq!(normalize(&once), once.clone(), "from {:?}", text);
        }
    }
}
