//! The prompt set for distillation: user turns from chitchat and chatterbot, questions
//! generated from WordNet lemmas that people actually use (seen in the chitchat chats), and
//! task-style requests (`instruct`: writing, maths, code, rewriting; see [`crate::instruct`]).
//!
//! Prompts inherit the split of their document (WordNet questions: of their lemma), so a
//! held-out document never reaches the teacher's training replies.

use std::collections::HashMap;

use crate::clean::dedup_by;
use crate::instruct::{article, instruct_prompts};
use crate::sources::{Body, Document, Role, Synset};
use crate::split::{Split, fnv1a, split_of};

/// One prompt for the teacher.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prompt {
    /// Stable identity (`source:doc:turn` or `wordnet-q:lemma`).
    pub id: String,
    /// Source name.
    pub source: String,
    /// The user's message.
    pub text: String,
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Lower-case word counts over the chitchat chats: a proxy for how common a lemma is.
pub fn word_counts(docs: &[Document]) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for d in docs.iter().filter(|d| d.source == "chitchat") {
        if let Body::Chat(turns) = &d.body {
            for t in turns {
                for w in t.text.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()) {
                    *counts.entry(w.to_lowercase()).or_insert(0) += 1;
                }
            }
        }
    }
    counts
}

/// A question about a lemma; the template is picked by a hash so the set is stable.
fn question(pos: char, w: &str) -> String {
    let h = fnv1a(w.as_bytes()) % 4;
    match (pos, h) {
        ('n', 0) => format!("What is {} {w}?", article(w)),
        ('n', 1) => format!("Tell me about {w}."),
        ('n', 2) => format!("Can you explain what {} {w} is?", article(w)),
        ('n', _) => format!("What is the purpose of {} {w}?", article(w)),
        ('v', 0) => format!("How do I {w}?"),
        ('v', 1) => format!("What does it mean to {w}?"),
        ('v', 2) => format!("Can you give me tips on how to {w}?"),
        ('v', _) => format!("Why do people {w}?"),
        (_, 0 | 1) => format!("What does \"{w}\" mean?"),
        _ => format!("Can you describe something that is {w}?"),
    }
}

/// Chitchat count a verb needs before it gets a task-style request.
const MIN_VERB_COUNT: u32 = 30;

