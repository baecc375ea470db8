//! Errors: [`ApiError`] is what a client sees (an HTTP status and the OpenAI JSON error body, never
//! internal details); [`ServerError`] is what the library returns to the program that hosts it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ulm_openai::ErrorBody;

/// An error reply: status, OpenAI error body and, for 429/503, a `Retry-After` in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `{"error": {"message", "type", "param", "code"}}` (boxed: errors travel in `Result`s).
    pub body: Box<ErrorBody>,
    /// Seconds to wait before trying again.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, kind: &str) -> Self {
        ApiError { status, body: Box::new(ErrorBody::new(message, kind)), retry_after: None }
    }

    /// 400: the request is malformed or asks for something out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, "invalid_request_error")
    }

    /// 400 naming the field at fault.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        let mut e = Self::bad_request(message);
        e.body = Box::new(e.body.with_param(param));
        e
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key; send it as `Authorization: Bearer KEY`",
            "authentication_error",
        );
        e.body = Box::new(e.body.with_code("invalid_api_key"));
        e
    }

    /// 404: no such model.
    pub fn model_not_found(name: &str, known: &[String]) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            format!("model `{name}` is not served here; GET /v1/models lists: {}", known.join(", ")),
            "invalid_request_error",
        );
        e.body = Box::new(e.body.with_param("model").with_code("model_not_found"));
        e
    }

    /// 404: no such endpoint.
    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no endpoint {path}; see GET /v1/models, POST /v1/chat/completions, POST /v1/completions, POST /api/handoff"), "invalid_request_error")
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint", "invalid_request_error")
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than the limit of {limit} bytes"), "invalid_request_error")
    }

    /// 429: the queue is full.
    pub fn queue_full(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("the server is busy (every generation slot and queue place is taken); retry after {retry_after} s"),
            "rate_limit_error",
        );
        e.body = Box::new(e.body.with_code("queue_full"));
        e.retry_after = Some(retry_after);
        e
    }

    /// 503: waited too long for a slot, or shutting down.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, message, "server_error");
        e.body = Box::new(e.body.with_code("overloaded"));
        e.retry_after = Some(retry_after);
        e
    }

    /// 500 with a generic message; the detail goes to the server's log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("ulm-server: internal error: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "the server failed to generate a reply; see its log", "server_error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status.as_u16(), self.body.error.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let json = serde_json::to_string(&*self.body).unwrap_or_default();
        let mut res = (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

/// What the hosting program is told when the server cannot be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No model was given.
    #[error("no model to serve: give at least one ServedModel")]
    NoModels,
    /// Two models share a name.
    #[error("model name `{0}` is used twice; give each served model its own id")]
    DuplicateModel(String),
    /// The edge or cloud model named in the config is not among the served models.
    #[error("{role} model `{name}` is not among the served models ({known})")]
    UnknownModel {
        /// `edge` or `cloud`.
        role: &'static str,
        /// The name asked for.
        name: String,
        /// The served names.
        known: String,
    },
    /// A setting is out of range.
    #[error("server setting `{key}`: {message}")]
    Config {
        /// The setting.
        key: &'static str,
        /// What is wrong and the fix.
        message: String,
    },
    /// The base handoff config is unusable.
    #[error("handoff config: {0}")]
    Handoff(#[from] ulm_handoff::ConfigError),
    /// Listening or serving failed.
    #[error("serving on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}
