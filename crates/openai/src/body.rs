//! The one-pass body parser and the byte-preserving `model` splice.

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ApiKind;

/// Why a body was refused; each maps to HTTP 400 with this text as the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("model not found in request body")]
    MissingModel,
    #[error("model must be a non-empty string")]
    BadModel,
    #[error("prompt not found in request body")]
    MissingPrompt,
    #[error("messages not found in request body")]
    MissingMessages,
    #[error("input not found in request body")]
    MissingInput,
    #[error("{0} has the wrong type")]
    WrongType(&'static str),
}

impl ParseError {
    /// A short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::NotJson(_) => "not_json",
            ParseError::NotAnObject => "not_object",
            ParseError::MissingModel => "missing_model",
            ParseError::BadModel => "bad_model",
            ParseError::MissingPrompt => "missing_prompt",
            ParseError::MissingMessages => "missing_messages",
            ParseError::MissingInput => "missing_input",
            ParseError::WrongType(_) => "wrong_type",
        }
    }
}

/// What the picker learns from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub kind: ApiKind,
    /// The requested model; `None` only for [`ApiKind::Other`] bodies without one.
    pub model: Option<String>,
    /// Byte range of the `model` JSON value (quotes included) inside the body.
    pub model_span: Option<Range<usize>>,
    /// Byte range of the prompt-bearing value (`prompt`, `messages` or `input`), raw JSON; what
    /// prefix-cache affinity hashes.
    pub prompt_span: Option<Range<usize>>,
    pub stream: bool,
    /// `stream_options.include_usage`: the response stream will carry a usage object.
    pub include_usage: bool,
    /// `max_tokens` or `max_completion_tokens` / `max_output_tokens`, when given.
    pub max_tokens: Option<u64>,
}

/// The top-level fields the picker reads; everything else is validated and skipped.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Decodes an optional raw field; a value of the wrong type is reported by field name.
fn typed<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Option<T>, ParseError> {
    raw.map(|r| serde_json::from_str::<Option<T>>(r.get()))
        .transpose()
        .map(Option::flatten)
        .map_err(|_| ParseError::WrongType(field))
}

/// Parses a request body of `kind` in a single pass.
pub fn parse_request(kind: ApiKind, body: &[u8]) -> Result<ParsedRequest, ParseError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(ParseError::NotJson("empty body".into())),
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            // Valid JSON or not, a non-object can never be a request; say which when we can.
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => ParseError::NotAnObject,
                    Err(e) => ParseError::NotJson(e.to_string()),
                },
            );
        }
        Some(_) => {}
    }
    let fields: Fields<'_> =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;

    let (model, model_span) = match fields.model {
        Some(raw) => {
            let name: String = serde_json::from_str(raw.get()).map_err(|_| ParseError::BadModel)?;
            if name.is_empty() {
                return Err(ParseError::BadModel);
            }
            (Some(name), Some(span_of(body, raw)))
        }
        None if kind == ApiKind::Other => (None, None),
        None => return Err(ParseError::MissingModel),
    };

    let required_present = match kind {
        ApiKind::Completions => fields
            .prompt
            .is_some()
            .then_some(())
            .ok_or(ParseError::MissingPrompt),
        ApiKind::ChatCompletions => fields
            .messages
            .is_some()
            .then_some(())
            .ok_or(ParseError::MissingMessages),
        ApiKind::Embeddings => fields
            .input
            .is_some()
            .then_some(())
            .ok_or(ParseError::MissingInput),
        ApiKind::Responses => (fields.input.is_some() || fields.instructions.is_some())
            .then_some(())
            .ok_or(ParseError::MissingInput),
        ApiKind::Other => Ok(()),
    };
    required_present?;

    let stream_options: Option<StreamOptions> = typed(fields.stream_options, "stream_options")?;
    let max_tokens = typed::<u64>(fields.max_tokens, "max_tokens")?
        .or(typed(
            fields.max_completion_tokens,
            "max_completion_tokens",
        )?)
        .or(typed(fields.max_output_tokens, "max_output_tokens")?);
    let prompt_span = fields
        .prompt
        .or(fields.messages)
        .or(fields.input)
        .map(|raw| span_of(body, raw));
    Ok(ParsedRequest {
        kind,
        model,
        model_span,
        prompt_span,
        stream: typed(fields.stream, "stream")?.unwrap_or(false),
        include_usage: stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens,
    })
}

