//! Criterion suite of the runtime's kernels at the shapes of micro_30m and SmolLM2-135M: the
//! matrix–vector products (f32; int8, q4_0 and q4_1 weights with int8 activations), activation
//! quantization, RMSNorm, softmax, RoPE, SwiGLU and one decode step of attention over a KV cache.
//!
//! ```sh
//! cargo bench -p ulm-runtime --bench kernels                      # everything, fast and scalar
//! cargo bench -p ulm-runtime --bench kernels -- matvec/q4_1       # one kernel
//! cargo bench -p ulm-runtime --bench kernels -- --warm-up-time 0.1 --measurement-time 0.2  # a quick look
//! ```
//!
//! Every benchmark id carries the path it ran: `avx2` (the AVX2+FMA kernels) or `scalar` (their
//! portable twins), or `portable` for kernels that have a single implementation. The scalar twins
//! of the quantized products are private to `quant.rs`, and the SIMD switch (`ULM_NO_SIMD`) is read
//! once per process, so on an AVX2 machine this binary runs the suite, then runs itself again
//! with `ULM_NO_SIMD=1` for the scalar half (a hack: set `ULM_BENCH_NO_TWIN=1` to skip it).
//! The attention benchmark mirrors `Model::attention` (private) with the same public ops.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use ulm_runtime::ops::{self, Rope};
use ulm_runtime::quant::{BLOCK, QActs, Weight};
use ulm_runtime::{Config, RopeStyle};

// ------------------------------------------------------------------ shapes

/// A model shape to benchmark at.
struct Shape {
    name: &'static str,
    config: Config,
}

fn shapes() -> [Shape; 2] {
    // SmolLM2-135M as its GGUF declares it (no preset: it is a peer, not a μLM).
    let smollm2 = Config {
        dim: 576,
        n_layers: 30,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        ffn_dim: 1536,
        vocab_size: 49_152,
        max_seq_len: 2048,
        norm_eps: 1e-5,
        rope_theta: 100_000.0,
        rope_style: RopeStyle::Half,
        tied_embeddings: true,
    };
    [Shape { name: "micro_30m", config: Config::micro_30m() }, Shape { name: "smollm2_135m", config: smollm2 }]
}

/// The matrices of one block and the head, as (name, rows, cols).
fn matrices(c: &Config) -> [(&'static str, usize, usize); 5] {
    [
        ("wq", c.q_dim(), c.dim),
        ("wk", c.kv_dim(), c.dim),
        ("up", c.ffn_dim, c.dim),
        ("down", c.dim, c.ffn_dim),
        ("head", c.vocab_size, c.dim),
    ]
}

/// Cache lengths for the attention benchmark: a short chat and a long one.
const CACHE_LENS: [usize; 2] = [64, 1024];

// ------------------------------------------------------------------ inputs

/// xorshift64*, so every run benchmarks the same numbers.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.f32()).collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A `(rows, cols)` matrix in `format` (`f32`, `q8_row`, `q8`, `q4_0`, `q4_1`) with random values.
fn weight(format: &str, rows: usize, cols: usize, rng: &mut Rng) -> Weight {
    let nb = rows * cols / BLOCK;
    match format {
        "f32" => Weight::F32 { rows, cols, data: rng.vec(rows * cols, 0.05) },
        "q8" => Weight::F32 { rows, cols, data: rng.vec(rows * cols, 0.05) }.to_q8(),
        "q8_row" => Weight::F32 { rows, cols, data: rng.vec(rows * cols, 0.05) }.to_q8_row(),
        "q4_0" => Weight::Q4_0 { rows, cols, qs: rng.bytes(rows * cols / 2), d: rng.vec(nb, 0.01) },
        "q4_1" => Weight::Q4_1 { rows, cols, qs: rng.bytes(rows * cols / 2), d: rng.vec(nb, 0.01), m: rng.vec(nb, 0.1) },
        _ => unreachable!("unknown format {format}"),
    }
}

/// Which implementation the dispatching kernels take in this process.
fn path() -> &'static str {
    if ops::has_avx2() { "avx2" } else { "scalar" }
}

// ------------------------------------------------------------------ benchmarks

/// `out = W x` for one token: the decode step's work. Throughput is the weight bytes read.
fn matvec(c: &mut Criterion) {
    let mut rng = Rng(1);
    for format in ["f32", "q8_row", "q8", "q4_0", "q4_1"] {
        let mut g = c.benchmark_group(format!("matvec/{format}/{}", path()));
        for s in shapes() {
            for (name, rows, cols) in matrices(&s.config) {
                let w = weight(format, rows, cols, &mut rng);
                let x = rng.vec(cols, 1.0);
                let mut xq = QActs::with_len(cols);
                xq.quantize_for(&x, cols, &[&w]);
                let mut out = vec![0.0; rows];
                g.throughput(Throughput::Bytes(w.bytes() as u64));
                g.bench_function(BenchmarkId::new(s.name, format!("{name} {rows}x{cols}")), |b| {
                    b.iter(|| w.matvec(black_box(&mut out), black_box(&x), black_box(&xq)))
                });
            }
        }
        g.finish();
    }
}

