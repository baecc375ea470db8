//! The Llama/Swen decoder: immutable weights (`Model`, `Send + Sync`) and `forward()`.
//!
//! ```no_run
//! use ulm_runtime::{Config, Model, Session};
//! let model = Model::random(Config::micro_8m(), 42);
//! let mut session = Session::new(&model);
//! let logits = model.forward(&mut session, &[1, 400, 7]).unwrap();
//! assert_eq!(logits.len(), 12_288);
//! ```
//!
//! One block: `x += Wo · attn(rope(Wq · n1), rope(Wk · n1), Wv · n1)` with `n1 = rmsnorm(x)`,
//! then `x += Wdown · (silu(Wgate · n2) * (Wup · n2))` with `n2 = rmsnorm(x)`; at the end
//! `logits = head · rmsnorm(x)`, the head being the embedding when tied.
//!
//! [`Model::forward_batch`] steps several sessions by one token each in one pass: the matrix
//! products see one row per session, attention runs per session over its own cache.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::load::{Part, TensorSource};
use crate::ops::{self, Rope};
use crate::pool::{Pool, split_range};
use crate::quant::{BLOCK, Precision, QActs, Weight};
use crate::session::{Batch, MAX_BATCH, Scratch, Session};

/// Weights of one transformer block.
#[derive(Clone, Debug)]
pub struct Layer {
    attn_norm: Vec<f32>, // (dim)
    wq: Weight,          // (q_dim, dim)
    wk: Weight,          // (kv_dim, dim)
    wv: Weight,          // (kv_dim, dim)
    wo: Weight,          // (dim, q_dim)
    ffn_norm: Vec<f32>,  // (dim)
    gate: Weight,        // (ffn_dim, dim)
    up: Weight,          // (ffn_dim, dim)
    down: Weight,        // (dim, ffn_dim)
}

/// Immutable model weights. Share it between threads and sessions with `Arc<Model>`.
#[derive(Clone, Debug)]
pub struct Model {
    config: Config,
    embed: Weight,        // (vocab, dim)
    layers: Vec<Layer>,   // (n_layers)
    final_norm: Vec<f32>, // (dim)
    head: Option<Weight>, // (vocab, dim); None when tied to `embed`
    rope: Rope,
}

