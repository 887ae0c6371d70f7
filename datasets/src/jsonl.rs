//! JSON datasets: JSON Lines (one JSON object per line), or one JSON array of objects (what
//! `Dataset.to_json(lines=False)` and `pandas.DataFrame.to_json(orient="records")` write).

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::{Map, Value};

use crate::fields::{Role, Shape};
use crate::{
    Cell, Collector, DatasetError, Example, FieldMap, Location, Preset, Reading, Result, file_name,
};

/// Loads a JSON Lines file: each non-blank line is a JSON object whose mapped fields become an
/// [`Example`]. Blank lines are skipped but still counted, so error lines and
/// [`Example::source`] match what an editor shows. `limit` stops after that many rows.
///
/// A file whose first character is `[` is read as one JSON array of objects instead; its
/// examples' sources are `file.json[7]`, and errors name the element and the line it starts on.
pub fn load_jsonl(path: &Path, fields: &FieldMap, limit: Option<usize>) -> Result<Vec<Example>> {
    load_jsonl_with_preset(path, fields, None, limit)
}

/// [`load_jsonl`], with `preset` (if any) building each row's question and answer, as in
/// [`load_with_preset`](crate::load_with_preset).
pub fn load_jsonl_with_preset(
    path: &Path,
    fields: &FieldMap,
    preset: Option<&Preset>,
    limit: Option<usize>,
) -> Result<Vec<Example>> {
    let mut out = Collector::new(path, fields, Reading { limit, preset })?;
    let read_err = |source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    };
    if first_byte(path).map_err(read_err)? == Some(b'[') {
        read_array(path, fields, &mut out)?;
        return out.finish();
    }
    let mut reader = BufReader::new(std::fs::File::open(path).map_err(read_err)?);
    let name = file_name(path);
    let mut buf = Vec::new();
    let mut line = 0;
    while !out.is_full() {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
            break;
        }
        line += 1;
        // Editors on Windows save a byte-order mark that serde_json would reject.
        let bytes = if line == 1 {
            buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf)
        } else {
            &buf
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let row = parse_object(path, line, bytes)?;
        let location = Location::Line(line);
        out.push(
            fields,
            (path, location),
            format!("{name}:{line}"),
            |role, field, shape| read_field(path, location, &row, (role, field), shape),
        )?;
    }
    out.finish()
}

/// The first byte that is not whitespace (after a UTF-8 byte-order mark), reading only as far as
/// it.
fn first_byte(path: &Path) -> std::io::Result<Option<u8>> {
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let mut start = true;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        let chunk = match start && buf.starts_with(b"\xEF\xBB\xBF") {
            true => &buf[3..],
            false => buf,
        };
        start = false;
        if let Some(&b) = chunk.iter().find(|b| !b.is_ascii_whitespace()) {
            return Ok(Some(b));
        }
        let used = buf.len();
        reader.consume(used);
    }
}

/// Reads a JSON array of objects into `out`, up to its limit.
fn read_array(path: &Path, fields: &FieldMap, out: &mut Collector<'_>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let values: Vec<Value> = serde_json::from_slice(text).map_err(|e| {
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        DatasetError::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: message.to_owned(),
        }
    })?;
    let lines = element_lines(text);
    let name = file_name(path);
    for (index, value) in values.into_iter().enumerate() {
        if out.is_full() {
            break;
        }
        let line = lines.get(index).copied().unwrap_or(1);
        let location = Location::Element {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            line: u32::try_from(line).unwrap_or(u32::MAX),
        };
        let Value::Object(row) = value else {
            let message = format!(
                "expected an array of JSON objects; element {index} is {}",
                describe(&value)
            );
            return Err(DatasetError::Json {
                path: path.to_path_buf(),
                line,
                column: 1,
                message,
            });
        };
        let source = format!("{name}[{index}]");
        out.push(fields, (path, location), source, |role, field, shape| {
            read_field(path, location, &row, (role, field), shape)
        })?;
    }
    Ok(())
}

