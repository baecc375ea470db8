//! Readers for every text source reachable from package registries (see ../shared/ASSETS.md):
//! chitchat-dataset (MIT), chatterbot-corpus (BSD), WordNet glosses, fortunes, and MT-Bench
//! (held out for evaluation only — never returned by [`load_all`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clean::normalize_space;
use crate::split::{Split, split_of};
use crate::{Error, Result, read};

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person asking.
    User,
    /// The reply the model learns to write.
    Assistant,
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    /// Speaker.
    pub role: Role,
    /// Text of the turn.
    pub text: String,
}

/// The content of a document.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A conversation, starting with the user.
    Chat(Vec<Turn>),
    /// Plain text.
    Text(String),
}

/// A unit of the corpus with a stable identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Source name (`chitchat`, `chatterbot`, `wordnet`, `fortunes`).
    pub source: &'static str,
    /// Identity inside the source, stable across builds.
    pub id: String,
    /// Content.
    pub body: Body,
}

impl Document {
    /// The split this document belongs to.
    pub fn split(&self) -> Split {
        split_of(self.source, &self.id)
    }
}

/// A source with its licence, for the manifest.
pub struct SourceInfo {
    /// Source name.
    pub name: &'static str,
    /// Licence of the source.
    pub licence: &'static str,
    /// Where it comes from.
    pub origin: &'static str,
}

/// Every training source, in manifest order.
pub const SOURCES: &[SourceInfo] = &[
    SourceInfo { name: "chitchat", licence: "MIT", origin: "PyPI chitchat-dataset==0.9.0" },
    SourceInfo { name: "chatterbot", licence: "BSD-3-Clause", origin: "PyPI chatterbot-corpus==1.3.3" },
    SourceInfo { name: "wordnet", licence: "WordNet 3.0 licence", origin: "Debian wordnet-base" },
    SourceInfo { name: "fortunes", licence: "BSD / public domain (Debian fortunes-min)", origin: "Debian fortunes, fortunes-min" },
];

/// Loads every training source under `assets` (the folder scripts/fetch-assets.sh fills) plus the
/// system folders of the Debian packages.
pub fn load_all(assets: &Path) -> Result<Vec<Document>> {
    let data = assets.join("data");
    let mut docs = chitchat(&data.join("chitchat.json"))?;
    docs.extend(chatterbot(&data.join("chatterbot"))?);
    docs.extend(wordnet(Path::new(WORDNET_DIR))?);
    docs.extend(fortunes(Path::new(FORTUNES_DIR))?);
    Ok(docs)
}

/// Where Debian's wordnet-base puts the database.
pub const WORDNET_DIR: &str = "/usr/share/wordnet";
/// Where Debian's fortunes packages put their files.
pub const FORTUNES_DIR: &str = "/usr/share/games/fortunes";

#[derive(Deserialize)]
struct ChitchatConv {
    messages: Vec<Vec<ChitchatMsg>>,
}

#[derive(Deserialize)]
struct ChitchatMsg {
    text: String,
    sender: String,
}

/// chitchat-dataset: two-person chats; the first speaker is the user. Consecutive message
/// groups of one sender are merged into one turn.
pub fn chitchat(path: &Path) -> Result<Vec<Document>> {
    let text = read(path)?;
    let convs: BTreeMap<String, ChitchatConv> = serde_json::from_str(&text)
        .map_err(|e| Error::Parse { path: path.to_owned(), msg: e.to_string() })?;
    let mut docs = Vec::with_capacity(convs.len());
    for (id, conv) in convs {
        let Some(first) = conv.messages.first().and_then(|g| g.first()) else { continue };
        let user = first.sender.clone();
        let mut turns: Vec<Turn> = Vec::new();
        for group in &conv.messages {
            let Some(m0) = group.first() else { continue };
            let role = if m0.sender == user { Role::User } else { Role::Assistant };
            let text = normalize_space(
                &group.iter().map(|m| m.text.as_str()).collect::<Vec<_>>().join(" "),
                false,
            );
            if text.is_empty() {
                continue;
            }
            match turns.last_mut() {
                Some(t) if t.role == role => {
                    t.text.push(' ');
                    t.text.push_str(&text);
                }
                _ => turns.push(Turn { role, text }),
            }
        }
        if turns.len() >= 2 {
            docs.push(Document { source: "chitchat", id, body: Body::Chat(turns) });
        }
    }
    Ok(docs)
}

#[derive(Deserialize)]
struct ChatterbotFile {
    #[serde(default)]
    conversations: Vec<serde_yaml_ng::Value>,
}

