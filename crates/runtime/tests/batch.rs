//! `Model::forward_batch` steps several sessions by one token each in one pass, and gives each
//! the same logits, bit for bit, as stepping it alone with `Model::forward`: on random and real
//! weights, f32, row-scaled int8 and the GGUF types (Q8_0, Q4_0, Q4_1, F16), one and two
//! threads, sessions at different positions, sessions joining and leaving the batch.
//!
//! Bitwise is the right bar: a batched pass sends every row through the kernels a single step
//! uses (the 4-row tiles of Q8Row add up in integers; Q8_0's tile does each row's float
//! operations in the single-row order; f32 and Q4 rows take the single-row kernel), activation
//! quantization is per row, and attention runs per session over its own cache.

mod common;

use ulm_runtime::load::gguf::Gguf;
use ulm_runtime::sampler::argmax;
use ulm_runtime::{Batch, Config, Model, Precision, Session};

/// Runs a schedule of batched steps on `model` against the same steps taken one session at a
/// time, asserting equal logits, positions and tokens after each step.
///
/// Five sessions with prompts of different lengths; session 3 is prefilled only after two
/// batched steps (it joins mid-way), session 1 leaves after step 3, session 4 joins at step 5.
fn batched_equals_single(model: &Model, threads: usize, what: &str) {
    let vocab = model.config().vocab_size as u32;
    let prompts: Vec<Vec<u32>> = [3usize, 9, 1, 17, 5].iter().enumerate().map(|(i, &n)| (0..n as u32).map(|t| (t * 7 + i as u32 * 13 + 1) % vocab).collect()).collect();
    let mk = || {
        let s = Session::new(model);
        if threads > 1 { s.with_threads(threads) } else { s }
    };
    let mut batched: Vec<Session> = (0..5).map(|_| mk()).collect();
    let mut single: Vec<Session> = (0..5).map(|_| mk()).collect();
    let mut batch = Batch::new(model, 8).with_threads(threads);
    let mut started = [false; 5];
    for step in 0..8 {
        // Who takes part in this step.
        let active: Vec<usize> = (0..5)
            .filter(|&i| match i {
                1 => step <= 3,
                3 => step >= 2,
                4 => step >= 5,
                _ => true,
            })
            .collect();
        for &i in &active {
            if !started[i] {
                // A newcomer's prompt is prefilled on its own, as a server would.
                model.forward(&mut batched[i], &prompts[i]).unwrap();
                model.forward(&mut single[i], &prompts[i]).unwrap();
                started[i] = true;
            }
        }
        // Each session's next token: its own greedy choice (identical on both sides so far).
        let tokens: Vec<u32> = active.iter().map(|&i| argmax(batched[i].logits())).collect();
        {
            let mut rows: Vec<&mut Session> = batched.iter_mut().enumerate().filter(|(i, _)| active.contains(i)).map(|(_, s)| s).collect();
            model.forward_batch(&mut batch, &mut rows, &tokens).unwrap();
        }
        for (&i, &tok) in active.iter().zip(&tokens) {
            model.forward(&mut single[i], &[tok]).unwrap();
            let (b, s) = (&batched[i], &single[i]);
            assert_eq!((b.pos(), b.tokens()), (s.pos(), s.tokens()), "{what} x{threads}: session {i} step {step}");
            let differ = b.logits().iter().zip(s.logits()).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(differ, 0, "{what} x{threads}: session {i} at pos {} step {step}: {differ} logits differ", s.pos());
        }
    }
}

fn small_config() -> Config {
    let mut c = Config::micro_8m();
    c.n_layers = 2;
    c.max_seq_len = 64;
    c
}

#[test]
fn random_weights_f32_and_int8_step_together_as_alone() {
    let model = Model::random(small_config(), 3);
    for (prec, name) in [(Precision::F32, "f32"), (Precision::Int8, "int8")] {
        let m = model.converted(prec);
        for threads in [1, 2] {
            batched_equals_single(&m, threads, name);
        }
    }
}

#[test]
fn gguf_quant_types_step_together_as_alone() {
    // Q8_0 embedding and tied head, Q4_0 and Q4_1 attention, F16 FFN, BF16 output projection.
    let g = Gguf::from_bytes("tiny.gguf", &common::tiny_gguf().to_bytes()).unwrap();
    let mut c = g.config().unwrap();
    c.max_seq_len = 64;
    let model = Model::from_source(&g, c, Precision::Native, true).unwrap();
    for threads in [1, 2] {
        batched_equals_single(&model, threads, "tiny gguf");
    }
}

#[test]
fn golden_model_steps_together_as_alone() {
    let dir = common::data_dir().join("golden");
    for prec in [Precision::F32, Precision::Int8] {
        let lm = ulm_runtime::generate::LoadedModel::open(&dir, prec, None).unwrap();
        batched_equals_single(&lm.model, 1, &format!("golden {prec:?}"));
    }
}

#[test]
fn smollm2_q4_1_steps_together_as_alone() {
    let Some(p) = common::smollm2() else { return };
    let lm = ulm_runtime::generate::LoadedModel::open(&p, Precision::Native, Some(64)).unwrap();
    batched_equals_single(&lm.model, 2, "SmolLM2 q4_1");
}

#[test]
fn bad_batches_are_refused_and_change_nothing() {
    let model = Model::random(small_config(), 4);
    let (mut a, mut b) = (Session::new(&model), Session::new(&model));
    model.forward(&mut a, &[1, 2]).unwrap();
    let mut batch = Batch::new(&model, 1);
    let e = model.forward_batch(&mut batch, &mut [&mut a, &mut b], &[1, 2]).unwrap_err().to_string();
    assert!(e.contains("exceed the batch's 1 rows"), "{e}");
    let e = model.forward_batch(&mut batch, &mut [&mut a], &[1, 2]).unwrap_err().to_string();
    assert!(e.contains("1 sessions but 2 tokens"), "{e}");
    let e = model.forward_batch(&mut batch, &mut [&mut a], &[u32::MAX]).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    let mut full = Session::new(&model);
    model.forward(&mut full, &vec![1; 64]).unwrap();
    let e = model.forward_batch(&mut batch, &mut [&mut full], &[1]).unwrap_err().to_string();
    assert!(e.contains("context full"), "{e}");
    assert_eq!((a.pos(), b.pos(), full.pos()), (2, 0, 64));
    model.forward_batch(&mut batch, &mut [], &[]).unwrap();
}
