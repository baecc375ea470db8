//! What can go wrong while scoring or writing a report.

/// An eval failure; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model failed (tokenizer, context, weights).
    #[error(transparent)]
    Runtime(#[from] ulm_runtime::Error),
    /// The text does not fit the scorer's context.
    #[error("{tokens} tokens exceed the scorer's context of {ctx}; raise --ctx or shorten the prompt")]
    ContextFull {
        /// Tokens needed.
        tokens: usize,
        /// Tokens the session holds.
        ctx: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A row could not be serialized.
    #[error("cannot serialize a row: {0}")]
    Json(#[from] serde_json::Error),
}

impl EvalError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        EvalError::Io { path: path.display().to_string(), source }
    }
}