/// RMSNorm (its sum of squares goes through the dispatching dot product).
fn rmsnorm(c: &mut Criterion) {
    let mut rng = Rng(2);
    let mut g = c.benchmark_group(format!("rmsnorm/{}", path()));
    for s in shapes() {
        let dim = s.config.dim;
        let (x, w) = (rng.vec(dim, 1.0), rng.vec(dim, 1.0));
        let mut out = vec![0.0; dim];
        g.throughput(Throughput::Elements(dim as u64));
        g.bench_function(BenchmarkId::new(s.name, dim), |b| b.iter(|| ops::rmsnorm(black_box(&mut out), black_box(&x), &w, 1e-5)));
    }
    g.finish();
}

/// One decode step of grouped-query attention at position `len - 1`: scores against every cached
/// key, softmax, weighted sum of the cached values, for every head — the loop of
/// `Model::attention`, written here with the same public ops because that one is private.
fn attention(c: &mut Criterion) {
    let mut rng = Rng(3);
    let mut g = c.benchmark_group(format!("attention/{}", path()));
    for s in shapes() {
        let cfg = &s.config;
        let (hd, kvd, group) = (cfg.head_dim, cfg.kv_dim(), cfg.n_heads / cfg.n_kv_heads);
        let scale = 1.0 / (hd as f32).sqrt();
        for len in CACHE_LENS {
            let q = rng.vec(cfg.q_dim(), 1.0);
            let (kc, vc) = (rng.vec(len * kvd, 1.0), rng.vec(len * kvd, 1.0)); // (len, kv_dim)
            let mut scores = vec![0.0; len];
            let mut out = vec![0.0; cfg.q_dim()];
            g.throughput(Throughput::Elements((cfg.n_heads * len) as u64));
            g.bench_function(BenchmarkId::new(s.name, format!("cache {len}")), |b| {
                b.iter(|| {
                    for h in 0..cfg.n_heads {
                        let kvh = h / group;
                        let qh = &q[h * hd..(h + 1) * hd];
                        for (p, sc) in scores.iter_mut().enumerate() {
                            *sc = ops::dot(qh, &kc[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd]) * scale;
                        }
                        ops::softmax(&mut scores);
                        let o = &mut out[h * hd..(h + 1) * hd];
                        o.fill(0.0);
                        for (p, &a) in scores.iter().enumerate() {
                            ops::axpy(o, a, &vc[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd]);
                        }
                    }
                    black_box(&out);
                })
            });
        }
    }
    g.finish();
}

/// Kernels with a single, portable implementation: they run only in the first process.
fn portable(c: &mut Criterion) {
    let mut rng = Rng(4);
    let mut g = c.benchmark_group("softmax/portable");
    for s in shapes() {
        // An attention row of a long chat, and the sampler's pass over the vocabulary.
        for n in [1024, s.config.vocab_size] {
            let x = rng.vec(n, 4.0);
            let mut y = x.clone();
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(s.name, n), |b| {
                b.iter(|| {
                    y.copy_from_slice(&x);
                    ops::softmax(black_box(&mut y));
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("rope/portable");
    for s in shapes() {
        let cfg = &s.config;
        let rope = Rope::new(cfg.head_dim, 2048, cfg.rope_theta, cfg.rope_style);
        let mut q = rng.vec(cfg.q_dim(), 1.0);
        g.throughput(Throughput::Elements(cfg.q_dim() as u64));
        g.bench_function(BenchmarkId::new(s.name, format!("q {}", cfg.q_dim())), |b| b.iter(|| rope.apply(black_box(&mut q), 1000)));
    }
    g.finish();

    let mut g = c.benchmark_group("swiglu/portable");
    for s in shapes() {
        let n = s.config.ffn_dim;
        let (gate0, up) = (rng.vec(n, 2.0), rng.vec(n, 2.0));
        let mut gate = gate0.clone();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new(s.name, n), |b| {
            b.iter(|| {
                gate.copy_from_slice(&gate0);
                ops::swiglu(black_box(&mut gate), &up);
            })
        });
    }
    g.finish();

    // What every quantized product pays first: the activations to int8 blocks.
    let mut g = c.benchmark_group("quantize_acts/portable");
    for s in shapes() {
        for n in [s.config.dim, s.config.ffn_dim] {
            let x = rng.vec(n, 1.0);
            let mut xq = QActs::with_len(n);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(s.name, n), |b| b.iter(|| xq.quantize(black_box(&x))));
        }
    }
    g.finish();
}

// ------------------------------------------------------------------ entry point

/// Set in the child process that runs the scalar twins.
const CHILD: &str = "ULM_BENCH_SCALAR_CHILD";

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    matvec(&mut c);
    rmsnorm(&mut c);
    attention(&mut c);
    let child = std::env::var_os(CHILD).is_some();
    if !child {
        portable(&mut c);
    }
    c.final_summary();
    if !child && ops::has_avx2() && std::env::var_os("ULM_BENCH_NO_TWIN").is_none() {
        let exe = std::env::current_exe().expect("the bench binary's own path");
        let status = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("ULM_NO_SIMD", "1")
            .env(CHILD, "1")
            .status()
            .expect("run the scalar half of the suite");
        assert!(status.success(), "the scalar half of the suite failed: {status}");
    }
}
