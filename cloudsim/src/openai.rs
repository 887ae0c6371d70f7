//! The OpenAI Chat Completions wire format: requests as the simulator reads them, and replies
//! and error bodies as the API writes them.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::seeded::Digest32;

/// One message of a chat request, reduced to what the oracle reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// The content; the text parts of a multi-part content joined by newlines.
    pub text: String,
}

/// A `POST /v1/chat/completions` body, checked. Fields the simulator does not use are ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The requested model, if any.
    pub model: Option<String>,
    /// The conversation; at least one message has the role `user`.
    pub messages: Vec<Message>,
    /// Sampling temperature (only part of the request's identity: the oracle is deterministic).
    pub temperature: Option<f64>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
}

/// Why a request is a 400, and which parameter is at fault (the error body's `param`).
#[derive(Clone, Debug, PartialEq)]
pub struct BadRequest {
    /// The error body's `message`.
    pub message: String,
    /// The error body's `param`.
    pub param: Option<String>,
}

fn bad(message: impl Into<String>, param: Option<&str>) -> BadRequest {
    BadRequest {
        message: message.into(),
        param: param.map(str::to_owned),
    }
}

impl ChatRequest {
    /// Reads and checks a request body.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, BadRequest> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            bad(
                format!("We could not parse the JSON body of your request: {e}"),
                None,
            )
        })?;
        let Value::Object(body) = value else {
            return Err(bad("The request body must be a JSON object.", None));
        };
        if body.get("stream") == Some(&Value::Bool(true)) {
            return Err(bad(
                "cloud-sim does not stream responses; send `stream: false`.",
                Some("stream"),
            ));
        }
        let model = match body.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(model)) => Some(model.clone()),
            Some(_) => return Err(bad("`model` must be a string.", Some("model"))),
        };
        let messages = match body.get("messages") {
            Some(Value::Array(messages)) if !messages.is_empty() => messages
                .iter()
                .enumerate()
                .map(|(i, m)| message(i, m))
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => {
                return Err(bad("`messages` must not be empty.", Some("messages")));
            }
            Some(_) => return Err(bad("`messages` must be an array.", Some("messages"))),
            None => {
                return Err(bad(
                    "you must provide a `messages` parameter",
                    Some("messages"),
                ));
            }
        };
        if !messages.iter().any(|m| m.role == "user") {
            return Err(bad(
                "`messages` must contain a message with the role `user`.",
                Some("messages"),
            ));
        }
        let temperature = match body.get("temperature") {
            None | Some(Value::Null) => None,
            Some(Value::Number(t)) => t.as_f64(),
            Some(_) => {
                return Err(bad("`temperature` must be a number.", Some("temperature")));
            }
        };
        let max_tokens = match token_limit(&body, "max_completion_tokens")? {
            Some(limit) => Some(limit),
            None => token_limit(&body, "max_tokens")?,
        };
        Ok(ChatRequest {
            model,
            messages,
            temperature,
            max_tokens,
        })
    }

    /// The text of the last user message: what the oracle answers.
    pub fn question(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or("", |m| m.text.as_str())
    }

    /// The request's identity: SHA-256 of the canonical JSON of its messages, model,
    /// temperature and token limit. Faults and latency are drawn from it.
    pub fn request_hash(&self) -> Digest32 {
        let canonical = json!({
            "messages": self.canonical_messages(),
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        });
        Sha256::digest(canonical.to_string()).into()
    }

    /// The question's identity: SHA-256 of the canonical JSON of the messages alone. Whether
    /// the answer is right is drawn from it, so a question keeps its answer whatever the
    /// sampling settings or the order requests arrive in.
    pub fn question_hash(&self) -> Digest32 {
        Sha256::digest(self.canonical_messages().to_string()).into()
    }

    fn canonical_messages(&self) -> Value {
        self.messages
            .iter()
            .map(|m| json!([m.role, m.text]))
            .collect()
    }

    /// The prompt's size in tokens, estimated as for [`estimate_tokens`].
    pub fn prompt_tokens(&self) -> u64 {
        estimate_tokens(self.messages.iter().map(|m| m.text.len()).sum())
    }
}

fn message(index: usize, value: &Value) -> Result<Message, BadRequest> {
    let param = format!("messages.[{index}]");
    let Some(Value::String(role)) = value.get("role") else {
        return Err(bad(
            format!("`{param}.role` must be a string."),
            Some(&param),
        ));
    };
    let text = match value.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for part in parts {
                match (part.get("type"), part.get("text")) {
                    (Some(Value::String(kind)), Some(Value::String(text))) if kind == "text" => {
                        texts.push(text.as_str());
                    }
                    (Some(Value::String(kind)), _) if kind == "text" => {
                        return Err(bad(
                            format!("a text part of `{param}.content` needs a string `text`."),
                            Some(&param),
                        ));
                    }
                    // Images, audio and the like: the oracle reads text only.
                    (Some(Value::String(_)), _) => {}
                    _ => {
                        return Err(bad(
                            format!("each part of `{param}.content` needs a string `type`."),
                            Some(&param),
                        ));
                    }
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(bad(
                format!("`{param}.content` must be a string or an array of parts."),
                Some(&param),
            ));
        }
    };
    Ok(Message {
        role: role.clone(),
        text,
    })
}

