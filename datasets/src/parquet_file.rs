//! Parquet datasets, as the Hugging Face hub serves them, and Arrow IPC files, as `datasets`'
//! `save_to_disk` writes them.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, ListArray, RecordBatch, RecordBatchReader, StringArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Fields};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileReader, StreamReader};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::fields::{Role, Shape};
use crate::{
    Cell, Collector, DatasetError, Example, FieldMap, Location, Preset, Reading, Result, file_name,
};

/// Loads a Parquet file: each row's mapped columns become an [`Example`]. Columns of any
/// primitive type (strings, integers, floats, booleans, dictionaries of these) are read as text;
/// `completions` must be a list of strings. Field names are column names or dotted paths into
/// struct columns. Only the mapped columns are decoded, so wide files load fast.
pub fn load_parquet(path: &Path, fields: &FieldMap, limit: Option<usize>) -> Result<Vec<Example>> {
    load_parquet_with_preset(path, fields, None, limit)
}

/// [`load_parquet`], with `preset` (if any) building each row's question and answer, as in
/// [`load_with_preset`](crate::load_with_preset).
pub fn load_parquet_with_preset(
    path: &Path,
    fields: &FieldMap,
    preset: Option<&Preset>,
    limit: Option<usize>,
) -> Result<Vec<Example>> {
    let mut out = Collector::new(path, fields, Reading { limit, preset })?;
    read_into(path, fields, &mut out)?;
    out.finish()
}

/// Reads `path`'s rows into `out`, up to its limit; shared with directory loading.
pub(crate) fn read_into(path: &Path, fields: &FieldMap, out: &mut Collector<'_>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |e: &dyn std::fmt::Display| {
        DatasetError::invalid(path, format!("cannot decode Parquet: {e}"))
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| invalid(&e))?;
    let roots = column_roots(path, builder.schema().fields(), fields)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut builder = builder.with_projection(mask);
    if let Some(remaining) = out.remaining() {
        builder = builder.with_limit(remaining);
    }
    let batches = builder.build().map_err(|e| invalid(&e))?;
    push_batches(
        path,
        fields,
        batches.map(|b| b.map_err(|e| invalid(&e))),
        out,
    )
}