/// The 1-based line on which each element of the top-level array starts, found by a scan that
/// skips strings (their brackets and commas are text).
fn element_lines(text: &[u8]) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut depth) = (1, 0_usize);
    let (mut in_string, mut escaped, mut expecting) = (false, false, false);
    for &b in text {
        if b == b'\n' {
            line += 1;
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if depth == 1 && expecting && !b.is_ascii_whitespace() && b != b']' {
            lines.push(line);
            expecting = false;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                expecting = depth == 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    lines
}

fn parse_object(path: &Path, line: usize, bytes: &[u8]) -> Result<Map<String, Value>> {
    let json_err = |column, message| DatasetError::Json {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(row)) => Ok(row),
        Ok(other) => Err(json_err(
            1,
            format!(
                "expected one JSON object per line, found {}",
                describe(&other)
            ),
        )),
        Err(e) => {
            // We parse one line at a time, so serde_json's own "at line 1 column N" is noise;
            // the column moves into our position prefix instead.
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            Err(json_err(e.column(), message.to_owned()))
        }
    }
}

/// A row's value for `field`: the key as written if present (keys may contain dots),
/// else the dotted path through nested objects.
fn lookup<'a>(row: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    if let Some(value) = row.get(field) {
        return Some(value);
    }
    let mut parts = field.split('.');
    let mut value = row.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn read_field(
    path: &Path,
    location: Location,
    row: &Map<String, Value>,
    (role, field): (Role, &str),
    shape: Shape,
) -> Result<Cell> {
    let wrong_type = |expected, found| DatasetError::WrongType {
        path: path.to_path_buf(),
        location,
        field: field.to_owned(),
        role: role.name(),
        expected,
        found,
    };
    let value = match lookup(row, field) {
        None | Some(Value::Null) if role == Role::Difficulty => return Ok(Cell::Absent),
        Some(Value::Null) => {
            let (path, field, role) = (path.to_path_buf(), field.to_owned(), role.name());
            return Err(DatasetError::NullField {
                path,
                location,
                field,
                role,
            });
        }
        None => {
            let mut available = Vec::new();
            field_paths(row, "", &mut available);
            let (path, field, role) = (path.to_path_buf(), field.to_owned(), role.name());
            return Err(DatasetError::MissingField {
                path,
                location,
                field,
                role,
                available,
            });
        }
        Some(value) => value,
    };
    if shape != Shape::Text {
        let expected = match shape {
            Shape::Strings => "a list of strings",
            _ => "a list of strings, numbers or booleans",
        };
        let list = value
            .as_array()
            .ok_or_else(|| wrong_type(expected, describe(value)))?;
        let strings = list.iter().map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) if shape == Shape::Scalars => Ok(n.to_string()),
            Value::Bool(b) if shape == Shape::Scalars => Ok(b.to_string()),
            other => Err(wrong_type(
                expected,
                format!("a list containing {}", describe(other)),
            )),
        });
        return strings.collect::<Result<_>>().map(Cell::Strings);
    }
    match value {
        Value::String(s) => Ok(Cell::Text(s.clone())),
        Value::Number(n) => Ok(Cell::Text(n.to_string())),
        Value::Bool(b) => Ok(Cell::Text(b.to_string())),
        other => Err(wrong_type("a string, number or boolean", describe(other))),
    }
}

