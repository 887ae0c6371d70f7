//! JSON Lines datasets: one JSON object per line.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::{Map, Value};

use crate::fields::Role;
use crate::{Cell, Collector, DatasetError, Example, FieldMap, Location, Result, file_name};

/// Loads a JSON Lines file: each non-blank line is a JSON object whose mapped fields become an
/// [`Example`]. Blank lines are skipped but still counted, so error lines and
/// [`Example::source`] match what an editor shows. `limit` stops after that many rows.
pub fn load_jsonl(path: &Path, fields: &FieldMap, limit: Option<usize>) -> Result<Vec<Example>> {
    let mut out = Collector::new(path, limit)?;
    let read_err = |source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    };
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
        out.push(fields, format!("{name}:{line}"), |role, field| {
            read_field(path, location, &row, role, field)
        })?;
    }
    out.finish()
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
    role: Role,
    field: &str,
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
    if role == Role::Completions {
        let list = value
            .as_array()
            .ok_or_else(|| wrong_type("a list of strings", describe(value)))?;
        let strings = list.iter().map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(wrong_type(
                "a list of strings",
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
        assert_eq!(
            error("[1, 2]\n", &FieldMap::default()),
            "F:1:1: invalid JSON: expected one JSON object per line, found a list"
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
