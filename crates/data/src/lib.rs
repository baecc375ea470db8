//! ulm-data: the reproducible data builder of ulm — sources, cleaning, deduplication, the
//! held-out split, distillation prompts and token shards.
//!
//! ```no_run
//! use ulm_data::{sources, Split};
//! let docs = sources::load_all(std::path::Path::new("assets")).unwrap();
//! let train = docs.iter().filter(|d| d.split() == Split::Train).count();
//! println!("{train} training documents");
//! ```
#![deny(missing_docs)]

pub mod build;
pub mod clean;
pub mod distilled;
pub mod eval;
pub mod instruct;
pub mod invent;
pub mod pref;
pub mod prompts;
pub mod render;
pub mod shards;
pub mod sources;
pub mod split;
pub mod tokenizer;

pub use sources::{Body, Document, Role, Turn};
pub use split::Split;

/// Errors of the data builder; each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source file is missing or unreadable.
    #[error("{path}: {source} (run scripts/fetch-assets.sh to fetch the data sources)")]
    Io {
        /// File involved.
        path: std::path::PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// An output file cannot be written.
    #[error("{path}: {source} (check that the output folder is writable and the disk has room)")]
    Write {
        /// File involved.
        path: std::path::PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The tokenizer cannot be trained, loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A source file does not parse.
    #[error("{path}: {msg}")]
    Parse {
        /// File involved.
        path: std::path::PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// Result alias of ulm-data.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_owned(), source })
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::{Body, Document, Role, Turn};

    /// A chat document whose turns alternate user, assistant, user, ... from `texts`.
    pub fn chat(source: &'static str, id: &str, texts: &[&str]) -> Document {
        let turns = texts
            .iter()
            .enumerate()
            .map(|(k, t)| Turn { role: if k % 2 == 0 { Role::User } else { Role::Assistant }, text: t.to_string() })
            .collect();
        Document { source, id: id.into(), body: Body::Chat(turns) }
    }

    /// A fresh, empty folder under the system temp dir, unique to this process and `name`.
    pub fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ulm-data-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