impl Model {
    /// The shape of this model.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Storage format of the block matrices (`f32`, `q8`, `q4_0`, `q4_1`).
    pub fn weight_format(&self) -> &'static str {
        self.layers.first().map_or("f32", |l| l.wq.format())
    }

    /// Bytes of weights held in memory.
    pub fn bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down].iter().map(|w| w.bytes()).sum::<usize>()
                    + 4 * (l.attn_norm.len() + l.ffn_norm.len())
            })
            .sum();
        l + self.embed.bytes() + self.head.as_ref().map_or(0, |h| h.bytes()) + 4 * self.final_norm.len()
    }

    /// Reads every tensor of `config` from `src`, checking shapes, and stores matrices per `prec`.
    pub fn from_source(src: &dyn TensorSource, config: Config, prec: Precision, gguf_names: bool) -> Result<Model> {
        config.validate().map_err(|msg| Error::Config { path: src.path().to_owned(), msg })?;
        let c = &config;
        let name = |p: Part, l: usize| if gguf_names { p.gguf_name(l) } else { p.hf_name(l) };
        let matrix = |p: Part, l: usize, rows: usize, cols: usize, prec: Precision| -> Result<Weight> {
            let n = name(p, l);
            let v = src.tensor(&n)?;
            if v.shape != [rows, cols] {
                return Err(Error::Shape { path: src.path().to_owned(), name: n, expected: vec![rows, cols], found: v.shape });
            }
            Weight::from_view(&v, rows, cols, prec, &n).map_err(|e| Error::format(src.path(), e.to_string()))
        };
        let vector = |p: Part, l: usize| -> Result<Vec<f32>> {
            let n = name(p, l);
            let v = src.tensor(&n)?;
            if v.shape.iter().product::<usize>() != c.dim || v.shape.len() != 1 {
                return Err(Error::Shape { path: src.path().to_owned(), name: n, expected: vec![c.dim], found: v.shape });
            }
            match Weight::from_view(&v, 1, c.dim, Precision::F32, &n).map_err(|e| Error::format(src.path(), e.to_string()))? {
                Weight::F32 { data, .. } => Ok(data),
                _ => unreachable!("Precision::F32 always gives f32"),
            }
        };
        // The embedding doubles as the head when tied: keep it quantized only if the matrices are.
        let embed = matrix(Part::Embedding, 0, c.vocab_size, c.dim, prec)?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            layers.push(Layer {
                attn_norm: vector(Part::AttnNorm, l)?,
                wq: matrix(Part::Wq, l, c.q_dim(), c.dim, prec)?,
                wk: matrix(Part::Wk, l, c.kv_dim(), c.dim, prec)?,
                wv: matrix(Part::Wv, l, c.kv_dim(), c.dim, prec)?,
                wo: matrix(Part::Wo, l, c.dim, c.q_dim(), prec)?,
                ffn_norm: vector(Part::FfnNorm, l)?,
                gate: matrix(Part::Gate, l, c.ffn_dim, c.dim, prec)?,
                up: matrix(Part::Up, l, c.ffn_dim, c.dim, prec)?,
                down: matrix(Part::Down, l, c.dim, c.ffn_dim, prec)?,
            });
        }
        let head = if c.tied_embeddings { None } else { Some(matrix(Part::LmHead, 0, c.vocab_size, c.dim, prec)?) };
        let final_norm = vector(Part::FinalNorm, 0)?;
        let rope = Rope::new(c.head_dim, c.max_seq_len, c.rope_theta, c.rope_style);
        Ok(Model { config, embed, layers, final_norm, head, rope })
    }

    /// A model with seeded random weights (benchmarks, tests, the golden fixture's generator):
    /// matrices N(0, 0.02) scaled like a trained model's, norms 1.
    pub fn random(config: Config, seed: u64) -> Model {
        let mut rng = crate::sampler::Rng::new(seed);
        let c = &config.clone();
        let mut mat = |rows: usize, cols: usize, std: f32| Weight::F32 { rows, cols, data: rng.vec(rows * cols, std) };
        let resid = 0.02 / (2.0 * c.n_layers as f32).sqrt();
        let embed = mat(c.vocab_size, c.dim, 0.02);
        let layers = (0..c.n_layers)
            .map(|_| Layer {
                attn_norm: vec![1.0; c.dim],
                wq: mat(c.q_dim(), c.dim, 0.02),
                wk: mat(c.kv_dim(), c.dim, 0.02),
                wv: mat(c.kv_dim(), c.dim, 0.02),
                wo: mat(c.dim, c.q_dim(), resid),
                ffn_norm: vec![1.0; c.dim],
                gate: mat(c.ffn_dim, c.dim, 0.02),
                up: mat(c.ffn_dim, c.dim, 0.02),
                down: mat(c.dim, c.ffn_dim, resid),
            })
            .collect();
        let head = (!c.tied_embeddings).then(|| mat(c.vocab_size, c.dim, 0.02));
        let rope = Rope::new(c.head_dim, c.max_seq_len, c.rope_theta, c.rope_style);
        Model { config, embed, layers, final_norm: vec![1.0; c.dim], head, rope }
    }

    /// The same model with every matrix converted: `Int8` quantizes f32 matrices, `F32`
    /// dequantizes everything.
    pub fn converted(&self, prec: Precision) -> Model {
        let conv = |w: &Weight| match prec {
            Precision::Native => w.clone(),
            Precision::F32 => w.to_f32(),
            Precision::Int8 if w.cols() % BLOCK == 0 && !w.is_quantized() => w.to_q8_row(),
            Precision::Int8 => w.clone(),
        };
        let mut m = self.clone();
        m.embed = conv(&self.embed);
        m.head = self.head.as_ref().map(conv);
        for l in &mut m.layers {
            for w in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.gate, &mut l.up, &mut l.down] {
                *w = conv(w);
            }
        }
        m
    }

    /// Every named tensor as f32, outermost dimension first, with Hugging Face names (tests
    /// and exports compare models through this).
    pub fn tensors_f32(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let f = |w: &Weight| match w.to_f32() {
            Weight::F32 { data, .. } => data,
            _ => unreachable!(),
        };
        let mut out = vec![(Part::Embedding.hf_name(0), vec![self.config.vocab_size, self.config.dim], f(&self.embed))];
        for (i, l) in self.layers.iter().enumerate() {
            out.push((Part::AttnNorm.hf_name(i), vec![l.attn_norm.len()], l.attn_norm.clone()));
            for (p, w) in [(Part::Wq, &l.wq), (Part::Wk, &l.wk), (Part::Wv, &l.wv), (Part::Wo, &l.wo)] {
                out.push((p.hf_name(i), vec![w.rows(), w.cols()], f(w)));
            }
            out.push((Part::FfnNorm.hf_name(i), vec![l.ffn_norm.len()], l.ffn_norm.clone()));
            for (p, w) in [(Part::Gate, &l.gate), (Part::Up, &l.up), (Part::Down, &l.down)] {
                out.push((p.hf_name(i), vec![w.rows(), w.cols()], f(w)));
            }
        }
        out.push((Part::FinalNorm.hf_name(0), vec![self.final_norm.len()], self.final_norm.clone()));
        if let Some(h) = &self.head {
            out.push((Part::LmHead.hf_name(0), vec![h.rows(), h.cols()], f(h)));
        }
        out
    }

    /// Feeds `tokens` at the session's position and returns the logits after the last one.
    /// Allocates nothing: all buffers live in the session.
    pub fn forward<'s>(&self, s: &'s mut Session, tokens: &[u32]) -> Result<&'s [f32]> {
        self.forward_with(s, tokens, None)?;
        Ok(&s.logits)
    }

    /// Like [`Model::forward`], but computes the logits after *every* token and hands them to
    /// `each(i, logits)` (log-likelihood scoring).
    pub fn forward_each(&self, s: &mut Session, tokens: &[u32], each: &mut dyn FnMut(usize, &[f32])) -> Result<()> {
        self.forward_with(s, tokens, Some(each))
    }

    fn forward_with(&self, s: &mut Session, tokens: &[u32], mut each: Option<&mut dyn FnMut(usize, &[f32])>) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::Request("empty input: give at least one token".into()));
        }
        self.check_tokens(tokens)?;
        self.check_room(s, tokens.len())?;
        let mut done = 0;
        for chunk in tokens.chunks(MAX_BATCH) {
            let last_chunk = done + chunk.len() == tokens.len();
            self.forward_chunk(s, chunk);
            let pool = s.pool.clone();
            match each.as_deref_mut() {
                Some(f) => {
                    for t in 0..chunk.len() {
                        self.head_logits(&mut s.scratch, pool.as_deref(), t, 1, &mut s.logits);
                        f(done + t, &s.logits);
                    }
                }
                None if last_chunk => self.head_logits(&mut s.scratch, pool.as_deref(), chunk.len() - 1, 1, &mut s.logits),
                None => {}
            }
            s.pos += chunk.len();
            s.history.extend_from_slice(chunk);
            done += chunk.len();
        }
        Ok(())
    }

    /// Advances each of `sessions` by one token — `tokens[i]` goes to `sessions[i]` at its own
    /// position — in one pass over the weights; each session's logits are then in
    /// [`Session::logits`]. The logits equal those of `forward(sessions[i], &[tokens[i]])`
    /// bit for bit: every row goes through the same kernels, and a row's products never mix
    /// with another row's. Allocates nothing.
    pub fn forward_batch(&self, b: &mut Batch, sessions: &mut [&mut Session], tokens: &[u32]) -> Result<()> {
        let n = sessions.len();
        if n != tokens.len() {
            return Err(Error::Request(format!("{n} sessions but {} tokens: give one token per session", tokens.len())));
        }
        if n > b.max {
            return Err(Error::Request(format!("{n} sessions exceed the batch's {} rows; make the Batch larger or split the step", b.max)));
        }
        if n == 0 {
            return Ok(());
        }
        self.check_tokens(tokens)?;
        for s in sessions.iter() {
            self.check_room(s, 1)?;
        }
        let pool = b.pool.clone();
        // Row t is session t's one new token, at that session's position.
        self.blocks(&mut b.scratch, pool.as_deref(), sessions, tokens, &|t| (t, 0));
        let vocab = self.config.vocab_size;
        self.head_logits(&mut b.scratch, pool.as_deref(), 0, n, &mut b.logits);
        for (t, (s, &tok)) in sessions.iter_mut().zip(tokens).enumerate() {
            s.logits.copy_from_slice(&b.logits[t * vocab..(t + 1) * vocab]);
            s.pos += 1;
            s.history.push(tok);
        }
        Ok(())
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&bad) => Err(Error::Request(format!("token id {bad} is outside the vocabulary (size {vocab})"))),
            None => Ok(()),
        }
    }

    /// Whether `s` has room for `n` more tokens (and was sized for this model).
    fn check_room(&self, s: &Session, n: usize) -> Result<()> {
        let c = &self.config;
        if s.pos + n > s.max_seq || s.max_seq != c.max_seq_len || s.k_cache.len() != c.n_layers * s.max_seq * c.kv_dim() {
            return Err(Error::Request(format!(
                "context full: {} tokens in the session + {n} new exceed its {} positions; start a new session or truncate it",
                s.pos, s.max_seq
            )));
        }
        Ok(())
    }

    /// Runs every block over `tokens` (at most MAX_BATCH) placed at `s.pos`; leaves the final
    /// residual stream in the session's scratch.
    fn forward_chunk(&self, s: &mut Session, tokens: &[u32]) {
        // Taken out (no allocation: an empty Scratch holds empty Vecs) so that the pass can
        // write activations while it reads this session's cache.
        let mut scratch = std::mem::take(&mut s.scratch);
        let pool = s.pool.clone();
        // Row t is the session's token t, at offset t from its position.
        self.blocks(&mut scratch, pool.as_deref(), std::slice::from_mut(&mut &mut *s), tokens, &|t| (0, t));
        s.scratch = scratch;
    }

    /// Runs every block over `tokens.len()` rows (at most the scratch's rows). Row `t` belongs
    /// to session `at(t).0` at position `pos + at(t).1` of that session: its K and V go into
    /// that session's cache and it attends over that cache. Every matrix product takes all
    /// rows at once. Leaves the final residual stream in `sc.x`.
    fn blocks(&self, sc: &mut Scratch, pool: Option<&Pool>, seqs: &mut [&mut Session], tokens: &[u32], at: RowAt<'_>) {
        let c = &self.config;
        let n = tokens.len();
        let (dim, qd, kvd, ffn) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);
        for (t, &tok) in tokens.iter().enumerate() {
            self.embed.row_f32(tok as usize, &mut sc.x[t * dim..(t + 1) * dim]);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention: n1 = rmsnorm(x); q, k, v = W · n1.
            for t in 0..n {
                ops::rmsnorm(&mut sc.xb[t * dim..(t + 1) * dim], &sc.x[t * dim..(t + 1) * dim], &layer.attn_norm, c.norm_eps);
            }
            let xb = &sc.xb[..n * dim];
            sc.xq.quantize_for(xb, dim, &[&layer.wq, &layer.wk, &layer.wv]);
            par_matmul(pool, &layer.wq, &mut sc.q, xb, &sc.xq, n);
            par_matmul(pool, &layer.wk, &mut sc.k, xb, &sc.xq, n);
            par_matmul(pool, &layer.wv, &mut sc.v, xb, &sc.xq, n);
            for t in 0..n {
                let (i, off) = at(t);
                let s = &mut *seqs[i];
                let pos = s.pos + off;
                self.rope.apply(&mut sc.q[t * qd..(t + 1) * qd], pos);
                self.rope.apply(&mut sc.k[t * kvd..(t + 1) * kvd], pos);
                let at = l * s.max_seq * kvd + pos * kvd;
                s.k_cache[at..at + kvd].copy_from_slice(&sc.k[t * kvd..(t + 1) * kvd]);
                s.v_cache[at..at + kvd].copy_from_slice(&sc.v[t * kvd..(t + 1) * kvd]);
            }
            self.attention(sc, seqs, pool, l, n, at);
            // x += Wo · attention output (left in xb by `attention`).
            let att_out = &sc.xb[..n * qd];
            sc.xq.quantize_for(att_out, qd, &[&layer.wo]);
            par_matmul(pool, &layer.wo, &mut sc.proj, att_out, &sc.xq, n);
            for (x, p) in sc.x[..n * dim].iter_mut().zip(&sc.proj[..n * dim]) {
                *x += p;
            }
            // MLP: x += Wdown · (silu(Wgate · n2) * (Wup · n2)).
            for t in 0..n {
                ops::rmsnorm(&mut sc.xb[t * dim..(t + 1) * dim], &sc.x[t * dim..(t + 1) * dim], &layer.ffn_norm, c.norm_eps);
            }
            let xb = &sc.xb[..n * dim];
            sc.xq.quantize_for(xb, dim, &[&layer.gate, &layer.up]);
            par_matmul(pool, &layer.gate, &mut sc.hb, xb, &sc.xq, n);
            par_matmul(pool, &layer.up, &mut sc.hb2, xb, &sc.xq, n);
            ops::swiglu(&mut sc.hb[..n * ffn], &sc.hb2[..n * ffn]);
            sc.xq.quantize_for(&sc.hb[..n * ffn], ffn, &[&layer.down]);
            par_matmul(pool, &layer.down, &mut sc.proj, &sc.hb[..n * ffn], &sc.xq, n);
            for (x, p) in sc.x[..n * dim].iter_mut().zip(&sc.proj[..n * dim]) {
                *x += p;
            }
        }
    }

    /// Causal grouped-query attention of the `n` rows of layer `l`, each over its own
    /// session's cache (see [`Model::blocks`]); writes the concatenated heads into `sc.xb` as
    /// `(n, q_dim)`.
    fn attention(&self, sc: &mut Scratch, seqs: &[&mut Session], pool: Option<&Pool>, l: usize, n: usize, at: RowAt<'_>) {
        let c = &self.config;
        let (qd, kvd, hd, max_seq) = (c.q_dim(), c.kv_dim(), c.head_dim, c.max_seq_len);
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let q = &sc.q;
        let att = SharedMut::new(&mut sc.att);
        let out = SharedMut::new(&mut sc.xb);
        let work = |i: usize, nthreads: usize| {
            for h in split_range(c.n_heads, i, nthreads, 1) {
                let kvh = h / group;
                // SAFETY: head h owns att row h and columns h*hd..(h+1)*hd of every output row;
                // heads are split disjointly between threads.
                let scores = unsafe { att.slice(h * max_seq, max_seq) };
                for t in 0..n {
                    let (si, off) = at(t);
                    let s = &*seqs[si];
                    let (kc, vc, base) = (&s.k_cache, &s.v_cache, l * s.max_seq * kvd);
                    let len = s.pos + off + 1;
                    let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                    for (p, sc) in scores[..len].iter_mut().enumerate() {
                        let k = &kc[base + p * kvd + kvh * hd..base + p * kvd + (kvh + 1) * hd];
                        *sc = ops::dot(qh, k) * scale;
                    }
                    ops::softmax(&mut scores[..len]);
                    let o = unsafe { out.slice(t * qd + h * hd, hd) };
                    o.fill(0.0);
                    for (p, &a) in scores[..len].iter().enumerate() {
                        ops::axpy(o, a, &vc[base + p * kvd + kvh * hd..base + p * kvd + (kvh + 1) * hd]);
                    }
                }
            }
        };
        let (s0, off0) = at(0);
        match pool {
            Some(pool) if n > 1 || seqs[s0].pos + off0 > 256 => pool.run(&|i| work(i, pool.threads())),
            _ => work(0, 1),
        }
    }

    /// Final norm and head for rows `t0..t0 + n` of the residual stream in `sc.x`, into `out`
    /// as `(n, vocab)`.
    fn head_logits(&self, sc: &mut Scratch, pool: Option<&Pool>, t0: usize, n: usize, out: &mut [f32]) {
        let dim = self.config.dim;
        for t in 0..n {
            ops::rmsnorm(&mut sc.xb[t * dim..(t + 1) * dim], &sc.x[(t0 + t) * dim..(t0 + t + 1) * dim], &self.final_norm, self.config.norm_eps);
        }
        let head = self.head.as_ref().unwrap_or(&self.embed);
        sc.xq.quantize_for(&sc.xb[..n * dim], dim, &[head]);
        par_matmul(pool, head, out, &sc.xb[..n * dim], &sc.xq, n);
    }
}