/// Byte range of a borrowed raw value inside `body`.
fn span_of(body: &[u8], raw: &RawValue) -> Range<usize> {
    // `raw` borrows from `body` (serde_json's borrowed RawValue), so the offset is a pointer
    // difference; it is checked against the body so a bug cannot produce an out-of-range splice.
    let start = (raw.get().as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let end = start.wrapping_add(raw.get().len());
    assert!(
        end <= body.len() && start <= end,
        "raw value borrowed outside the body"
    );
    start..end
}

/// Returns `body` with the `model` value at `span` replaced by `new_model` (JSON-escaped).
/// Every other byte is copied unchanged.
pub fn rewrite_model(body: &[u8], span: Range<usize>, new_model: &str) -> Vec<u8> {
    let encoded = serde_json::to_string(new_model).unwrap_or_else(|_| format!("\"{new_model}\""));
    let mut out = Vec::with_capacity(body.len() - span.len() + encoded.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: ApiKind, body: &str) -> Result<ParsedRequest, ParseError> {
        parse_request(kind, body.as_bytes())
    }

    #[test]
    fn accepted_bodies() {
        let p = parse(
            ApiKind::Completions,
            r#"{"model":"tweet-summary","prompt":["a","b"],"stream":true,"stream_options":{"include_usage":true},"max_tokens":7}"#,
        )
        .unwrap();
        assert_eq!(p.model.as_deref(), Some("tweet-summary"));
        assert!(p.stream && p.include_usage);
        assert_eq!(p.max_tokens, Some(7));
        let body = r#"{"model":"tweet-summary","prompt":["a","b"],"stream":true,"stream_options":{"include_usage":true},"max_tokens":7}"#;
        assert_eq!(&body[p.prompt_span.unwrap()], r#"["a","b"]"#);

        let chat = parse(
            ApiKind::ChatCompletions,
            r#"{"messages":[{"role":"user","content":"hi","model":"decoy"}],"model":"m1"}"#,
        )
        .unwrap();
        assert_eq!(
            chat.model.as_deref(),
            Some("m1"),
            "only the top-level model counts"
        );
        assert!(parse(ApiKind::Embeddings, r#"{"model":"e","input":"x"}"#).is_ok());
        assert!(parse(ApiKind::Responses, r#"{"model":"r","input":"x"}"#).is_ok());
        let other = parse(ApiKind::Other, r#"{"x":1}"#).unwrap();
        assert_eq!(other.model, None);
    }

    #[test]
    fn refused_bodies() {
        let table: &[(ApiKind, &str, &str)] = &[
            (ApiKind::Completions, "{not json", "not_json"),
            (ApiKind::Completions, "", "not_json"),
            (ApiKind::Completions, "[1,2]", "not_object"),
            (ApiKind::Completions, "\"text\"", "not_object"),
            (ApiKind::Completions, r#"{"prompt":"x"}"#, "missing_model"),
            (
                ApiKind::Completions,
                r#"{"model":null,"prompt":"x"}"#,
                "missing_model",
            ),
            (
                ApiKind::Completions,
                r#"{"model":7,"prompt":"x"}"#,
                "bad_model",
            ),
            (
                ApiKind::Completions,
                r#"{"model":"","prompt":"x"}"#,
                "bad_model",
            ),
            (ApiKind::Completions, r#"{"model":"m"}"#, "missing_prompt"),
            (
                ApiKind::ChatCompletions,
                r#"{"model":"m","prompt":"x"}"#,
                "missing_messages",
            ),
            (ApiKind::Embeddings, r#"{"model":"m"}"#, "missing_input"),
            (ApiKind::Responses, r#"{"model":"m"}"#, "missing_input"),
            (
                ApiKind::Completions,
                r#"{"model":"m","prompt":"x","stream":"yes"}"#,
                "wrong_type",
            ),
            (
                ApiKind::Completions,
                r#"{"model":"a","model":"b","prompt":"x"}"#,
                "not_json",
            ),
            (
                ApiKind::Completions,
                r#"{"model":"m","prompt":"x"} trailing"#,
                "not_json",
            ),
        ];
        for (kind, body, label) in table {
            let err = parse(*kind, body).unwrap_err();
            assert_eq!(err.label(), *label, "{body}: {err}");
        }
    }

    #[test]
    fn rewrite_changes_only_the_model_value() {
        let body = "{ \"prompt\" : \"x\\\"y\",\n  \"model\":\t\"tweet-summary\" , \"z\":[1, 2] }";
        let parsed = parse(ApiKind::Completions, body).unwrap();
        let span = parsed.model_span.unwrap();
        assert_eq!(&body[span.clone()], "\"tweet-summary\"");
        let out = rewrite_model(body.as_bytes(), span, "tweet-summary-1");
        let want = body.replace("\"tweet-summary\"", "\"tweet-summary-1\"");
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn rewrite_escapes_and_round_trips() {
        let body = r#"{"model":"caf\u00e9","prompt":"p"}"#;
        let parsed = parse(ApiKind::Completions, body).unwrap();
        assert_eq!(parsed.model.as_deref(), Some("café"));
        let out = rewrite_model(body.as_bytes(), parsed.model_span.unwrap(), "a\"b\\c");
        let again = parse_request(ApiKind::Completions, &out).unwrap();
        assert_eq!(again.model.as_deref(), Some("a\"b\\c"));
    }

    #[test]
    fn large_prompt_parses() {
        let prompt = "word ".repeat(400_000);
        let body = format!(r#"{{"model":"m","prompt":"{prompt}"}}"#);
        let parsed = parse(ApiKind::Completions, &body).unwrap();
        assert_eq!(parsed.model_span, Some(9..12));
    }
}
