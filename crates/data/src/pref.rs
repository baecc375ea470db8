//! Preference pairs from the student's own openers: for `train/pref.py` (DPO).
//!
//! ```no_run
//! use ulm_data::pref::{Candidate, PrefSettings, Stock, pairs_of};
//! let cands = vec![
//!     Candidate { text: "A banjo is a stringed instrument with".into(), ll: -0.9, topic: true, loops: false },
//!     Candidate { text: "I'm not sure what you mean, but".into(), ll: -1.2, topic: false, loops: false },
//! ];
//! let pairs = pairs_of("wordnet-q:n:banjo#student", "What is a banjo?", &cands, &PrefSettings::default(), &Stock::none());
//! assert_eq!(pairs[0].rejected, "I'm not sure what you mean, but");
//! ```
//!
//! `ulm distill --student` keeps every distinct opener the μLM wrote to a prompt with the scorer's
//! judgement ([`Candidate`]). Supervised training on the best one (the on-policy mix) stopped
//! paying after one round; a pair says more: *this* opener rather than *that* one, to the same
//! prompt, both written by the model itself. The chosen opener is the best by the ranking of
//! `ulm distill` (not looping, then naming the topic, then the scorer's mean log-likelihood) if it
//! is a training target at all (no loop, likely enough, no echo or drift: [`crate::distilled`]);
//! each rejected one is worse for a reason a reader would give ([`Why`]), worst first.
//!
//! Preferring the likelier opener teaches the model whatever safe phrase the scorer likes (a hedge,
//! "I'm sorry to hear that you're going through"; docs/models/ulm-8m.md, session 20). Two settings
//! judge by the topic instead: [`PrefSettings::topic_chosen`] (the chosen opener names the topic)
//! and [`Stock`] (an opening the student writes to many prompts, sharing no word with this one, is
//! rejected and never chosen).
//!
//! Written as `pref-train.jsonl` and `pref-heldout.jsonl` (one pair per line: token ids of the
//! prompt as the runtime renders it, up to and including `<|im_start|>assistant\n`, and of both
//! openers, no end of turn: the openers are cut at a word count) beside `manifest.json`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::distilled::{Finish, Pair, Verdict};
use crate::render::{Renderer, Stage, Tokens};
use crate::split::Split;
use crate::tokenizer::encode;
use crate::{Error, Result};

/// One opener the student wrote to a prompt, as the scorer judged it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The opener.
    pub text: String,
    /// Mean log-likelihood per token under the scorer (nats).
    pub ll: f64,
    /// It names the question's topic (`ulm_runtime::generate::Fit`).
    pub topic: bool,
    /// It repeats a pair of words, or a word runs on.
    pub loops: bool,
}

impl Candidate {
    /// Greater is better: not looping, then naming the topic, then the scorer's LL.
    fn key(&self) -> (bool, bool, f64) {
        (!self.loops, self.topic, self.ll)
    }
}

/// Openings of a hedge: an opener that says nothing about the question ("I'm not sure what you're
/// asking, but…"). SmolLM2 finds them likely, so when no candidate names the topic the best one
/// is often a hedge; as a chosen opener it taught DPO to hedge (docs/models/ulm-8m.md, session 20).
const HEDGES: &[&str] = &["i'm not sure", "i'm sorry, but", "i'm sorry, i", "i'm not familiar", "i don't know"];

/// True if `text` opens with a hedge ([`HEDGES`], case ignored).
pub fn is_hedge(text: &str) -> bool {
    let t = plain(text.trim_start());
    HEDGES.iter().any(|h| t.starts_with(h))
}

/// Why the rejected opener of a pair is worse than the chosen one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    /// It loops; the chosen one does not.
    Loops,
    /// It opens with a stock phrase ([`Stock`]); the chosen one does not.
    Stock,
    /// It does not name the topic; the chosen one does.
    OffTopic,
    /// Both are alike by those tests, but the scorer finds it less likely by at least the margin.
    LessLikely,
}

