//! Training and loading ulm's tokenizer: byte-level BPE (GPT-2 style) with the ChatML specials
//! at ids 0–2, as in the paper's demo (../shared/REFERENCE.md §2).
//!
//! ```no_run
//! use ulm_data::tokenizer;
//! let tok = tokenizer::train(["user\nHello there!", "assistant\nHi!"].into_iter(), 300)?;
//! tokenizer::save(&tok, std::path::Path::new("data/tokenizer"))?;
//! let ids = tokenizer::encode(&tok, "Hello")?; // literal: `<|im_end|>` in text stays text
//! # Ok::<(), ulm_data::Error>(())
//! ```
//!
//! Every byte is in the initial alphabet, so every UTF-8 string encodes and decodes back to
//! itself; there is no normalizer. Training is deterministic: the trainer breaks ties between
//! equally frequent pairs by their ids, and the alphabet is sorted.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::{Error, Result};

/// Document separator, padding and unknown token (id 0).
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// Start of a chat turn, the bos token (id 1).
pub const IM_START: &str = "<|im_start|>";
/// End of a chat turn, the eos token (id 2).
pub const IM_END: &str = "<|im_end|>";
/// The specials in id order.
pub const SPECIALS: [&str; 3] = [ENDOFTEXT, IM_START, IM_END];
/// Id of [`ENDOFTEXT`].
pub const ENDOFTEXT_ID: u32 = 0;
/// Id of [`IM_START`].
pub const IM_START_ID: u32 = 1;
/// Id of [`IM_END`].
pub const IM_END_ID: u32 = 2;
/// Vocabulary size of the μLM family (specials + 256 bytes + merges).
pub const VOCAB_SIZE: usize = 12_288;
/// The smallest vocabulary: the specials and the 256 byte symbols, no merges.
pub const MIN_VOCAB_SIZE: usize = SPECIALS.len() + 256;

/// ChatML with **no** default system message: a system turn appears only when the conversation
/// has one. The μLM is trained without one, and the runtime's plain ChatML matches this.
pub const CHAT_TEMPLATE: &str = "{%- for message in messages -%}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}";

/// An untrained tokenizer with ulm's pipeline: no normalizer, the ByteLevel pre-tokenizer with the
/// GPT-2 regex and no prefix space, an empty BPE model and the ByteLevel decoder.
fn pipeline() -> Tokenizer {
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    tok
}

/// Trains a tokenizer of `vocab_size` entries (specials included) on `texts`.
pub fn train<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    if !(MIN_VOCAB_SIZE..=u16::MAX as usize + 1).contains(&vocab_size) {
        return Err(Error::Tokenizer(format!(
            "vocabulary size {vocab_size} is out of range: pick {MIN_VOCAB_SIZE}..=65536 (shards store u16 ids)"
        )));
    }
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let specials = SPECIALS.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(alphabet)
        .build()
        .into();
    let mut tok = pipeline();
    tok.train(&mut trainer, texts).map_err(|e| Error::Tokenizer(format!("training failed: {e}")))?;
    check_specials(&tok, "the trained tokenizer")?;
    Ok(tok)
}

/// Checks that the specials sit at ids 0–2; `name` names the file in the error.
pub fn check_specials(tok: &Tokenizer, name: &str) -> Result<()> {
    for (id, s) in SPECIALS.iter().enumerate() {
        if tok.token_to_id(s) != Some(id as u32) {
            return Err(Error::Tokenizer(format!(
                "{name}: `{s}` must have id {id}, found {:?}; retrain it with `ulm tokenizer`",
                tok.token_to_id(s)
            )));
        }
    }
    Ok(())
}

/// Token ids of `text` taken literally: special-token texts inside it are plain text, so a
/// document that quotes `<|im_end|>` cannot end a turn.
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok.encode_fast(text, false).map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

/// The text of `ids`, specials included.
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    tok.decode(ids, false).map_err(|e| Error::Tokenizer(format!("decode: {e}")))
}

/// Loads a `tokenizer.json`, checks the specials and switches it to literal encoding (see
/// [`encode`]).
pub fn load(path: &Path) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path).map_err(|e| {
        Error::Tokenizer(format!("{}: {e} (build it with `ulm tokenizer --out {}`)", path.display(), parent(path)))
    })?;
    check_specials(&tok, &path.display().to_string())?;
    tok.set_encode_special_tokens(true);
    Ok(tok)
}

fn parent(path: &Path) -> String {
    path.parent().map(|p| p.display().to_string()).unwrap_or_else(|| ".".into())
}

/// `tokenizer_config.json`: the specials' roles and the ChatML [`CHAT_TEMPLATE`].
pub fn config_json() -> serde_json::Value {
    let decoder: serde_json::Map<String, serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(id, s)| {
            let v = serde_json::json!({"content": s, "lstrip": false, "normalized": false,
                                       "rstrip": false, "single_word": false, "special": true});
            (id.to_string(), v)
        })
        .collect();
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": IM_START,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": ENDOFTEXT,
        "add_bos_token": false,
        "add_eos_token": false,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1024,
        "added_tokens_decoder": decoder,
        "chat_template": CHAT_TEMPLATE,
    })
}

/// Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if needed).
pub fn save(tok: &Tokenizer, dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Literal encoding is a runtime switch, not part of the file.
    let mut tok = tok.clone();
    tok.set_encode_special_tokens(false);
    let json = tok.to_string(true).map_err(|e| Error::Tokenizer(format!("serialize: {e}")))?;
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json + "\n").map_err(io(&path))?;
    let path = dir.join("tokenizer_config.json");
    let cfg = serde_json::to_string_pretty(&config_json()).expect("a JSON value serializes");
    std::fs::write(&path, cfg + "\n").map_err(io(&path))?;
    Ok(())
}

/// Hex SHA-256 of a file (the manifest records which tokenizer built the shards).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small fixture corpus: a few chats and definitions.
    pub(crate) fn fixture_texts() -> Vec<String> {
        let base = [
            "user\nWhat is the capital of France?",
            "assistant\nThe capital of France is Paris. It is known for the Eiffel Tower.",
            "user\nHow do I bake bread?",
            "assistant\nTo bake bread, mix flour, water, yeast and salt, knead the dough, let it rise and bake it.",
            "dog (noun): a member of the genus Canis that has been domesticated by man since prehistoric times",
            "user\nHi there, how are you today?",
            "assistant\nI'm doing well, thank you! How can I help you today?",
        ];
        (0..20).flat_map(|_| base.iter().map(|s| s.to_string())).collect()
    }

    /// A tiny trained tokenizer (about 400 entries), literal encoding on.
    pub(crate) fn tiny() -> Tokenizer {
        let mut tok = train(fixture_texts().into_iter(), 400).unwrap();
        tok.set_encode_special_tokens(true);
        tok
    }

    /// Arbitrary UTF-8: ASCII (with whitespace runs and digits), Latin-1, combining marks, CJK,
    /// emoji, any scalar value, and the specials' texts; from a seeded xorshift.
    fn random_text(state: &mut u64) -> String {
        let mut next = || {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state
        };
        let len = (next() % 40) as usize;
        let mut s = String::new();
        for _ in 0..len {
            let r = next();
            let c = match r % 9 {
                0 | 1 => char::from(32 + (r >> 8) as u8 % 95),
                2 => [' ', '\n', '\t', '\r', '\u{a0}', '\u{3000}'][(r >> 8) as usize % 6],
                3 => char::from_u32(0xa0 + (r >> 8) as u32 % 0x60).unwrap(),
                4 => char::from_u32(0x300 + (r >> 8) as u32 % 0x70).unwrap(),
                5 => char::from_u32(0x4e00 + (r >> 8) as u32 % 0x5000).unwrap(),
                6 => char::from_u32(0x1f600 + (r >> 8) as u32 % 0x50).unwrap(),
                7 => {
                    s.push_str(SPECIALS[(r >> 8) as usize % 3]);
                    continue;
                }
                _ => match char::from_u32((r >> 8) as u32 % 0x110000) {
                    Some(c) => c,
                    None => continue, // a surrogate
                },
            };
            s.push(c);
        }
        s
    }

    #[test]
    fn specials_sit_at_0_1_2_and_vocab_is_exact() {
        let tok = tiny();
        check_specials(&tok, "tiny").unwrap();
        assert_eq!(tok.get_vocab_size(true), 400);
    }

    #[test]
    fn round_trips_arbitrary_utf8() {
        let tok = tiny();
        let mut state = 0x9e3779b97f4a7c15u64;
        for i in 0..3000 {
            let s = random_text(&mut state);
            let ids = encode(&tok, &s).unwrap();
            assert!(ids.iter().all(|&id| id >= MIN_VOCAB_SIZE as u32 - 256), "case {i}: a special id in {ids:?}");
            assert_eq!(decode(&tok, &ids).unwrap(), s, "case {i}: {s:?}");
        }
    }

    #[test]
    fn training_is_deterministic_and_save_load_round_trips() {
        let a = tiny();
        let b = tiny();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        let dir = crate::testutil::temp_dir("tok");
        save(&a, &dir).unwrap();
        let loaded = load(&dir.join("tokenizer.json")).unwrap();
        let s = "What is the capital of France? <|im_end|>";
        assert_eq!(encode(&loaded, s).unwrap(), encode(&a, s).unwrap());
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
        assert_eq!(cfg["bos_token"], IM_START);
        assert_eq!(cfg["eos_token"], IM_END);
        assert!(!cfg["chat_template"].as_str().unwrap().contains("system"));
        assert_eq!(sha256_file(&dir.join("tokenizer.json")).unwrap().len(), 64);
    }

    #[test]
    fn the_runtime_renders_our_template_like_plain_chatml() {
        let dir = crate::testutil::temp_dir("tok-rt");
        save(&tiny(), &dir).unwrap();
        let rt = ulm_runtime::tokenizer::Tokenizer::from_file(
            dir.join("tokenizer.json"),
            Some(&dir.join("tokenizer_config.json")),
        )
        .unwrap();
        use ulm_runtime::tokenizer::{ChatMessage, render_chatml};
        let msgs = [ChatMessage::user("Hi!"), ChatMessage::assistant("Hello."), ChatMessage::user("Bye?")];
        assert_eq!(rt.render_chat(&msgs, true).unwrap(), render_chatml(&msgs, true));
        assert_eq!(rt.bos_id(), Some(IM_START_ID));
        assert_eq!(rt.eos_id(), Some(IM_END_ID));
    }
}