/// Reads an Arrow IPC file into `out`, up to its limit: the streaming format, which `datasets`'
/// `save_to_disk` writes (`data-00000-of-00001.arrow`), or the random-access file format.
pub(crate) fn read_arrow_into(
    path: &Path,
    fields: &FieldMap,
    out: &mut Collector<'_>,
) -> Result<()> {
    let open = || {
        std::fs::File::open(path).map_err(|source| DatasetError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let invalid = |e: &dyn std::fmt::Display| {
        DatasetError::invalid(path, format!("cannot decode Arrow IPC: {e}"))
    };
    match StreamReader::try_new(std::io::BufReader::new(open()?), None) {
        Ok(reader) => read_ipc(path, fields, reader, out),
        Err(stream) => {
            let reader = FileReader::try_new(open()?, None).map_err(|_| invalid(&stream))?;
            read_ipc(path, fields, reader, out)
        }
    }
}

fn read_ipc(
    path: &Path,
    fields: &FieldMap,
    reader: impl RecordBatchReader,
    out: &mut Collector<'_>,
) -> Result<()> {
    column_roots(path, reader.schema().fields(), fields)?;
    let invalid =
        |e: ArrowError| DatasetError::invalid(path, format!("cannot decode Arrow IPC: {e}"));
    push_batches(path, fields, reader.map(|b| b.map_err(invalid)), out)
}

/// The top-level columns the mapped fields live in, or the error that names a missing one
/// with the columns there are.
fn column_roots(path: &Path, schema: &Fields, fields: &FieldMap) -> Result<Vec<usize>> {
    let mut roots = Vec::new();
    for (role, field) in fields.roles() {
        let root = column_path(schema, field)
            .and_then(|names| schema.find(names[0]).map(|(i, _)| i))
            .ok_or_else(|| {
                let mut available = Vec::new();
                column_paths(schema, "", &mut available);
                DatasetError::MissingColumn {
                    path: path.to_path_buf(),
                    field: field.to_owned(),
                    role: role.name(),
                    available,
                }
            })?;
        roots.push(root);
    }
    Ok(roots)
}

/// Pushes the rows of `batches` into `out` until it is full; sources are `file#row`.
fn push_batches(
    path: &Path,
    fields: &FieldMap,
    batches: impl Iterator<Item = Result<RecordBatch>>,
    out: &mut Collector<'_>,
) -> Result<()> {
    let roles = fields.roles();
    let name = file_name(path);
    let mut row = 0;
    for batch in batches {
        let batch = batch?;
        let columns = roles
            .iter()
            .map(|&(role, field)| Column::new(path, &batch, (role, field), out.shape(role)))
            .collect::<Result<Vec<_>>>()?;
        for i in 0..batch.num_rows() {
            if out.is_full() {
                return Ok(());
            }
            let location = Location::Row(row);
            let mut columns = columns.iter();
            out.push(
                fields,
                (path, location),
                format!("{name}#{row}"),
                |_, _, _| {
                    columns
                        .next()
                        .expect("one column per role, in role order")
                        .cell(path, location, i)
                },
            )?;
            row += 1;
        }
    }
    Ok(())
}

/// The column names leading to `field`: itself if a top-level column has that exact name,
/// else its dotted path through struct columns.
fn column_path<'a>(fields: &Fields, field: &'a str) -> Option<Vec<&'a str>> {
    if fields.find(field).is_some() {
        return Some(vec![field]);
    }
    let names: Vec<&str> = field.split('.').collect();
    let mut level = fields;
    for (depth, name) in names.iter().enumerate() {
        let (_, found) = level.find(name)?;
        match found.data_type() {
            DataType::Struct(children) => level = children,
            _ if depth + 1 == names.len() => return Some(names),
            _ => return None,
        }
    }
    Some(names)
}

/// Every column as a dotted path (struct children spelled out), for "the file has columns".
fn column_paths(fields: &Fields, prefix: &str, out: &mut Vec<String>) {
    for field in fields {
        let path = format!("{prefix}{}", field.name());
        match field.data_type() {
            DataType::Struct(children) if !children.is_empty() => {
                column_paths(children, &format!("{path}."), out)
            }
            _ => out.push(path),
        }
    }
}

/// Casting options that fail instead of turning unconvertible values (say, binary that is not
/// UTF-8) into nulls, which would then be misreported as missing values.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// One mapped column of a batch, converted once per batch so rows are cheap to read.
struct Column<'f> {
    role: Role,
    field: &'f str,
    values: Values,
    /// Nulls of enclosing struct columns: a null struct makes its children null too.
    parent_nulls: Option<NullBuffer>,
}

enum Values {
    Text(StringArray),
    Strings(ListArray),
}