/// Every leaf field of a row as a dotted path, for "this row has fields: ..." messages.
fn field_paths(row: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in row {
        let path = format!("{prefix}{key}");
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                field_paths(inner, &format!("{path}."), out)
            }
            _ => out.push(path),
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, content).expect("write");
        (dir, path)
    }

    fn math_fields() -> FieldMap {
        FieldMap {
            question: "problem".into(),
            answer: Some("solution".into()),
            difficulty: Some("meta.level".into()),
            ..FieldMap::default()
        }
    }

    fn error(content: &str, fields: &FieldMap) -> String {
        let (_dir, path) = write(content);
        let err = load_jsonl(&path, fields, None).expect_err("must fail");
        assert_eq!(err.path(), path);
        err.to_string().replace(&path.display().to_string(), "F")
    }

    #[test]
    fn a_json_array_of_objects_loads_like_lines() {
        // Pretty-printed, with brackets and commas inside strings, a BOM, and a limit.
        let (_dir, path) = write(concat!(
            "\u{feff} [\n",
            "  {\"problem\": \"[1, 2], {3}?\", \"solution\": 2, \"meta\": {\"level\": \"easy\"}},\n",
            "  {\"problem\": \"say \\\"]\\\"\", \"solution\": \"b\"},\n",
            "  {\"problem\": \"c\", \"solution\": 3}\n",
            "]\n",
        ));
        let examples = load_jsonl(&path, &math_fields(), Some(2)).expect("loads");
        let got: Vec<(&str, &str, &str)> = examples
            .iter()
            .map(|e| (e.id.as_str(), e.source.as_str(), e.question.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("0", "train.jsonl[0]", "[1, 2], {3}?"),
                ("1", "train.jsonl[1]", "say \"]\""),
            ]
        );
        assert_eq!(examples[0].difficulty.as_deref(), Some("easy"));
        assert_eq!(examples[1].answer.as_deref(), Some("b"));
    }

    #[test]
    fn json_array_errors_name_the_element_and_its_line() {
        let fields = math_fields();
        assert_eq!(
            error("[{\"problem\": \"a\", \"solution\": 1},\n 7]", &fields),
            "F:2:1: invalid JSON: expected an array of JSON objects; element 1 is a number"
        );
        // Minified, as `Dataset.to_json(lines=False)` writes it: all on line 1.
        let missing = error(
            "[{\"problem\": \"a\", \"solution\": 1},{\"question\": \"b\"}]",
            &fields,
        );
        assert!(
            missing
                .starts_with("F:1 (element 1): field `problem` (mapped to `question`) is missing"),
            "{missing}"
        );
        let broken = error("[\n{\"problem\": \"a\",}\n]", &fields);
        assert!(broken.starts_with("F:2:"), "{broken}");
    }

    #[test]
    fn nested_fields_numeric_answers_and_blank_lines() {
        let (_dir, path) = write(concat!(
            "{\"problem\": \"1+1?\", \"solution\": 2, \"meta\": {\"level\": \"easy\"}}\n",
            "\n",
            "{\"problem\": \"half of 5?\", \"solution\": 2.5, \"meta\": {\"level\": 3}}\r\n",
            "{\"problem\": \"true?\", \"solution\": true, \"meta\": {\"level\": null}}",
        ));
        let examples = load_jsonl(&path, &math_fields(), None).expect("loads");
        let example = |id: &str, source: &str, q: &str, a: &str, d: Option<&str>| Example {
            id: id.into(),
            source: source.into(),
            question: q.into(),
            answer: Some(a.into()),
            difficulty: d.map(Into::into),
            completions: vec![],
        };
        assert_eq!(
            examples,
            vec![
                example("0", "train.jsonl:1", "1+1?", "2", Some("easy")),
                example("1", "train.jsonl:3", "half of 5?", "2.5", Some("3")),
                example("2", "train.jsonl:4", "true?", "true", None),
            ]
        );
    }

    #[test]
    fn ids_completions_and_limit() {
        let (_dir, path) = write(concat!(
            "{\"uid\": 7, \"question\": \"a\", \"samples\": [\"x\", \"y\"]}\n",
            "{\"uid\": \"k\", \"question\": \"b\", \"samples\": []}\n",
            "not even json\n",
        ));
        let fields = FieldMap {
            id: Some("uid".into()),
            answer: None,
            completions: Some("samples".into()),
            ..FieldMap::default()
        };
        let examples = load_jsonl(&path, &fields, Some(2)).expect("limit stops before line 3");
        let ids: Vec<&str> = examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["7", "k"]);
        assert_eq!(examples[0].completions, ["x", "y"]);
        assert_eq!(examples[1].completions, Vec::<String>::new());
        assert_eq!(examples[1].answer, None);
    }

    #[test]
    fn missing_field_names_file_line_field_role_and_available() {
        let content = "{\"problem\": \"q\", \"solution\": 1}\n{\"problme\": \"q\", \"solution\": 1, \"meta\": {\"level\": 1}}\n";
        assert_eq!(
            error(content, &math_fields()),
            "F:2: field `problem` (mapped to `question`) is missing; this row has fields: \
             problme, solution, meta.level. Set `fields.question` to the right field name."
        );
    }

    #[test]
    fn null_required_field() {
        assert_eq!(
            error(
                "{\"question\": \"q\", \"answer\": null}\n",
                &FieldMap::default()
            ),
            "F:1: field `answer` (mapped to `answer`) is null; every row needs a value for it \
             (only `difficulty` may be null)"
        );
    }

    #[test]
    fn invalid_json_gives_line_and_column() {
        assert_eq!(
            error(
                "{\"question\": \"q\", \"answer\": \"a\"}\n\n{\"question\": \"q\",, }\n",
                &FieldMap::default()
            ),
            "F:3:18: invalid JSON: key must be a string"
        );
        // A list on a later line: a file that starts with `[` is a JSON array instead.
        assert_eq!(
            error(
                "{\"question\": \"q\", \"answer\": \"a\"}\n[1, 2]\n",
                &FieldMap::default()
            ),
            "F:2:1: invalid JSON: expected one JSON object per line, found a list"
        );
    }

    #[test]
    fn wrong_types() {
        let fields = FieldMap {
            completions: Some("c".into()),
            ..FieldMap::default()
        };
        assert_eq!(
            error(
                "{\"question\": \"q\", \"answer\": \"a\", \"c\": 3}\n",
                &fields
            ),
            "F:1: field `c` (mapped to `completions`) must be a list of strings, found a number"
        );
        assert_eq!(
            error(
                "{\"question\": \"q\", \"answer\": \"a\", \"c\": [\"x\", {}]}\n",
                &fields
            ),
            "F:1: field `c` (mapped to `completions`) must be a list of strings, found a list containing an object"
        );
        assert_eq!(
            error(
                "{\"question\": [\"q\"], \"answer\": \"a\"}\n",
                &FieldMap::default()
            ),
            "F:1: field `question` (mapped to `question`) must be a string, number or boolean, found a list"
        );
    }

    #[test]
    fn duplicate_id_names_both_rows() {
        let fields = FieldMap {
            id: Some("id".into()),
            answer: None,
            ..FieldMap::default()
        };
        assert_eq!(
            error(
                "{\"id\": 1, \"question\": \"a\"}\n{\"id\": 2, \"question\": \"b\"}\n{\"id\": \"1\", \"question\": \"c\"}\n",
                &fields
            ),
            "F: id `1` appears twice, at train.jsonl:1 and at train.jsonl:3; ids must be unique"
        );
    }

    #[test]
    fn empty_file_and_unreadable_path() {
        assert_eq!(
            error("\n  \n", &FieldMap::default()),
            "F: the dataset has no rows"
        );
        let err = load_jsonl(
            Path::new("/nonexistent/x.jsonl"),
            &FieldMap::default(),
            None,
        )
        .expect_err("no such file");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/x.jsonl: cannot read dataset: "),
            "{err}"
        );
    }
}
