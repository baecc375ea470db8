//! The seam: where the opener ends and the continuation begins.
//!
//! Three rules make the two halves read as one message:
//! 1. **No repetition.** A continuation that starts by repeating the whole opener, or its last
//!    [`MIN_OVERLAP_WORDS`] or more words, loses the repeated words (compared case- and
//!    punctuation-insensitively; a longer overlap wins). A single repeated word is kept: "I think
//!    that" + "that is right" is real text.
//! 2. **Whole words only.** Stripping removes whole words; the start of the continuation is held
//!    back only until the words received settle whether it repeats the opener (usually one word),
//!    so a word is never split between "stripped" and "shown".
//! 3. **One space at the join.** Leading spaces collapse to one; none before punctuation that
//!    attaches to the left (`.`, `,`, `)`, `'s`, a closing quote), none after an opening bracket,
//!    quote or currency sign; a line break at the start of the continuation is kept as is.
//!
//! The opener itself must never end in whitespace when it is sent (a trailing space derails
//! llama.cpp continuations); [`Seam::new`] trims it and the engine never shows one.
//!
//! ```
//! use ulm_handoff::seam::{join, Seam};
//! assert_eq!(join("The capital of France is", " the capital of France is Paris."), "The capital of France is Paris.");
//! assert_eq!(join("It is Paris", ".  A city"), "It is Paris.  A city");
//! // Streaming: deltas go in, text that is safe to show comes out.
//! let mut seam = Seam::new("The capital of France is");
//! let mut shown = String::new();
//! for delta in ["  France", " is", " Par", "is", "."] {
//!     shown += &seam.push(delta);
//! }
//! shown += &seam.finish();
//! assert_eq!(shown, " Paris.");
//! ```

use crate::words::norm;

/// Shortest overlap (in words) between the opener's end and the continuation's start that counts
/// as a repetition, unless the whole opener is repeated.
pub const MIN_OVERLAP_WORDS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Overlap, // buffering until repetition can be ruled in or out
    Join,    // repetition settled; waiting for the first non-space character
    Pass,    // the join is done: deltas pass through unchanged
}

/// Incremental seam repair for one continuation; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Seam {
    opener: String,
    raw: Vec<String>,   // opener words as written
    words: Vec<String>, // opener words normalised for comparison
    stage: Stage,
    buf: String,
}

impl Seam {
    /// A seam after `opener` (the text already shown; trailing whitespace is ignored).
    pub fn new(opener: &str) -> Self {
        let opener = opener.trim_end().to_string();
        let raw: Vec<String> = opener.split_whitespace().map(str::to_string).collect();
        let words = raw.iter().map(|w| norm(w)).collect();
        Seam { opener, raw, words, stage: Stage::Overlap, buf: String::new() }
    }

    /// Takes the next delta of the continuation; returns the text that can be shown now (often
    /// empty while the start of the continuation is still undecided).
    pub fn push(&mut self, delta: &str) -> String {
        if self.stage == Stage::Pass {
            return delta.to_string();
        }
        self.buf.push_str(delta);
        self.advance(false)
    }

    /// The continuation has ended: returns whatever was held back.
    pub fn finish(&mut self) -> String {
        if self.stage == Stage::Pass {
            return String::new();
        }
        self.advance(true)
    }

    /// True once the join has been made and text passes straight through.
    pub fn is_joined(&self) -> bool {
        self.stage == Stage::Pass
    }

    fn advance(&mut self, last: bool) -> String {
        if self.stage == Stage::Overlap {
            let Some((drop, keep)) = self.overlap(last) else { return String::new() };
            self.buf = keep + &self.buf[drop..];
            self.stage = Stage::Join;
        }
        if self.buf.trim().is_empty() {
            if last {
                self.buf.clear();
                self.stage = Stage::Pass;
            }
            return String::new();
        }
        if !last && !join_ready(self.buf.trim_start()) {
            return String::new();
        }
        let out = join_text(&self.opener, &self.buf);
        self.buf.clear();
        self.stage = Stage::Pass;
        out
    }