/// Builds the prompt set of `split`, deduplicated and interleaved across sources so that any
/// prefix of it is a fair mix (a distillation run that stops early is still balanced).
pub fn distill_prompts(docs: &[Document], synsets: &[Synset], split: Split, min_lemma_count: u32) -> Vec<Prompt> {
    let mut by_source: Vec<Vec<Prompt>> = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    // Passages for rewriting requests: the second turn of training chats, of a sentence's length.
    let mut passages = Vec::new();
    for d in docs.iter().filter(|d| d.source == "chitchat" && d.split() == Split::Train) {
        if let Body::Chat(turns) = &d.body
            && let Some(t) = turns.get(1)
            && (6..=25).contains(&words(&t.text))
        {
            passages.push((d.id.clone(), 1, t.text.clone()));
        }
    }
    for d in docs.iter().filter(|d| d.split() == split) {
        let Body::Chat(turns) = &d.body else { continue };
        for (k, t) in turns.iter().enumerate() {
            let n = words(&t.text);
            let usable = match d.source {
                // The opening turn, and later turns that end in a question.
                "chitchat" => (k == 0 && n >= 2 || t.text.ends_with('?') && n >= 4) && n <= 30,
                "chatterbot" => t.role == Role::User && k == 0,
                _ => false,
            };
            if usable {
                let slot = if d.source == "chitchat" { 0 } else { 1 };
                by_source[slot].push(Prompt {
                    id: format!("{}:{}:{k}", d.source, d.id),
                    source: d.source.to_string(),
                    text: t.text.clone(),
                });
            }
        }
    }
    let counts = word_counts(docs);
    let mut seen_lemma = std::collections::HashSet::new();
    let mut lemmas = Vec::new();
    for s in synsets {
        let Some(w) = s.words.first() else { continue };
        let w = w.to_lowercase();
        let common = w.split(' ').all(|p| counts.get(p).copied().unwrap_or(0) >= min_lemma_count);
        if !common || words(&w) > 2 || !w.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-') {
            continue;
        }
        let key = format!("{}:{w}", s.pos);
        if !seen_lemma.insert(key.clone()) {
            continue;
        }
        // Verbs only when common: WordNet's rarer verbs are mostly nouns ("to garage").
        if s.pos == 'n' || s.pos == 'v' && counts.get(&w).copied().unwrap_or(0) >= MIN_VERB_COUNT {
            lemmas.push((s.pos, w.clone()));
        }
        if split_of("wordnet-q", &key) != split {
            continue;
        }
        by_source[2].push(Prompt { id: format!("wordnet-q:{key}"), source: "wordnet-q".into(), text: question(s.pos, &w) });
    }
    // Trivia from the glosses of WordNet nouns whose gloss text is on the training side, told in
    // words people use (almost all seen in the chats) and, for common nouns, naming a common word.
    let mut glosses = Vec::new();
    for s in synsets.iter().filter(|s| s.pos == 'n') {
        let key = format!("{}{}", s.pos, s.offset);
        let Some(w) = s.words.first() else { continue };
        if split_of("wordnet", &key) != Split::Train || !w.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-') {
            continue;
        }
        let seen = |x: &str| counts.get(&x.to_lowercase()).copied().unwrap_or(0) >= min_lemma_count;
        let named = w.starts_with(char::is_uppercase);
        if !named && !w.split(' ').all(seen) {
            continue;
        }
        let def = s.gloss.split(';').next().unwrap_or("");
        let gw: Vec<&str> = def.split(|c: char| !c.is_alphabetic()).filter(|x| !x.is_empty()).collect();
        if gw.is_empty() || gw.iter().filter(|x| seen(x)).count() * 10 < gw.len() * 9 {
            continue;
        }
        glosses.push((key, w.clone(), s.gloss.clone()));
    }
    by_source[3] = instruct_prompts(&lemmas, &passages, &glosses, split)
        .into_iter()
        .map(|(id, text)| Prompt { id, source: "instruct".into(), text })
        .collect();
    // Spread each source evenly over the whole list: order by (rank within source) / (size).
    let mut all: Vec<(f64, Prompt)> = Vec::new();
    for list in &mut by_source {
        dedup_by(list, |p| p.text.clone());
        list.sort_by_key(|p| fnv1a(p.id.as_bytes()));
        let n = list.len() as f64;
        all.extend(list.drain(..).enumerate().map(|(i, p)| ((i as f64 + 0.5) / n, p)));
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let mut out: Vec<Prompt> = all.into_iter().map(|(_, p)| p).collect();
    dedup_by(&mut out, |p| p.text.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::chat;

    #[test]
    fn prompts_respect_the_split_and_are_unique() {
        let docs: Vec<Document> = (0..400)
            .map(|i| chat("chatterbot", &format!("t:{i}"), &[&format!("What is thing number {i}?"), "It is a thing."]))
            .chain([chat("chatterbot", "dup", &["What is thing number 1?", "x"])])
            .collect();
        let train = distill_prompts(&docs, &[], Split::Train, 1);
        let held = distill_prompts(&docs, &[], Split::Heldout, 1);
        assert!(!held.is_empty() && train.len() > held.len());
        for p in &held {
            assert!(!train.iter().any(|q| q.text == p.text), "held-out prompt leaked: {}", p.text);
        }
        let mut texts: Vec<_> = train.iter().map(|p| p.text.clone()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), train.len());
    }

    #[test]
    fn wordnet_questions_only_for_common_lemmas() {
        let docs = vec![chat("chitchat", "c", &["I love my dog so much", "my dog too"])];
        let syn = |w: &str| Synset { pos: 'n', offset: "1".into(), words: vec![w.into()], gloss: "g".into() };
        let synsets = vec![syn("dog"), syn("aardvark")];
        let all: Vec<Prompt> = [Split::Train, Split::Heldout]
            .iter()
            .flat_map(|s| distill_prompts(&docs, &synsets, *s, 2))
            .filter(|p| p.source == "wordnet-q")
            .collect();
        assert_eq!(all.len(), 1);
        assert!(all[0].text.contains("dog"));
    }
}
