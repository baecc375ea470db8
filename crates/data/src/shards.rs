//! Token shards and their manifest, in exactly the format `train/data.py` reads.
//!
//! ```no_run
//! use ulm_data::shards::{Manifest, ShardWriter};
//! use ulm_data::Split;
//! let dir = std::path::Path::new("runs/data/lm");
//! let mut w = ShardWriter::new(dir, Split::Train, 8 << 20)?;
//! w.push(&[1, 872, 2], &[0, 1, 1])?;
//! let entries = w.finish()?;
//! let back = Manifest::read(dir)?; // after writing one with these entries
//! # Ok::<(), ulm_data::Error>(())
//! ```
//!
//! A data directory holds `manifest.json`, `{train,heldout}-NNN.u16` (flat little-endian u16
//! token ids) and `.u8` files of the same length (the loss class of each token as a prediction
//! target: 0, 1 or 2), plus `tokenizer.json` and `tokenizer_config.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::split::Split;
use crate::{Error, Result};

/// One shard as listed in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File of token ids (u16 little-endian).
    pub tokens: String,
    /// File of loss classes (u8).
    pub mask: String,
    /// Tokens in the shard.
    pub n_tokens: u64,
    /// `train` or `heldout`.
    pub split: String,
}

/// Documents and tokens of one source in one split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Documents (chats, texts, distilled pairs).
    pub documents: u64,
    /// Tokens, template tokens included.
    pub tokens: u64,
    /// Tokens with a loss (class 1 or 2).
    pub loss_tokens: u64,
    /// Tokens of class 2 (openers).
    pub opener_tokens: u64,
}

impl Counts {
    /// Adds one document of these classes.
    pub fn add(&mut self, classes: &[u8]) {
        self.documents += 1;
        self.tokens += classes.len() as u64;
        self.loss_tokens += classes.iter().filter(|&&c| c > 0).count() as u64;
        self.opener_tokens += classes.iter().filter(|&&c| c == 2).count() as u64;
    }
}

/// Per-source provenance and counts for the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Source name.
    pub name: String,
    /// Licence of the source.
    pub licence: String,
    /// Where it comes from.
    pub origin: String,
    /// Training split.
    pub train: Counts,
    /// Held-out split.
    pub heldout: Counts,
    /// Documents read before cleaning.
    pub read: u64,
    /// Dropped as empty.
    pub dropped_empty: u64,
    /// Dropped as too long.
    pub dropped_long: u64,
    /// Dropped as a duplicate (same normalised text) of an earlier document of any source.
    pub dropped_duplicate: u64,
    /// Dropped because a user turn is an evaluation prompt.
    pub dropped_eval: u64,
    /// Distilled only: dropped by the reply filters, by reason.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dropped_filter: std::collections::BTreeMap<String, u64>,
    /// Not selected for this stage.
    pub not_in_stage: u64,
}

/// `manifest.json`: what `train/data.py` needs (`vocab_size`, `tokenizer`, `shards`) and the
/// provenance of every token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Vocabulary size of the tokenizer.
    pub vocab_size: usize,
    /// Tokenizer file, relative to the data directory.
    pub tokenizer: String,
    /// Hex SHA-256 of the tokenizer file.
    pub tokenizer_sha256: String,
    /// `lm` or `sft`.
    pub stage: String,
    /// Every shard, train first.
    pub shards: Vec<ShardEntry>,
    /// Per-source counts, licences and origins.
    pub sources: Vec<SourceStats>,
    /// Build settings (seed, limits, shares), enough to rebuild the same shards.
    pub settings: serde_json::Value,
    /// The builder's name and version.
    pub builder: String,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join("manifest.json");
        let text = crate::read(&path)?;
        serde_json::from_str(&text).map_err(|e| Error::Parse { path, msg: format!("{e} (rebuild it with `ulm data`)") })
    }

    /// Writes `dir/manifest.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join("manifest.json");
        let text = serde_json::to_string_pretty(self).expect("the manifest serializes") + "\n";
        std::fs::write(&path, text).map_err(|source| Error::Write { path, source })
    }

    /// Total tokens of one split.
    pub fn tokens(&self, split: Split) -> u64 {
        self.shards.iter().filter(|s| s.split == split_name(split)).map(|s| s.n_tokens).sum()
    }
}

/// `train` or `heldout`.
pub fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Heldout => "heldout",
    }
}

/// Writes one split's shards, each closed at a document boundary once it holds `shard_tokens`.
pub struct ShardWriter {
    dir: PathBuf,
    split: Split,
    shard_tokens: usize,
    ids: Vec<u16>,
    classes: Vec<u8>,
    entries: Vec<ShardEntry>,
}

impl ShardWriter {
    /// A writer into `dir` (created if needed).
    pub fn new(dir: &Path, split: Split, shard_tokens: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_owned(), source })?;
        Ok(ShardWriter { dir: dir.to_owned(), split, shard_tokens, ids: Vec::new(), classes: Vec::new(), entries: Vec::new() })
    }

    /// Appends one document.
    pub fn push(&mut self, ids: &[u32], classes: &[u8]) -> Result<()> {
        assert_eq!(ids.len(), classes.len(), "ids and classes differ in length");
        for &id in ids {
            let id = u16::try_from(id).map_err(|_| Error::Tokenizer(format!("token id {id} does not fit a u16 shard")))?;
            self.ids.push(id);
        }
        self.classes.extend_from_slice(classes);
        if self.ids.len() >= self.shard_tokens {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let stem = format!("{}-{:03}", split_name(self.split), self.entries.len());
        let (tokens, mask) = (format!("{stem}.u16"), format!("{stem}.u8"));
        let bytes: Vec<u8> = self.ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        write_file(&self.dir.join(&tokens), &bytes)?;
        write_file(&self.dir.join(&mask), &self.classes)?;
        self.entries.push(ShardEntry { tokens, mask, n_tokens: self.ids.len() as u64, split: split_name(self.split).into() });
        self.ids.clear();
        self.classes.clear();
        Ok(())
    }

    /// Writes the last shard; returns the entries for the manifest.
    pub fn finish(mut self) -> Result<Vec<ShardEntry>> {
        self.flush()?;
        Ok(self.entries)
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Write { path: path.to_owned(), source };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(bytes).map_err(io)?;
    f.flush().map_err(io)
}

/// Reads one shard back: (token ids, classes), checking the sizes against the manifest.
pub fn read_shard(dir: &Path, entry: &ShardEntry) -> Result<(Vec<u16>, Vec<u8>)> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| Error::Io { path, source })
    };
    let (tokens, classes) = (read(&entry.tokens)?, read(&entry.mask)?);
    if tokens.len() as u64 != 2 * entry.n_tokens || classes.len() as u64 != entry.n_tokens {
        return Err(Error::Parse {
            path: dir.join(&entry.tokens),
            msg: format!("{} and {} bytes, expected {} tokens (rebuild with `ulm data`)", tokens.len(), classes.len(), entry.n_tokens),
        });
    }
    Ok((tokens.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect(), classes))
}
