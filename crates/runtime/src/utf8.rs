//! Keeps sampled text valid UTF-8.
//!
//! Byte-level vocabularies hold tokens that are only part of a character (a lone lead byte, a
//! few continuation bytes, SentencePiece's `<0xE2>`). A well-trained model strings them into
//! whole characters; a micro model sometimes does not, and the reader sees `A�ade`. A
//! [`Utf8Guard`] follows the bytes generated so far and, before each draw, removes the tokens
//! that cannot continue them into valid UTF-8: mid-character only the right continuation
//! bytes are allowed, between characters nothing that starts with a continuation byte.
//!
//! ```
//! use ulm_runtime::utf8::Utf8State;
//! let s = Utf8State::default().feed_all("é".as_bytes()[..1].iter().copied()).unwrap();
//! assert!(!s.is_boundary());
//! assert!(s.feed(b'a').is_none()); // an ASCII byte cannot finish "é"
//! assert!(s.feed(0xA9).unwrap().is_boundary());
//! ```

use std::sync::Arc;

use tokenizers::DecoderWrapper;

use crate::tokenizer::Tokenizer;

/// Where a byte stream stands in UTF-8: between characters, or inside one with `need` more
/// continuation bytes to come, the next of which must lie in `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8State {
    need: u8,
    lo: u8,
    hi: u8,
}

impl Default for Utf8State {
    fn default() -> Self {
        Utf8State { need: 0, lo: 0x80, hi: 0xBF }
    }
}

impl Utf8State {
    /// Between two characters (or at the start).
    pub fn is_boundary(&self) -> bool {
        self.need == 0
    }

    /// The state after byte `b`, or `None` if `b` cannot come next in valid UTF-8 (overlong
    /// forms and surrogates excluded, as `std::str::from_utf8` does).
    pub fn feed(self, b: u8) -> Option<Utf8State> {
        let cont = |need, lo, hi| Some(Utf8State { need, lo, hi });
        if self.need > 0 {
            return (self.lo..=self.hi).contains(&b).then(|| Utf8State { need: self.need - 1, ..Utf8State::default() });
        }
        match b {
            0x00..=0x7F => Some(self),
            0xC2..=0xDF => cont(1, 0x80, 0xBF),
            0xE0 => cont(2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => cont(2, 0x80, 0xBF),
            0xED => cont(2, 0x80, 0x9F),
            0xF0 => cont(3, 0x90, 0xBF),
            0xF1..=0xF3 => cont(3, 0x80, 0xBF),
            0xF4 => cont(3, 0x80, 0x8F),
            _ => None,
        }
    }

    /// [`Utf8State::feed`] over several bytes.
    pub fn feed_all(self, bytes: impl IntoIterator<Item = u8>) -> Option<Utf8State> {
        bytes.into_iter().try_fold(self, Utf8State::feed)
    }
}

/// The tokens of a vocabulary that are not whole UTF-8 text, with their bytes. Built once per
/// tokenizer ([`Tokenizer::utf8_table`]); every other token is whole characters (or a special
/// token) and may follow only a character boundary.
#[derive(Debug, Default)]
pub struct Utf8Table {
    /// Tokens whose bytes are not valid UTF-8 on their own, with those bytes.
    partial: Vec<(u32, Box<[u8]>)>,
    /// The `partial` tokens that cannot follow a character boundary (they start inside one).
    not_at_boundary: Vec<u32>,
}

impl Utf8Table {
    /// Reads the bytes of every token of `tok`. Vocabularies whose decoder is neither
    /// byte-level nor byte-fallback give an empty table (nothing is ever masked).
    pub fn new(tok: &Tokenizer) -> Utf8Table {
        let hf = tok.hf();
        let (byte_level, byte_fallback) = match hf.get_decoder() {
            Some(DecoderWrapper::ByteLevel(_)) => (true, false),
            Some(DecoderWrapper::Sequence(s)) => (
                s.get_decoders().iter().any(|d| matches!(d, DecoderWrapper::ByteLevel(_))),
                s.get_decoders().iter().any(|d| matches!(d, DecoderWrapper::ByteFallback(_))),
            ),
            Some(DecoderWrapper::ByteFallback(_)) => (false, true),
            _ => (false, false),
        };
        let mut table = Utf8Table::default();
        if !byte_level && !byte_fallback {
            return table;
        }
        let added = hf.get_added_tokens_decoder();
        // Byte-level BPE writes byte b as char `chars[b]`; invert that (all chars are < U+0144).
        let mut byte_of = [u16::MAX; 0x144];
        for (b, c) in crate::tokenizer::byte_level_chars().into_iter().enumerate() {
            byte_of[c as usize] = b as u16;
        }
        for id in 0..tok.vocab_size() as u32 {
            if added.contains_key(&id) {
                continue;
            }
            let Some(s) = hf.id_to_token(id) else { continue };
            let bytes: Option<Vec<u8>> = if byte_level {
                s.chars().map(|c| byte_of.get(c as usize).filter(|&&b| b != u16::MAX).map(|&b| b as u8)).collect()
            } else {
                s.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).filter(|h| h.len() == 2).and_then(|h| u8::from_str_radix(h, 16).ok()).map(|b| vec![b])
            };
            // A token that is not a byte sequence (an unmapped char, a SentencePiece word) is text.
            let Some(bytes) = bytes else { continue };
            if std::str::from_utf8(&bytes).is_ok() {
                continue;
            }
            if Utf8State::default().feed_all(bytes.iter().copied()).is_none() {
                table.not_at_boundary.push(id);
            }
            table.partial.push((id, bytes.into_boxed_slice()));
        }
        table
    }

