//! Sampled text stays valid UTF-8: the golden model's vocabulary is the 256 bytes themselves,
//! and at a high temperature its random weights string them together in any order. Through
//! [`generate`] (which masks with a [`Utf8Guard`]) every reply is valid UTF-8 with no U+FFFD;
//! the same draws without the mask are not, so the check can fail.

use std::path::PathBuf;

use ulm_runtime::generate::{GenerateOptions, LoadedModel, generate};
use ulm_runtime::sampler::{Sampler, Sampling};
use ulm_runtime::utf8::Utf8Guard;
use ulm_runtime::{Precision, Session};

fn golden() -> LoadedModel {
    LoadedModel::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden"), Precision::F32, None).unwrap()
}

fn hot(seed: u64) -> Sampling {
    Sampling { temperature: 3.0, top_p: 1.0, seed, ..Sampling::default() }
}

const STEPS: usize = 48;
const SEEDS: u64 = 24;

/// The bytes of `tokens` under the golden (byte-level) tokenizer.
fn bytes_of(lm: &LoadedModel, tokens: &[u32]) -> Vec<u8> {
    tokens.iter().flat_map(|&t| byte_level(&lm.tokenizer.token_str(t).unwrap())).collect()
}

/// GPT-2's byte-to-char map, inverted: printable bytes map to themselves, the rest to U+0100….
fn byte_level(s: &str) -> Vec<u8> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut map = std::collections::HashMap::new();
    let mut next = 256;
    for b in 0..256u32 {
        let c = if printable(b) { b } else { next += 1; next - 1 };
        map.insert(char::from_u32(c).unwrap(), b as u8);
    }
    s.chars().map(|c| map[&c]).collect()
}

#[test]
fn the_golden_vocabulary_has_partial_tokens() {
    let lm = golden();
    // 256 byte tokens, of which 128 are not ASCII and so not text on their own.
    assert_eq!(lm.tokenizer.utf8_table().partial_tokens(), 128);
}

#[test]
fn generated_text_is_always_valid_utf8() {
    let lm = golden();
    let prompt = lm.chat_prompt("Ça va? 👍").unwrap();
    let mut multibyte = 0;
    for seed in 0..SEEDS {
        let opts = GenerateOptions { max_tokens: STEPS, words: None, sampling: hot(seed), copy: None, candidates: None };
        let g = generate(&lm, &mut Session::new(&lm.model), &prompt, &opts, &mut |_| true).unwrap();
        let bytes = bytes_of(&lm, &g.tokens);
        match std::str::from_utf8(&bytes) {
            Ok(s) => multibyte += s.chars().filter(|c| c.len_utf8() > 1).count(),
            // Only the token cap may cut the last character short.
            Err(e) => assert!(e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4, "seed {seed}: {bytes:x?}"),
        }
        let complete = std::str::from_utf8(&bytes).map(str::len).unwrap_or_else(|e| e.valid_up_to());
        assert!(!g.text[..complete.min(g.text.len())].contains('\u{FFFD}'), "seed {seed}: {:?}", g.text);
    }
    assert!(multibyte > 0, "the hot golden model wrote multi-byte characters (whole ones)");
}

#[test]
fn without_the_guard_the_same_draws_break_utf8() {
    let lm = golden();
    let prompt = lm.chat_prompt("Ça va? 👍").unwrap();
    let broken = (0..SEEDS)
        .filter(|&seed| {
            let mut s = Session::new(&lm.model);
            let mut logits = lm.model.forward(&mut s, &prompt).unwrap().to_vec();
            let mut sampler = Sampler::new(hot(seed), lm.model.config().vocab_size);
            let mut tokens = Vec::new();
            for _ in 0..STEPS {
                let t = sampler.sample(&logits, &[]);
                if lm.tokenizer.is_end_of_turn(t) {
                    break;
                }
                tokens.push(t);
                logits = lm.model.forward(&mut s, &[t]).unwrap().to_vec();
            }
            std::str::from_utf8(&bytes_of(&lm, &tokens)).is_err_and(|e| e.error_len().is_some())
        })
        .count();
    assert!(broken > 0, "no seed broke UTF-8 without the mask, so the test above proves nothing");
}

#[test]
fn mid_character_only_continuation_bytes_may_follow() {
    let lm = golden();
    let tok = &lm.tokenizer;
    let vocab = lm.model.config().vocab_size;
    let id_of_byte = |b: u8| (0..vocab as u32).find(|&t| tok.token_str(t).is_some_and(|s| byte_level(&s) == [b])).unwrap();
    let mut guard = Utf8Guard::new(tok.utf8_table());
    // At a boundary a lone continuation byte is out, an ASCII letter and a lead byte are in.
    let mut l = vec![0.0f32; vocab];
    guard.mask(&mut l);
    assert_eq!(l[id_of_byte(0xA9) as usize], f32::NEG_INFINITY);
    assert_eq!(l[id_of_byte(b'a') as usize], 0.0);
    assert_eq!(l[id_of_byte(0xC3) as usize], 0.0);
    // After 0xE2 (a three-byte lead) only 0x80..=0xBF, then again, then a boundary.
    guard.advance(id_of_byte(0xE2));
    let mut l = vec![0.0f32; vocab];
    guard.mask(&mut l);
    let allowed: Vec<u8> = (0..vocab as u32).filter(|&t| l[t as usize] == 0.0).map(|t| byte_level(&tok.token_str(t).unwrap())[0]).collect();
    assert_eq!(allowed, (0x80..=0xBF).collect::<Vec<u8>>());
    assert!(!lm.tokenizer.end_of_turn_ids().iter().any(|&t| l[t as usize] == 0.0), "no end of turn inside a character");
    guard.advance(id_of_byte(0x82));
    guard.advance(id_of_byte(0xAC));
    assert!(guard.state().is_boundary(), "E2 82 AC is €");
}