impl<'f> Column<'f> {
    fn new(
        path: &Path,
        batch: &RecordBatch,
        (role, field): (Role, &'f str),
        shape: Shape,
    ) -> Result<Self> {
        let names = column_path(batch.schema().fields(), field)
            .expect("projection keeps every column that was resolved before reading");
        let mut array: ArrayRef = batch
            .column_by_name(names[0])
            .expect("resolved above")
            .clone();
        let mut parent_nulls = None;
        for name in &names[1..] {
            let parent = array.as_struct();
            parent_nulls = NullBuffer::union(parent_nulls.as_ref(), parent.nulls());
            array = parent.column_by_name(name).expect("resolved above").clone();
        }
        let unsupported = |expected: &str| {
            let (role, found) = (role.name(), array.data_type());
            DatasetError::invalid(
                path,
                format!(
                    "column `{field}` (mapped to `{role}`) must be {expected}, found type {found}"
                ),
            )
        };
        let undecodable = |e: arrow::error::ArrowError| {
            let role = role.name();
            DatasetError::invalid(
                path,
                format!("column `{field}` (mapped to `{role}`) cannot be read as text: {e}"),
            )
        };
        let values = if shape != Shape::Text {
            let expected = match shape {
                Shape::Strings => "a list of strings",
                _ => "a list of strings, numbers or booleans",
            };
            let item = match array.data_type() {
                DataType::List(item) | DataType::LargeList(item) => item.data_type(),
                _ => return Err(unsupported(expected)),
            };
            let text = matches!(
                item,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            if !(text || shape == Shape::Scalars && !item.is_nested()) {
                return Err(unsupported(expected));
            }
            let list_of_utf8 =
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
            let cast = cast_with_options(&array, &list_of_utf8, &STRICT).map_err(undecodable)?;
            Values::Strings(cast.as_list::<i32>().clone())
        } else {
            if array.data_type().is_nested() {
                return Err(unsupported("a string, number or boolean"));
            }
            let cast = cast_with_options(&array, &DataType::Utf8, &STRICT).map_err(undecodable)?;
            Values::Text(cast.as_string::<i32>().clone())
        };
        Ok(Column {
            role,
            field,
            values,
            parent_nulls,
        })
    }

    fn cell(&self, path: &Path, location: Location, i: usize) -> Result<Cell> {
        let null = match &self.values {
            Values::Text(a) => a.is_null(i),
            Values::Strings(a) => a.is_null(i),
        } || self.parent_nulls.as_ref().is_some_and(|n| n.is_null(i));
        let (field, role) = (self.field.to_owned(), self.role.name());
        if null {
            if self.role == Role::Difficulty {
                return Ok(Cell::Absent);
            }
            return Err(DatasetError::NullField {
                path: path.to_path_buf(),
                location,
                field,
                role,
            });
        }
        match &self.values {
            Values::Text(a) => Ok(Cell::Text(a.value(i).to_owned())),
            Values::Strings(a) => {
                let items = a.value(i);
                let items = items.as_string::<i32>();
                if items.null_count() > 0 {
                    let (expected, found) =
                        ("a list of strings", "a list containing null".to_owned());
                    let path = path.to_path_buf();
                    return Err(DatasetError::WrongType {
                        path,
                        location,
                        field,
                        role,
                        expected,
                        found,
                    });
                }
                Ok(Cell::Strings(
                    items.iter().flatten().map(str::to_owned).collect(),
                ))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, Float64Array, Int64Array, ListBuilder, StringBuilder, StructArray,
    };

    /// A MATH-like file: `problem` (utf8), `answer` (int64, `answers[i]`), `samples`
    /// (list<utf8>), `meta` (struct with a nullable `level`), rows numbered from `first`.
    pub(crate) fn write_math(path: &Path, first: usize, answers: &[Option<i64>]) {
        let n = answers.len();
        let problems: StringArray = (first..first + n).map(|i| Some(format!("p{i}"))).collect();
        let mut samples = ListBuilder::new(StringBuilder::new());
        for i in 0..n {
            for j in 0..i {
                samples.values().append_value(format!("s{j}"));
            }
            samples.append(true);
        }
        let levels: StringArray = (0..n)
            .map(|i| (i % 2 == 0).then(|| format!("L{i}")))
            .collect();
        let meta = StructArray::from(vec![(
            Arc::new(Field::new("level", DataType::Utf8, true)),
            Arc::new(levels) as ArrayRef,
        )]);
        let batch = RecordBatch::try_from_iter([
            ("problem", Arc::new(problems) as ArrayRef),
            ("answer", Arc::new(Int64Array::from(answers.to_vec()))),
            ("samples", Arc::new(samples.finish())),
            ("meta", Arc::new(meta)),
        ])
        .expect("valid batch");
        write_batch(path, &batch);
    }

    fn write_batch(path: &Path, batch: &RecordBatch) {
        let file = std::fs::File::create(path).expect("create");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(batch).expect("write");
        writer.close().expect("close");
    }

    pub(crate) fn math_fields() -> FieldMap {
        FieldMap {
            question: "problem".into(),
            difficulty: Some("meta.level".into()),
            completions: Some("samples".into()),
            ..FieldMap::default()
        }
    }

    fn error(answers: &[Option<i64>], fields: &FieldMap) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("train.parquet");
        write_math(&path, 0, answers);
        let err = load_parquet(&path, fields, None).expect_err("must fail");
        assert_eq!(err.path(), path);
        err.to_string().replace(&path.display().to_string(), "F")
    }

    #[test]
    fn loads_strings_ints_lists_and_struct_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("train.parquet");
        write_math(&path, 0, &[Some(1), Some(-22), Some(333)]);
        let examples = load_parquet(&path, &math_fields(), None).expect("loads");
        let example = |i: usize, a: &str, d: Option<&str>, c: &[&str]| Example {
            id: i.to_string(),
            source: format!("train.parquet#{i}"),
            question: format!("p{i}"),
            answer: Some(a.into()),
            difficulty: d.map(Into::into),
            completions: c.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            examples,
            vec![
                example(0, "1", Some("L0"), &[]),
                example(1, "-22", None, &["s0"]),
                example(2, "333", Some("L2"), &["s0", "s1"]),
            ]
        );
        let limited = load_parquet(&path, &math_fields(), Some(1)).expect("loads");
        assert_eq!(limited, examples[..1]);
        let by_id = FieldMap {
            id: Some("answer".into()),
            ..math_fields()
        };
        let ids: Vec<String> = load_parquet(&path, &by_id, None)
            .expect("loads")
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["1", "-22", "333"]);
    }

    #[test]
    fn missing_column_lists_columns() {
        let fields = FieldMap {
            question: "question".into(),
            ..math_fields()
        };
        assert_eq!(
            error(&[Some(1)], &fields),
            "F: column `question` (mapped to `question`) does not exist; the file has columns: \
             problem, answer, samples, meta.level. Set `fields.question` to the right column name."
        );
    }

    #[test]
    fn null_in_required_column_names_row() {
        assert_eq!(
            error(&[Some(1), Some(2), None], &math_fields()),
            "F: row 2: field `answer` (mapped to `answer`) is null; every row needs a value for it \
             (only `difficulty` may be null)"
        );
    }

    #[test]
    fn wrong_column_types() {
        let fields = FieldMap {
            completions: Some("problem".into()),
            ..math_fields()
        };
        assert_eq!(
            error(&[Some(1)], &fields),
            "F: column `problem` (mapped to `completions`) must be a list of strings, found type Utf8"
        );
        let fields = FieldMap {
            question: "meta".into(),
            ..math_fields()
        };
        assert!(error(&[Some(1)], &fields).starts_with(
            "F: column `meta` (mapped to `question`) must be a string, number or boolean, found type Struct("
        ));
    }

    #[test]
    fn duplicate_ids_and_garbage() {
        let fields = FieldMap {
            id: Some("answer".into()),
            ..math_fields()
        };
        assert_eq!(
            error(&[Some(5), Some(6), Some(5)], &fields),
            "F: id `5` appears twice, at train.parquet#0 and at train.parquet#2; ids must be unique"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.parquet");
        std::fs::write(&path, "not parquet").expect("write");
        let err = load_parquet(&path, &math_fields(), None).expect_err("garbage");
        assert!(
            err.to_string()
                .contains("bad.parquet: cannot decode Parquet: "),
            "{err}"
        );
    }

    #[test]
    fn floats_as_text_and_binary_that_is_not_utf8_fails_loudly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bin.parquet");
        let batch = RecordBatch::try_from_iter([
            (
                "question",
                Arc::new(BinaryArray::from(vec![&b"ok"[..], b"\xff"])) as ArrayRef,
            ),
            ("answer", Arc::new(Float64Array::from(vec![2.5, 1e21]))),
        ])
        .expect("valid batch");
        write_batch(&path, &batch);
        let first = load_parquet(&path, &FieldMap::default(), Some(1)).expect("row 0 is UTF-8");
        assert_eq!(
            (first[0].question.as_str(), first[0].answer.as_deref()),
            ("ok", Some("2.5"))
        );
        let err = load_parquet(&path, &FieldMap::default(), None).expect_err("row 1 is not");
        assert!(
            err.to_string()
                .contains("column `question` (mapped to `question`) cannot be read as text: "),
            "{err}"
        );
    }
}
