//! Pipeline YAML with a location on every node.
//!
//! A pipeline file is parsed once into a tree in which every node (and every mapping key)
//! remembers where it was written. `${ENV}` interpolation and `--set key.path=value` overrides
//! are applied to that tree, so a value keeps pointing at the text it came from, or says that it
//! came from the environment or the command line. Typed configs are then deserialized from the
//! tree's JSON form through `serde_path_to_error`, and the failing path is mapped back onto the
//! tree, which is how every error about a pipeline names `file:line:column`.
//!
//! ```
//! # use tandem_pipeline::yaml::{Document, Seg};
//! let doc = Document::parse("demo.yaml".as_ref(), "stages:\n  - id: load\n    steps: x\n").unwrap();
//! let err = doc.deserialize_at::<u64>(&[Seg::Key("stages".into()), Seg::Index(0), Seg::Key("steps".into())])
//!     .unwrap_err();
//! assert!(err.to_string().starts_with("demo.yaml:3:12: `stages.0.steps`: invalid type"));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned};

/// Where something is in a pipeline file (1-based line and column), or that it came from an
/// override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pipeline file.
    pub file: Arc<Path>,
    /// 1-based line; 0 when unknown (for instance a key that `--set` created).
    pub line: u64,
    /// 1-based column, counted in characters; 0 when unknown.
    pub column: u64,
    /// Whether the value was written in the file or substituted later.
    pub origin: Origin,
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Written in the pipeline file.
    File,
    /// Set on the command line; holds the whole `--set` assignment (`stages.1.params.x=3`).
    Set(String),
    /// Substituted from an environment variable; holds the variable's name.
    Env(String),
    /// Written by tandem itself when it derived this document from another (a replay's
    /// source stage); holds what wrote it.
    Derived(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.origin {
            // An override has no place in the file worth quoting: the assignment says more.
            Origin::Set(assignment) => write!(f, "{file} (--set {assignment})"),
            Origin::Derived(what) => write!(f, "{file} ({what})"),
            Origin::File if self.line == 0 => write!(f, "{file}"),
            Origin::File => write!(f, "{file}:{}:{}", self.line, self.column),
            Origin::Env(name) => {
                write!(f, "{file}:{}:{} (from ${{{name}}})", self.line, self.column)
            }
        }
    }
}

/// One path segment into the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index (0-based).
    Index(usize),
}

/// Everything that can go wrong while reading, rewriting or deserializing a pipeline file.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The file could not be read.
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Not valid YAML, the root is not a mapping, or a malformed `${...}` reference.
    #[error("{location}: invalid YAML: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// What is wrong, without a source snippet.
        message: String,
    },
    /// `${NAME}` is not set and has no default.
    #[error(
        "{location}: environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
    )]
    Env {
        /// The string that references the variable.
        location: Location,
        /// The variable's name.
        name: String,
    },
    /// A bad `--set` assignment.
    #[error("--set {assignment}: {message}")]
    Set {
        /// The assignment as given on the command line.
        assignment: String,
        /// What is wrong with it.
        message: String,
    },
    /// Valid YAML with an invalid value for the typed config.
    #[error("{location}: `{path}`: {message}")]
    Invalid {
        /// The offending node, or key for unknown fields, or mapping for missing fields.
        location: Location,
        /// Dotted path from the document root (`stages.1.params.fields.question`).
        path: String,
        /// serde's message.
        message: String,
    },
}

impl YamlError {
    /// The location the error points at, for the variants that have one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            YamlError::Syntax { location, .. }
            | YamlError::Env { location, .. }
            | YamlError::Invalid { location, .. } => Some(location),
            YamlError::Read { .. } | YamlError::Set { .. } => None,
        }
    }
}

/// A parsed YAML document whose every node keeps its location.
#[derive(Clone, Debug)]
pub struct Document {
    file: Arc<Path>,
    root: Located,
}

/// A node with the place it came from.
#[derive(Clone, Debug)]
struct Located {
    node: Node,
    loc: Location,
}

#[derive(Clone, Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str {
        text: String,
        /// Written as a plain (unquoted, untagged, non-block) scalar. Only such a string that is
        /// exactly one `${VAR}` is re-typed after substitution: quoting is how a user says
        /// "this stays a string".
        plain: bool,
    },
    Seq(Vec<Located>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug)]
struct Entry {
    /// Non-string YAML keys are kept in their string form, as JSON will see them.
    key: String,
    key_loc: Location,
    value: Located,
}

impl Document {
    /// Parses YAML text.
    ///
    /// Uses serde-saphyr with strict booleans (only `true`/`false` are booleans; `yes`, `on`
    /// stay strings) and duplicate keys rejected. Anchors, aliases and merge keys (`<<: *a`)
    /// are expanded; their nodes point at the text where they are defined. The root must be a
    /// mapping.
    pub fn parse(file: &Path, text: &str) -> Result<Document, YamlError> {
        let file: Arc<Path> = Arc::from(file);
        let raw = parse_raw(text).map_err(|err| syntax_error(&file, &err))?;
        let source = Source {
            file: file.clone(),
            lines: text.lines().collect(),
        };
        let root = source.convert(raw)?;
        if !matches!(root.node, Node::Map(_)) {
            let found = match root.node {
                Node::Null => "an empty document".to_owned(),
                ref other => other.describe(),
            };
            return Err(YamlError::Syntax {
                message: format!(
                    "the top level of a pipeline file must be a mapping of `key: value` lines, found {found}"
                ),
                location: root.loc,
            });
        }
        Ok(Document { file, root })
    }

