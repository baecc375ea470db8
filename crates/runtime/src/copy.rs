//! Copy boost: pulls a reply toward the content words of the question it answers.
//!
//! ```no_run
//! use ulm_runtime::copy::CopyBoost;
//! use ulm_runtime::generate::{GenerateOptions, LoadedModel};
//! let lm = LoadedModel::open("models/ulm-8m".as_ref(), ulm_runtime::Precision::Native, None).unwrap();
//! let boost = CopyBoost::new(&lm.tokenizer, "What is a volcano?", 1.5).unwrap();
//! let opts = GenerateOptions { words: Some(8), copy: Some(boost), ..GenerateOptions::default() };
//! ```
//!
//! A μLM of a few million parameters, trained on a few million tokens, writes fluent assistant
//! openers but rarely names what it was asked about ("What is a volcano?" → "A battery is a type
//! of …"): copying a word from the prompt is a skill that small models learn late. The boost adds
//! `strength` to the logits of
//! - the first token of every content word of the question (a word of three letters or more that
//!   is not a function word or an instruction verb, in the spellings " word", "word", " Word"),
//!   until the reply has begun one of that word's spellings, and
//! - the next token of such a word right after the reply wrote the token before it, with
//!   [`FOLLOW_FACTOR`] times the strength, so a word of several tokens (" vol" + "cano") is
//!   finished once begun rather than ending as a made-up word (" vol" + "ley").
//!
//! It changes only which of the model's own candidates win: a token the model finds implausible
//! stays implausible (top-p still applies after the boost). `ulm eval --copy-boost` measures it.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// A begun word's next token gets this many times the strength.
pub const FOLLOW_FACTOR: f32 = 4.0;

/// Content words taken from one question (the rest are ignored).
pub const MAX_WORDS: usize = 32;

/// Words that never carry the topic: function words, pronouns, question words and the verbs of
/// instructions ("write", "explain", …).
const STOPWORDS: &[&str] = &[
    "about", "above", "after", "again", "all", "also", "and", "any", "are", "because", "been", "before", "being", "between",
    "both", "but", "can", "could", "did", "does", "doing", "down", "during", "each", "even", "ever", "every", "few", "for",
    "from", "further", "get", "got", "had", "has", "have", "having", "her", "here", "hers", "herself", "him", "himself",
    "his", "how", "into", "its", "itself", "just", "know", "like", "more", "most", "much", "must", "myself", "not", "now",
    "off", "once", "only", "other", "our", "ours", "out", "over", "own", "really", "same", "she", "should", "some", "such",
    "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "thing", "things", "think", "this",
    "those", "through", "too", "under", "until", "very", "want", "was", "way", "well", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "yeah", "yes", "you", "your", "yours", "yourself",
    "lol", "haha", "okay", "hello", "please", "thanks", "thank", "write", "explain", "describe", "tell", "give", "provide",
    "make", "create", "compose", "list", "use", "using", "following", "answer", "question", "let", "one", "two", "may",
    "might", "say", "said", "see", "something", "anything", "someone", "anyone", "don't", "i'm", "it's", "you're",
];

/// The boost for one question. Built once per request; applying it allocates nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyBoost {
    strength: f32,
    /// (first token of a spelling, index of its content word).
    starts: Vec<(u32, u16)>,
    /// (token, the token that follows it inside a content word).
    follows: Vec<(u32, u32)>,
}

impl CopyBoost {
    /// The boost toward the content words of `question` in `tok`'s tokens; `strength` is added to
    /// a boosted logit (0 turns it off).
    pub fn new(tok: &Tokenizer, question: &str, strength: f32) -> Result<CopyBoost> {
        let mut starts = Vec::new();
        let mut follows = Vec::new();
        for (k, word) in content_words(question).into_iter().enumerate() {
            let mut cap = word.clone();
            if let Some(f) = cap.get(..1) {
                cap.replace_range(..1, &f.to_uppercase());
            }
            for spelling in [format!(" {word}"), word.clone(), format!(" {cap}")] {
                let ids = tok.encode(&spelling, false)?;
                let Some(&first) = ids.first() else { continue };
                starts.push((first, k as u16));
                follows.extend(ids.windows(2).map(|w| (w[0], w[1])));
            }
        }
        starts.sort_unstable();
        starts.dedup();
        follows.sort_unstable();
        follows.dedup();
        Ok(CopyBoost { strength, starts, follows })
    }

