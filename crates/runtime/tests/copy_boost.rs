//! The copy boost on the tiny golden model: it adds its strength to the right logits, a strong
//! boost makes greedy decoding write the question's content word once, and strength 0 changes
//! nothing.

use std::path::PathBuf;

use ulm_runtime::copy::CopyBoost;
use ulm_runtime::generate::{GenerateOptions, LoadedModel, generate};
use ulm_runtime::sampler::Sampling;
use ulm_runtime::{Precision, Session};

fn golden() -> LoadedModel {
    LoadedModel::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden"), Precision::F32, None).unwrap()
}

fn run(lm: &LoadedModel, question: &str, copy: Option<CopyBoost>, n: usize) -> (Vec<u32>, String) {
    let mut s = Session::new(&lm.model);
    let prompt = lm.chat_prompt(question).unwrap();
    let opts = GenerateOptions { max_tokens: n, words: None, sampling: Sampling::greedy(), copy, candidates: None };
    let g = generate(lm, &mut s, &prompt, &opts, &mut |_| true).unwrap();
    (g.tokens, g.text)
}

#[test]
fn the_boost_lands_on_word_starts_until_used_and_on_the_next_piece() {
    let lm = golden();
    let b = CopyBoost::new(&lm.tokenizer, "What is a volcano?", 2.0).unwrap();
    assert!(!b.is_empty());
    let word = lm.tokenizer.encode(" volcano", false).unwrap();
    assert!(word.len() >= 2, "the golden tokenizer splits ' volcano' ({word:?}), so the follow rule is exercised");
    let vocab = lm.model.config().vocab_size;

    let mut logits = vec![0.0f32; vocab];
    b.apply(&[], &mut logits);
    assert_eq!(logits[word[0] as usize], 2.0);
    let boosted: Vec<u32> = (0..vocab as u32).filter(|&t| logits[t as usize] != 0.0).collect();
    let mut starts: Vec<u32> = b.start_tokens().collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(boosted, starts, "only word starts before the reply began");

    // After the first piece: its continuation is boosted, and no spelling of the word starts again.
    let mut logits = vec![0.0f32; vocab];
    b.apply(&word[..1], &mut logits);
    assert_eq!(logits[word[1] as usize], 2.0 * ulm_runtime::copy::FOLLOW_FACTOR);
    assert!(b.start_tokens().all(|t| t == word[1] || logits[t as usize] == 0.0));

    // Strength 0 and a question without content words leave the logits alone.
    let mut logits = vec![0.5f32; vocab];
    CopyBoost::new(&lm.tokenizer, "What is a volcano?", 0.0).unwrap().apply(&[], &mut logits);
    CopyBoost::new(&lm.tokenizer, "How are you?", 3.0).unwrap().apply(&[], &mut logits);
    assert!(logits.iter().all(|&l| l == 0.5));
}

#[test]
fn a_strong_boost_copies_the_word_once_and_zero_is_the_model_alone() {
    let lm = golden();
    let q = "Tell me about the volcano.";
    let (plain, plain_text) = run(&lm, q, None, 12);
    let (zero, _) = run(&lm, q, Some(CopyBoost::new(&lm.tokenizer, q, 0.0).unwrap()), 12);
    assert_eq!(plain, zero);
    assert_eq!(CopyBoost::optional(&lm.tokenizer, q, 0.0).unwrap(), None);
    assert_eq!(CopyBoost::optional(&lm.tokenizer, q, 1.5).unwrap(), Some(CopyBoost::new(&lm.tokenizer, q, 1.5).unwrap()));
    assert!(!plain_text.to_lowercase().contains("volcano"), "the golden model says it by itself: {plain_text:?}");

    let (_, text) = run(&lm, q, Some(CopyBoost::new(&lm.tokenizer, q, 100.0).unwrap()), 12);
    let lower = text.to_lowercase();
    assert!(lower.trim_start().starts_with("volcano"), "{text:?}");
    assert_eq!(lower.matches("volcano").count(), 1, "{text:?}");
}