fn token_limit(
    body: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, BadRequest> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(limit) if limit >= 1 => Ok(Some(limit)),
            _ => Err(bad(
                format!("`{name}` must be an integer of at least 1."),
                Some(name),
            )),
        },
    }
}

/// Tokens in a text of `bytes` bytes: about one per 4 bytes (English BPE averages), at least 1.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

/// Cuts `content` to what `max_tokens` allows; the second value is the finish reason.
pub fn limit_content(content: String, max_tokens: Option<u64>) -> (String, &'static str) {
    let Some(limit) = max_tokens else {
        return (content, "stop");
    };
    if estimate_tokens(content.len()) <= limit {
        return (content, "stop");
    }
    let mut end = usize::try_from(limit.saturating_mul(4)).unwrap_or(usize::MAX);
    while !content.is_char_boundary(end) {
        end -= 1;
    }
    (content[..end].to_owned(), "length")
}

/// A `chat.completion` object.
pub struct Completion<'a> {
    /// `chatcmpl-…`.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// The model named in the reply.
    pub model: &'a str,
    /// The assistant message.
    pub content: &'a str,
    /// `stop`, or `length` when `max_tokens` cut the content.
    pub finish_reason: &'a str,
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// Estimated completion tokens.
    pub completion_tokens: u64,
}

impl Completion<'_> {
    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.content, "refusal": null},
                "logprobs": null,
                "finish_reason": self.finish_reason,
            }],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
            "system_fingerprint": "fp_cloud_sim",
        })
        .to_string()
        .into_bytes()
    }
}

/// An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Vec<u8> {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
        .to_string()
        .into_bytes()
}

fn model_object(model: &str, created: u64) -> Value {
    json!({"id": model, "object": "model", "created": created, "owned_by": "tandem"})
}

/// The `GET /v1/models` body.
pub fn models_body(model: &str, created: u64) -> Vec<u8> {
    json!({"object": "list", "data": [model_object(model, created)]})
        .to_string()
        .into_bytes()
}

/// The `GET /v1/models/{model}` body.
pub fn model_body(model: &str, created: u64) -> Vec<u8> {
    model_object(model, created).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, BadRequest> {
        ChatRequest::parse(body.as_bytes())
    }

    #[test]
    fn requests_read_string_and_part_contents() {
        let request = parse(
            r#"{"model": "m", "temperature": 0, "max_tokens": 64, "seed": 3,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "What is"},
                                                 {"type": "image_url", "image_url": {"url": "x"}},
                                                 {"type": "text", "text": "2 + 2?"}]},
                    {"role": "assistant", "content": null},
                    {"role": "user", "content": "What is 3 + 3?"}]}"#,
        )
        .unwrap();
        assert_eq!(request.messages.len(), 4);
        assert_eq!(request.messages[1].text, "What is\n2 + 2?");
        assert_eq!(request.question(), "What is 3 + 3?");
        assert_eq!(request.max_tokens, Some(64));
        assert_eq!(request.temperature, Some(0.0));
        // 9 + 14 + 14 bytes of text.
        assert_eq!(request.prompt_tokens(), 10);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("not json", None),
            ("[1]", None),
            ("{}", Some("messages")),
            (r#"{"messages": []}"#, Some("messages")),
            (
                r#"{"messages": [{"role": "system", "content": "x"}]}"#,
                Some("messages"),
            ),
            (r#"{"messages": [{"content": "x"}]}"#, Some("messages.[0]")),
            (
                r#"{"messages": [{"role": "user", "content": 5}]}"#,
                Some("messages.[0]"),
            ),
            (
                r#"{"messages": [{"role": "user", "content": [{"type": "text"}]}]}"#,
                Some("messages.[0]"),
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "stream": true}"#,
                Some("stream"),
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "model": 1}"#,
                Some("model"),
            ),
        ];
        for (body, param) in cases {
            let error = parse(body).unwrap_err();
            assert_eq!(error.param.as_deref(), param, "{body}: {}", error.message);
        }
    }

    #[test]
    fn hashes_identify_requests_and_questions() {
        let a = parse(r#"{"model": "m", "messages": [{"role": "user", "content": "Q"}]}"#).unwrap();
        let same =
            parse(r#"{"messages": [{"content": "Q", "role": "user"}], "model": "m", "user": "u"}"#)
                .unwrap();
        let warmer = parse(
            r#"{"model": "m", "temperature": 1, "messages": [{"role": "user", "content": "Q"}]}"#,
        )
        .unwrap();
        assert_eq!(a.request_hash(), same.request_hash());
        assert_ne!(a.request_hash(), warmer.request_hash());
        assert_eq!(a.question_hash(), warmer.question_hash());
    }

    #[test]
    fn max_tokens_cuts_long_content() {
        assert_eq!(
            limit_content("abcdefgh".into(), Some(2)),
            ("abcdefgh".into(), "stop")
        );
        assert_eq!(
            limit_content("abcdefghi".into(), Some(2)),
            ("abcdefgh".into(), "length")
        );
        assert_eq!(
            limit_content("ééééé".into(), Some(1)),
            ("éé".into(), "length")
        );
        assert_eq!(estimate_tokens(0), 1);
    }
}