    /// [`CopyBoost::new`], or `None` when `strength` is 0 (the model alone): what a caller with a
    /// strength setting passes as [`crate::generate::GenerateOptions::copy`].
    pub fn optional(tok: &Tokenizer, question: &str, strength: f32) -> Result<Option<CopyBoost>> {
        if strength == 0.0 { Ok(None) } else { CopyBoost::new(tok, question, strength).map(Some) }
    }

    /// The added logit.
    pub fn strength(&self) -> f32 {
        self.strength
    }

    /// How many word-start tokens may be boosted (0: the question has no content word).
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// The tokens that begin a spelling of a content word.
    pub fn start_tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.starts.iter().map(|&(t, _)| t)
    }

    /// True when nothing is boosted.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Adds the boost to `logits` (vocab) for the next token after the reply's tokens so far.
    pub fn apply(&self, reply: &[u32], logits: &mut [f32]) {
        if self.strength == 0.0 {
            return;
        }
        for &(t, word) in &self.starts {
            let begun = self.starts.iter().any(|&(u, w)| w == word && reply.contains(&u));
            if !begun && let Some(l) = logits.get_mut(t as usize) {
                *l += self.strength;
            }
        }
        if let Some(&last) = reply.last() {
            let from = self.follows.partition_point(|&(a, _)| a < last);
            for &(_, next) in self.follows[from..].iter().take_while(|&&(a, _)| a == last) {
                if let Some(l) = logits.get_mut(next as usize) {
                    *l += self.strength * FOLLOW_FACTOR;
                }
            }
        }
    }
}

/// True if `opener` names one of the content words of `prompt` (the words the copy boost looks
/// for, [`content_words`]), compared on their first five letters so that
/// "volcanoes" names "volcano" and "economic" names "economy": a reproducible, cheap stand-in for
/// "the opener is about what was asked" (it cannot see a reply that is on topic in other words).
///
/// ```
/// use ulm_runtime::copy::names_topic;
/// assert!(names_topic("Why do volcanoes erupt?", "A volcano erupts when"));
/// assert!(!names_topic("Why do volcanoes erupt?", "I'm so glad you asked! I'm here"));
/// ```
pub fn names_topic(prompt: &str, opener: &str) -> bool {
    let stem = |w: &String| w.chars().take(5).collect::<String>();
    let asked: std::collections::HashSet<String> = content_words(prompt).iter().map(stem).collect();
    content_words(opener).iter().any(|w| asked.contains(&stem(w)))
}

/// The content words of `text`, lower-cased, in order of appearance, each once, at most
/// [`MAX_WORDS`].
pub fn content_words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-')) {
        let w = raw.trim_matches(|c| c == '\'' || c == '-').to_lowercase();
        if w.chars().count() < 3 || !w.chars().any(char::is_alphabetic) || STOPWORDS.contains(&w.as_str()) || out.contains(&w) {
            continue;
        }
        out.push(w);
        if out.len() == MAX_WORDS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_words_skip_function_words_and_instructions() {
        assert_eq!(content_words("What is a volcano?"), ["volcano"]);
        assert_eq!(content_words("Write a poem about the OCEAN, please. The ocean!"), ["poem", "ocean"]);
        assert_eq!(content_words("Do you like Harry Potter's books?"), ["harry", "potter's", "books"]);
        assert_eq!(content_words("is hal nice"), ["hal", "nice"]);
        assert!(content_words("How are you?").is_empty());
        let many: String = (0..50).map(|i| format!("word{i} ")).collect();
        assert_eq!(content_words(&many).len(), MAX_WORDS);
    }
}