impl Why {
    /// `loops`, `stock`, `off-topic` or `less-likely` (as in `pref-*.jsonl`).
    pub fn name(self) -> &'static str {
        match self {
            Why::Loops => "loops",
            Why::Stock => "stock",
            Why::OffTopic => "off-topic",
            Why::LessLikely => "less-likely",
        }
    }
}

/// How pairs are chosen.
#[derive(Clone, Debug, Serialize)]
pub struct PrefSettings {
    /// A chosen opener less likely than this under the scorer (nats per token) makes no pair.
    pub min_chosen_ll: f64,
    /// [`Why::LessLikely`] needs the chosen opener this much more likely (nats per token).
    pub margin: f64,
    /// Pairs per prompt at most (the worst rejected first).
    pub max_per_prompt: usize,
    /// Let a hedge ([`is_hedge`]) be the chosen opener (session 20's first round did; since, no).
    pub hedge_chosen: bool,
    /// Only an opener that names the topic is chosen (a prompt with none makes no pair).
    pub topic_chosen: bool,
    /// An opening shared by this many prompts' candidates is stock ([`Stock::count`]; 0: none is).
    pub stock_min_prompts: usize,
}

impl Default for PrefSettings {
    fn default() -> Self {
        PrefSettings { min_chosen_ll: -2.0, margin: 0.5, max_per_prompt: 2, hedge_chosen: false, topic_chosen: false, stock_min_prompts: 0 }
    }
}

/// Openings the student writes whatever it is asked: "In the heart of the city", "I'm glad you're
/// enjoying", "Dear [colleague_name], I hope". An opener is stock when its first [`Stock::WORDS`]
/// words (case ignored) open candidates of at least `min_prompts` prompts and share no word of four
/// letters or more with the prompt at hand ("The purpose of a" is stock for nothing it answers:
/// "What is the purpose of a …?" names "purpose").
#[derive(Clone, Debug, Default)]
pub struct Stock {
    openings: HashSet<String>,
}

impl Stock {
    /// Words that make an opening.
    pub const WORDS: usize = 4;

    /// No opening is stock.
    pub fn none() -> Stock {
        Stock::default()
    }

    /// Counts the openings of every prompt's candidates (each opening once per prompt); those of
    /// at least `min_prompts` prompts are stock (`min_prompts` 0: none is).
    pub fn count<'a>(prompts: impl IntoIterator<Item = &'a [Candidate]>, min_prompts: usize) -> Stock {
        if min_prompts == 0 {
            return Stock::none();
        }
        let mut n: HashMap<String, usize> = HashMap::new();
        for cands in prompts {
            let set: HashSet<String> = cands.iter().map(|c| opening(&c.text)).filter(|o| !o.is_empty()).collect();
            for o in set {
                *n.entry(o).or_default() += 1;
            }
        }
        Stock { openings: n.into_iter().filter(|&(_, k)| k >= min_prompts).map(|(o, _)| o).collect() }
    }

    /// How many openings are stock.
    pub fn len(&self) -> usize {
        self.openings.len()
    }

    /// True if no opening is stock.
    pub fn is_empty(&self) -> bool {
        self.openings.is_empty()
    }

    /// True if `text`, answering `prompt`, opens with a stock phrase.
    pub fn is_stock(&self, text: &str, prompt: &str) -> bool {
        let o = opening(text);
        if !self.openings.contains(&o) {
            return false;
        }
        let p = plain(prompt);
        let asked: HashSet<&str> = letters(&p).filter(|w| w.chars().count() >= 4).collect();
        !letters(&o).any(|w| asked.contains(w))
    }
}

/// `text` in lower case with typographic apostrophes made plain.
fn plain(text: &str) -> String {
    text.to_lowercase().replace('\u{2019}', "'")
}

/// The first [`Stock::WORDS`] words of `text`, [`plain`].
fn opening(text: &str) -> String {
    plain(text).split_whitespace().take(Stock::WORDS).collect::<Vec<_>>().join(" ")
}

/// Runs of letters in lower-case `text`.
fn letters(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty())
}

