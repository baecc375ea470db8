//! Rendering documents into token ids and loss classes, token-exact with what the runtime feeds
//! the model at inference.
//!
//! ```no_run
//! use ulm_data::render::{Renderer, Stage, Tokens};
//! use ulm_data::{Role, Turn};
//! let tok = ulm_data::tokenizer::load(std::path::Path::new("data/tokenizer/tokenizer.json"))?;
//! let r = Renderer::new(&tok, Stage::Sft)?;
//! let mut out = Tokens::default();
//! r.chat(&[Turn { role: Role::User, text: "Hi!".into() },
//!          Turn { role: Role::Assistant, text: "Hello!".into() }], true, &mut out)?;
//! # Ok::<(), ulm_data::Error>(())
//! ```
//!
//! A chat turn is `<|im_start|>` + encode("{role}\n") + encode(text) + `<|im_end|>` +
//! encode("\n"). The header and the text are encoded separately because at inference the runtime's
//! prompt ends with `<|im_start|>assistant\n` and the model's reply tokens follow it: the reply
//! is never merged with the newline. (For user turns the runtime encodes "user\n{text}" as one
//! string; the GPT-2 split always cuts after a newline that precedes a non-space, and texts are
//! trimmed, so the ids are the same — a test checks it.) A chat ends with `<|endoftext|>`.
//!
//! Loss classes (of each token as a prediction target; see `train/data.py`):
//!
//! | token | `lm` | `sft` |
//! |---|---|---|
//! | `<|im_start|>`, role header, "\n" after `<|im_end|>`, `<|endoftext|>` after a chat | 0 | 0 |
//! | user text | 1 | 0 |
//! | `<|im_end|>` after a user turn | 1 | 0 |
//! | assistant text: the first [`OPENER_TOKENS`] / the rest | 2 / 1 | 2 / 1 |
//! | `<|im_end|>` after a complete assistant reply | 1 | 1 |
//! | plain text and its `<|endoftext|>` | 1 | 1 |
//!
//! In `lm` every word counts (both speakers of a human chat are language to learn, and learning
//! where a turn ends is useful), but the template tokens, which the runtime always supplies, do
//! not. A reply cut at the teacher's token cap (`complete == false`) gets no `<|im_end|>`: the model
//! must not learn to stop there; its chat ends directly with `<|endoftext|>` (class 0).

use tokenizers::Tokenizer;

use crate::Result;
use crate::sources::{Role, Turn};
use crate::tokenizer::{ENDOFTEXT_ID, IM_END_ID, IM_START_ID, encode};

/// No loss (template tokens, user turns in `sft`).
pub const CLASS_NONE: u8 = 0;
/// Normal loss.
pub const CLASS_NORMAL: u8 = 1;
/// Opener: the first [`OPENER_TOKENS`] tokens of an assistant reply.
pub const CLASS_OPENER: u8 = 2;
/// Length of the opener in tokens (what the μLM exists for).
pub const OPENER_TOKENS: usize = 16;

/// Which training stage the shards are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Language modelling on everything.
    Lm,
    /// Chat SFT: loss on assistant replies only.
    Sft,
}

impl Stage {
    /// `lm` or `sft`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Lm => "lm",
            Stage::Sft => "sft",
        }
    }
}

/// Token ids with their loss classes, same length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tokens {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Loss class of each id as a prediction target.
    pub classes: Vec<u8>,
}

impl Tokens {
    fn push(&mut self, id: u32, class: u8) {
        self.ids.push(id);
        self.classes.push(class);
    }

    fn extend(&mut self, ids: &[u32], class: u8) {
        self.ids.extend_from_slice(ids);
        self.classes.extend(std::iter::repeat_n(class, ids.len()));
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Empties both vectors, keeping their capacity.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.classes.clear();
    }
}

/// Renders chats and texts for one stage with one tokenizer.
pub struct Renderer<'a> {
    tok: &'a Tokenizer,
    stage: Stage,
    user_header: Vec<u32>,
    assistant_header: Vec<u32>,
    newline: Vec<u32>,
}

