//! Finding an answer in a worked solution or a response, shared by the dataset presets (gold
//! answers) and `verify.math` (responses).

/// The content of the last `\boxed{…}` / `\fbox{…}` whose braces close; with nested boxes, the
/// outer one (it closes last).
pub fn last_boxed(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    // Open boxes as (brace depth at their `{`, index after it); plain braces only move `depth`,
    // so memory grows with the number of boxes, not with the nesting of the text.
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let rest = &text[i + 1..];
                let command = ["boxed", "fbox"].into_iter().find(|c| {
                    rest.starts_with(c)
                        && !rest[c.len()..]
                            .bytes()
                            .next()
                            .is_some_and(|b| b.is_ascii_alphabetic())
                });
                if let Some(command) = command {
                    let mut j = i + 1 + command.len();
                    while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if bytes.get(j) == Some(&b'{') {
                        depth += 1;
                        open.push((depth, j + 1));
                        i = j + 1;
                        continue;
                    }
                    i = j;
                    continue;
                }
                // An escaped character (`\{`, `\}`, `\\`) is text, not structure.
                i += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' if depth > 0 => {
                if open.last().is_some_and(|&(d, _)| d == depth) {
                    let (_, start) = open.pop().expect("checked by last()");
                    last = Some((start, i));
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    last.map(|(start, end)| &text[start..end])
}

/// GSM8K's final answer: the rest of the line after the last `####`, trimmed; `None` without
/// one, or when nothing follows it.
pub fn after_last_hashes(gold: &str) -> Option<&str> {
    let start = gold.rfind("####")? + "####".len();
    let answer = gold[start..].lines().next().unwrap_or_default().trim();
    (!answer.is_empty()).then_some(answer)
}
