//! What can go wrong in a handoff. Every message names the problem and the fix; none holds the
//! API key or a request header.

use serde::ser::SerializeStruct;

use crate::config::ConfigError;
use crate::opener::OpenerError;

/// A handoff failure. The reply that carries it still holds the text produced so far.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API key variable named in the config is not set.
    #[error("environment variable `{var}` (named by `api_key_env`) is not set or empty; export it with the provider's API key")]
    MissingApiKey {
        /// The variable's name.
        var: String,
    },
    /// A header in the config cannot be sent.
    #[error("header `{name}` in `headers` cannot be sent: {detail}")]
    InvalidHeader {
        /// The header's name.
        name: String,
        /// Why.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The local model failed.
    #[error(transparent)]
    Opener(#[from] OpenerError),
    /// No connection could be made.
    #[error("cannot connect to {url}: {detail}; is the server running and is `base_url` right?")]
    Connect {
        /// The endpoint.
        url: String,
        /// The transport's message.
        detail: String,
    },
    /// The first token did not come in time.
    #[error("{url} sent no continuation within {ms} ms; raise `timeouts.first_token_ms` or use a faster provider")]
    FirstTokenTimeout {
        /// The endpoint.
        url: String,
        /// The limit.
        ms: u64,
    },
    /// The stream went silent.
    #[error("{url} went silent for {ms} ms in the middle of the continuation; raise `timeouts.idle_ms` if the server is just slow")]
    IdleTimeout {
        /// The endpoint.
        url: String,
        /// The limit.
        ms: u64,
    },
    /// The whole cloud phase took too long.
    #[error("the cloud took longer than `timeouts.total_ms` = {ms} ms in all (retries included)")]
    TotalTimeout {
        /// The limit.
        ms: u64,
    },
    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}: {message}; {}", http_hint(*status))]
    Http {
        /// The endpoint.
        url: String,
        /// The status code.
        status: u16,
        /// The server's message (from the OpenAI error body when there is one).
        message: String,
        /// The error `type` from the body, if any.
        kind: Option<String>,
    },
    /// The server kept answering 429.
    #[error("{url} is rate limiting (HTTP 429: {message}){}; gave up after {attempts} attempt(s); wait, or raise `retry.max_retry_after_ms`",
        retry_after_ms.map(|ms| format!(", asked to wait {ms} ms")).unwrap_or_default())]
    RateLimited {
        /// The endpoint.
        url: String,
        /// The server's message.
        message: String,
        /// What `Retry-After` asked for.
        retry_after_ms: Option<u64>,
        /// Attempts made.
        attempts: u32,
    },
    /// The stream ended before the reply did.
    #[error("the stream from {url} stopped before the reply was finished ({detail}) after {chars} characters of continuation; the server or a proxy cut it")]
    StreamCut {
        /// The endpoint.
        url: String,
        /// How it ended.
        detail: String,
        /// Characters of continuation received.
        chars: usize,
    },
    /// The stream is not SSE, or its payloads are not the provider's JSON.
    #[error("the stream from {url} is malformed: {detail}; check that `provider` matches the server's API")]
    Malformed {
        /// The endpoint.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The server sent an error event in the middle of the stream.
    #[error("{url} reported an error mid-stream: {message}")]
    StreamError {
        /// The endpoint.
        url: String,
        /// The server's message.
        message: String,
    },
    /// The cloud sent nothing to follow an unfinished opener.
    #[error("{url} sent an empty continuation for an unfinished opener; the model may not support continuing a reply — try another `provider`")]
    EmptyContinuation {
        /// The endpoint.
        url: String,
    },
}

fn http_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check the API key in the variable named by `api_key_env`",
        404 => "check `base_url` (the API root, usually ending in /v1) and `model`",
        400 | 422 => "the server rejected the request; if it mentions prefill, prefix or continue_final_message, choose another `provider`",
        408 | 504 => "the server timed out; try again or raise its timeout",
        429 => "rate limited; wait and try again",
        500..=599 => "the server failed; try again later",
        _ => "see the server's message",
    }
}

impl HandoffError {
    /// A short stable name for the kind of error (`connect`, `http`, `stream_cut`, ...), for logs
    /// and the `error` SSE event.
    pub fn kind(&self) -> &'static str {
        match self {
            HandoffError::Config(_) => "config",
            HandoffError::MissingApiKey { .. } => "missing_api_key",
            HandoffError::InvalidHeader { .. } => "invalid_header",
            HandoffError::Client(_) => "client",
            HandoffError::Opener(_) => "opener",
            HandoffError::Connect { .. } => "connect",
            HandoffError::FirstTokenTimeout { .. } => "first_token_timeout",
            HandoffError::IdleTimeout { .. } => "idle_timeout",
            HandoffError::TotalTimeout { .. } => "total_timeout",
            HandoffError::Http { .. } => "http",
            HandoffError::RateLimited { .. } => "rate_limited",
            HandoffError::StreamCut { .. } => "stream_cut",
            HandoffError::Malformed { .. } => "malformed",
            HandoffError::StreamError { .. } => "stream_error",
            HandoffError::EmptyContinuation { .. } => "empty_continuation",
        }
    }
}

/// Serialized as `{"kind": ..., "message": ...}`.
impl serde::Serialize for HandoffError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("HandoffError", 2)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}