/// One preference pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrefPair {
    /// Record id of the prompt.
    pub id: String,
    /// The user's message.
    pub prompt: String,
    /// The better opener.
    pub chosen: String,
    /// The worse opener.
    pub rejected: String,
    /// Their scorer LLs.
    pub chosen_ll: f64,
    /// See `chosen_ll`.
    pub rejected_ll: f64,
    /// Why `rejected` is worse.
    pub why: Why,
}

/// The pairs of one prompt's candidates (any order): the rejected by [`Why`] (loops first), then
/// worst first.
pub fn pairs_of(id: &str, prompt: &str, candidates: &[Candidate], s: &PrefSettings, stock: &Stock) -> Vec<PrefPair> {
    let mut c: Vec<&Candidate> = candidates.iter().filter(|c| !c.text.trim().is_empty()).collect();
    c.sort_by(|x, y| y.key().partial_cmp(&x.key()).unwrap_or(std::cmp::Ordering::Equal));
    let is_stock = |x: &Candidate| stock.is_stock(&x.text, prompt);
    let Some(at) = c.iter().position(|x| !is_stock(x)) else { return Vec::new() };
    let best = c.remove(at);
    let target = Pair { id: id.into(), source: String::new(), prompt: prompt.into(), reply: best.text.clone(), finish: Finish::Length };
    if best.loops
        || best.ll < s.min_chosen_ll
        || target.verdict() != Verdict::Keep
        || (!s.hedge_chosen && is_hedge(&best.text))
        || (s.topic_chosen && !best.topic)
    {
        return Vec::new();
    }
    let why = |r: &Candidate| {
        if r.loops {
            Some(Why::Loops)
        } else if is_stock(r) {
            Some(Why::Stock)
        } else if best.topic && !r.topic {
            Some(Why::OffTopic)
        } else if best.ll - r.ll >= s.margin {
            Some(Why::LessLikely)
        } else {
            None
        }
    };
    let mut rejected: Vec<(&Candidate, Why)> = c.iter().rev().filter_map(|&r| why(r).map(|w| (r, w))).collect(); // worst first
    rejected.sort_by_key(|&(_, w)| w); // stable
    rejected
        .into_iter()
        .take(s.max_per_prompt)
        .map(|(r, why)| PrefPair {
            id: id.into(),
            prompt: prompt.into(),
            chosen: best.text.clone(),
            rejected: r.text.clone(),
            chosen_ll: best.ll,
            rejected_ll: r.ll,
            why,
        })
        .collect()
}

/// One line of `pref-<split>.jsonl`: token ids.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct PrefIds {
    /// The prompt, rendered as the runtime feeds it (ending with `<|im_start|>assistant\n`).
    pub prompt: Vec<u32>,
    /// The chosen opener.
    pub chosen: Vec<u32>,
    /// The rejected opener.
    pub rejected: Vec<u32>,
    /// Why `rejected` is worse.
    pub why: Why,
}

/// `manifest.json` of a preference data folder.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct PrefManifest {
    /// Always `pref`.
    pub stage: String,
    /// Vocabulary size of the tokenizer.
    pub vocab_size: usize,
    /// Tokenizer file, relative to the folder.
    pub tokenizer: String,
    /// `pref-train.jsonl`.
    pub train: String,
    /// `pref-heldout.jsonl`.
    pub heldout: String,
    /// Pairs in each.
    pub train_pairs: usize,
    /// See `train_pairs`.
    pub heldout_pairs: usize,
    /// Pairs by [`Why`] (both splits): loops, off-topic, less-likely.
    pub why: std::collections::BTreeMap<String, usize>,
    /// Pairs left out because prompt and opener exceed the window.
    pub too_long: usize,
    /// The settings that chose the pairs.
    pub settings: serde_json::Value,
}

