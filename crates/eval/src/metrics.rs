//! Openers, their scores under a scorer model, and the seam metrics of a handoff reply.

use std::time::Instant;

use ulm_runtime::copy::CopyBoost;
use ulm_runtime::Session;
use ulm_runtime::generate::{Candidates, GenerateOptions, LoadedModel, generate, logprob_entropy};
use ulm_runtime::sampler::Sampling;

use crate::{EvalError, RivalRow};

/// The seed of one prompt: the base seed xor FNV-1a 64 of its id (stable across runs and machines).
pub fn seed_of(base: u64, id: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    base ^ h
}

/// Parameter count from the config (embeddings, attention, MLP, norms).
pub fn params(lm: &LoadedModel) -> u64 {
    let c = lm.model.config();
    let (d, hd) = (c.dim as u64, c.head_dim as u64);
    let attn = d * hd * c.n_heads as u64 * 2 + d * hd * c.n_kv_heads as u64 * 2;
    let mlp = 3 * d * c.ffn_dim as u64;
    let emb = c.vocab_size as u64 * d * if c.tied_embeddings { 1 } else { 2 };
    emb + c.n_layers as u64 * (attn + mlp + 2 * d) + d
}

/// An opener written by the edge model.
#[derive(Clone, Debug)]
pub struct Opener {
    /// The text (the first `words` words).
    pub text: String,
    /// Tokens generated.
    pub tokens: usize,
    /// Time to the first piece holding a letter or digit (prefill included), ms.
    pub ttfw_ms: Option<f64>,
    /// Time to the whole opener, ms.
    pub ms: f64,
    /// The model's confidence as the handoff's pre-handoff guard reads it
    /// ([`ulm_handoff::opener::mean_probability`] of the sampled tokens).
    pub confidence: Option<f32>,
    /// Every candidate when several were sampled ([`ulm_runtime::generate::Generation::rivals`]).
    pub rivals: Vec<RivalRow>,
}

/// The first `words` words of a reply to `prompt` (the model's chat prompt; temperature 0.5,
/// top-p 0.9, `seed`, the [`CopyBoost`] of `copy` when it is not 0, the best of `candidates`
/// when more than 1, chosen with [`Candidates::pmi`] = `pmi`), from an empty session so that
/// prefill is timed.
pub fn opener(lm: &LoadedModel, s: &mut Session, prompt: &str, words: usize, seed: u64, copy: f32, candidates: usize, pmi: f32) -> Result<Opener, EvalError> {
    let ids = lm.chat_prompt(prompt)?;
    s.truncate(0);
    let copy = CopyBoost::optional(&lm.tokenizer, prompt, copy)?;
    let opts = GenerateOptions { max_tokens: words * 6 + 8, words: Some(words), sampling: Sampling { seed, ..Sampling::default() }, copy, candidates: Candidates::optional(prompt, candidates).map(|c| Candidates { pmi: Some(pmi), ..c }) };
    let t0 = Instant::now();
    let mut ttfw = None;
    let g = generate(lm, s, &ids, &opts, &mut |p| {
        if ttfw.is_none() && p.text.chars().any(char::is_alphanumeric) {
            ttfw = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        true
    })?;
    let confidence = ulm_handoff::opener::mean_probability(&g.logprobs);
    let rivals = g.rivals.iter().map(RivalRow::from).collect();
    Ok(Opener { text: g.text, tokens: g.tokens.len(), ttfw_ms: ttfw, ms: g.total.as_secs_f64() * 1000.0, confidence, rivals })
}

/// How a scorer rates a text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Tokens of the text in the scorer's tokenization.
    pub tokens: usize,
    /// Sum of their log-probabilities (nats).
    pub ll_sum: f64,
    /// Tokens inside the scorer's top-k at their position.
    pub accepted: usize,
}

/// Scores `text` after the scorer's chat prompt for `prompt` followed by `context`: the sum of
/// per-token log-probabilities and how many tokens were in the scorer's top-k.
///
/// The leading tokens the session already holds are not fed again, so scoring several texts
/// after the same prompt one after another pays for the prompt once. An empty `prompt` scores
/// after an empty question ([`LoadedModel::empty_question_prompt`]): what the text is worth
/// without one.
pub fn score(sc: &LoadedModel, s: &mut Session, prompt: &str, context: &str, text: &str, k: usize) -> Result<Score, EvalError> {
    let mut ids = if prompt.trim().is_empty() { sc.empty_question_prompt()? } else { sc.chat_prompt(prompt)? };
    if !context.is_empty() {
        ids.extend(sc.tokenizer.encode(context, false)?);
    }
    let start = ids.len();
    let target = sc.tokenizer.encode(text, false)?;
    if target.is_empty() {
        return Ok(Score { tokens: 0, ll_sum: 0.0, accepted: 0 });
    }
    ids.extend(&target);
    if ids.len() > s.max_seq() {
        return Err(EvalError::ContextFull { tokens: ids.len(), ctx: s.max_seq() });
    }
    // Keep what the session holds of the prompt, up to the token whose logits predict the
    // text's first token: that one is fed again.
    let reuse = s.common_prefix(&ids).min(start - 1);
    s.truncate(reuse);
    let mut ll_sum = 0.0f64;
    let mut accepted = 0usize;
    sc.model.forward_each(s, &ids[reuse..], &mut |i, logits| {
        // Logits after token reuse + i predict the next one.
        let at = reuse + i + 1;
        if at >= start && at < ids.len() {
            let t = ids[at];
            let (lp, _) = logprob_entropy(logits, t);
            ll_sum += lp as f64;
            let lt = logits[t as usize];
            if logits.iter().filter(|&&l| l > lt).count() < k {
                accepted += 1;
            }
        }
    })?;
    Ok(Score { tokens: target.len(), ll_sum, accepted })
}

fn norm_words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The continuation contains the opener's first three words again (a repetition the seam did not remove).
pub fn repeats_opener(opener: &str, continuation: &str) -> bool {
    let o = norm_words(opener);
    if o.len() < 3 {
        return false;
    }
    let c = norm_words(continuation);
    c.windows(3).any(|w| w == &o[..3])
}

/// The text up to the end of its `n`th word (leading whitespace kept).
pub fn first_words(text: &str, n: usize) -> &str {
    let mut count = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                count += 1;
                if count == n {
                    return &text[..i];
                }
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    text
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::restarts;

    #[test]
    fn repetition_restart_and_first_words() {
        assert!(repeats_opener("The capital of France", " is Paris. The capital of France has"));
        assert!(!repeats_opener("The capital of France", " is Paris."));
        assert!(!repeats_opener("Hi there", " Hi there friend"), "openers under 3 words never count");
        assert!(restarts("The capital of", " The capital of France is Paris."));
        assert!(restarts("Oh no, no no,", " That's a tragedy."));
        assert!(restarts("Oh no, no no,", " Well, that is sad."));
        assert!(!restarts("The capital of", ""));
        assert!(!restarts("The capital of", " France is Paris."));
        assert!(!restarts("The capital of France is Paris.", " It lies on the Seine."), "a complete opener is not restarted");
        assert!(!restarts("Well, let me see", " I think so."));
        assert_eq!(first_words(" one two  three four", 2), " one two");
        assert_eq!(first_words("one", 8), "one");
        assert_ne!(seed_of(0, "a"), seed_of(0, "b"));
        assert_eq!(seed_of(7, "x"), seed_of(7, "x"));
    }
}