    // Decides rule 1. `None`: wait for more text. `Some((bytes, keep))`: drop the first `bytes` of
    // the buffer and put `keep` (punctuation the continuation added to the last repeated word)
    // back in front.
    fn overlap(&self, last: bool) -> Option<(usize, String)> {
        let n = self.words.len();
        let spans = word_spans(&self.buf);
        if n == 0 || (spans.is_empty() && last) {
            return Some((0, String::new()));
        }
        if spans.is_empty() {
            return None;
        }
        let ends_in_space = self.buf.ends_with(char::is_whitespace);
        let complete = if ends_in_space || last { spans.len() } else { spans.len() - 1 };
        let word = |i: usize| &self.buf[spans[i].0..spans[i].1];
        let mut best = 0;
        let mut pending = false;
        for start in 0..n {
            let len = n - start;
            if start > 0 && len < MIN_OVERLAP_WORDS {
                break;
            }
            let target = &self.words[start..];
            if (0..complete.min(len)).any(|i| norm(word(i)) != target[i]) {
                continue;
            }
            if complete >= len {
                best = best.max(len);
                continue;
            }
            // The candidate is still open; at the end, or when a half-received word rules it
            // out, it is dead.
            if last {
                continue;
            }
            if complete < spans.len() {
                // Only letters or digits tell: a word that so far is `"` may still become `"France`.
                let partial = word(complete);
                if partial.chars().any(char::is_alphanumeric) && !target[complete].starts_with(&norm(partial)) {
                    continue;
                }
            }
            pending = true;
        }
        if pending {
            return None;
        }
        if best == 0 {
            return Some((0, String::new()));
        }
        let cont_last = word(best - 1);
        let opener_last = &self.raw[n - 1];
        Some((spans[best - 1].1, added_tail(cont_last, opener_last)))
    }
}

/// Joins a whole continuation to `opener` with the seam rules: `opener` (trailing whitespace
/// trimmed) followed by the repaired continuation.
pub fn join(opener: &str, continuation: &str) -> String {
    let mut seam = Seam::new(opener);
    let mut out = seam.opener.clone();
    out += &seam.push(continuation);
    out += &seam.finish();
    out
}

/// Byte ranges of the whitespace-separated words of `s`.
fn word_spans(s: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(st)) => {
                spans.push((st, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(st) = start {
        spans.push((st, s.len()));
    }
    spans
}

// Trailing punctuation the continuation's copy of a word has beyond the opener's: "Paris." after
// "Paris" keeps the ".". Anything else (a different mark) is dropped with the word.
fn added_tail(cont_word: &str, opener_word: &str) -> String {
    let tail = |w: &str| -> usize { w.len() - w.trim_end_matches(|c: char| !c.is_alphanumeric()).len() };
    let ct = &cont_word[cont_word.len() - tail(cont_word)..];
    let ot = &opener_word[opener_word.len() - tail(opener_word)..];
    ct.strip_prefix(ot).unwrap_or("").to_string()
}

// Rule 3: `cont` has at least one non-whitespace character.
fn join_text(opener: &str, cont: &str) -> String {
    let body = cont.trim_start();
    if opener.is_empty() {
        return body.to_string();
    }
    let lead = &cont[..cont.len() - body.len()];
    if let Some(nl) = lead.find(['\n', '\r']) {
        // A line break is structure (a list, a paragraph): keep it and any indentation after it.
        return cont[nl..].to_string();
    }
    let glued_script = opener.chars().next_back().is_some_and(is_cjk) && body.chars().next().is_some_and(is_cjk);
    if glued_script || attaches_left(opener, body) || opens(opener) {
        body.to_string()
    } else {
        format!(" {body}")
    }
}

// Is enough of the continuation here to apply rule 3? Only an apostrophe or an "n" need to see
// what follows ("'s" vs "'Hello'", "n't" vs "no").
fn join_ready(body: &str) -> bool {
    if let Some(after) = body.strip_prefix('\'') {
        let letters = after.chars().take_while(|c| c.is_alphabetic()).count();
        return letters > 2 || after.chars().count() > letters;
    }
    if body.starts_with('n') {
        return body.len() >= 3 || !"n't".starts_with(body);
    }
    true
}

// Scripts written without spaces between words.
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3000..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF)
}

// Does the continuation start with something that sticks to the word before it?
fn attaches_left(opener: &str, body: &str) -> bool {
    let mut chars = body.chars();
    let Some(c) = chars.next() else { return false };
    match c {
        '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '}' | '%' | '…' | '”' | '’' | '»' => true,
        // Odd count so far: this quote closes one the opener opened.
        '"' => opener.matches('"').count() % 2 == 1,
        '\'' => is_contraction(chars.as_str()),
        'n' => body.starts_with("n't") && opener.ends_with(char::is_alphabetic),
        _ => false,
    }
}

