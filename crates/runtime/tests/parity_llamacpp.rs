//! Parity with llama.cpp on the SmolLM2-135M-Instruct GGUF (Q4_1 blocks, Q8_0 embedding).
//!
//! 1. Teacher-forced: along llama.cpp's own greedy path, our log-probability of its chosen
//!    token agrees with its number within `LOGPROB_TOL` at every step (the runner-up within
//!    `RUNNER_UP_TOL`: unlikely tokens move more under int8 noise).
//! 2. Free-running: the same greedy tokens for 32 steps (or to the same end of turn) on at
//!    least five of twelve prompts.
//!    Both engines quantize activations to int8 blocks but round and sum in different orders,
//!    and those differences add up over 30 layers to a few tenths of a nat. For scale: llama.cpp
//!    with its default f16 KV cache and flash attention differs from itself with an f32 cache
//!    by up to 0.37 nats on the same prompt and flips a greedy token ("where"/"when" in the
//!    autumn poem). We compare against its more exact setting (`--exact`: f32 cache, no flash
//!    attention). A step whose top two
//!    candidates lie closer than that may go either way, so a divergence is allowed only at a
//!    step where llama.cpp's own top-2 gap is below `2 * LOGPROB_TOL`.
//!
//! The tolerances are not derived from first principles: they bound what was measured here on
//! 2026-11-24 (differences grow along high-entropy text such as the poem: 0.86 nats on a
//! runner-up at step 9), while the first step agrees within 0.005 nats. Prefill and
//! token-by-token decoding give bit-identical logits in ulm (examples/prefill_vs_decode.rs), so
//! the spread is rounding, not a path bug. The free-running check is the requirement.

mod common;

use ulm_runtime::generate::{GenerateOptions, LoadedModel, generate};
use ulm_runtime::sampler::Sampling;
use ulm_runtime::{Precision, Session};

/// Largest difference allowed between our log-probability of a token and llama.cpp's.
const LOGPROB_TOL: f64 = 0.6;
/// The same for llama.cpp's second candidate.
const RUNNER_UP_TOL: f64 = 1.0;
const STEPS: usize = 32;

const PROMPTS: &[&str] = &[
    "What is the capital of France?",
    "How do I boil an egg?",
    "Give me three tips for sleeping better.",
    "Explain what a black hole is in simple words.",
    "What is the difference between weather and climate?",
    "Write a short poem about autumn leaves.",
    "Why is the sky blue?",
    "How can I improve my handwriting?",
    "What are the benefits of drinking water?",
    "How do plants make their food?",
    "What is the tallest mountain in the world?",
    "What should I pack for a weekend camping trip?",
];

#[test]
fn greedy_tokens_match_llamacpp() {
    let Some(gguf) = common::smollm2() else {
        eprintln!("SKIPPED: SmolLM2 GGUF missing; run scripts/fetch-assets.sh");
        return;
    };
    let Some(server) = common::LlamaServer::start_with(&gguf, 2, &["--exact"]) else { return };
    let lm = LoadedModel::open(&gguf, Precision::Native, Some(512)).unwrap();
    let mut full_matches = 0;
    let mut worst = [0.0f64; 2];
    for prompt in PROMPTS {
        let ids = lm.chat_prompt(prompt).unwrap();
        let theirs = server.post_json(
            "/completion",
            &serde_json::json!({"prompt": ids, "n_predict": STEPS, "temperature": 0.0, "n_probs": 2,
                                 "cache_prompt": false, "return_tokens": true}),
        );
        let probs = theirs["completion_probabilities"].as_array().expect("completion_probabilities");
        let their_ids: Vec<u32> = probs.iter().map(|p| p["id"].as_u64().unwrap() as u32).collect();
        // 1. Teacher forcing along their path.
        let mut s = Session::new(&lm.model);
        let mut logits = lm.model.forward(&mut s, &ids).unwrap().to_vec();
        for (step, p) in probs.iter().enumerate() {
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f32>().ln();
            for (rank, cand) in p["top_logprobs"].as_array().unwrap().iter().enumerate() {
                let tol = if rank == 0 { LOGPROB_TOL } else { RUNNER_UP_TOL };
                let id = cand["id"].as_u64().unwrap() as usize;
                let theirs = cand["logprob"].as_f64().unwrap();
                let ours = (logits[id] - lse) as f64;
                worst[rank.min(1)] = worst[rank.min(1)].max((ours - theirs).abs());
                assert!((ours - theirs).abs() <= tol, "{prompt:?} step {step}: token {id} logprob ours {ours:.3} theirs {theirs:.3}");
            }
            if lm.tokenizer.is_end_of_turn(their_ids[step]) {
                break;
            }
            logits = lm.model.forward(&mut s, &[their_ids[step]]).unwrap().to_vec();
        }
        // 2. Free-running greedy.
        let opts = GenerateOptions { max_tokens: STEPS, words: None, sampling: Sampling::greedy(), copy: None, candidates: None };
        let ours = generate(&lm, &mut Session::new(&lm.model), &ids, &opts, &mut |_| true).unwrap();
        let mut our_ids = ours.tokens.clone();
        if ours.stop == ulm_runtime::generate::StopReason::EndOfTurn && our_ids.len() < their_ids.len() {
            our_ids.push(lm.tokenizer.eos_id().unwrap());
        }
        let same = our_ids.iter().zip(&their_ids).take_while(|(a, b)| a == b).count();
        if same == their_ids.len().min(STEPS) && our_ids.len() >= same {
            full_matches += 1;
            eprintln!("{prompt:?}: all {same} tokens equal");
            continue;
        }
        let top = probs[same]["top_logprobs"].as_array().unwrap();
        let gap = top[0]["logprob"].as_f64().unwrap() - top[1]["logprob"].as_f64().unwrap();
        eprintln!("{prompt:?}: first {same} tokens equal, then a step with llama.cpp's top-2 gap {gap:.3}");
        assert!(gap < 2.0 * LOGPROB_TOL, "{prompt:?}: diverged at step {same} where llama.cpp is sure (gap {gap:.3}): ours {:?} theirs {:?}", &our_ids[same..], &their_ids[same..]);
    }
    eprintln!("largest log-probability differences along llama.cpp's paths: chosen {:.3}, runner-up {:.3} nats", worst[0], worst[1]);
    assert!(full_matches >= 5, "only {full_matches} of {} prompts matched for {STEPS} tokens", PROMPTS.len());
}
