//! The dev set of evaluation prompts: all 80 MT-Bench first turns, held-out chatterbot
//! questions and held-out chitchat turns that ask something (openings first). Never trained on:
//! candidates that equal a train turn or distillation prompt are skipped, and the builder drops
//! every chat with a turn equal to one of them.
//!
//! ```no_run
//! use ulm_data::eval::{dev_prompts, write_jsonl};
//! let docs = ulm_data::sources::load_all(std::path::Path::new("assets"))?;
//! let mt = ulm_data::sources::mtbench(std::path::Path::new("assets/data/mt_bench_questions.jsonl"))?;
//! let dev = dev_prompts(&docs, &mt, &[], 200);
//! write_jsonl(std::path::Path::new("data/eval/dev.jsonl"), &dev)?;
//! # Ok::<(), ulm_data::Error>(())
//! ```

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::clean::dedup_key;
use crate::sources::{Body, Document, MtBenchQuestion};
use crate::split::{Split, mix_hash};
use crate::{Error, Result};

/// One evaluation prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPrompt {
    /// Stable id (`mtbench:81`, or `source:document:turn` like the distillation prompts).
    pub id: String,
    /// Source name.
    pub source: String,
    /// MT-Bench category, chatterbot topic, `chitchat-opening` or `chitchat-question`.
    pub category: String,
    /// The user's message.
    pub prompt: String,
}

/// At most this many held-out chatterbot questions.
pub const MAX_CHATTERBOT: usize = 60;

/// Builds the dev set, `total` prompts at most: the MT-Bench first turns, then held-out
/// chatterbot first questions (at most [`MAX_CHATTERBOT`]), then held-out chitchat openings that
/// end in '?', then (to fill up) later held-out chitchat turns that ask something in 5–30 words;
/// each group in a stable hash order. A candidate whose normalised text equals any
/// turn of a train-split document, or any of `train_prompts` (the distillation prompt set), is
/// skipped: the model may have seen it.
pub fn dev_prompts(docs: &[Document], mtbench: &[MtBenchQuestion], train_prompts: &[String], total: usize) -> Vec<EvalPrompt> {
    let mut seen: HashSet<u64> = train_prompts.iter().map(|p| dedup_key(p)).collect();
    for d in docs.iter().filter(|d| d.split() == Split::Train) {
        if let Body::Chat(turns) = &d.body {
            seen.extend(turns.iter().map(|t| dedup_key(&t.text)));
        }
    }
    let mut out: Vec<EvalPrompt> = mtbench
        .iter()
        .filter_map(|q| {
            Some(EvalPrompt {
                id: format!("mtbench:{}", q.question_id),
                source: "mtbench".into(),
                category: q.category.clone(),
                prompt: q.turns.first()?.trim().to_string(),
            })
        })
        .collect();
    seen.extend(out.iter().map(|p| dedup_key(&p.prompt)));

    // Held-out turns of one source that `usable(turn index, text)` accepts, in a stable order.
    let candidates = |source: &str, category: &dyn Fn(&Document) -> String, usable: &dyn Fn(usize, &str) -> bool| {
        let mut c: Vec<(u64, EvalPrompt)> = Vec::new();
        for d in docs.iter().filter(|d| d.source == source && d.split() == Split::Heldout) {
            let Body::Chat(turns) = &d.body else { continue };
            for (k, t) in turns.iter().enumerate().filter(|(k, t)| usable(*k, &t.text)) {
                let p = EvalPrompt { id: format!("{source}:{}:{k}", d.id), source: source.into(), category: category(d), prompt: t.text.clone() };
                c.push((mix_hash(p.id.as_bytes()), p));
            }
        }
        c.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        // One prompt per conversation, so that a long chat does not fill the set.
        let mut docs_seen = HashSet::new();
        c.into_iter().map(|(_, p)| p).filter(|p| docs_seen.insert(p.id.rsplit_once(':').unwrap().0.to_string())).collect::<Vec<_>>()
    };
    let words = |s: &str| s.split_whitespace().count();
    let topic = |d: &Document| d.id.split(':').next().unwrap_or("chatterbot").to_string();
    let bot = candidates("chatterbot", &topic, &|k, t| k == 0 && words(t) >= 2);
    let asks = |t: &str, min: usize| t.ends_with('?') && (min..=30).contains(&words(t));
    let openings = candidates("chitchat", &|_| "chitchat-opening".into(), &|k, t| k == 0 && asks(t, 3));
    // Later questions of either speaker, as the distillation prompt set also uses them.
    let questions = candidates("chitchat", &|_| "chitchat-question".into(), &|k, t| k > 0 && asks(t, 5));
    let mut take = |list: Vec<EvalPrompt>, cap: usize, out: &mut Vec<EvalPrompt>| {
        let mut n = 0;
        for p in list {
            if n >= cap || out.len() >= total {
                break;
            }
            if seen.insert(dedup_key(&p.prompt)) {
                out.push(p);
                n += 1;
            }
        }
    };
    take(bot, MAX_CHATTERBOT, &mut out);
    take(openings, usize::MAX, &mut out);
    take(questions, usize::MAX, &mut out);
    out.truncate(total);
    out
}

