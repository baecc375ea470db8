//! Property tests (seeded, hand-rolled): encode → decode gives back arbitrary UTF-8, and the
//! stream decoder's pieces concatenate to the same text, for a tokenizer.json and for the
//! tokenizers built from GGUF metadata. Plus the stream decoder's edge cases.

mod common;

use common::*;
use ulm_runtime::load::gguf::Gguf;
use ulm_runtime::tokenizer::{StreamDecoder, Tokenizer};

const CASES: usize = 400;

/// Arbitrary UTF-8: any scalar value, weighted toward the ranges that stress byte-level BPE
/// (ASCII, whitespace runs, Latin-1, CJK, emoji with ZWJ and modifiers, special-token texts).
fn arbitrary_text(rng: &mut Rng) -> String {
    let n = rng.below(40);
    let mut s = String::new();
    for _ in 0..n {
        match rng.below(10) {
            0 => s.push_str([" ", "  ", "\t", "\n", "\r\n", "\n\n"][rng.below(6)]),
            1 => s.push(char::from_u32(0x20 + rng.below(0x5f) as u32).unwrap()),
            2 => s.push(char::from_u32(0xa0 + rng.below(0x160) as u32).unwrap()),
            3 => s.push(char::from_u32(0x4e00 + rng.below(0x5000) as u32).unwrap()),
            4 => s.push_str(["😀", "👍🏽", "🇫🇷", "👨\u{200d}👩\u{200d}👧", "🦀", "\u{fe0f}"][rng.below(6)]),
            5 => s.push_str(["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im", "|>"][rng.below(5)]),
            6 => s.push_str(["the", " the", "1234567", "don't", " you", "hello"][rng.below(6)]),
            7 => s.push(char::from_u32(rng.below(0x80) as u32).unwrap()), // control characters too
            _ => {
                // Any scalar value outside the surrogates.
                let c = loop {
                    if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                        break c;
                    }
                };
                s.push(c);
            }
        }
    }
    s
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut d = StreamDecoder::new(tok);
    let mut out = String::new();
    for &id in ids {
        if let Some(piece) = d.push(id).unwrap() {
            out.push_str(&piece);
        }
    }
    if let Some(rest) = d.flush().unwrap() {
        out.push_str(&rest);
    }
    out
}

/// Drops the characters the vocabulary cannot spell. SmolLM2's byte alphabet lacks 21 of the
/// 256 bytes (controls 0x04 0x06 0x13 0x14 0x16 0x1d, the lead bytes 0xf1 0xf2 of planes 4–11,
/// and bytes UTF-8 never uses); like llama.cpp, encoding drops them (see tokenizer_parity).
fn spellable(tok: &Tokenizer, text: &str) -> String {
    text.chars()
        .filter(|c| {
            let s = c.to_string();
            tok.decode(&tok.encode(&s, false).unwrap()).unwrap() == s
        })
        .collect()
}

fn check_roundtrip(tok: &Tokenizer, seed: u64, name: &str) {
    let mut rng = Rng(seed);
    for i in 0..CASES {
        let text = spellable(tok, &arbitrary_text(&mut rng));
        for parse_special in [false, true] {
            let ids = tok.encode(&text, parse_special).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text, "{name} case {i}: decode(encode({text:?}, {parse_special}))");
        }
        // Streaming skips special tokens, so compare it on literal encodings.
        let ids = tok.encode(&text, false).unwrap();
        assert_eq!(stream(tok, &ids), text, "{name} case {i}: streamed {text:?}");
    }
}

fn tiny_json_tokenizer() -> Tokenizer {
    let d = temp_dir("tok");
    write_tiny_hf(&d);
    let t = Tokenizer::from_file(d.join("tokenizer.json"), Some(&d.join("tokenizer_config.json"))).unwrap();
    std::fs::remove_dir_all(d).unwrap();
    t
}

#[test]
fn tokenizer_json_roundtrips_arbitrary_utf8() {
    check_roundtrip(&tiny_json_tokenizer(), 1, "tiny tokenizer.json");
}

#[test]
fn tiny_gguf_tokenizer_roundtrips_and_matches_its_json_twin() {
    let g = Gguf::from_bytes("tiny.gguf", &tiny_gguf().to_bytes()).unwrap();
    let from_gguf = Tokenizer::from_gguf(&g).unwrap();
    check_roundtrip(&from_gguf, 2, "tiny GGUF");
    // The GGUF pre-tokenizer is `smollm` (digits one by one); the JSON twin splits GPT-2 style.
    let json = tiny_json_tokenizer();
    assert_eq!(from_gguf.encode("hello the you", false).unwrap(), json.encode("hello the you", false).unwrap());
    assert_eq!(from_gguf.encode("12", false).unwrap().len(), 2);
}