    /// How many tokens are parts of characters.
    pub fn partial_tokens(&self) -> usize {
        self.partial.len()
    }

    /// The state after `token` from `state` (`None`: the token breaks UTF-8). Whole-text
    /// tokens are valid only at a boundary and leave one.
    pub fn advance(&self, state: Utf8State, token: u32) -> Option<Utf8State> {
        match self.partial.binary_search_by_key(&token, |p| p.0) {
            Ok(i) => state.feed_all(self.partial[i].1.iter().copied()),
            Err(_) => state.is_boundary().then_some(state),
        }
    }
}

/// A [`Utf8Table`] and the state of one reply: masks the logits of the next draw.
#[derive(Clone, Debug)]
pub struct Utf8Guard {
    table: Arc<Utf8Table>,
    state: Utf8State,
    /// (token, logit) of the allowed tokens while a character is open; capacity = partial tokens.
    keep: Vec<(u32, f32)>,
}

impl Utf8Guard {
    /// A guard at a character boundary.
    pub fn new(table: Arc<Utf8Table>) -> Utf8Guard {
        let keep = Vec::with_capacity(table.partial.len());
        Utf8Guard { table, state: Utf8State::default(), keep }
    }

    /// Where the reply stands.
    pub fn state(&self) -> Utf8State {
        self.state
    }

    /// Sets to `-inf` the logits of tokens that cannot come next. If none could (a vocabulary
    /// without the needed byte), leaves `logits` as they are.
    pub fn mask(&mut self, logits: &mut [f32]) {
        if self.state.is_boundary() {
            for &t in &self.table.not_at_boundary {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            return;
        }
        self.keep.clear();
        for (t, bytes) in &self.table.partial {
            if self.state.feed_all(bytes.iter().copied()).is_some() {
                if let Some(&l) = logits.get(*t as usize) {
                    self.keep.push((*t, l));
                }
            }
        }
        if self.keep.is_empty() {
            return;
        }
        logits.fill(f32::NEG_INFINITY);
        for &(t, l) in &self.keep {
            logits[t as usize] = l;
        }
    }

    /// Moves past the chosen `token`. A token the mask would have removed (the caller sampled
    /// without it) starts over at a boundary.
    pub fn advance(&mut self, token: u32) {
        self.state = self.table.advance(self.state, token).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_agrees_with_std_on_every_short_sequence() {
        // All 1- and 2-byte sequences, and 3-byte ones from a spread of lead bytes.
        let mut seqs: Vec<Vec<u8>> = (0..=255u8).map(|a| vec![a]).collect();
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                seqs.push(vec![a, b]);
            }
        }
        for a in [0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF4, 0xF5] {
            for b in 0x70..=0xC0u8 {
                for c in [0x41, 0x80, 0x9F, 0xA0, 0xBF, 0xC0] {
                    seqs.push(vec![a, b, c]);
                }
            }
        }
        for s in seqs {
            let end = Utf8State::default().feed_all(s.iter().copied());
            match std::str::from_utf8(&s) {
                Ok(_) => assert_eq!(end, Some(Utf8State::default()), "{s:x?}"),
                Err(e) if e.error_len().is_none() => assert!(end.is_some_and(|st| !st.is_boundary()), "{s:x?} is a valid prefix"),
                Err(_) => assert_eq!(end, None, "{s:x?}"),
            }
        }
    }
}