/// chatterbot-corpus: short question–answer exchanges, one file per topic.
pub fn chatterbot(dir: &Path) -> Result<Vec<Document>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io { path: dir.to_owned(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let topic = f.file_stem().and_then(|s| s.to_str()).unwrap_or("x").to_string();
        let parsed: ChatterbotFile = serde_yaml_ng::from_str(&read(&f)?)
            .map_err(|e| Error::Parse { path: f.clone(), msg: e.to_string() })?;
        for (i, conv) in parsed.conversations.iter().enumerate() {
            // A few entries are malformed (a string where a list belongs): skipped.
            let Some(conv) = conv.as_sequence() else { continue };
            let turns: Vec<Turn> = conv
                .iter()
                .filter_map(|v| match v {
                    serde_yaml_ng::Value::String(s) => Some(s.clone()),
                    serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
                    serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .enumerate()
                .map(|(k, t)| Turn {
                    role: if k % 2 == 0 { Role::User } else { Role::Assistant },
                    text: normalize_space(&t, true),
                })
                .filter(|t| !t.text.is_empty())
                .collect();
            if turns.len() >= 2 && turns[0].role == Role::User {
                docs.push(Document { source: "chatterbot", id: format!("{topic}:{i}"), body: Body::Chat(turns) });
            }
        }
    }
    Ok(docs)
}

/// One WordNet synset: its part of speech, words and gloss.
#[derive(Clone, Debug)]
pub struct Synset {
    /// `n`, `v`, `a` (or `s`), `r`.
    pub pos: char,
    /// Byte offset in the data file (the synset's id).
    pub offset: String,
    /// Words of the synset, underscores replaced by spaces.
    pub words: Vec<String>,
    /// Definition and examples.
    pub gloss: String,
}

/// Reads WordNet's `data.{noun,verb,adj,adv}` files.
pub fn wordnet_synsets(dir: &Path) -> Result<Vec<Synset>> {
    let mut out = Vec::new();
    for file in ["noun", "verb", "adj", "adv"] {
        let path = dir.join(format!("data.{file}"));
        for line in read(&path)?.lines() {
            if line.starts_with("  ") {
                continue; // licence header
            }
            let Some((head, gloss)) = line.split_once(" | ") else { continue };
            let f: Vec<&str> = head.split(' ').collect();
            if f.len() < 6 {
                continue;
            }
            let Ok(w_cnt) = usize::from_str_radix(f[3], 16) else { continue };
            let words: Vec<String> = (0..w_cnt)
                .filter_map(|k| f.get(4 + 2 * k))
                .map(|w| {
                    // Adjective markers such as `(p)` are not part of the word.
                    let w = w.split('(').next().unwrap_or(w);
                    w.replace('_', " ")
                })
                .collect();
            let pos = f[2].chars().next().unwrap_or('n');
            out.push(Synset {
                pos: if pos == 's' { 'a' } else { pos },
                offset: f[0].to_string(),
                words,
                gloss: gloss.trim().to_string(),
            });
        }
    }
    Ok(out)
}

/// WordNet glosses as short definitional texts: `plum (noun): a highly desirable position …`.
pub fn wordnet(dir: &Path) -> Result<Vec<Document>> {
    let pos_name = |p| match p {
        'n' => "noun",
        'v' => "verb",
        'a' => "adjective",
        _ => "adverb",
    };
    Ok(wordnet_synsets(dir)?
        .into_iter()
        .filter(|s| !s.words.is_empty())
        .map(|s| Document {
            source: "wordnet",
            id: format!("{}{}", s.pos, s.offset),
            body: Body::Text(format!("{} ({}): {}", s.words.join(", "), pos_name(s.pos), s.gloss)),
        })
        .collect())
}

/// fortunes: the top-level files of Debian's fortunes packages (the `off/` folder is skipped),
/// entries separated by `%` lines.
pub fn fortunes(dir: &Path) -> Result<Vec<Document>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io { path: dir.to_owned(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue }; // a non-UTF-8 file is skipped
        let name = f.file_name().and_then(|s| s.to_str()).unwrap_or("x").to_string();
        for (i, entry) in text.split("\n%\n").enumerate() {
            let entry = normalize_space(entry.trim_end_matches('%'), true);
            if entry.len() >= 20 {
                docs.push(Document { source: "fortunes", id: format!("{name}:{i}"), body: Body::Text(entry) });
            }
        }
    }
    Ok(docs)
}

/// One MT-Bench question (held out: evaluation only).
#[derive(Clone, Debug, Deserialize)]
pub struct MtBenchQuestion {
    /// Question id (81–160).
    pub question_id: u32,
    /// Category (writing, roleplay, …).
    pub category: String,
    /// The two user turns.
    pub turns: Vec<String>,
}

/// Reads MT-Bench's `question.jsonl`.
pub fn mtbench(path: &Path) -> Result<Vec<MtBenchQuestion>> {
    read(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| Error::Parse { path: path.to_owned(), msg: e.to_string() }))
        .collect()
}