/// Writes prompts as JSON lines (creating the folder).
pub fn write_jsonl(path: &Path, prompts: &[EvalPrompt]) -> Result<()> {
    let io = |source| Error::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for p in prompts {
        writeln!(f, "{}", serde_json::to_string(p).expect("a prompt serializes")).map_err(io)?;
    }
    f.flush().map_err(io)
}

/// Reads prompts written by [`write_jsonl`].
pub fn read_jsonl(path: &Path) -> Result<Vec<EvalPrompt>> {
    crate::read(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Parse { path: path.to_owned(), msg: format!("line {}: {e}", i + 1) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Role, Turn};
    use crate::split::split_of;

    #[test]
    fn dev_set_is_held_out_unique_and_stable() {
        let doc = |source: &'static str, id: String, q: &str| Document {
            source,
            id,
            body: Body::Chat(vec![Turn { role: Role::User, text: q.into() }, Turn { role: Role::Assistant, text: "ok".into() }]),
        };
        let mut docs = Vec::new();
        for i in 0..2000 {
            // Every tenth opening is shared, mostly with train chats: those are skipped.
            let q = if i % 10 == 0 { "Do you like dogs?".to_string() } else { format!("Do you like color {i}?") };
            docs.push(doc("chitchat", format!("c{i}"), &q));
            docs.push(doc("chatterbot", format!("t:{i}"), &format!("What is topic {i}?")));
        }
        let mt = vec![MtBenchQuestion { question_id: 81, category: "writing".into(), turns: vec!["Write a poem.".into(), "x".into()] }];
        let dev = dev_prompts(&docs, &mt, &["What is topic 3?".into()], 100);
        assert_eq!(dev.len(), 100);
        assert_eq!(dev[0].id, "mtbench:81");
        assert_eq!(dev.iter().filter(|p| p.source == "chatterbot").count(), MAX_CHATTERBOT);
        let train: HashSet<u64> = docs
            .iter()
            .filter(|d| d.split() == Split::Train)
            .flat_map(|d| match &d.body {
                Body::Chat(t) => t.iter().map(|t| dedup_key(&t.text)).collect::<Vec<_>>(),
                _ => vec![],
            })
            .collect();
        for p in &dev[1..] {
            let (source, rest) = p.id.split_once(':').unwrap();
            assert_eq!(split_of(source, rest.rsplit_once(':').unwrap().0), Split::Heldout);
            assert!(!train.contains(&dedup_key(&p.prompt)), "{} was trained on", p.prompt);
        }
        assert_eq!(dev, dev_prompts(&docs, &mt, &["What is topic 3?".into()], 100));
        let path = crate::testutil::temp_dir("eval").join("dev.jsonl");
        write_jsonl(&path, &dev).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), dev);
    }
}