    /// Reads and parses a file ([`YamlError::Read`] with the path on I/O failure).
    pub fn read(file: &Path) -> Result<Document, YamlError> {
        let text = std::fs::read_to_string(file).map_err(|source| YamlError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        Document::parse(file, &text)
    }

    /// The file this document was parsed from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Replaces `${NAME}` and `${NAME:-default}` in every string scalar (keys are not
    /// interpolated).
    ///
    /// `$${` is a literal `${`. As in shells, the default is also used when the variable is set
    /// but empty. An unset variable with no default is [`YamlError::Env`]; a malformed reference
    /// (unclosed, or not a `[A-Za-z_][A-Za-z0-9_]*` name) is [`YamlError::Syntax`]. If a plain
    /// string scalar consisted only of one reference, the substituted text is re-typed as YAML
    /// would type a plain scalar (integer, float, `true`/`false`, null, else string), so
    /// `steps: ${STEPS}` gives a number while `steps: "${STEPS}"` stays a string. Substituted
    /// nodes keep their location with [`Origin::Env`] naming the (first) variable.
    pub fn interpolate_env(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), YamlError> {
        interpolate_node(&mut self.root, lookup)
    }

    /// Applies one override `a.b.0.c=value`.
    ///
    /// The path is dotted; a numeric segment indexes a sequence when the node there is a
    /// sequence (and is an ordinary key in a mapping). The value is read as YAML: `[...]`,
    /// `{...}` and quoted values are parsed as flow YAML, anything else as one plain scalar
    /// (`3`, `0.5`, `true`, `null`, an empty value is null, other text is a string even with
    /// spaces or `: ` in it). Missing mapping keys are created, as mappings on the way down; an
    /// empty (null) node on the way becomes a mapping. Indexing past the end of a sequence or
    /// into a scalar is [`YamlError::Set`]. Set nodes get [`Origin::Set`] and keep the line and
    /// column of the node they replace (0 for new keys).
    pub fn set(&mut self, assignment: &str) -> Result<(), YamlError> {
        let set_error = |message: String| YamlError::Set {
            assignment: assignment.to_owned(),
            message,
        };
        let Some((path, value_text)) = assignment.split_once('=') else {
            return Err(set_error(
                "expected `path=value`, for example `stages.0.params.steps=100`".to_owned(),
            ));
        };
        let segments: Vec<&str> = path.trim().split('.').collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return Err(set_error(format!(
                "`{}` is not a dotted path such as `stages.0.params.steps`",
                path.trim()
            )));
        }
        let new_loc = Location {
            file: self.file.clone(),
            line: 0,
            column: 0,
            origin: Origin::Set(assignment.to_owned()),
        };
        let value = parse_set_value(value_text.trim()).map_err(set_error)?;

        let mut node = &mut self.root;
        for (depth, segment) in segments.iter().enumerate() {
            let last = depth + 1 == segments.len();
            let here = segments[..depth].join(".");
            let here = if here.is_empty() {
                "the document root".to_owned()
            } else {
                format!("`{here}`")
            };
            if matches!(node.node, Node::Null) && !last {
                node.node = Node::Map(Vec::new());
            }
            node = match &mut node.node {
                Node::Map(entries) => {
                    let position = entries.iter().position(|entry| entry.key == *segment);
                    let index = match position {
                        Some(index) => index,
                        None => {
                            // A key the file does not have yet: an intermediate one becomes a
                            // mapping so the rest of the path can be created inside it.
                            let fresh = if last {
                                Node::Null
                            } else {
                                Node::Map(Vec::new())
                            };
                            entries.push(Entry {
                                key: (*segment).to_owned(),
                                key_loc: new_loc.clone(),
                                value: Located {
                                    node: fresh,
                                    loc: new_loc.clone(),
                                },
                            });
                            entries.len() - 1
                        }
                    };
                    &mut entries[index].value
                }
                Node::Seq(items) => {
                    let Ok(index) = segment.parse::<usize>() else {
                        return Err(set_error(format!(
                            "{here} is a sequence, so `{segment}` must be an index (0, 1, ...)"
                        )));
                    };
                    let len = items.len();
                    match items.get_mut(index) {
                        Some(item) => item,
                        None => {
                            return Err(set_error(format!(
                                "index {index} is past the end of {here}, which has {len} item{}",
                                if len == 1 { "" } else { "s" }
                            )));
                        }
                    }
                }
                scalar => {
                    return Err(set_error(format!(
                        "{here} is {}, so it has no `{segment}` inside it",
                        scalar.describe()
                    )));
                }
            };
        }
        let loc = Location {
            line: node.loc.line,
            column: node.loc.column,
            ..new_loc
        };
        *node = value.with_location(&loc);
        Ok(())
    }

    /// Replaces the first `count` items of the sequence at `path` by `item`, whose nodes are
    /// located at [`Origin::Derived`]`(what)`; the items after them keep their locations. This
    /// is how `tandem replay` puts a `source.replay` in place of the stages it does not run.
    pub fn replace_seq_prefix(
        &mut self,
        path: &[Seg],
        count: usize,
        item: &serde_json::Value,
        what: &str,
    ) -> Result<(), YamlError> {
        let loc = Location {
            file: self.file.clone(),
            line: 0,
            column: 0,
            origin: Origin::Derived(what.to_owned()),
        };
        let mut node = &mut self.root;
        for segment in path {
            node = match (&mut node.node, segment) {
                (Node::Map(entries), Seg::Key(key)) => entries
                    .iter_mut()
                    .find(|entry| entry.key == *key)
                    .map(|entry| &mut entry.value),
                (Node::Seq(items), Seg::Index(index)) => items.get_mut(*index),
                _ => None,
            }
            .ok_or_else(|| YamlError::Invalid {
                location: loc.clone(),
                path: dotted(path),
                message: "no such node".into(),
            })?;
        }
        let Node::Seq(items) = &mut node.node else {
            return Err(YamlError::Invalid {
                location: node.loc.clone(),
                path: dotted(path),
                message: "not a sequence".into(),
            });
        };
        items.splice(..count.min(items.len()), [located_json(item, &loc)]);
        Ok(())
    }

    /// The node at a path, as JSON (`None` if absent).
    pub fn get(&self, path: &[Seg]) -> Option<serde_json::Value> {
        self.node_at(path).map(Located::to_json)
    }

