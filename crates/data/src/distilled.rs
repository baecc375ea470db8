//! Distilled pairs: a prompt of the distillation set and the teacher's reply (written by
//! `ulm distill`), with the filters that keep only usable replies and their held-out split.
//!
//! ```
//! use ulm_data::distilled::{Finish, Pair, Verdict};
//! let p = Pair { id: "chitchat:abc:0".into(), source: "chitchat".into(), prompt: "Hi, how are you?".into(),
//!                reply: "I'm doing well, thank you for asking!".into(), finish: Finish::Stop };
//! assert_eq!(p.verdict(), Verdict::Keep);
//! ```

use crate::clean::normalize_space;
use crate::split::{Split, fnv1a, split_of};

/// Why the teacher stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The teacher ended its turn: the reply is complete.
    Stop,
    /// Cut at the token cap: the reply is unfinished and must not teach the model to stop there.
    Length,
}

impl Finish {
    /// `stop` → [`Finish::Stop`]; anything else (`length`) → [`Finish::Length`], the safe side.
    pub fn parse(s: &str) -> Finish {
        if s == "stop" { Finish::Stop } else { Finish::Length }
    }
}

/// One teacher reply to one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// The prompt's id (`source:doc:turn` or `wordnet-q:pos:lemma`).
    pub id: String,
    /// Source of the prompt.
    pub source: String,
    /// The user's message.
    pub prompt: String,
    /// The teacher's reply.
    pub reply: String,
    /// Whether the reply is complete.
    pub finish: Finish,
}

/// What the filters say about a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Usable.
    Keep,
    /// The reply (or the prompt) is empty.
    Empty,
    /// The reply repeats the prompt verbatim.
    EchoesPrompt,
    /// The reply loops: the same phrase over and over.
    Repetitive,
    /// The reply drifts into rewriting a sentence nobody gave it ("The original sentence is:
    /// "The new employee, who…"), the teacher's commonest failure: about 330 replies of
    /// corpus/distill and the student corpora, which SmolLM2 itself then scores as likely.
    SentenceDrift,
}

impl Verdict {
    /// Name in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Keep => "kept",
            Verdict::Empty => "empty",
            Verdict::EchoesPrompt => "echoes_prompt",
            Verdict::Repetitive => "repetitive",
            Verdict::SentenceDrift => "sentence_drift",
        }
    }
}

/// Share of distilled records held out by their own id (per mille), on top of those whose prompt
/// is held out. The prompt set holds train prompts only, so without it the held-out loss would
/// never see a teacher reply.
pub const HELDOUT_PER_MILLE: u64 = 30;

/// Prompts with fewer words may appear inside a reply ("Hi" → "Hi! How can I help?").
const ECHO_MIN_WORDS: usize = 4;
/// Replies with fewer words are never called repetitive.
const LOOP_MIN_WORDS: usize = 16;
/// A reply whose distinct word 4-grams are fewer than this share of all its 4-grams loops.
const LOOP_MIN_DISTINCT: f64 = 0.7;
/// A reply whose first eight words name one of these (folded words) talks about a sentence...
const DRIFT_WORDS: &[&str] = &["sentence", "employee"];
/// ... or that opens with one of these ...
const DRIFT_OPENINGS: &[&str] = &["here's a revised", "here's a rewritten", "the original text"];
/// ... drifts, unless a word of the prompt starts with one of these (it asked about a text).
const TEXT_TASK_STEMS: &[&str] =
    &["sentence", "employee", "revis", "rewrit", "rephras", "grammar", "paragraph", "text", "edit", "essay", "phrase"];

impl Pair {
    /// The split of the pair: held out when its prompt's document is, or when its id falls in
    /// the [`HELDOUT_PER_MILLE`] share.
    pub fn split(&self) -> Split {
        record_split(&self.id)
    }

    /// Applies the filters (in this order): empty, echo of the prompt, repetition loop, drift
    /// into rewriting a sentence.
    pub fn verdict(&self) -> Verdict {
        if self.reply.trim().is_empty() || self.prompt.trim().is_empty() {
            return Verdict::Empty;
        }
        let prompt = fold_words(&self.prompt);
        let reply = fold_words(&self.reply);
        if prompt.len() >= ECHO_MIN_WORDS && reply.windows(prompt.len()).any(|w| w == prompt.as_slice()) {
            return Verdict::EchoesPrompt;
        }
        if is_repetitive(&reply) {
            return Verdict::Repetitive;
        }
        if drifts_to_a_sentence(&prompt, &reply) {
            return Verdict::SentenceDrift;
        }
        Verdict::Keep
    }

    /// The pair with whitespace normalised (newlines kept: replies use them for lists).
    pub fn normalized(mut self) -> Pair {
        self.prompt = normalize_space(&self.prompt, true);
        self.reply = normalize_space(&self.reply, true);
        self
    }
}

/// Suffix of the id of a record written by the student itself (`ulm distill --student`: the
/// μLM's opener the teacher scored best of several), beside the teacher's own reply.
pub const STUDENT_SUFFIX: &str = "#student";

/// The split of the distilled record `id` ([`Pair::split`]): held out when its prompt's document
/// is, or when the id falls in the [`HELDOUT_PER_MILLE`] share. Never trained on when held out.
pub fn record_split(id: &str) -> Split {
    // A prompt asked again (`<id>#redo`) falls on the side of its first answer.
    let id = prompt_id(id);
    if prompt_split(id) == Split::Heldout || fnv1a(format!("distill-heldout:{id}").as_bytes()) % 1000 < HELDOUT_PER_MILLE {
        Split::Heldout
    } else {
        Split::Train
    }
}

/// The prompt id of a record id: `chitchat:abc:0#redo` → `chitchat:abc:0`.
pub fn prompt_id(id: &str) -> &str {
    id.split_once('#').map_or(id, |(p, _)| p)
}

