//! ulm-runtime against candle-transformers' llama: the same seeded random weights, written once
//! as a Hugging Face checkpoint (`config.json` + `model.safetensors`) and loaded by both, must give
//! the same f32 logits (max |difference| ≤ [`LOGIT_TOL`]) and the same greedy tokens.
//!
//! Covered: several layers, grouped-query attention (`n_kv_heads < n_heads`), a tied and an untied
//! LM head, RoPE theta other than 10⁴ (rotate-half layout, as in HF and candle), RMSNorm eps other
//! than the default and norm weights other than 1; full-sequence prefill (longer than ulm's
//! `MAX_BATCH`, so it is chunked), prefill at a position > 0, and token-by-token decoding with the
//! KV cache on both sides. A perturbed copy of the weights must fail the same comparison.
//!
//! Run: `cargo test -p ulm-parity -- --nocapture` prints the largest difference of each check.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use ulm_runtime::load::hf::HfModel;
use ulm_runtime::{Model, Precision, Session};

/// Max |logit difference| allowed between ulm and candle (both f32; they differ only in summation
/// order and in RoPE tables, which ulm computes in f64 and candle in f32).
const LOGIT_TOL: f32 = 1e-4;
/// Greedy steps whose tokens must be identical.
const GREEDY_STEPS: usize = 40;
/// Prompt of the prefill checks: longer than ulm's 64-token batch, so prefill runs in two chunks.
const LONG_PROMPT: usize = 70;

// ------------------------------------------------------------------ shapes and weights

/// A micro Llama shape (head_dim is `dim / heads`, the only choice candle's llama offers).
struct Shape {
    name: &'static str,
    dim: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    vocab: usize,
    theta: f64,
    eps: f64,
    tied: bool,
    max_pos: usize,
}

/// Untied head, 4 query heads per key/value head, FFN width not a multiple of 32.
const UNTIED: Shape = Shape {
    name: "untied",
    dim: 64,
    layers: 3,
    heads: 8,
    kv_heads: 2,
    ffn: 172,
    vocab: 384,
    theta: 50_000.0,
    eps: 1e-5,
    tied: false,
    max_pos: 160,
};

/// Tied head (the embedding), 2 query heads per key/value head, head_dim 16.
const TIED: Shape = Shape {
    name: "tied",
    dim: 96,
    layers: 4,
    heads: 6,
    kv_heads: 3,
    ffn: 256,
    vocab: 320,
    theta: 500_000.0,
    eps: 1e-6,
    tied: true,
    max_pos: 160,
};

/// xorshift64*: small and seeded.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// A tensor to write: HF name, shape outermost first, f32 values.
type Named = (String, Vec<usize>, Vec<f32>);

/// Seeded random weights in the HF naming. Matrices are uniform with std 1/√cols, so that
/// attention scores and logits are O(1) (greedy has clear winners); norm weights are 1 ± 0.3.
fn random_weights(s: &Shape, seed: u64) -> Vec<Named> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut mat = |name: String, rows: usize, cols: usize| -> Named {
        let a = (3.0 / cols as f32).sqrt();
        (name, vec![rows, cols], (0..rows * cols).map(|_| a * rng.f32()).collect())
    };
    let (hd, dim) = (s.dim / s.heads, s.dim);
    let mut out = vec![mat("model.embed_tokens.weight".into(), s.vocab, dim)];
    for l in 0..s.layers {
        let p = |t: &str| format!("model.layers.{l}.{t}.weight");
        out.push(mat(p("self_attn.q_proj"), s.heads * hd, dim));
        out.push(mat(p("self_attn.k_proj"), s.kv_heads * hd, dim));
        out.push(mat(p("self_attn.v_proj"), s.kv_heads * hd, dim));
        out.push(mat(p("self_attn.o_proj"), dim, s.heads * hd));
        out.push(mat(p("mlp.gate_proj"), s.ffn, dim));
        out.push(mat(p("mlp.up_proj"), s.ffn, dim));
        out.push(mat(p("mlp.down_proj"), dim, s.ffn));
    }
    if !s.tied {
        out.push(mat("lm_head.weight".into(), s.vocab, dim));
    }
    let mut rng = Rng(seed ^ 0x5EED);
    let mut norm = |name: String| -> Named { (name, vec![dim], (0..dim).map(|_| 1.0 + 0.3 * rng.f32()).collect()) };
    for l in 0..s.layers {
        out.push(norm(format!("model.layers.{l}.input_layernorm.weight")));
        out.push(norm(format!("model.layers.{l}.post_attention_layernorm.weight")));
    }
    out.push(norm("model.norm.weight".into()));
    out
}