/// Writes `pairs` as token ids into `dir` (split by [`Pair::split`] of their id), with the
/// tokenizer and `manifest.json`; pairs longer than `max_tokens` in all are left out.
pub fn write_pref(pairs: &[PrefPair], tok_path: &Path, tok: &Tokenizer, dir: &Path, max_tokens: usize, settings: &PrefSettings) -> Result<PrefManifest> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.into(), source })?;
    let r = Renderer::new(tok, Stage::Sft)?;
    let (mut train, mut heldout) = (String::new(), String::new());
    let mut m = PrefManifest {
        stage: "pref".into(),
        vocab_size: tok.get_vocab_size(true),
        tokenizer: "tokenizer.json".into(),
        train: "pref-train.jsonl".into(),
        heldout: "pref-heldout.jsonl".into(),
        train_pairs: 0,
        heldout_pairs: 0,
        why: Default::default(),
        too_long: 0,
        settings: serde_json::to_value(settings).expect("settings serialize"),
    };
    let mut prompt = Tokens::default();
    for p in pairs {
        prompt.clear();
        r.prompt(&p.prompt, &mut prompt)?;
        let ids = PrefIds { prompt: prompt.ids.clone(), chosen: encode(tok, &p.chosen)?, rejected: encode(tok, &p.rejected)?, why: p.why };
        if ids.prompt.len() + ids.chosen.len().max(ids.rejected.len()) > max_tokens {
            m.too_long += 1;
            continue;
        }
        let split = Pair { id: p.id.clone(), source: String::new(), prompt: String::new(), reply: String::new(), finish: Finish::Length }.split();
        let line = serde_json::to_string(&ids).expect("ids serialize") + "\n";
        if split == Split::Heldout {
            heldout.push_str(&line);
            m.heldout_pairs += 1;
        } else {
            train.push_str(&line);
            m.train_pairs += 1;
        }
        *m.why.entry(p.why.name().to_string()).or_default() += 1;
    }
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Write { path, source })
    };
    write(&m.train, &train)?;
    write(&m.heldout, &heldout)?;
    std::fs::copy(tok_path, dir.join(&m.tokenizer)).map_err(|source| Error::Write { path: dir.join(&m.tokenizer), source })?;
    write("manifest.json", &(serde_json::to_string_pretty(&m).expect("manifest serializes") + "\n"))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(text: &str, ll: f64, topic: bool, loops: bool) -> Candidate {
        Candidate { text: text.into(), ll, topic, loops }
    }

    #[test]
    fn the_best_is_chosen_and_the_worst_rejected_first_for_a_reason() {
        let cands = [
            cand("I like it a lot, and", -1.0, false, false),
            cand("A banjo is a stringed instrument with", -1.1, true, false),
            cand("A banjo is a kind of thing", -1.3, true, false), // within the margin: no pair
            cand("A banjo banjo banjo banjo", -0.4, true, true),
            cand("A banjo is, well, a banjo that", -1.9, true, false),
        ];
        let p = pairs_of("x", "What is a banjo?", &cands, &PrefSettings { max_per_prompt: 9, ..PrefSettings::default() }, &Stock::none());
        let got: Vec<(&str, Why)> = p.iter().map(|p| (p.rejected.as_str(), p.why)).collect();
        assert_eq!(
            got,
            [("A banjo banjo banjo banjo", Why::Loops), ("I like it a lot, and", Why::OffTopic), ("A banjo is, well, a banjo that", Why::LessLikely)]
        );
        assert!(p.iter().all(|p| p.chosen == "A banjo is a stringed instrument with"));
        let two = pairs_of("x", "What is a banjo?", &cands, &PrefSettings::default(), &Stock::none());
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].why, Why::Loops);
        for w in [Why::Loops, Why::Stock, Why::OffTopic, Why::LessLikely] {
            assert_eq!(serde_json::to_value(w).unwrap(), w.name(), "the name is the serialized one");
        }
    }

    #[test]
    fn no_pair_when_the_best_is_no_training_target() {
        let s = PrefSettings::default();
        // Too unlikely.
        assert!(pairs_of("x", "What is a banjo?", &[cand("A banjo is odd", -2.5, true, false), cand("Hm", -3.9, false, false)], &s, &Stock::none()).is_empty());
        // Drifts into rewriting a sentence nobody gave.
        let drift = [cand("The original sentence is: The new employee", -0.5, false, false), cand("Banjo", -3.0, true, true)];
        assert!(pairs_of("x", "What is a banjo?", &drift, &s, &Stock::none()).is_empty());
        // The best is a hedge: preferring it to an opener off the topic teaches the model to hedge.
        let hedge = [cand("I'm not sure what you mean, but", -0.8, false, false), cand("The sky is blue and", -1.9, false, false)];
        assert!(pairs_of("x", "What is a banjo?", &hedge, &s, &Stock::none()).is_empty());
        assert_eq!(pairs_of("x", "What is a banjo?", &hedge, &PrefSettings { hedge_chosen: true, ..s.clone() }, &Stock::none()).len(), 1);
        // A hedge is rejected when a candidate names the topic.
        let named = [cand("I'm not sure what you mean, but", -0.8, false, false), cand("A banjo is a stringed", -1.0, true, false)];
        assert_eq!(pairs_of("x", "What is a banjo?", &named, &s, &Stock::none())[0].why, Why::OffTopic);
        // Every candidate loops.
        assert!(pairs_of("x", "What is a banjo?", &[cand("a b a b", -0.5, true, true), cand("c d c d", -0.9, true, true)], &s, &Stock::none()).is_empty());
        // One candidate: nothing to prefer it to.
        assert!(pairs_of("x", "What is a banjo?", &[cand("A banjo is fun", -0.5, true, false)], &s, &Stock::none()).is_empty());
    }

    #[test]
    fn a_stock_opening_is_rejected_and_never_chosen() {
        let heart = |topic| cand("In the heart of the city, a", -0.6, topic, false);
        // Three prompts open with "In the heart of"; "The purpose of a" opens two.
        let seen = [
            vec![heart(false), cand("The purpose of a banjo is", -0.9, true, false)],
            vec![heart(false), cand("The purpose of a kettle is", -0.9, true, false)],
            vec![heart(false), cand("A tale of two rivers", -1.2, false, false)],
        ];
        let stock = Stock::count(seen.iter().map(|v| v.as_slice()), 3);
        assert_eq!(stock.len(), 1);
        assert!(stock.is_stock("In  the Heart of the night", "Write a poem about a moth."));
        assert!(!stock.is_stock("In the heart of the city", "What lies in the heart of London?"), "it shares \"heart\" with the prompt");
        assert!(!stock.is_stock("The purpose of a banjo", "What is a banjo?"));
        assert!(Stock::count(seen.iter().map(|v| v.as_slice()), 0).is_empty());

        let cands = [heart(false), cand("A moth is a night insect", -1.4, true, false), cand("Moths fly and", -1.5, true, false)];
        let s = PrefSettings::default();
        let p = pairs_of("x", "Write a poem about a moth.", &cands, &s, &stock);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].chosen.as_str(), p[0].rejected.as_str(), p[0].why), ("A moth is a night insect", "In the heart of the city, a", Why::Stock));
        // Without the stock list the likelier opener off the topic loses only on topic.
        let p = pairs_of("x", "Write a poem about a moth.", &cands, &s, &Stock::none());
        assert_eq!((p[0].rejected.as_str(), p[0].why), ("In the heart of the city, a", Why::OffTopic));
        // Only stock to choose from: no pair.
        assert!(pairs_of("x", "Write a poem about a moth.", &[heart(true), heart(false)], &s, &stock).is_empty());
    }

    #[test]
    fn topic_chosen_needs_an_opener_that_names_the_topic() {
        let cands = [cand("Well, that is a good one to", -0.7, false, false), cand("Sure thing, here it", -1.6, false, false)];
        let s = PrefSettings::default();
        assert_eq!(pairs_of("x", "What is a banjo?", &cands, &s, &Stock::none()).len(), 1);
        let t = PrefSettings { topic_chosen: true, ..s };
        assert!(pairs_of("x", "What is a banjo?", &cands, &t, &Stock::none()).is_empty());
        let named = [cands[0].clone(), cand("A banjo has five strings", -1.0, true, false)];
        assert_eq!(pairs_of("x", "What is a banjo?", &named, &t, &Stock::none())[0].why, Why::OffTopic);
    }
}