// "'s", "'re", "'ll", ... after an apostrophe.
fn is_contraction(after: &str) -> bool {
    let letters: String = after.chars().take_while(|c| c.is_alphabetic()).collect();
    let next = after[letters.len()..].chars().next();
    matches!(letters.to_lowercase().as_str(), "s" | "t" | "re" | "ll" | "ve" | "d" | "m")
        && next.is_none_or(|c| !c.is_alphanumeric())
}

// Does the opener end with something that sticks to the word after it?
fn opens(opener: &str) -> bool {
    let mut rev = opener.chars().rev();
    let Some(last) = rev.next() else { return false };
    match last {
        '(' | '[' | '{' | '“' | '‘' | '«' | '/' | '$' | '£' | '€' | '#' | '@' | '¿' | '¡' => true,
        '"' => opener.matches('"').count() % 2 == 1,
        // "well-" + "known": a hyphen glued to a word is a compound in progress.
        '-' => rev.next().is_some_and(char::is_alphanumeric),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every rule is checked both on the whole continuation and fed one character at a time.
    fn check(opener: &str, cont: &str, want: &str) {
        assert_eq!(join(opener, cont), want, "join({opener:?}, {cont:?})");
        let mut seam = Seam::new(opener);
        let mut out = opener.trim_end().to_string();
        for c in cont.chars() {
            out += &seam.push(&c.to_string());
        }
        out += &seam.finish();
        assert_eq!(out, want, "char by char: ({opener:?}, {cont:?})");
    }

    #[test]
    fn space_is_added_when_missing() {
        check("The capital of France is", "Paris.", "The capital of France is Paris.");
        check("Sure.", "Here you go.", "Sure. Here you go.");
    }

    #[test]
    fn doubled_or_odd_leading_whitespace_collapses_to_one_space() {
        check("The capital of France is", "   Paris.", "The capital of France is Paris.");
        check("The capital of France is", "\t Paris.", "The capital of France is Paris.");
        check("The capital of France is", " Paris.", "The capital of France is Paris.");
    }

    #[test]
    fn opener_trailing_space_is_never_doubled() {
        check("The capital of France is ", " Paris.", "The capital of France is Paris.");
        check("The capital of France is   ", "Paris.", "The capital of France is Paris.");
    }

    #[test]
    fn punctuation_attaches_to_the_left() {
        check("It is Paris", ".", "It is Paris.");
        check("It is Paris", " , a city", "It is Paris, a city");
        check("Paris (the capital", ") is old", "Paris (the capital) is old");
        check("It grew by 3", "% last year", "It grew by 3% last year");
        check("It costs 3", ".50 euros", "It costs 3.50 euros");
        check("Wait", "…", "Wait…");
        check("That is the city", "'s heart", "That is the city's heart");
        check("I do", "n't know", "I don't know");
        check("I say", "no", "I say no");
        check("She said", " 'hello'", "She said 'hello'");
        check("He said \"hello", "\" and left", "He said \"hello\" and left");
    }

    #[test]
    fn opening_marks_take_no_space_after() {
        check("It costs $", "5.", "It costs $5.");
        check("Paris (", "France)", "Paris (France)");
        check("A well-", "known fact", "A well-known fact");
        check("He said \"", "hello\"", "He said \"hello\"");
        check("Closed quote \"a\" then", "\"b\"", "Closed quote \"a\" then \"b\"");
        check("It is - ", "simply", "It is - simply");
    }

    #[test]
    fn line_breaks_at_the_join_are_kept() {
        check("Here are the steps:", "\n\n1. Preheat", "Here are the steps:\n\n1. Preheat");
        check("Here are the steps:", "  \n  - one", "Here are the steps:\n  - one");
    }

    #[test]
    fn full_repetition_of_the_opener_is_stripped() {
        check("The capital of France is", " The capital of France is Paris.", "The capital of France is Paris.");
        check("The capital of France is", "the capital of france is Paris", "The capital of France is Paris");
        check("Sure, here's how:", " Sure, here's how: first", "Sure, here's how: first");
        check("Hello", "Hello! How are you?", "Hello! How are you?");
    }

    #[test]
    fn partial_repetition_of_the_opener_end_is_stripped() {
        check("The capital of France is", " France is Paris.", "The capital of France is Paris.");
        check("The capital of France is", " of France is Paris.", "The capital of France is Paris.");
        // The longest overlap wins.
        check("is it, is it", " is it, is it true", "is it, is it true");
    }

    #[test]
    fn punctuation_added_to_the_last_repeated_word_is_kept() {
        check("The capital of France is Paris", " is Paris. It is big.", "The capital of France is Paris. It is big.");
        check("The capital of France is Paris", " is Paris, a city", "The capital of France is Paris, a city");
    }

    #[test]
    fn a_single_repeated_word_is_real_text() {
        check("I think that", " that is right", "I think that that is right");
        check("It was very", " very good", "It was very very good");
    }

    #[test]
    fn words_repeated_from_the_middle_are_not_stripped() {
        check("The capital of France is", " capital of Paris", "The capital of France is capital of Paris");
    }

    #[test]
    fn repetition_is_stripped_at_word_boundaries_only() {
        // "Fran" is not the word "France": nothing is stripped, and "is" matched nothing.
        check("The capital of France is", " Francesca is here", "The capital of France is Francesca is here");
        check("The capital of France is", " is-ish", "The capital of France is is-ish");
    }

    #[test]
    fn a_short_continuation_that_starts_like_an_overlap_is_kept() {
        // "Paris." could have begun "Paris, a ..." (an overlap) but the continuation ends first.
        check("It is Paris, a", " Paris.", "It is Paris, a Paris.");
    }

    #[test]
    fn continuation_that_only_repeats_is_empty() {
        check("The capital of France is", " The capital of France is", "The capital of France is");
        check("The capital of France is", "   ", "The capital of France is");
        check("The capital of France is", "", "The capital of France is");
    }

    #[test]
    fn nothing_is_shown_until_the_first_word_is_complete() {
        let mut seam = Seam::new("The capital of France is");
        assert_eq!(seam.push(" Fr"), ""); // could still be "France is"
        assert_eq!(seam.push("ance"), "");
        assert_eq!(seam.push(" is"), "");
        // "Paris" rules the last candidate out: the overlap is settled and text flows again.
        assert_eq!(seam.push(" Paris"), " Paris");
        assert!(seam.is_joined());
        assert_eq!(seam.push("."), ".");
        assert_eq!(seam.push(" is"), " is");
        // A first word that matches no candidate is shown as soon as it is known.
        let mut seam = Seam::new("The capital of France is");
        assert_eq!(seam.push(" Paris"), " Paris");
    }

    #[test]
    fn empty_opener_passes_the_continuation_trimmed() {
        check("", "  The answer is 4.", "The answer is 4.");
    }

    // A small deterministic generator: no extra dependency, same cases on every run.
    fn random_text(seed: &mut u64, len: usize) -> String {
        const ALPHABET: &[&str] = &[
            "the", "The", "capital", "of", "France", "is", "Paris", " ", " ", "  ", "\n", ".", ",", "'", "'s", "\"",
            "n't", "(", ")", "-", "$", "…", "é", "東京", "🦀", "\t", "is,", "France.",
        ];
        let mut out = String::new();
        for _ in 0..len {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            out.push_str(ALPHABET[(*seed % ALPHABET.len() as u64) as usize]);
        }
        out
    }

    #[test]
    fn random_inputs_never_panic_and_streaming_equals_join() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..20000 {
            let opener = random_text(&mut seed, round % 7);
            let cont = random_text(&mut seed, round % 11);
            let whole = join(&opener, &cont);
            assert!(whole.starts_with(opener.trim_end()), "{opener:?} + {cont:?} -> {whole:?}");
            // Any split of the continuation into deltas gives the same text.
            let chars: Vec<char> = cont.chars().collect();
            let cut = if chars.is_empty() { 0 } else { round % chars.len() };
            let (a, b): (String, String) = (chars[..cut].iter().collect(), chars[cut..].iter().collect());
            let mut seam = Seam::new(&opener);
            let streamed = format!("{}{}{}{}", opener.trim_end(), seam.push(&a), seam.push(&b), seam.finish());
            assert_eq!(streamed, whole, "{opener:?} + {a:?} | {b:?}");
        }
    }

    #[test]
    fn non_ascii_text_is_safe() {
        check("Die Hauptstadt ist", " Hauptstadt ist Berlin — schön", "Die Hauptstadt ist Berlin — schön");
        check("C'est", " «Paris»", "C'est «Paris»");
        check("日本の首都は", "東京です。", "日本の首都は東京です。");
    }
}