/// Writes `config.json` (LlamaConfig names, read by both) and `model.safetensors` into a fresh
/// directory and returns it.
fn write_checkpoint(s: &Shape, weights: &[Named], tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ulm-parity-{}-{}-{tag}", std::process::id(), s.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": s.dim,
        "intermediate_size": s.ffn,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "vocab_size": s.vocab,
        "rms_norm_eps": s.eps,
        "rope_theta": s.theta,
        "rope_scaling": null,
        "max_position_embeddings": s.max_pos,
        "tie_word_embeddings": s.tied,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        weights.iter().map(|(n, shape, v)| (n.clone(), shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views = bytes.iter().map(|(n, shape, b)| {
        (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).unwrap())
    });
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    dir
}

// ------------------------------------------------------------------ the two engines

/// ulm-runtime's model from the checkpoint, all matrices f32 (the reference path).
fn load_ulm(dir: &Path, s: &Shape) -> Model {
    let hf = HfModel::open(dir).unwrap();
    let c = hf.config().unwrap();
    // The test is only worth something if ulm read the shape we meant.
    assert_eq!((c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_dim, c.vocab_size), (s.dim, s.layers, s.heads, s.kv_heads, s.ffn, s.vocab));
    assert_eq!((c.rope_theta as f64, c.norm_eps, c.tied_embeddings), (s.theta, s.eps as f32, s.tied));
    Model::from_source(&hf, c, Precision::F32, false).unwrap()
}

/// candle-transformers' llama from the same two files (f32, CPU).
struct CandleLlama {
    model: Llama,
    config: candle_transformers::models::llama::Config,
}

impl CandleLlama {
    fn load(dir: &Path) -> CandleLlama {
        let config: LlamaConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let config = config.into_config(false);
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
        CandleLlama { model: Llama::load(vb, &config).unwrap(), config }
    }

    /// A fresh cache; `kv` false recomputes everything each call (candle's no-cache path).
    fn cache(&self, kv: bool) -> Cache {
        Cache::new(kv, DType::F32, &self.config, &Device::Cpu).unwrap()
    }

    /// Feeds `tokens` at `pos` and returns the logits after the last one.
    fn forward(&self, cache: &mut Cache, tokens: &[u32], pos: usize) -> Vec<f32> {
        let x = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        self.model.forward(&x, pos, cache).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
    }
}

// ------------------------------------------------------------------ comparison

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logit vectors differ in length");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Largest difference seen by one check.
struct Worst {
    what: String,
    diff: f32,
    at: String,
}

impl Worst {
    fn new(what: String) -> Worst {
        Worst { what, diff: 0.0, at: String::new() }
    }

    fn see(&mut self, ulm: &[f32], candle: &[f32], at: impl FnOnce() -> String) {
        let d = max_abs_diff(ulm, candle);
        assert!(d.is_finite(), "{}: non-finite logits at {}", self.what, at());
        if d >= self.diff {
            self.diff = d;
            self.at = at();
        }
    }

    /// Prints the check's worst difference and asserts it is within [`LOGIT_TOL`].
    fn check(&self) {
        eprintln!("{}: max |Δlogit| = {:.3e} (at {})", self.what, self.diff, self.at);
        assert!(self.diff <= LOGIT_TOL, "{}: ulm and candle differ by {:.3e} > {LOGIT_TOL:e} at {}", self.what, self.diff, self.at);
    }
}

fn prompt(s: &Shape, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed | 1);
    (0..n).map(|_| rng.below(s.vocab)).collect()
}

/// Every prefill and cache path of ulm against candle on a 70-token prompt: one [`Worst`] per
/// check, not yet asserted.
fn prefill_parity(ulm_dir: &Path, candle_dir: &Path, s: &Shape) -> Vec<Worst> {
    let ulm = load_ulm(ulm_dir, s);
    let candle = CandleLlama::load(candle_dir);
    let tokens = prompt(s, LONG_PROMPT, 7);
    let mut checks = Vec::new();

    // Full-sequence prefill, last logits: candle without its KV cache, ulm on 1 and 2 threads.
    let reference = candle.forward(&mut candle.cache(false), &tokens, 0);
    for threads in [1, 2] {
        let mut w = Worst::new(format!("{} prefill ({LONG_PROMPT} tokens, {threads} thread(s))", s.name));
        let mut session = Session::new(&ulm).with_threads(threads);
        w.see(ulm.forward(&mut session, &tokens).unwrap(), &reference, || format!("pos {}", LONG_PROMPT - 1));
        checks.push(w);
    }

    // Every position: candle token by token through its KV cache, against ulm token by token
    // through its KV cache and against ulm's logits after every token of one prefill.
    let mut cache = candle.cache(true);
    let mut step = Session::new(&ulm);
    let mut per_token = Vec::with_capacity(tokens.len());
    ulm.forward_each(&mut Session::new(&ulm), &tokens, &mut |_, l| per_token.push(l.to_vec())).unwrap();
    let mut w_step = Worst::new(format!("{} decode, KV cache, every position", s.name));
    let mut w_each = Worst::new(format!("{} prefill, logits after every token", s.name));
    for (pos, &t) in tokens.iter().enumerate() {
        let c = candle.forward(&mut cache, &[t], pos);
        w_step.see(ulm.forward(&mut step, &[t]).unwrap(), &c, || format!("pos {pos}"));
        w_each.see(&per_token[pos], &c, || format!("pos {pos}"));
    }
    checks.extend([w_step, w_each]);

    // Prefill at a position > 0 (the next chat turn): 30 tokens, then 40 more on top.
    let mut w = Worst::new(format!("{} prefill 30 + 40 tokens", s.name));
    let mut cache = candle.cache(true);
    let mut session = Session::new(&ulm);
    for (start, end) in [(0, 30), (30, LONG_PROMPT)] {
        let c = candle.forward(&mut cache, &tokens[start..end], start);
        w.see(ulm.forward(&mut session, &tokens[start..end]).unwrap(), &c, || format!("pos {}", end - 1));
    }
    checks.push(w);
    checks
}

