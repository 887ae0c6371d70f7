//! `tokenizer.json` through the tokenizers crate, and the chat template of
//! `tokenizer_config.json` (or `chat_template.jinja`) rendered with minijinja the way
//! transformers' `apply_chat_template` renders it with Jinja2.

use std::path::{Path, PathBuf};

use minijinja::value::Value as JinjaValue;
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PolicyError, Result};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (or whatever the template accepts).
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message from the user.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// A tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    template: Option<String>,
    /// Special-token strings handed to the template (`bos_token`, `eos_token`, …).
    special: Vec<(String, String)>,
    eos_ids: Vec<u32>,
    pad_id: u32,
}

impl Tokenizer {
    /// Reads `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja` and
    /// `generation_config.json` from `dir` (all but the first are optional).
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(PolicyError::Missing {
                path,
                message: "no tokenizer.json in the model directory".into(),
            });
        }
        let inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| PolicyError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        let template_file = dir.join("chat_template.jinja");
        let template = if template_file.is_file() {
            Some(
                std::fs::read_to_string(&template_file)
                    .map_err(|e| PolicyError::missing(&template_file, e))?,
            )
        } else {
            chat_template(&config)
        };
        let mut special = Vec::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(token) = token_content(config.get(key)) {
                special.push((key.to_string(), token));
            }
        }
        let id_of = |key: &str| -> Option<u32> {
            let token = special.iter().find(|(k, _)| k == key)?;
            inner.token_to_id(&token.1)
        };
        let mut eos_ids = ids(generation.get("eos_token_id"));
        eos_ids.extend(id_of("eos_token"));
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let pad_id = id_of("pad_token")
            .or_else(|| ids(generation.get("pad_token_id")).first().copied())
            .or_else(|| eos_ids.first().copied())
            .unwrap_or(0);
        Ok(Tokenizer {
            inner,
            path,
            template,
            special,
            eos_ids,
            pad_id,
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (e.g.
    /// Llama's BOS), as transformers' `encode` does by default.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding =
            self.inner
                .encode(text, add_special_tokens)
                .map_err(|e| PolicyError::Tokenizer {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`. Ids past the tokenizer's vocabulary (a model's embedding matrix is often
    /// larger) decode to nothing.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let size = self.inner.get_vocab_size(true) as u32;
        let known: Vec<u32> = ids.iter().copied().filter(|&id| id < size).collect();
        self.inner
            .decode(&known, skip_special_tokens)
            .map_err(|e| PolicyError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// Ids that end a completion.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The id of the `eos_token` `tokenizer_config.json` names: what the model ends its turn
    /// with (ChatML's `<|im_end|>` for a chat model), which a fine-tuning target ends with.
    pub fn eos_token_id(&self) -> Option<u32> {
        let (_, token) = self.special.iter().find(|(key, _)| key == "eos_token")?;
        self.inner.token_to_id(token)
    }

    /// The id prompts are left-padded with.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokens the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether the directory has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders the chat template for `messages` as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` does.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let messages = serde_json::to_value(messages).unwrap_or(Value::Null);
        self.render_chat(&messages, None, add_generation_prompt)
    }

    /// Renders the chat template for messages given as JSON objects (tool calls and any other
    /// keys the template reads included), with an optional `tools` list.
    pub fn render_chat(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .template
            .as_deref()
            .ok_or_else(|| PolicyError::Tokenizer {
                path: self.path.with_file_name("tokenizer_config.json"),
                message: "no chat_template (use a prompt without --chat, or add a template)".into(),
            })?;
        let mut ctx = serde_json::Map::new();
        ctx.insert("messages".into(), messages.clone());
        if let Some(tools) = tools {
            ctx.insert("tools".into(), tools.clone());
        }
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(add_generation_prompt),
        );
        for (key, token) in &self.special {
            ctx.insert(key.clone(), Value::String(token.clone()));
        }
        render_template(template, &Value::Object(ctx)).map_err(|e| PolicyError::Tokenizer {
            path: self.path.with_file_name("tokenizer_config.json"),
            message: format!("chat template: {e:#}"),
        })
    }

    /// Token ids of a chat prompt: the rendered template tokenised without adding special
    /// tokens again (the template writes them), as transformers does.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, true)?;
        self.encode(&text, false)
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::missing(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| PolicyError::Config {
            path: path.to_path_buf(),
            message: format!("line {}, column {}: {e}", e.line(), e.column()),
        })
}

/// A template string, or the `default` one of a list of named templates.
fn chat_template(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

/// A special token written as a string or as an `AddedToken` object.
fn token_content(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Renders a chat template with the Jinja2 settings transformers uses: `trim_blocks`,
/// `lstrip_blocks`, Python string/dict methods, `raise_exception`, `strftime_now`, and a
/// `tojson` that writes like Python's `json.dumps` (no HTML escaping, `", "` and `": "`).
pub fn render_template(template: &str, ctx: &Value) -> std::result::Result<String, JinjaError> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<JinjaValue, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", |format: String| strftime_now(&format));
    env.add_filter("tojson", tojson);
    env.add_template("chat", template)?;
    env.get_template("chat")?
        .render(minijinja::value::Serde(ctx))
}

fn tojson(
    value: JinjaValue,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<String, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json: Value = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(out)
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)` as Python writes it.
fn python_json(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            // Python writes floats with a fractional part: 1.0, not 1.
            if f.fract() == 0.0 && f.abs() < 1e16 {
                out.push_str(&format!("{f:.1}"))
            } else {
                out.push_str(&n.to_string())
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `strftime_now(format)` for the directives chat templates use (`%d %b %Y`, `%Y-%m-%d`, …),
/// in UTC.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(format, secs)
}

fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = unix_secs.div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_with_jinja2_whitespace_rules_and_python_methods() {
        let template = "{%- for m in messages %}\n{%- if m.role == 'user' %}\n<u>{{ m.content.strip() }}</u>\n{%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}<a>{% endif %}";
        let ctx = json!({"messages": [{"role": "user", "content": "  hi  "}], "add_generation_prompt": true});
        assert_eq!(render_template(template, &ctx).unwrap(), "<u>hi</u><a>");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let e = render_template("{{ raise_exception('bad role') }}", &json!({})).unwrap_err();
        assert!(format!("{e:#}").contains("bad role"));
    }

    #[test]
    fn tojson_writes_like_python() {
        let ctx =
            json!({"x": {"name": "f", "args": [1, 2.0, "<a & b>"], "ok": true, "none": null}});
        assert_eq!(
            render_template("{{ x | tojson }}", &ctx).unwrap(),
            r#"{"name": "f", "args": [1, 2.0, "<a & b>"], "ok": true, "none": null}"#
        );
        assert_eq!(
            render_template("{{ [1] | tojson(indent=2) }}", &ctx).unwrap(),
            "[\n  1\n]"
        );
    }

    #[test]
    fn strftime_formats_civil_dates() {
        // 2024-02-29 12:00 UTC
        assert_eq!(strftime("%d %b %Y", 1_709_208_000), "29 Feb 2024");
        assert_eq!(strftime("%Y-%m-%d %%", 0), "1970-01-01 %");
    }
}