/// The split of the document a prompt id comes from (`split_of` as `distill_prompts` applied it).
pub fn prompt_split(id: &str) -> Split {
    let id = prompt_id(id);
    let Some((source, rest)) = id.split_once(':') else { return Split::Train };
    match source {
        // `source:doc:turn`: the document id is everything up to the last colon.
        "chitchat" | "chatterbot" => match rest.rsplit_once(':') {
            Some((doc, _turn)) => split_of(source, doc),
            None => split_of(source, rest),
        },
        other => split_of(other, rest),
    }
}

/// Lower-case words of `s` with the punctuation around them stripped.
fn fold_words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// True when the reply (folded words) opens by talking about a sentence or a rewrite that the
/// prompt (folded words) never asked for.
fn drifts_to_a_sentence(prompt: &[String], reply: &[String]) -> bool {
    let head = &reply[..reply.len().min(8)];
    let opening = head.iter().take(3).map(String::as_str).collect::<Vec<_>>().join(" ");
    let drifts = head.iter().any(|w| DRIFT_WORDS.iter().any(|d| w.starts_with(d)))
        || DRIFT_OPENINGS.iter().any(|o| opening.starts_with(o));
    drifts && !prompt.iter().any(|w| TEXT_TASK_STEMS.iter().any(|t| w.starts_with(t)))
}

/// True when few of the word 4-grams are distinct ("at the sunset at the sunset at the …").
fn is_repetitive(words: &[String]) -> bool {
    if words.len() < LOOP_MIN_WORDS {
        return false;
    }
    let grams: Vec<&[String]> = words.windows(4).collect();
    let distinct: std::collections::HashSet<&[String]> = grams.iter().copied().collect();
    (distinct.len() as f64) < LOOP_MIN_DISTINCT * grams.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(prompt: &str, reply: &str) -> Pair {
        Pair { id: "wordnet-q:n:dog".into(), source: "wordnet-q".into(), prompt: prompt.into(), reply: reply.into(), finish: Finish::Stop }
    }

    #[test]
    fn filters_empty_echo_and_loops() {
        assert_eq!(pair("What is a dog?", "  ").verdict(), Verdict::Empty);
        assert_eq!(pair("What is a dog?", "What is a dog? A dog is a pet.").verdict(), Verdict::EchoesPrompt);
        assert_eq!(pair("Hi", "Hi! How can I help you?").verdict(), Verdict::Keep);
        let looped = format!("The best part was {}", "the sunset at ".repeat(12));
        assert_eq!(pair("What was the best part?", &looped).verdict(), Verdict::Repetitive);
        let sorry = "I'm so sorry for your loss. ".to_string() + &"I'm so sorry for your family. ".repeat(5);
        assert_eq!(pair("My dog died.", &sorry).verdict(), Verdict::Repetitive);
        let fine = "A dog is a domesticated animal kept as a pet or for work. Dogs are loyal, playful \
                    and come in many breeds, from tiny Chihuahuas to large Great Danes.";
        assert_eq!(pair("What is a dog?", fine).verdict(), Verdict::Keep);
        // The teacher rewriting a sentence nobody gave it; fine when the prompt asked for that.
        let drift = "The original sentence is: \"The new employee, who was hired last week\"";
        assert_eq!(pair("is hal nice", drift).verdict(), Verdict::SentenceDrift);
        assert_eq!(pair("So it takes consistency?", "Here's a revised version of the text:").verdict(), Verdict::SentenceDrift);
        assert_eq!(pair("Fix the grammar: me and him goes", drift).verdict(), Verdict::Keep);
        assert_eq!(pair("What is a sentence?", "A sentence is a group of words that").verdict(), Verdict::Keep);
        // Past the first eight words a sentence may come up.
        let late = "Dogs are loyal and friendly pets that love walks. A sentence about dogs";
        assert_eq!(pair("Tell me about dogs", late).verdict(), Verdict::Keep);
    }

    #[test]
    fn prompt_split_follows_the_document() {
        for i in 0..500 {
            let doc = format!("conv{i}");
            let id = format!("chitchat:{doc}:3");
            assert_eq!(prompt_split(&id), split_of("chitchat", &doc));
            let id = format!("chatterbot:food:{i}:0");
            assert_eq!(prompt_split(&id), split_of("chatterbot", &format!("food:{i}")));
            let id = format!("wordnet-q:n:word{i}");
            assert_eq!(prompt_split(&id), split_of("wordnet-q", &format!("n:word{i}")));
        }
    }

    #[test]
    fn a_prompt_asked_again_keeps_the_split_of_its_first_answer() {
        let (mut held, mut train) = (0, 0);
        for i in 0..2_000 {
            let first = Pair { id: format!("wordnet-q:n:w{i}"), ..pair("q", "r") };
            let again = Pair { id: format!("{}#redo", first.id), ..first.clone() };
            assert_eq!(prompt_split(&again.id), prompt_split(&first.id));
            assert_eq!(again.split(), first.split(), "{}", first.id);
            if first.split() == Split::Heldout { held += 1 } else { train += 1 }
        }
        assert!(held > 0 && train > 0, "both sides seen: {held} held out, {train} train");
    }

    #[test]
    fn about_three_percent_of_train_prompts_are_held_out() {
        let pairs: Vec<Pair> = (0..20_000)
            .map(|i| Pair { id: format!("wordnet-q:n:w{i}"), ..pair("q", "r") })
            .filter(|p| prompt_split(&p.id) == Split::Train)
            .collect();
        let held = pairs.iter().filter(|p| p.split() == Split::Heldout).count() as f64 / pairs.len() as f64;
        assert!((0.02..0.04).contains(&held), "held-out share {held}");
    }
}