/// Where row `t` of a pass belongs: `(index of its session, offset from that session's pos)`.
type RowAt<'a> = &'a (dyn Fn(usize) -> (usize, usize) + Sync);

/// A slice that threads write to at disjoint places.
struct SharedMut {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: users only create disjoint sub-slices from different threads (see each call site).
unsafe impl Sync for SharedMut {}

impl SharedMut {
    fn new(s: &mut [f32]) -> SharedMut {
        SharedMut { ptr: s.as_mut_ptr(), len: s.len() }
    }

    fn ptr(&self) -> *mut f32 {
        self.ptr
    }

    /// # Safety
    /// No two live slices from one `SharedMut` may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len);
        // SAFETY: in bounds (checked); disjointness is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// `out (n, rows) = x (n, cols) · Wᵀ`, rows split across the pool's threads.
fn par_matmul(pool: Option<&Pool>, w: &Weight, out: &mut [f32], x: &[f32], xq: &QActs, n: usize) {
    let rows = w.rows();
    match pool {
        Some(pool) if rows * w.cols() * n >= 1 << 15 => {
            let shared = SharedMut::new(&mut out[..n * rows]);
            pool.run(&|i| {
                let r = split_range(rows, i, pool.threads(), 16);
                // SAFETY: `out` holds n × rows values and each thread writes only its own rows `r`.
                unsafe { w.matmul_rows_raw(shared.ptr(), rows, x, xq, n, r) };
            });
        }
        _ => w.matmul_rows(out, rows, x, xq, n, 0..rows),
    }
}