    /// The whole tree as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        self.root.to_json()
    }

    /// Location of the deepest node that exists along `path` (the root's location if none).
    pub fn locate(&self, path: &[Seg]) -> Location {
        let mut node = &self.root;
        for segment in path {
            match node.child(segment) {
                Some(child) => node = child,
                None => break,
            }
        }
        node.loc.clone()
    }

    /// Deserializes the subtree at `path` into `T`.
    ///
    /// An absent subtree is deserialized from JSON `null` (so `Option<T>` gives `None`). On
    /// failure returns [`YamlError::Invalid`] with the location of the failing node (for
    /// "unknown field `x`": the key `x` itself; for "missing field": the mapping that lacks it),
    /// the full dotted path from the document root, and serde's message.
    pub fn deserialize_at<T: serde::de::DeserializeOwned>(
        &self,
        path: &[Seg],
    ) -> Result<T, YamlError> {
        let value = self.get(path).unwrap_or(serde_json::Value::Null);
        serde_path_to_error::deserialize(value).map_err(|err| {
            let relative = segments_of(err.path());
            self.invalid(path, relative, &err.inner().to_string())
        })
    }

    /// Maps an error obtained elsewhere onto the file.
    ///
    /// `relative_path` is relative to `base`, as produced by `serde_path_to_error`'s
    /// `Path::to_string()` (`fields.question`, `items[2].name`, `.` for `base` itself). The
    /// result is located exactly as in [`Document::deserialize_at`].
    pub fn invalid_at(&self, base: &[Seg], relative_path: &str, message: &str) -> YamlError {
        self.invalid(base, parse_error_path(relative_path), message)
    }

    fn invalid(&self, base: &[Seg], relative: Vec<Seg>, message: &str) -> YamlError {
        let mut path = base.to_vec();
        path.extend(relative);
        YamlError::Invalid {
            location: self.error_location(&path, message),
            path: dotted(&path),
            message: message.to_owned(),
        }
    }

    /// Where an error at `path` should point. serde names unknown fields and variants in the
    /// message; pointing at that key is more useful than at the whole mapping. The key may be
    /// the path's last segment (plain structs) or inside the node at the path (internally
    /// tagged enums and externally tagged variants stop the path at the mapping).
    fn error_location(&self, path: &[Seg], message: &str) -> Location {
        let named = backticked_after(message, "unknown field `")
            .or_else(|| backticked_after(message, "unknown variant `"));
        let Some(name) = named else {
            return self.locate(path);
        };
        let parent_of_last = match path.split_last() {
            Some((Seg::Key(last), parent)) if last == name => self.node_at(parent),
            _ => None,
        };
        parent_of_last
            .and_then(|node| node.key_loc(name))
            .or_else(|| self.node_at(path).and_then(|node| node.key_loc(name)))
            .cloned()
            .unwrap_or_else(|| self.locate(path))
    }

    fn node_at(&self, path: &[Seg]) -> Option<&Located> {
        path.iter()
            .try_fold(&self.root, |node, segment| node.child(segment))
    }
}