impl<'a> Renderer<'a> {
    /// A renderer; `tok` should encode literally (as [`crate::tokenizer::load`] sets it up).
    pub fn new(tok: &'a Tokenizer, stage: Stage) -> Result<Self> {
        Ok(Renderer {
            tok,
            stage,
            user_header: encode(tok, "user\n")?,
            assistant_header: encode(tok, "assistant\n")?,
            newline: encode(tok, "\n")?,
        })
    }

    /// Appends a chat; `complete` is false when the last (assistant) turn was cut short.
    pub fn chat(&self, turns: &[Turn], complete: bool, out: &mut Tokens) -> Result<()> {
        let sft = self.stage == Stage::Sft;
        for (k, turn) in turns.iter().enumerate() {
            let last = k + 1 == turns.len();
            out.push(IM_START_ID, CLASS_NONE);
            let text = encode(self.tok, &turn.text)?;
            match turn.role {
                Role::User => {
                    let class = if sft { CLASS_NONE } else { CLASS_NORMAL };
                    out.extend(&self.user_header, CLASS_NONE);
                    out.extend(&text, class);
                    out.push(IM_END_ID, class);
                }
                Role::Assistant => {
                    out.extend(&self.assistant_header, CLASS_NONE);
                    let n = text.len().min(OPENER_TOKENS);
                    out.extend(&text[..n], CLASS_OPENER);
                    out.extend(&text[n..], CLASS_NORMAL);
                    if last && !complete {
                        break; // no `<|im_end|>`, no newline
                    }
                    out.push(IM_END_ID, CLASS_NORMAL);
                }
            }
            out.extend(&self.newline, CLASS_NONE);
        }
        out.push(ENDOFTEXT_ID, CLASS_NONE);
        Ok(())
    }

    /// Appends the prompt the runtime feeds the model for one user message, all class 0: the
    /// user turn, then `<|im_start|>assistant\n` (the reply's tokens follow it).
    pub fn prompt(&self, user: &str, out: &mut Tokens) -> Result<()> {
        out.push(IM_START_ID, CLASS_NONE);
        out.extend(&self.user_header, CLASS_NONE);
        out.extend(&encode(self.tok, user)?, CLASS_NONE);
        out.push(IM_END_ID, CLASS_NONE);
        out.extend(&self.newline, CLASS_NONE);
        out.push(IM_START_ID, CLASS_NONE);
        out.extend(&self.assistant_header, CLASS_NONE);
        Ok(())
    }