#[test]
fn smollm2_gguf_roundtrips_and_saves_as_tokenizer_json() {
    let Some(path) = smollm2() else { return };
    let tok = Tokenizer::from_gguf(&Gguf::open(&path).unwrap()).unwrap();
    check_roundtrip(&tok, 3, "SmolLM2 GGUF");
    // Saved as tokenizer.json and read back: the same ids.
    let d = temp_dir("smol-json");
    let p = d.join("tokenizer.json");
    tok.hf().save(&p, false).unwrap();
    let back = Tokenizer::from_file(&p, None).unwrap();
    check_roundtrip(&back, 4, "SmolLM2 tokenizer.json");
    let mut rng = Rng(5);
    for _ in 0..CASES {
        let text = arbitrary_text(&mut rng);
        assert_eq!(back.encode(&text, true).unwrap(), tok.encode(&text, true).unwrap(), "{text:?}");
    }
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn stream_never_emits_half_a_character() {
    let tok = tiny_json_tokenizer();
    // The tiny vocabulary has no merges for emoji: 😀 is four byte tokens.
    let ids = tok.encode("a😀b", false).unwrap();
    assert_eq!(ids.len(), 6);
    let mut d = StreamDecoder::new(&tok);
    let out: Vec<Option<String>> = ids.iter().map(|&id| d.push(id).unwrap()).collect();
    assert_eq!(out, [Some("a".into()), None, None, None, Some("😀".into()), Some("b".into())]);
    assert_eq!(d.flush().unwrap(), None);
    // An unfinished character comes out as U+FFFD only on flush.
    let mut d = StreamDecoder::new(&tok);
    assert_eq!(d.push(ids[1]).unwrap(), None);
    assert_eq!(d.push(ids[2]).unwrap(), None);
    assert_eq!(d.flush().unwrap(), Some("\u{fffd}".into()));
    // Special tokens are not streamed; end-of-turn ids are known.
    let mut d = StreamDecoder::new(&tok);
    assert_eq!(d.push(2).unwrap(), None);
    assert_eq!(d.push(tok.encode(" hi", false).unwrap()[0]).unwrap(), Some(" h".into()));
    assert!(tok.is_end_of_turn(2) && tok.is_end_of_turn(0) && !tok.is_end_of_turn(1));
    // Out-of-vocabulary ids are errors, not panics.
    let e = d.push(1_000_000).unwrap_err().to_string();
    assert_eq!(e, format!("token id 1000000 is outside the vocabulary of {}", tok.vocab_size()));
}

#[test]
fn stream_handles_byte_fallback_and_stripping_decoders() {
    let tok = Tokenizer::from_json_bytes("fallback.json", byte_fallback_tokenizer_json().as_bytes(), None).unwrap();
    let text = "the 日本 é€ hello";
    let ids = tok.encode(text, false).unwrap();
    // 本 and € are not in the vocabulary: three <0xNN> tokens each.
    let bytes = ids.iter().filter(|&&id| (3..259).contains(&id)).count();
    assert!(bytes >= 6, "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    let mut d = StreamDecoder::new(&tok);
    let mut pieces = Vec::new();
    for &id in &ids {
        if let Some(p) = d.push(id).unwrap() {
            assert!(!p.contains('\u{fffd}'), "{p:?} in {pieces:?}");
            pieces.push(p);
        }
    }
    assert!(d.flush().unwrap().is_none());
    assert_eq!(pieces.concat(), text);
    assert!(pieces.contains(&"本".to_string()) || pieces.iter().any(|p| p.ends_with('本')), "{pieces:?}");
    // Property: any text over this vocabulary streams back to its decode.
    let mut rng = Rng(6);
    for _ in 0..CASES {
        let text = arbitrary_text(&mut rng);
        let ids = tok.encode(&text, false).unwrap();
        assert_eq!(stream(&tok, &ids), tok.decode(&ids).unwrap(), "{text:?}");
    }
}

#[test]
fn parse_special_decides_what_special_texts_mean() {
    let tok = tiny_json_tokenizer();
    let parsed = tok.encode("<|im_start|>user\nhi<|im_end|>", true).unwrap();
    assert_eq!(parsed[0], 1);
    assert_eq!(*parsed.last().unwrap(), 2);
    let literal = tok.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap();
    assert!(!literal.contains(&1) && !literal.contains(&2), "{literal:?}");
    assert_eq!(tok.decode(&literal).unwrap(), tok.decode(&parsed).unwrap());
    assert_eq!(tok.token_piece(1).unwrap(), "<|im_start|>");
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_str(3 + b'a' as u32).as_deref(), Some("a"));
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert_eq!(tok.end_of_turn_ids(), [0, 2]);
    assert!(!tok.add_bos());
}