/// Prefill a 12-token prompt, then [`GREEDY_STEPS`] greedy steps on both sides, each engine
/// choosing from its own logits; tokens must be identical and logits within tolerance.
fn greedy_parity(dir: &Path, s: &Shape) {
    let ulm = load_ulm(dir, s);
    let candle = CandleLlama::load(dir);
    let tokens = prompt(s, 12, 99);
    let mut cache = candle.cache(true);
    let mut session = Session::new(&ulm);
    let mut w = Worst::new(format!("{} greedy, {GREEDY_STEPS} steps", s.name));
    let (mut u_next, mut c_next) = (tokens.clone(), tokens.clone());
    let (mut u_out, mut c_out) = (Vec::new(), Vec::new());
    let mut pos = 0;
    for step in 0..=GREEDY_STEPS {
        let u = ulm.forward(&mut session, &u_next).unwrap().to_vec();
        let c = candle.forward(&mut cache, &c_next, pos);
        pos += c_next.len();
        w.see(&u, &c, || format!("step {step}"));
        if step == GREEDY_STEPS {
            break;
        }
        let (ut, ct) = (argmax(&u), argmax(&c));
        u_out.push(ut);
        c_out.push(ct);
        assert_eq!(u_out, c_out, "{}: greedy tokens diverge at step {step}", s.name);
        (u_next, c_next) = (vec![ut], vec![ct]);
    }
    w.check();
    let distinct = u_out.iter().collect::<std::collections::BTreeSet<_>>().len();
    eprintln!("{} greedy tokens ({distinct} distinct): {u_out:?}", s.name);
}

// ------------------------------------------------------------------ tests

#[test]
fn untied_gqa_prefill_and_kv_cache_match_candle() {
    let dir = write_checkpoint(&UNTIED, &random_weights(&UNTIED, 1), "prefill");
    prefill_parity(&dir, &dir, &UNTIED).iter().for_each(Worst::check);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tied_gqa_prefill_and_kv_cache_match_candle() {
    let dir = write_checkpoint(&TIED, &random_weights(&TIED, 2), "prefill");
    prefill_parity(&dir, &dir, &TIED).iter().for_each(Worst::check);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn greedy_tokens_match_candle_for_40_steps() {
    for (s, seed) in [(&UNTIED, 3), (&TIED, 4)] {
        let dir = write_checkpoint(s, &random_weights(s, seed), "greedy");
        greedy_parity(&dir, s);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The comparison can fail: ulm reads a copy with one key weight of layer 1 moved by 0.01 (a
/// twelfth of the weights' standard deviation), candle the original, and every check must see it.
#[test]
fn a_perturbed_weight_is_caught() {
    let weights = random_weights(&UNTIED, 1);
    let mut bumped = weights.clone();
    let k = bumped.iter_mut().find(|(n, _, _)| n == "model.layers.1.self_attn.k_proj.weight").unwrap();
    k.2[17] += 0.01;
    let (a, b) = (write_checkpoint(&UNTIED, &weights, "orig"), write_checkpoint(&UNTIED, &bumped, "bumped"));
    let checks = prefill_parity(&b, &a, &UNTIED);
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
    for w in &checks {
        eprintln!("perturbed: {}: max |Δlogit| = {:.3e}", w.what, w.diff);
        assert!(w.diff > LOGIT_TOL, "{}: a perturbed weight passed ({:.3e} ≤ {LOGIT_TOL:e}); the comparison is too loose", w.what, w.diff);
    }
}
