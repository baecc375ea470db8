//! The OpenAI error body: `{"error":{"message","type","param","code"}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The JSON body of an error reply.
///
/// ```
/// use ulm_openai::error::ErrorBody;
/// let body = ErrorBody::new("model `x` not found", "invalid_request_error").with_code("model_not_found");
/// let json = serde_json::to_string(&body).unwrap();
/// assert_eq!(json, r#"{"error":{"message":"model `x` not found","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#);
/// assert_eq!(ErrorBody::parse(json.as_bytes()).unwrap().error.message, "model `x` not found");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Category, e.g. `invalid_request_error`, `rate_limit_error`, `server_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The request field at fault, if any.
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code: a string for OpenAI, the HTTP status number for llama.cpp.
    #[serde(default)]
    pub code: Option<Value>,
}

impl ErrorBody {
    /// An error with `message` and `type`, no param and no code.
    pub fn new(message: impl Into<String>, kind: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { message: message.into(), kind: kind.into(), param: None, code: None } }
    }

    /// Sets `param`.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }

    /// Sets `code`.
    pub fn with_code(mut self, code: impl Into<Value>) -> Self {
        self.error.code = Some(code.into());
        self
    }

    /// Reads an error body, also accepting the shapes other servers use: Anthropic's
    /// `{"type":"error","error":{"type","message"}}`, a bare `{"message": ...}` or `{"error": "text"}`.
    /// `None` if the bytes are none of these.
    pub fn parse(bytes: &[u8]) -> Option<ErrorBody> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        match v.get("error") {
            Some(Value::String(s)) => return Some(ErrorBody::new(s.clone(), "")),
            Some(obj @ Value::Object(_)) => return serde_json::from_value(obj.clone()).ok().map(|error| ErrorBody { error }),
            _ => {}
        }
        let message = v.get("message")?.as_str()?.to_string();
        Some(ErrorBody::new(message, v.get("type").and_then(Value::as_str).unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_openai_llama_cpp_anthropic_and_bare_shapes() {
        let openai = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let b = ErrorBody::parse(openai).unwrap();
        assert_eq!((b.error.message.as_str(), b.error.kind.as_str()), ("Rate limit reached", "requests"));
        assert_eq!(b.error.code, Some(json!("rate_limit_exceeded")));
        let llama = br#"{"error":{"code":400,"message":"Cannot set both","type":"invalid_request_error"}}"#;
        assert_eq!(ErrorBody::parse(llama).unwrap().error.code, Some(json!(400)));
        let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(ErrorBody::parse(anthropic).unwrap().error.kind, "overloaded_error");
        assert_eq!(ErrorBody::parse(br#"{"error":"boom"}"#).unwrap().error.message, "boom");
        assert_eq!(ErrorBody::parse(br#"{"message":"nope"}"#).unwrap().error.message, "nope");
        assert!(ErrorBody::parse(b"<html>502 Bad Gateway</html>").is_none());
        assert!(ErrorBody::parse(br#"{"ok":true}"#).is_none());
    }

    #[test]
    fn serializes_all_four_fields() {
        let v = serde_json::to_value(ErrorBody::new("m", "t").with_param("p").with_code(429)).unwrap();
        assert_eq!(v, json!({"error": {"message": "m", "type": "t", "param": "p", "code": 429}}));
    }
}
