//! The one error type of ulm-runtime. Every message names the file or value and the fix.

use std::path::PathBuf;

/// Errors from loading, tokenizing and generating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{path}: {source} (check the path; `ulm generate --help` lists the model names)")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not in the expected format or is corrupted.
    #[error("{path}: {msg}")]
    Format {
        /// File involved.
        path: PathBuf,
        /// What is wrong and, where known, the fix.
        msg: String,
    },
    /// The file ends before a tensor or header it declares.
    #[error("{path}: truncated: {what} needs bytes {start}..{end} but the file has {len} (re-download or re-export it)")]
    Truncated {
        /// File involved.
        path: PathBuf,
        /// Tensor or header that is cut.
        what: String,
        /// First byte needed.
        start: u64,
        /// One past the last byte needed.
        end: u64,
        /// Actual file length.
        len: u64,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: tensor `{name}` is missing (is this a Llama-architecture checkpoint?)")]
    MissingTensor {
        /// File involved.
        path: PathBuf,
        /// Tensor name.
        name: String,
    },
    /// A tensor has the wrong shape for the config.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// File involved.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Shape the config implies (outermost dimension first).
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor type this runtime does not run.
    #[error("{path}: tensor `{name}` has type {found}, supported: {supported}")]
    DType {
        /// File involved.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Type in the file.
        found: String,
        /// Types accepted here.
        supported: String,
    },
    /// The model configuration is invalid or unsupported.
    #[error("{path}: config: {msg}")]
    Config {
        /// File involved (config.json or the GGUF file).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Tokenizer loading or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be parsed or rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// A request the model cannot serve (empty prompt, too long, bad token id).
    #[error("{0}")]
    Request(String),
}

/// Result alias of ulm-runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }
}