    /// Appends a plain text and `<|endoftext|>`, all class 1.
    pub fn text(&self, text: &str, out: &mut Tokens) -> Result<()> {
        out.extend(&encode(self.tok, text)?, CLASS_NORMAL);
        out.push(ENDOFTEXT_ID, CLASS_NORMAL);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{MIN_VOCAB_SIZE, train};

    fn user(t: &str) -> Turn {
        Turn { role: Role::User, text: t.into() }
    }
    fn assistant(t: &str) -> Turn {
        Turn { role: Role::Assistant, text: t.into() }
    }

    /// A tokenizer with no merges: every byte is one token, so ids can be written by hand.
    /// The alphabet is sorted by the byte-level symbols: printable ASCII `!`..`~` (33..=126) come
    /// first at ids 3..=96; `\n` maps to U+010A, the 199th symbol (id 3 + 188 + 10 = 201).
    fn bytes_only() -> Tokenizer {
        let mut t = train(["x"].into_iter(), MIN_VOCAB_SIZE).unwrap();
        t.set_encode_special_tokens(true);
        t
    }

    fn ascii(s: &str) -> Vec<u32> {
        s.bytes()
            .map(|b| match b {
                33..=126 => 3 + (b - 33) as u32,
                b'\n' => 201,
                _ => panic!("not in this hand table"),
            })
            .collect()
    }

    #[test]
    fn hand_table_matches_the_tokenizer() {
        let t = bytes_only();
        assert_eq!(encode(&t, "Hi!\n").unwrap(), vec![42, 75, 3, 201]);
        assert_eq!(encode(&t, "user").unwrap(), ascii("user"));
    }

    #[test]
    fn sft_layout_of_a_hand_written_chat() {
        let t = bytes_only();
        let r = Renderer::new(&t, Stage::Sft).unwrap();
        let mut out = Tokens::default();
        // A 20-byte reply: 16 opener tokens (class 2), then 4 normal ones.
        let reply = "Hello!Howcanihelp?ok";
        r.chat(&[user("Hi"), assistant(reply)], true, &mut out).unwrap();
        let mut want_ids = vec![1];
        want_ids.extend(ascii("user\nHi"));
        want_ids.extend([2, 201, 1]);
        want_ids.extend(ascii("assistant\n"));
        want_ids.extend(ascii(reply));
        want_ids.extend([2, 201, 0]);
        assert_eq!(out.ids, want_ids);
        #[rustfmt::skip]
        let want_classes: Vec<u8> = [
            vec![0], vec![0; 5], vec![0; 2], vec![0, 0],      // <|im_start|> user\n Hi <|im_end|> \n
            vec![0], vec![0; 10],                             // <|im_start|> assistant\n
            vec![2; 16], vec![1; 4],                          // opener, rest of the reply
            vec![1, 0, 0],                                    // <|im_end|> \n <|endoftext|>
        ].concat();
        assert_eq!(out.classes, want_classes);
    }

    #[test]
    fn a_cut_reply_gets_no_im_end() {
        let t = bytes_only();
        let mut out = Tokens::default();
        Renderer::new(&t, Stage::Sft).unwrap().chat(&[user("Hi"), assistant("Hey")], false, &mut out).unwrap();
        let n = out.len();
        assert_eq!(&out.ids[n - 4..], &[ascii("Hey"), vec![0]].concat()[..]);
        assert_eq!(&out.classes[n - 4..], &[2, 2, 2, 0]);
        assert!(!out.ids.ends_with(&[2, 201, 0]));
        assert_eq!(out.ids.iter().filter(|&&id| id == IM_END_ID).count(), 1, "only the user's turn ends");
    }

    #[test]
    fn lm_layout_counts_every_word_but_not_the_template() {
        let t = bytes_only();
        let r = Renderer::new(&t, Stage::Lm).unwrap();
        let mut out = Tokens::default();
        r.chat(&[user("Hi"), assistant("Yo")], true, &mut out).unwrap();
        #[rustfmt::skip]
        let want: Vec<u8> = [
            vec![0], vec![0; 5], vec![1; 2], vec![1, 0],      // user text and its <|im_end|> count
            vec![0], vec![0; 10], vec![2; 2], vec![1, 0, 0],
        ].concat();
        assert_eq!(out.classes, want);
        out.clear();
        r.text("Hi", &mut out).unwrap();
        assert_eq!(out.ids, [ascii("Hi"), vec![0]].concat());
        assert_eq!(out.classes, vec![1, 1, 1]);
    }

    #[test]
    fn rendering_is_token_exact_with_the_runtime_prompt() {
        let tok = crate::tokenizer::tests::tiny();
        let dir = crate::testutil::temp_dir("render-rt");
        crate::tokenizer::save(&tok, &dir).unwrap();
        let rt = ulm_runtime::tokenizer::Tokenizer::from_file(dir.join("tokenizer.json"), None).unwrap();
        use ulm_runtime::tokenizer::{ChatMessage, render_chatml};
        let q = "What is the capital of France?";
        let a = "The capital of France is Paris.";
        let mut out = Tokens::default();
        Renderer::new(&tok, Stage::Sft).unwrap().chat(&[user(q), assistant(a)], true, &mut out).unwrap();
        // What the runtime sends for the question ...
        let prompt = rt.encode(&render_chatml(&[ChatMessage::user(q)], true), true).unwrap();
        assert_eq!(&out.ids[..prompt.len()], &prompt[..]);
        // ... and the whole chat as the runtime would render it.
        let whole = render_chatml(&[ChatMessage::user(q), ChatMessage::assistant(a)], false);
        let mut ids = rt.encode(&whole, true).unwrap();
        ids.push(ENDOFTEXT_ID);
        assert_eq!(out.ids, ids);
    }
}