impl Located {
    /// Looks a segment up, leniently: error paths from JSON name sequence items by index and
    /// mapping keys by string, but `--set`-style dotted paths write both as text.
    fn child(&self, segment: &Seg) -> Option<&Located> {
        match (&self.node, segment) {
            (Node::Map(entries), Seg::Key(key)) => entries
                .iter()
                .find(|entry| entry.key == *key)
                .map(|entry| &entry.value),
            (Node::Map(entries), Seg::Index(index)) => {
                let key = index.to_string();
                entries
                    .iter()
                    .find(|entry| entry.key == key)
                    .map(|entry| &entry.value)
            }
            (Node::Seq(items), Seg::Index(index)) => items.get(*index),
            (Node::Seq(items), Seg::Key(key)) => {
                key.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        }
    }

    fn key_loc(&self, key: &str) -> Option<&Location> {
        match &self.node {
            Node::Map(entries) => entries
                .iter()
                .find(|entry| entry.key == key)
                .map(|entry| &entry.key_loc),
            _ => None,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.node {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            // The parser rejects non-finite floats, so `from_f64` only fails on values that
            // cannot occur; null is the JSON spelling of "no number".
            Node::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Node::Str { text, .. } => Value::String(text.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(Located::to_json).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|entry| (entry.key.clone(), entry.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Gives this node and everything under it the same location (used for `--set` values,
    /// whose positions inside the command-line text mean nothing in the file).
    fn with_location(mut self, loc: &Location) -> Located {
        self.loc = loc.clone();
        match &mut self.node {
            Node::Seq(items) => {
                for item in std::mem::take(items) {
                    items.push(item.with_location(loc));
                }
            }
            Node::Map(entries) => {
                for mut entry in std::mem::take(entries) {
                    entry.key_loc = loc.clone();
                    entry.value = entry.value.with_location(loc);
                    entries.push(entry);
                }
            }
            _ => {}
        }
        self
    }
}

impl Node {
    /// How a node is named in messages ("a sequence", "the integer 3").
    fn describe(&self) -> String {
        match self {
            Node::Null => "empty (null)".to_owned(),
            Node::Bool(b) => format!("the boolean {b}"),
            Node::Int(i) => format!("the integer {i}"),
            Node::UInt(u) => format!("the integer {u}"),
            Node::Float(x) => format!("the number {x}"),
            Node::Str { text, .. } => format!("the string {text:?}"),
            Node::Seq(_) => "a sequence".to_owned(),
            Node::Map(_) => "a mapping".to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// The tree as serde-saphyr hands it over: children (keys too) wrapped in [`Spanned`] so each
/// knows its position.
enum RawNode {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawNode>>),
    Map(Vec<(Spanned<RawNode>, Spanned<RawNode>)>),
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawNode, E> {
        Ok(RawNode::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawNode, E> {
        Ok(RawNode::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawNode, E> {
        Ok(RawNode::UInt(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawNode, E> {
        // JSON numbers stop at 64 bits; a wider integer is kept as the nearest float.
        Ok(i64::try_from(v).map_or(RawNode::Float(v as f64), RawNode::Int))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawNode, E> {
        Ok(u64::try_from(v).map_or(RawNode::Float(v as f64), RawNode::UInt))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawNode, E> {
        Ok(RawNode::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNode, E> {
        Ok(RawNode::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawNode, E> {
        Ok(RawNode::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawNode, E> {
        Ok(RawNode::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<RawNode, E> {
        Ok(RawNode::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawNode, D::Error> {
        RawNode::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawNode::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNode, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(RawNode::Map(entries))
    }
}

fn parse_raw(text: &str) -> Result<Spanned<RawNode>, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // The snippet is rendered away anyway: our errors carry their own location.
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options)
}

fn syntax_error(file: &Arc<Path>, err: &serde_saphyr::Error) -> YamlError {
    let (line, column) = err
        .location()
        .map_or((0, 0), |loc| (loc.line(), loc.column()));
    YamlError::Syntax {
        location: Location {
            file: file.clone(),
            line,
            column,
            origin: Origin::File,
        },
        message: parser_message(err),
    }
}

/// serde-saphyr's message without location suffix or snippet, with the hints that only make
/// sense to a Rust programmer calling serde-saphyr replaced by what the pipeline author can do.
fn parser_message(err: &serde_saphyr::Error) -> String {
    let mut err = err.without_snippet();
    while let serde_saphyr::Error::AliasError { error, .. } = err {
        err = error.without_snippet();
    }
    match err {
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key `{key}`")
        }
        serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => "duplicate key".to_owned(),
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "a pipeline file holds a single YAML document, but a second one starts here".to_owned()
        }
        other => serde_saphyr::DefaultMessageFormatter
            .format_message(other)
            .into_owned(),
    }
}

/// The string form of a mapping key, as JSON will see it.
fn key_text(key: &Located) -> String {
    match &key.node {
        Node::Str { text, .. } => text.clone(),
        Node::Null => "null".to_owned(),
        Node::Bool(b) => b.to_string(),
        Node::Int(i) => i.to_string(),
        Node::UInt(u) => u.to_string(),
        Node::Float(x) => x.to_string(),
        Node::Seq(_) | Node::Map(_) => key.to_json().to_string(),
    }
}

/// The source text, for turning serde-saphyr's nodes into [`Located`] ones.
struct Source<'t> {
    file: Arc<Path>,
    lines: Vec<&'t str>,
}

impl Source<'_> {
    fn location(&self, raw: &Spanned<RawNode>) -> Location {
        // For aliases and merged keys `defined` is the anchored text, where the offending
        // characters actually are; `referenced` would be the bare `*name`.
        let loc = if raw.defined.line() != 0 {
            raw.defined
        } else {
            raw.referenced
        };
        Location {
            file: self.file.clone(),
            line: loc.line(),
            column: loc.column(),
            origin: Origin::File,
        }
    }

    fn convert(&self, raw: Spanned<RawNode>) -> Result<Located, YamlError> {
        let loc = self.location(&raw);
        let node = match raw.value {
            RawNode::Null => Node::Null,
            RawNode::Bool(b) => Node::Bool(b),
            RawNode::Int(i) => Node::Int(i),
            RawNode::UInt(u) => Node::UInt(u),
            RawNode::Float(x) => Node::Float(x),
            RawNode::Str(text) => Node::Str {
                text,
                plain: self.is_plain_at(loc.line, loc.column),
            },
            RawNode::Seq(items) => Node::Seq(
                items
                    .into_iter()
                    .map(|item| self.convert(item))
                    .collect::<Result<_, _>>()?,
            ),
            RawNode::Map(raw_entries) => {
                let mut entries: Vec<Entry> = Vec::with_capacity(raw_entries.len());
                for (raw_key, raw_value) in raw_entries {
                    let key = self.convert(raw_key)?;
                    let key_text = key_text(&key);
                    // `1:` and `"1":` are different YAML keys but the same JSON key.
                    if entries.iter().any(|entry| entry.key == key_text) {
                        return Err(YamlError::Syntax {
                            location: key.loc,
                            message: format!("duplicate key `{key_text}`"),
                        });
                    }
                    entries.push(Entry {
                        key: key_text,
                        key_loc: key.loc,
                        value: self.convert(raw_value)?,
                    });
                }
                Node::Map(entries)
            }
        };
        Ok(Located { node, loc })
    }

    /// Whether the string scalar at this position was written plain: not quoted, not tagged
    /// (`!!str 3`), not a block scalar (`|`, `>`). serde-saphyr does not report the style, so
    /// it is read off the text around the position.
    fn is_plain_at(&self, line: u64, column: u64) -> bool {
        let Some(index) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
            return false;
        };
        let Some(text) = self.lines.get(index) else {
            return false;
        };
        let column = usize::try_from(column)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        if matches!(
            text.chars().nth(column),
            Some('"' | '\'' | '|' | '>') | None
        ) {
            return false;
        }
        let before: String = text.chars().take(column).collect();
        let mut previous = previous_token(&before);
        // Nothing before it on its line: the indicator (if any) ends an earlier line.
        let mut earlier = index;
        while previous.is_none() && earlier > 0 {
            earlier -= 1;
            let line = self.lines[earlier];
            let without_comment = line.split(" #").next().unwrap_or(line);
            previous = previous_token(without_comment);
        }
        match previous {
            Some(token) => !token.starts_with('!') && !is_block_scalar_header(token),
            None => true,
        }
    }
}

/// `|`, `>-`, `|2+` and the like: the line that introduces a block scalar.
fn is_block_scalar_header(token: &str) -> bool {
    let mut chars = token.chars();
    matches!(chars.next(), Some('|' | '>')) && chars.all(|c| matches!(c, '+' | '-' | '0'..='9'))
}

fn previous_token(text: &str) -> Option<&str> {
    text.split_whitespace().next_back()
}

// ---------------------------------------------------------------------------------------------
// `${ENV}` interpolation

/// Why a string's `${...}` could not be substituted.
enum InterpolationProblem {
    Unset(String),
    Malformed(String),
}

struct Interpolated {
    text: String,
    first_variable: Option<String>,
    /// The string was exactly one `${...}` reference.
    whole: bool,
}

fn interpolate_node(
    node: &mut Located,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), YamlError> {
    match &mut node.node {
        Node::Seq(items) => {
            for item in items {
                interpolate_node(item, lookup)?;
            }
        }
        Node::Map(entries) => {
            for entry in entries {
                interpolate_node(&mut entry.value, lookup)?;
            }
        }
        Node::Str { text, plain } => {
            if !text.contains("${") {
                return Ok(());
            }
            let done = interpolate_str(text, lookup).map_err(|problem| match problem {
                InterpolationProblem::Unset(name) => YamlError::Env {
                    location: node.loc.clone(),
                    name,
                },
                InterpolationProblem::Malformed(message) => YamlError::Syntax {
                    location: node.loc.clone(),
                    message,
                },
            })?;
            let retype = *plain && done.whole;
            node.node = if retype {
                type_plain_scalar(&done.text)
            } else {
                Node::Str {
                    text: done.text,
                    plain: false,
                }
            };
            if let Some(name) = done.first_variable {
                node.loc.origin = Origin::Env(name);
            }
        }
        Node::Null | Node::Bool(_) | Node::Int(_) | Node::UInt(_) | Node::Float(_) => {}
    }
    Ok(())
}

fn interpolate_str(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpolationProblem> {
    let mut out = String::with_capacity(text.len());
    let mut first_variable = None;
    let mut references = 0;
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(InterpolationProblem::Malformed(format!(
                    "unclosed `${{` in {text:?} (write `$${{` for a literal `${{`)"
                )));
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_variable_name(name) {
                return Err(InterpolationProblem::Malformed(format!(
                    "`${{{inner}}}` is not a reference to an environment variable: use `${{NAME}}` or `${{NAME:-default}}` (write `$${{` for a literal `${{`)"
                )));
            }
            let value = match (lookup(name), default) {
                (Some(value), Some(default)) if value.is_empty() => default.to_owned(),
                (Some(value), _) => value,
                (None, Some(default)) => default.to_owned(),
                (None, None) => return Err(InterpolationProblem::Unset(name.to_owned())),
            };
            out.push_str(&value);
            references += 1;
            first_variable.get_or_insert_with(|| name.to_owned());
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    let whole = references == 1
        && text.starts_with("${")
        && text.ends_with('}')
        && text[2..].find('}') == Some(text.len() - 3);
    Ok(Interpolated {
        text: out,
        first_variable,
        whole,
    })
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------------------------------------
// Typing text as YAML would

/// Types `text` as YAML types a plain scalar: integer, float, `true`/`false`, null, else string.
///
/// Only text made of characters that can appear in a number, boolean or null is handed to
/// serde-saphyr (so the rules are exactly the parser's); anything else is a string outright,
/// which keeps text like `a: b` or `[x]` from turning into a collection.
fn type_plain_scalar(text: &str) -> Node {
    let string = || Node::Str {
        text: text.to_owned(),
        plain: true,
    };
    if text.is_empty() {
        return Node::Null;
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-' | '~'))
    {
        return string();
    }
    match parse_raw(text).map(|raw| raw.value) {
        Ok(RawNode::Null) => Node::Null,
        Ok(RawNode::Bool(b)) => Node::Bool(b),
        Ok(RawNode::Int(i)) => Node::Int(i),
        Ok(RawNode::UInt(u)) => Node::UInt(u),
        Ok(RawNode::Float(x)) => Node::Float(x),
        // `-` alone is a block sequence, `.inf` a rejected non-finite float: both stay text.
        Ok(RawNode::Str(_) | RawNode::Seq(_) | RawNode::Map(_)) | Err(_) => string(),
    }
}

/// Parses the value of a `--set` assignment into a node whose location is filled in later.
/// A JSON value as a tree whose every node is at `loc`.
fn located_json(value: &serde_json::Value, loc: &Location) -> Located {
    use serde_json::Value;
    let node = match value {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Node::UInt(u),
            (None, Some(i)) => Node::Int(i),
            _ => Node::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => Node::Str {
            text: text.clone(),
            plain: false,
        },
        Value::Array(items) => Node::Seq(items.iter().map(|v| located_json(v, loc)).collect()),
        Value::Object(map) => Node::Map(
            map.iter()
                .map(|(key, v)| Entry {
                    key: key.clone(),
                    key_loc: loc.clone(),
                    value: located_json(v, loc),
                })
                .collect(),
        ),
    };
    Located {
        node,
        loc: loc.clone(),
    }
}

fn parse_set_value(text: &str) -> Result<Located, String> {
    let placeholder = Location {
        file: Arc::from(Path::new("")),
        line: 0,
        column: 0,
        origin: Origin::File,
    };
    if !text.starts_with(['[', '{', '"', '\'']) {
        return Ok(Located {
            node: type_plain_scalar(text),
            loc: placeholder,
        });
    }
    let raw = parse_raw(text)
        .map_err(|err| format!("cannot parse `{text}` as YAML: {}", parser_message(&err)))?;
    let source = Source {
        file: placeholder.file.clone(),
        lines: text.lines().collect(),
    };
    source.convert(raw).map_err(|err| match err {
        YamlError::Syntax { message, .. } => format!("cannot parse `{text}` as YAML: {message}"),
        other => other.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Paths

fn dotted(path: &[Seg]) -> String {
    if path.is_empty() {
        return "(document root)".to_owned();
    }
    path.iter()
        .map(|segment| match segment {
            Seg::Key(key) => key.clone(),
            Seg::Index(index) => index.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A `serde_path_to_error` path as segments. Enum variants are mapping keys in the JSON an
/// externally tagged enum is read from; an unknown (non-string key) segment ends the path,
/// since nothing after it can be found.
fn segments_of(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    let mut segments = Vec::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => segments.push(Seg::Index(*index)),
            Segment::Map { key } => segments.push(Seg::Key(key.clone())),
            Segment::Enum { variant } => segments.push(Seg::Key(variant.clone())),
            Segment::Unknown => break,
        }
    }
    segments
}

/// Parses `serde_path_to_error`'s `Path::to_string()` form: `a.b[2].c`, `.` for the root.
fn parse_error_path(text: &str) -> Vec<Seg> {
    let mut segments = Vec::new();
    if text.is_empty() || text == "." {
        return segments;
    }
    for part in text.split('.') {
        let (key, mut indices) = match part.find('[') {
            Some(open) => (&part[..open], &part[open..]),
            None => (part, ""),
        };
        if key == "?" {
            break;
        }
        if !key.is_empty() {
            segments.push(Seg::Key(key.to_owned()));
        }
        while let Some(after) = indices.strip_prefix('[') {
            let Some((index, rest)) = after.split_once(']') else {
                return segments;
            };
            let Ok(index) = index.parse() else {
                return segments;
            };
            segments.push(Seg::Index(index));
            indices = rest;
        }
    }
    segments
}

/// The name in serde messages such as "unknown field `x`, expected ...".
fn backticked_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_owned())
    }

    fn parse(text: &str) -> Document {
        Document::parse(Path::new("file.yaml"), text).expect("test YAML parses")
    }

    #[test]
    fn replace_seq_prefix_keeps_the_locations_of_the_items_after_it() {
        let mut doc = parse("stages:\n  - id: a\n  - id: b\n  - id: c\n");
        let item = serde_json::json!({"id": "r", "params": {"streams": ["a", "b"]}});
        doc.replace_seq_prefix(&[key("stages")], 2, &item, "replay")
            .expect("stages is a sequence");
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"stages": [{"id": "r", "params": {"streams": ["a", "b"]}}, {"id": "c"}]})
        );
        let c = doc.locate(&[key("stages"), Seg::Index(1), key("id")]);
        assert_eq!((c.line, c.column, c.origin), (4, 9, Origin::File));
        let r = doc.locate(&[key("stages"), Seg::Index(0), key("id")]);
        assert_eq!(r.to_string(), "file.yaml (replay)");
    }

    fn at(line: u64, column: u64) -> Location {
        Location {
            file: Arc::from(Path::new("file.yaml")),
            line,
            column,
            origin: Origin::File,
        }
    }

    const PIPELINE: &str = "\
name: demo
stages:
  - id: load
    params:
      count: 3
      path: data.jsonl
  - id: ask
    params:
      fields: {question: 12, answer: text}
      retries: 2
";

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct LoadParams {
        count: u64,
        path: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Read by the deserializer only.
    struct AskParams {
        fields: std::collections::BTreeMap<String, String>,
        retries: u64,
    }

    #[test]
    fn locate_nested_key_paths() {
        let doc = parse(PIPELINE);
        assert_eq!(
            doc.locate(&[key("stages"), Seg::Index(1), key("params"), key("retries")]),
            at(10, 16)
        );
        assert_eq!(
            doc.locate(&[key("stages"), Seg::Index(0), key("params")]),
            at(5, 7)
        );
        assert_eq!(doc.locate(&[key("stages"), Seg::Index(1)]), at(7, 5));
        // Deepest existing node: `missing` is absent, so the params mapping.
        assert_eq!(
            doc.locate(&[key("stages"), Seg::Index(0), key("params"), key("missing")]),
            at(5, 7)
        );
        assert_eq!(doc.locate(&[]), at(1, 1));
        assert_eq!(
            doc.get(&[key("stages"), Seg::Index(0), key("params"), key("count")]),
            Some(serde_json::json!(3))
        );
        assert_eq!(doc.get(&[key("nope")]), None);
    }

    #[test]
    fn deserialize_at_ok() {
        let doc = parse(PIPELINE);
        let params: LoadParams = doc
            .deserialize_at(&[key("stages"), Seg::Index(0), key("params")])
            .expect("valid params");
        assert_eq!(
            params,
            LoadParams {
                count: 3,
                path: "data.jsonl".to_owned()
            }
        );
    }

    #[test]
    fn deserialize_at_wrong_type_points_at_value() {
        let doc = parse(&PIPELINE.replace("count: 3", "count: three"));
        let err = doc
            .deserialize_at::<LoadParams>(&[key("stages"), Seg::Index(0), key("params")])
            .expect_err("string is not u64");
        let YamlError::Invalid {
            location,
            path,
            message,
        } = &err
        else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(*location, at(5, 14));
        assert_eq!(path, "stages.0.params.count");
        assert_eq!(message, "invalid type: string \"three\", expected u64");
        assert_eq!(
            err.to_string(),
            "file.yaml:5:14: `stages.0.params.count`: invalid type: string \"three\", expected u64"
        );
        assert_eq!(err.location(), Some(&at(5, 14)));
    }

    #[test]
    fn deserialize_at_unknown_field_points_at_key() {
        let doc = parse(&PIPELINE.replace(
            "      path: data.jsonl",
            "      path: data.jsonl\n      colour: red",
        ));
        let err = doc
            .deserialize_at::<LoadParams>(&[key("stages"), Seg::Index(0), key("params")])
            .expect_err("unknown field");
        let YamlError::Invalid {
            location,
            path,
            message,
        } = &err
        else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(*location, at(7, 7));
        assert_eq!(path, "stages.0.params.colour");
        assert_eq!(
            message,
            "unknown field `colour`, expected `count` or `path`"
        );
        assert!(err.to_string().starts_with("file.yaml:7:7: "), "{err}");
    }

    #[test]
    fn deserialize_at_missing_field_points_at_mapping() {
        let doc = parse(&PIPELINE.replace("      count: 3\n", ""));
        let err = doc
            .deserialize_at::<LoadParams>(&[key("stages"), Seg::Index(0), key("params")])
            .expect_err("missing field");
        let YamlError::Invalid {
            location,
            path,
            message,
        } = &err
        else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(*location, at(5, 7));
        assert_eq!(path, "stages.0.params");
        assert_eq!(message, "missing field `count`");
        assert_eq!(
            err.to_string(),
            "file.yaml:5:7: `stages.0.params`: missing field `count`"
        );
    }

    #[test]
    fn deserialize_at_root_and_absent_paths() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // Read by the deserializer only.
        struct Top {
            name: String,
            version: u64,
        }
        let doc = parse(PIPELINE);
        let err = doc.deserialize_at::<Top>(&[]).expect_err("missing version");
        assert_eq!(
            err.to_string(),
            "file.yaml:1:1: `(document root)`: missing field `version`"
        );
        let absent: Option<u64> = doc.deserialize_at(&[key("absent")]).expect("null is None");
        assert_eq!(absent, None);
    }

    #[test]
    fn invalid_at_points_at_nested_value() {
        let doc = parse(PIPELINE);
        let base = [key("stages"), Seg::Index(1), key("params")];
        let err = doc.invalid_at(
            &base,
            "fields.question",
            "invalid type: integer `12`, expected a string",
        );
        let YamlError::Invalid { location, path, .. } = &err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(*location, at(9, 26));
        assert_eq!(path, "stages.1.params.fields.question");
        // The same mapping as deserialize_at performs itself.
        let direct = doc
            .deserialize_at::<AskParams>(&base)
            .expect_err("12 is not a string");
        assert_eq!(direct.location(), Some(&at(9, 26)));
        assert_eq!(
            direct.to_string(),
            "file.yaml:9:26: `stages.1.params.fields.question`: invalid type: integer `12`, expected a string"
        );
        // Unknown fields found elsewhere point at the key too.
        let unknown = doc.invalid_at(
            &base,
            "fields.answer",
            "unknown field `answer`, expected `question`",
        );
        assert_eq!(unknown.location(), Some(&at(9, 30)));
        // The root of the base and `serde_path_to_error`'s bracketed indices.
        assert_eq!(doc.invalid_at(&base, ".", "x").location(), Some(&at(9, 7)));
        let from_root = doc.invalid_at(&[], "stages[1].params.retries", "x");
        assert_eq!(from_root.location(), Some(&at(10, 16)));
    }

    #[test]
    fn unknown_field_of_internally_tagged_enum_points_at_key() {
        #[derive(Debug, Deserialize)]
        #[serde(tag = "kind", deny_unknown_fields)]
        #[allow(dead_code)] // Read by the deserializer only.
        enum Source {
            File { path: String },
        }
        let doc = parse("source:\n  kind: File\n  path: a\n  extra: 1\n");
        let err = doc
            .deserialize_at::<Source>(&[key("source")])
            .expect_err("extra");
        assert_eq!(err.location(), Some(&at(4, 3)));
    }

    #[test]
    fn strict_booleans() {
        #[derive(Debug, Deserialize)]
        struct Flag {
            flag: bool,
        }
        let err = parse("flag: yes\n")
            .deserialize_at::<Flag>(&[])
            .expect_err("yes is a string");
        assert_eq!(
            err.to_string(),
            "file.yaml:1:7: `flag`: invalid type: string \"yes\", expected a boolean"
        );
        let flag: Flag = parse("flag: true\n")
            .deserialize_at(&[])
            .expect("true is a boolean");
        assert!(flag.flag);
        // serde-saphyr's strict mode is the YAML 1.2 core schema, which also spells `True`, `FALSE`.
        assert_eq!(
            parse("a: on\nb: False\nc: no\n").to_json(),
            serde_json::json!({"a": "on", "b": false, "c": "no"})
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let doc = parse("base: &b\n  x: 1\n  y: 2\nuse: *b\nmerged:\n  <<: *b\n  y: 3\n");
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"base": {"x": 1, "y": 2}, "use": {"x": 1, "y": 2}, "merged": {"x": 1, "y": 3}})
        );
        // Aliased values point at the anchored text.
        assert_eq!(doc.locate(&[key("use"), key("x")]), at(2, 6));
        assert_eq!(doc.locate(&[key("merged"), key("y")]), at(7, 6));
    }

    #[test]
    fn malformed_yaml_is_a_syntax_error() {
        let err = Document::parse(Path::new("file.yaml"), "a: 1\nb:\n  c: 2\n   d: 3\n")
            .expect_err("bad indentation");
        let YamlError::Syntax { location, message } = &err else {
            panic!("expected Syntax, got {err:?}");
        };
        assert_eq!(*location, at(4, 5));
        assert_eq!(message, "mapping values are not allowed in this context");
        assert_eq!(
            err.to_string(),
            "file.yaml:4:5: invalid YAML: mapping values are not allowed in this context"
        );

        let err = Document::parse(Path::new("file.yaml"), "a: 1\nb: [1, 2\nc: 3\n")
            .expect_err("unclosed [");
        let YamlError::Syntax { location, .. } = &err else {
            panic!("expected Syntax, got {err:?}");
        };
        assert_eq!(location.line, 3);
        assert!(!err.to_string().contains("-->"), "no snippet: {err}");
    }

    #[test]
    fn duplicate_keys_and_non_mapping_roots_are_rejected() {
        let err =
            Document::parse(Path::new("file.yaml"), "a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(
            err.to_string(),
            "file.yaml:3:1: invalid YAML: duplicate key `a`"
        );
        let err =
            Document::parse(Path::new("file.yaml"), "1: a\n\"1\": b\n").expect_err("same JSON key");
        assert_eq!(
            err.to_string(),
            "file.yaml:2:1: invalid YAML: duplicate key `1`"
        );
        let err = Document::parse(Path::new("file.yaml"), "- 1\n- 2\n").expect_err("sequence root");
        assert_eq!(
            err.to_string(),
            "file.yaml:1:1: invalid YAML: the top level of a pipeline file must be a mapping of `key: value` lines, found a sequence"
        );
        let err = Document::parse(Path::new("file.yaml"), "").expect_err("empty");
        assert!(
            err.to_string().ends_with("found an empty document"),
            "{err}"
        );
    }

    #[test]
    fn non_string_keys_become_strings() {
        let doc = parse("1: one\ntrue: yes\n0.5: half\n");
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"1": "one", "true": "yes", "0.5": "half"})
        );
    }

    #[test]
    fn read_reports_the_path() {
        let err =
            Document::read(Path::new("/nonexistent/tandem/pipeline.yaml")).expect_err("no file");
        assert!(
            matches!(&err, YamlError::Read { path, .. } if path == Path::new("/nonexistent/tandem/pipeline.yaml"))
        );
        assert!(
            err.to_string()
                .starts_with("cannot read pipeline file /nonexistent/tandem/pipeline.yaml: ")
        );
        assert_eq!(err.location(), None);
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".to_owned()),
            "N" => Some("4".to_owned()),
            "F" => Some("0.25".to_owned()),
            "T" => Some("true".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn env_interpolation() {
        let mut doc = parse(
            "a: ${A}\nb: ${B:-x}\nc: $${A}\nn: ${N}\ns: \"v${N}\"\nq: \"${N}\"\nf: ${F}\nt: ${T}\ne: ${EMPTY:-d}\nk: ${A}-${N}\n${A}: key\nl:\n  - ${N}\n  - '${N}'\ntag: !!str ${N}\nblock: >-\n  ${N}\nanchored: &n ${N}\nalias: *n\n",
        );
        doc.interpolate_env(&env).expect("all set");
        assert_eq!(
            doc.to_json(),
            serde_json::json!({
                "a": "alpha", "b": "x", "c": "${A}", "n": 4, "s": "v4", "q": "4", "f": 0.25,
                "t": true, "e": "d", "k": "alpha-4", "${A}": "key", "l": [4, "4"], "tag": "4",
                "block": "4", "anchored": 4, "alias": 4,
            })
        );
        let n: u64 = doc.deserialize_at(&[key("n")]).expect("number");
        assert_eq!(n, 4);
        assert_eq!(
            doc.locate(&[key("n")]),
            Location {
                origin: Origin::Env("N".to_owned()),
                ..at(4, 4)
            }
        );
        assert_eq!(doc.locate(&[key("k")]).origin, Origin::Env("A".to_owned()));
        assert_eq!(doc.locate(&[key("c")]).origin, Origin::File);
        let err = doc
            .deserialize_at::<String>(&[key("n")])
            .expect_err("4 is a number now");
        assert_eq!(
            err.to_string(),
            "file.yaml:4:4 (from ${N}): `n`: invalid type: integer `4`, expected a string"
        );
    }

    #[test]
    fn env_unset_and_malformed() {
        let mut doc = parse("x: 1\ny: \"a ${MISSING} b\"\n");
        let err = doc.interpolate_env(&env).expect_err("unset");
        let YamlError::Env { location, name } = &err else {
            panic!("expected Env, got {err:?}");
        };
        assert_eq!((location, name.as_str()), (&at(2, 4), "MISSING"));
        assert_eq!(
            err.to_string(),
            "file.yaml:2:4: environment variable `MISSING` is not set (write `${MISSING:-default}` to give a default)"
        );
        let mut doc = parse("x: ${A\n");
        let err = doc.interpolate_env(&env).expect_err("unclosed");
        assert_eq!(err.location(), Some(&at(1, 4)));
        assert!(matches!(err, YamlError::Syntax { .. }));
        let mut doc = parse("x: ${not a name}\n");
        assert!(matches!(
            doc.interpolate_env(&env),
            Err(YamlError::Syntax { .. })
        ));
    }

    #[test]
    fn set_overrides() {
        let mut doc = parse(PIPELINE);
        doc.set("stages.0.params.count=10").expect("nested scalar");
        doc.set("stages.1.id=ask2").expect("index into sequence");
        doc.set("stages.1.params.model.name=qwen")
            .expect("created keys");
        doc.set("stages.0.params.path=\"1\"").expect("quoted");
        doc.set("stages.1.params.retries=[1, 2]")
            .expect("flow list");
        doc.set("extra={a: 1, b: [x]}").expect("flow mapping");
        doc.set("ratio=0.5").expect("float");
        doc.set("flag=yes").expect("strict booleans");
        doc.set("text=hello world: again").expect("plain text");
        assert_eq!(
            doc.to_json(),
            serde_json::json!({
                "name": "demo",
                "stages": [
                    {"id": "load", "params": {"count": 10, "path": "1"}},
                    {"id": "ask2", "params": {
                        "fields": {"question": 12, "answer": "text"},
                        "retries": [1, 2],
                        "model": {"name": "qwen"},
                    }},
                ],
                "extra": {"a": 1, "b": ["x"]},
                "ratio": 0.5,
                "flag": "yes",
                "text": "hello world: again",
            })
        );
        let count = doc.locate(&[key("stages"), Seg::Index(0), key("params"), key("count")]);
        assert_eq!(
            count,
            Location {
                origin: Origin::Set("stages.0.params.count=10".to_owned()),
                ..at(5, 14)
            }
        );
        assert_eq!(
            count.to_string(),
            "file.yaml (--set stages.0.params.count=10)"
        );
    }

    #[test]
    fn set_errors() {
        let mut doc = parse(PIPELINE);
        let err = doc.set("name.first=x").expect_err("through a scalar");
        assert_eq!(
            err.to_string(),
            "--set name.first=x: `name` is the string \"demo\", so it has no `first` inside it"
        );
        let err = doc.set("stages.2.id=x").expect_err("past the end");
        assert_eq!(
            err.to_string(),
            "--set stages.2.id=x: index 2 is past the end of `stages`, which has 2 items"
        );
        let err = doc.set("stages.first.id=x").expect_err("not an index");
        assert!(matches!(err, YamlError::Set { .. }));
        let err = doc.set("stages.0.params").expect_err("no =");
        assert_eq!(
            err.to_string(),
            "--set stages.0.params: expected `path=value`, for example `stages.0.params.steps=100`"
        );
        assert!(matches!(doc.set("a..b=1"), Err(YamlError::Set { .. })));
        assert!(matches!(doc.set("a=[1, 2"), Err(YamlError::Set { .. })));
        assert_eq!(err.location(), None);
    }

    #[test]
    fn invalid_at_on_set_node_shows_the_assignment() {
        let mut doc = parse(PIPELINE);
        doc.set("stages.0.params.count=lots").expect("string value");
        let err = doc
            .deserialize_at::<LoadParams>(&[key("stages"), Seg::Index(0), key("params")])
            .expect_err("string is not u64");
        assert_eq!(
            err.to_string(),
            "file.yaml (--set stages.0.params.count=lots): `stages.0.params.count`: invalid type: string \"lots\", expected u64"
        );
        let err = doc.invalid_at(&[key("stages"), Seg::Index(0)], "params.count", "too many");
        assert_eq!(
            err.to_string(),
            "file.yaml (--set stages.0.params.count=lots): `stages.0.params.count`: too many"
        );
    }

    #[test]
    fn plain_scalar_typing() {
        let json = |text: &str| {
            Located {
                node: type_plain_scalar(text),
                loc: at(0, 0),
            }
            .to_json()
        };
        assert_eq!(json("3"), serde_json::json!(3));
        assert_eq!(json("-3"), serde_json::json!(-3));
        assert_eq!(json("0.5"), serde_json::json!(0.5));
        assert_eq!(json("false"), serde_json::json!(false));
        assert_eq!(json("null"), serde_json::Value::Null);
        assert_eq!(json("~"), serde_json::Value::Null);
        assert_eq!(json(""), serde_json::Value::Null);
        assert_eq!(json("-"), serde_json::json!("-"));
        assert_eq!(json(".inf"), serde_json::json!(".inf"));
        assert_eq!(json("on"), serde_json::json!("on"));
        assert_eq!(json("a: b"), serde_json::json!("a: b"));
    }

    #[test]
    fn error_paths_parse() {
        assert_eq!(parse_error_path("."), vec![]);
        assert_eq!(
            parse_error_path("items[2].name"),
            vec![key("items"), Seg::Index(2), key("name")]
        );
        assert_eq!(
            parse_error_path("[0][1]"),
            vec![Seg::Index(0), Seg::Index(1)]
        );
        assert_eq!(parse_error_path("a.?.b"), vec![key("a")]);
    }
}
