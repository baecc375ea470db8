//! Weight matrices in f32 or block-quantized form, and the matrix–vector products over them.
//!
//! Quantized weights multiply activations that are themselves quantized to int8 blocks of 32
//! ([`QActs`], one f32 scale per block) — the scheme llama.cpp uses, so results match it closely
//! and the inner loop is integer multiply-adds. Formats:
//! - [`Weight::Q8Row`]: int8 with one f32 scale per row (per output channel), multiplying
//!   activations quantized with one scale per token. What `Precision::Int8` makes at load from
//!   f32/f16/bf16: a whole row's products add up in 32-bit integers and are scaled once, which
//!   makes prefill about twice as fast as per-block scales (the μLM path).
//! - [`Weight::Q8`]: int8 with one f32 scale per 32 weights, taken from GGUF Q8_0 exactly.
//! - [`Weight::Q4_0`], [`Weight::Q4_1`]: GGUF 4-bit blocks, kept as they are.

use crate::error::{Error, Result};
use crate::load::{DType, TensorView};
use crate::ops::has_avx2;

/// Elements per quantization block.
pub const BLOCK: usize = 32;

/// Max relative error of a quantized dot product against its scalar twin (both integer paths
/// are exact; only the f32 accumulation order differs).
pub const QDOT_TOL: f32 = 1e-4;

/// How to store weights at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 and f16/bf16 tensors become f32; quantized tensors stay as stored.
    #[default]
    Native,
    /// Every matrix becomes f32 (quantized tensors are dequantized) — the reference path.
    F32,
    /// f32/f16/bf16 matrices are quantized to int8 blocks; quantized tensors stay as stored.
    Int8,
}

/// A `(rows, cols)` row-major matrix.
#[derive(Clone, Debug)]
pub enum Weight {
    /// Plain f32.
    F32 {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// `(rows, cols)`.
        data: Vec<f32>,
    },
    /// int8 blocks of 32 with an f32 scale.
    Q8 {
        /// Rows.
        rows: usize,
        /// Columns (a multiple of 32).
        cols: usize,
        /// `(rows, cols)`.
        qs: Vec<i8>,
        /// `(rows, cols / 32)`.
        d: Vec<f32>,
    },
    /// int8 with one f32 scale per row (symmetric, `scale = max|w| / 127`).
    Q8Row {
        /// Rows.
        rows: usize,
        /// Columns (a multiple of 32).
        cols: usize,
        /// `(rows, cols)`.
        qs: Vec<i8>,
        /// `(rows)`.
        d: Vec<f32>,
    },
    /// GGUF Q4_0: value = (nibble − 8) × d. Per block 16 bytes: low nibbles hold elements
    /// 0..16, high nibbles 16..32.
    Q4_0 {
        /// Rows.
        rows: usize,
        /// Columns (a multiple of 32).
        cols: usize,
        /// `(rows, cols / 2)` packed nibbles.
        qs: Vec<u8>,
        /// `(rows, cols / 32)`.
        d: Vec<f32>,
    },
    /// GGUF Q4_1: value = nibble × d + m. Same nibble layout as Q4_0.
    Q4_1 {
        /// Rows.
        rows: usize,
        /// Columns (a multiple of 32).
        cols: usize,
        /// `(rows, cols / 2)` packed nibbles.
        qs: Vec<u8>,
        /// `(rows, cols / 32)`.
        d: Vec<f32>,
        /// `(rows, cols / 32)`.
        m: Vec<f32>,
    },
}

/// Activations quantized to int8 blocks: what quantized weights multiply.
#[derive(Clone, Debug, Default)]
pub struct QActs {
    /// `(n)` int8 values.
    pub qs: Vec<i8>,
    /// `(n / 32)` scales.
    pub d: Vec<f32>,
    /// `(n / 32)`: `d × Σ qs` of each block (Q4_1's offset term needs it).
    pub s: Vec<f32>,
    /// `(n)` int8 values with one scale per row of `cols` (what [`Weight::Q8Row`] multiplies).
    pub rqs: Vec<i8>,
    /// `(rows)` scales of `rqs`.
    pub rd: Vec<f32>,
}

/// Rounds to the nearest integer, ties to even, for |y| < 2²² (what `_mm256_cvtps_epi32` does);
/// plain arithmetic, so it vectorizes without a libm call.
#[inline(always)]
fn round_even(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 × 2²³
    (y + MAGIC) - MAGIC
}

impl QActs {
    /// Buffers for `n` values (allocated once, by the session).
    pub fn with_len(n: usize) -> QActs {
        let blocks = n.div_ceil(BLOCK);
        QActs { qs: vec![0; n], d: vec![0.0; blocks], s: vec![0.0; blocks], rqs: vec![0; n], rd: vec![0.0; blocks] }
    }

    /// Quantizes `x`, rows of `cols` values, in the form(s) that `weights` multiply: blocks
    /// of 32 for GGUF formats, one scale per row for [`Weight::Q8Row`], nothing for f32.
    pub fn quantize_for(&mut self, x: &[f32], cols: usize, weights: &[&Weight]) {
        if weights.iter().any(|w| w.is_quantized() && !matches!(w, Weight::Q8Row { .. })) {
            self.quantize(x);
        }
        if weights.iter().any(|w| matches!(w, Weight::Q8Row { .. })) {
            self.quantize_rows(x, cols);
        }
    }

    /// Quantizes `x` (rows of `cols` values) with one scale per row into `rqs` / `rd`.
    pub fn quantize_rows(&mut self, x: &[f32], cols: usize) {
        for (r, row) in x.chunks_exact(cols).enumerate() {
            self.rd[r] = quantize_symmetric(row, &mut self.rqs[r * cols..(r + 1) * cols]);
        }
    }

    /// Quantizes `x` (length a multiple of 32) into the first `x.len()` slots.
    pub fn quantize(&mut self, x: &[f32]) {
        for (b, chunk) in x.chunks_exact(BLOCK).enumerate() {
            let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q = &mut self.qs[b * BLOCK..(b + 1) * BLOCK];
            let mut sum = 0i32;
            for (qi, &v) in q.iter_mut().zip(chunk) {
                *qi = round_even(v * id) as i8;
                sum += *qi as i32;
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
    }

    /// The view of values `start..start + n` (block aligned).
    fn at(&self, start: usize, n: usize) -> QActsRef<'_> {
        let b = start / BLOCK;
        QActsRef { qs: &self.qs[start..start + n], d: &self.d[b..b + n / BLOCK], s: &self.s[b..b + n / BLOCK] }
    }
}

#[derive(Clone, Copy)]
struct QActsRef<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Quantizes `x` into `qs` with one symmetric scale (`max|x| / 127`, round to nearest, ties to
/// even) and returns the scale.
fn quantize_symmetric(x: &[f32], qs: &mut [i8]) -> f32 {
    let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = round_even(v * id) as i8;
    }
    d
}

/// Quantizes one row of f32 into int8 blocks (symmetric, round to nearest).
pub fn quantize_row_q8(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    for (b, chunk) in x.chunks_exact(BLOCK).enumerate() {
        d[b] = quantize_symmetric(chunk, &mut qs[b * BLOCK..(b + 1) * BLOCK]);
    }
}

impl Weight {
    /// Rows (output features).
    pub fn rows(&self) -> usize {
        match self {
            Weight::F32 { rows, .. } | Weight::Q8 { rows, .. } | Weight::Q8Row { rows, .. } | Weight::Q4_0 { rows, .. } | Weight::Q4_1 { rows, .. } => *rows,
        }
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        match self {
            Weight::F32 { cols, .. } | Weight::Q8 { cols, .. } | Weight::Q8Row { cols, .. } | Weight::Q4_0 { cols, .. } | Weight::Q4_1 { cols, .. } => *cols,
        }
    }

    /// Whether products need quantized activations.
    pub fn is_quantized(&self) -> bool {
        !matches!(self, Weight::F32 { .. })
    }

    /// Short name of the storage format.
    pub fn format(&self) -> &'static str {
        match self {
            Weight::F32 { .. } => "f32",
            Weight::Q8 { .. } => "q8",
            Weight::Q8Row { .. } => "q8_row",
            Weight::Q4_0 { .. } => "q4_0",
            Weight::Q4_1 { .. } => "q4_1",
        }
    }

    /// Bytes of weight data held in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Weight::F32 { data, .. } => data.len() * 4,
            Weight::Q8 { qs, d, .. } | Weight::Q8Row { qs, d, .. } => qs.len() + d.len() * 4,
            Weight::Q4_0 { qs, d, .. } => qs.len() + d.len() * 4,
            Weight::Q4_1 { qs, d, m, .. } => qs.len() + d.len() * 8 + m.len() * 4,
        }
    }

    /// Builds a weight from a stored tensor of shape `(rows, cols)`, converting per `prec`.
    /// `what` names the tensor in errors.
    pub fn from_view(view: &TensorView<'_>, rows: usize, cols: usize, prec: Precision, what: &str) -> Result<Weight> {
        let n = rows * cols;
        let need = view.dtype.bytes_for(n);
        if view.data.len() < need {
            return Err(Error::Request(format!("tensor `{what}`: {} bytes, expected {need}", view.data.len())));
        }
        let quantized_cols_ok = cols % BLOCK == 0;
        let w = match view.dtype {
            DType::F32 | DType::F16 | DType::BF16 => {
                let data = to_f32(view.dtype, view.data, n);
                if prec == Precision::Int8 && quantized_cols_ok {
                    Weight::F32 { rows, cols, data }.to_q8_row()
                } else {
                    Weight::F32 { rows, cols, data }
                }
            }
            DType::Q8_0 => {
                let nb = n / BLOCK;
                let mut qs = vec![0i8; n];
                let mut d = vec![0f32; nb];
                for b in 0..nb {
                    let blk = &view.data[b * 34..(b + 1) * 34];
                    d[b] = f16_at(blk, 0);
                    for (q, &byte) in qs[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(&blk[2..]) {
                        *q = byte as i8;
                    }
                }
                Weight::Q8 { rows, cols, qs, d }
            }
            DType::Q4_0 | DType::Q4_1 => {
                let nb = n / BLOCK;
                let bb = view.dtype.block_bytes();
                let mut qs = vec![0u8; n / 2];
                let mut d = vec![0f32; nb];
                let mut m = vec![0f32; nb];
                let off = if view.dtype == DType::Q4_1 { 4 } else { 2 };
                for b in 0..nb {
                    let blk = &view.data[b * bb..(b + 1) * bb];
                    d[b] = f16_at(blk, 0);
                    if view.dtype == DType::Q4_1 {
                        m[b] = f16_at(blk, 2);
                    }
                    qs[b * 16..(b + 1) * 16].copy_from_slice(&blk[off..off + 16]);
                }
                if view.dtype == DType::Q4_1 { Weight::Q4_1 { rows, cols, qs, d, m } } else { Weight::Q4_0 { rows, cols, qs, d } }
            }
        };
        Ok(if prec == Precision::F32 { w.to_f32() } else { w })
    }

    /// The same matrix as f32 (exact for every format).
    pub fn to_f32(&self) -> Weight {
        let (rows, cols) = (self.rows(), self.cols());
        let mut data = vec![0.0; rows * cols];
        for r in 0..rows {
            self.row_f32(r, &mut data[r * cols..(r + 1) * cols]);
        }
        Weight::F32 { rows, cols, data }
    }

    /// The same matrix as int8 blocks (f32 input is quantized; others are converted through f32).
    pub fn to_q8(&self) -> Weight {
        let (rows, cols) = (self.rows(), self.cols());
        if let Weight::Q8 { .. } = self {
            return self.clone();
        }
        let mut qs = vec![0i8; rows * cols];
        let mut d = vec![0.0; rows * cols / BLOCK];
        let mut row = vec![0.0; cols];
        for r in 0..rows {
            self.row_f32(r, &mut row);
            quantize_row_q8(&row, &mut qs[r * cols..(r + 1) * cols], &mut d[r * cols / BLOCK..(r + 1) * cols / BLOCK]);
        }
        Weight::Q8 { rows, cols, qs, d }
    }

    /// The same matrix as int8 with one scale per row (f32 input is quantized; others are
    /// converted through f32).
    pub fn to_q8_row(&self) -> Weight {
        let (rows, cols) = (self.rows(), self.cols());
        if let Weight::Q8Row { .. } = self {
            return self.clone();
        }
        let mut qs = vec![0i8; rows * cols];
        let mut d = vec![0.0; rows];
        let mut row = vec![0.0; cols];
        for r in 0..rows {
            self.row_f32(r, &mut row);
            d[r] = quantize_symmetric(&row, &mut qs[r * cols..(r + 1) * cols]);
        }
        Weight::Q8Row { rows, cols, qs, d }
    }

    /// Dequantizes row `r` into `out` (embedding lookups use this).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols();
        let nb = cols / BLOCK;
        match self {
            Weight::F32 { data, .. } => out.copy_from_slice(&data[r * cols..(r + 1) * cols]),
            Weight::Q8 { qs, d, .. } => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = qs[r * cols + i] as f32 * d[r * nb + i / BLOCK];
                }
            }
            Weight::Q8Row { qs, d, .. } => {
                for (o, &q) in out.iter_mut().zip(&qs[r * cols..(r + 1) * cols]) {
                    *o = q as f32 * d[r];
                }
            }
            Weight::Q4_0 { qs, d, .. } | Weight::Q4_1 { qs, d, .. } => {
                let m = if let Weight::Q4_1 { m, .. } = self { Some(m) } else { None };
                for b in 0..nb {
                    let bytes = &qs[(r * nb + b) * 16..(r * nb + b + 1) * 16];
                    let (db, mb) = (d[r * nb + b], m.map_or(-8.0 * d[r * nb + b], |m| m[r * nb + b]));
                    for j in 0..16 {
                        out[b * BLOCK + j] = (bytes[j] & 15) as f32 * db + mb;
                        out[b * BLOCK + 16 + j] = (bytes[j] >> 4) as f32 * db + mb;
                    }
                }
            }
        }
    }

    /// Dot product of row `r` with `x` (f32) or its quantized form `xq` (quantized weights).
    #[inline]
    fn row_dot(&self, r: usize, x: &[f32], xq: QActsRef<'_>) -> f32 {
        let cols = self.cols();
        let nb = cols / BLOCK;
        let fast = has_avx2();
        match self {
            Weight::F32 { data, .. } => crate::ops::dot(&data[r * cols..(r + 1) * cols], x),
            Weight::Q8 { qs, d, .. } => {
                let (w, wd) = (&qs[r * cols..(r + 1) * cols], &d[r * nb..(r + 1) * nb]);
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: AVX2 and FMA were detected at run time.
                    return unsafe { avx2::dot_q8(w, wd, xq) };
                }
                let _ = fast;
                dot_q8_ref(w, wd, xq)
            }
            Weight::Q8Row { .. } => unreachable!("Q8Row rows take matmul_rows_raw's integer path"),
            Weight::Q4_0 { qs, d, .. } => {
                let (w, wd) = (&qs[r * nb * 16..(r + 1) * nb * 16], &d[r * nb..(r + 1) * nb]);
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: AVX2 and FMA were detected at run time.
                    return unsafe { avx2::dot_q4(w, wd, None, xq) };
                }
                dot_q4_ref(w, wd, None, xq)
            }
            Weight::Q4_1 { qs, d, m, .. } => {
                let (w, wd, wm) = (&qs[r * nb * 16..(r + 1) * nb * 16], &d[r * nb..(r + 1) * nb], &m[r * nb..(r + 1) * nb]);
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: AVX2 and FMA were detected at run time.
                    return unsafe { avx2::dot_q4(w, wd, Some(wm), xq) };
                }
                dot_q4_ref(w, wd, Some(wm), xq)
            }
        }
    }

    /// Row `r` against four quantized token rows at once, when a tiled kernel exists for this
    /// format on this CPU (AVX2: Q8_0, Q4_0, Q4_1); `None` sends the caller to [`Weight::row_dot`].
    #[inline]
    fn row_dot4(&self, r: usize, xq: [QActsRef<'_>; 4]) -> Option<[f32; 4]> {
        let cols = self.cols();
        let nb = cols / BLOCK;
        match self {
            #[cfg(target_arch = "x86_64")]
            Weight::Q8 { qs, d, .. } if has_avx2() => {
                let (w, wd) = (&qs[r * cols..(r + 1) * cols], &d[r * nb..(r + 1) * nb]);
                // SAFETY: AVX2 and FMA were detected at run time.
                Some(unsafe { avx2::dot_q8_x4(w, wd, &xq) })
            }
            #[cfg(target_arch = "x86_64")]
            Weight::Q4_0 { qs, d, .. } if has_avx2() => {
                let (w, wd) = (&qs[r * nb * 16..(r + 1) * nb * 16], &d[r * nb..(r + 1) * nb]);
                // SAFETY: AVX2 and FMA were detected at run time.
                Some(unsafe { avx2::dot_q4_x4(w, wd, None, &xq) })
            }
            #[cfg(target_arch = "x86_64")]
            Weight::Q4_1 { qs, d, m, .. } if has_avx2() => {
                let (w, wd, wm) = (&qs[r * nb * 16..(r + 1) * nb * 16], &d[r * nb..(r + 1) * nb], &m[r * nb..(r + 1) * nb]);
                // SAFETY: AVX2 and FMA were detected at run time.
                Some(unsafe { avx2::dot_q4_x4(w, wd, Some(wm), &xq) })
            }
            _ => {
                let _ = (r, xq, nb);
                None
            }
        }
    }

    /// `out[t][r] = W[r] · x[t]` for `t < n_tok` and `r` in `rows`: `x` is `(n_tok, cols)` f32
    /// and `xq` its quantized form (filled by the caller when [`Weight::is_quantized`]);
    /// `out` is `(n_tok, out_stride)` and only columns `rows` are written.
    pub fn matmul_rows(&self, out: &mut [f32], out_stride: usize, x: &[f32], xq: &QActs, n_tok: usize, rows: std::ops::Range<usize>) {
        assert!(rows.end <= self.rows() && out.len() >= (n_tok.max(1) - 1) * out_stride + rows.end);
        // SAFETY: every index written is < (n_tok - 1) * out_stride + rows.end <= out.len().
        unsafe { self.matmul_rows_raw(out.as_mut_ptr(), out_stride, x, xq, n_tok, rows) }
    }

    /// [`Weight::matmul_rows`] through a raw pointer, so threads can fill disjoint row ranges
    /// of one output.
    ///
    /// # Safety
    /// `out` must be valid for writes at `t * out_stride + r` for every `t < n_tok`, `r` in
    /// `rows`, and no other thread may access those places meanwhile.
    pub(crate) unsafe fn matmul_rows_raw(&self, out: *mut f32, out_stride: usize, x: &[f32], xq: &QActs, n_tok: usize, rows: std::ops::Range<usize>) {
        let cols = self.cols();
        if let Weight::Q8Row { qs, d, .. } = self {
            // One scale per row and per token: the whole row adds up in integers.
            let x = |t: usize| &xq.rqs[t * cols..(t + 1) * cols];
            for r in rows {
                let w = &qs[r * cols..(r + 1) * cols];
                let mut t0 = 0;
                while t0 + 4 <= n_tok {
                    let sums = dot_i8_x4(w, [x(t0), x(t0 + 1), x(t0 + 2), x(t0 + 3)]);
                    for (i, sum) in sums.into_iter().enumerate() {
                        // SAFETY: the caller guarantees these places are ours to write.
                        unsafe { *out.add((t0 + i) * out_stride + r) = d[r] * xq.rd[t0 + i] * sum as f32 };
                    }
                    t0 += 4;
                }
                for t in t0..n_tok {
                    // SAFETY: as above.
                    unsafe { *out.add(t * out_stride + r) = d[r] * xq.rd[t] * dot_i8(w, x(t)) as f32 };
                }
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if n_tok == 1 && has_avx2() {
            let nb = cols / BLOCK;
            let q = xq.at(0, cols);
            match self {
                // SAFETY: AVX2 and FMA were detected; the caller guarantees out[r] for r in rows.
                Weight::Q8 { qs, d, .. } => return unsafe { avx2::rows_q8(qs, d, cols, q, rows, out) },
                // SAFETY: as above.
                Weight::Q4_0 { qs, d, .. } => return unsafe { avx2::rows_q4(qs, d, None, nb, q, rows, out) },
                // SAFETY: as above.
                Weight::Q4_1 { qs, d, m, .. } => return unsafe { avx2::rows_q4(qs, d, Some(m), nb, q, rows, out) },
                _ => {}
            }
        }
        let empty = QActsRef { qs: &[], d: &[], s: &[] };
        for r in rows {
            // Four tokens at a time share each weight block's load (the prefill path).
            let mut t0 = 0;
            while t0 + 4 <= n_tok {
                let q = |i: usize| xq.at((t0 + i) * cols, cols);
                let Some(v) = self.row_dot4(r, [q(0), q(1), q(2), q(3)]) else { break };
                for (i, v) in v.into_iter().enumerate() {
                    // SAFETY: the caller guarantees these places are ours to write.
                    unsafe { *out.add((t0 + i) * out_stride + r) = v };
                }
                t0 += 4;
            }
            for t in t0..n_tok {
                let xs = &x[t * cols..(t + 1) * cols];
                let q = if self.is_quantized() { xq.at(t * cols, cols) } else { empty };
                // SAFETY: the caller guarantees this place is ours to write.
                unsafe { *out.add(t * out_stride + r) = self.row_dot(r, xs, q) };
            }
        }
    }

    /// `out = W x` for one token (`x` f32 of length cols, `xq` its quantized form).
    pub fn matvec(&self, out: &mut [f32], x: &[f32], xq: &QActs) {
        self.matmul_rows(out, self.rows(), x, xq, 1, 0..self.rows());
    }
}

fn to_f32(dtype: DType, b: &[u8], n: usize) -> Vec<f32> {
    match dtype {
        DType::F32 => b[..4 * n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::F16 => b[..2 * n].chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::BF16 => b[..2 * n].chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => unreachable!("to_f32 is only called for float types"),
    }
}

/// `Σ a·b` over int8 vectors in 32-bit integers (lengths a multiple of 32).
#[inline]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::dot_i8(a, b) };
    }
    dot_i8_ref(a, b)
}

/// [`dot_i8`] of one row against four.
#[inline]
fn dot_i8_x4(w: &[i8], x: [&[i8]; 4]) -> [i32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::dot_i8_x4(w, &x) };
    }
    x.map(|x| dot_i8_ref(w, x))
}

/// Slow twin of [`dot_i8`].
fn dot_i8_ref(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// Slow twin: int8 weights · int8 activations.
fn dot_q8_ref(w: &[i8], wd: &[f32], x: QActsRef<'_>) -> f32 {
    let mut sum = 0.0;
    for b in 0..wd.len() {
        let mut acc = 0i32;
        for j in b * BLOCK..(b + 1) * BLOCK {
            acc += w[j] as i32 * x.qs[j] as i32;
        }
        sum += wd[b] * x.d[b] * acc as f32;
    }
    sum
}

/// Slow twin: 4-bit weights (Q4_0 when `m` is None, else Q4_1) · int8 activations.
fn dot_q4_ref(w: &[u8], wd: &[f32], m: Option<&[f32]>, x: QActsRef<'_>) -> f32 {
    let mut sum = 0.0;
    for b in 0..wd.len() {
        let mut acc = 0i32;
        for j in 0..16 {
            let byte = w[b * 16 + j];
            let (lo, hi) = ((byte & 15) as i32, (byte >> 4) as i32);
            let (lo, hi) = if m.is_some() { (lo, hi) } else { (lo - 8, hi - 8) };
            acc += lo * x.qs[b * BLOCK + j] as i32 + hi * x.qs[b * BLOCK + 16 + j] as i32;
        }
        sum += wd[b] * x.d[b] * acc as f32;
        if let Some(m) = m {
            sum += m[b] * x.s[b];
        }
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK, QActsRef};
    use crate::ops::avx2::hsum;
    use std::arch::x86_64::*;

    /// Σ a·b over 32 signed bytes, as 8 i32 lanes converted to f32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn block_i8(a: __m256i, b: __m256i) -> __m256 {
        // maddubs wants one unsigned operand: move a's sign onto b.
        let ua = _mm256_sign_epi8(a, a);
        let sb = _mm256_sign_epi8(b, a);
        let p16 = _mm256_maddubs_epi16(ua, sb);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    /// One Q8_0 row against one activation row. One accumulator, blocks in order: the same
    /// sums as [`dot_q8_x4`], so a token gives the same logits alone or in a tile or a batch.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_q8(w: &[i8], wd: &[f32], x: QActsRef<'_>) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let nb = wd.len().min(x.d.len()).min(w.len() / BLOCK).min(x.qs.len() / BLOCK);
        for b in 0..nb {
            // SAFETY: block b lies inside both slices (nb is bounded by both lengths).
            let (a, v) = unsafe {
                (
                    _mm256_loadu_si256(w.as_ptr().add(b * BLOCK) as *const __m256i),
                    _mm256_loadu_si256(x.qs.as_ptr().add(b * BLOCK) as *const __m256i),
                )
            };
            acc = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * x.d[b]), block_i8(a, v), acc);
        }
        hsum(acc)
    }

    /// Rows `rows` of a Q8_0 matrix (`cols` wide) against one activation row, written to
    /// `out[r]`, with the row loop inside the AVX2 code (see [`rows_q4`]).
    ///
    /// # Safety
    /// `out` must be valid for writes at every `r` in `rows`, and nobody else may access them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_q8(qs: &[i8], d: &[f32], cols: usize, x: QActsRef<'_>, rows: std::ops::Range<usize>, out: *mut f32) {
        let nb = cols / BLOCK;
        for r in rows {
            let v = dot_q8(&qs[r * cols..(r + 1) * cols], &d[r * nb..(r + 1) * nb], x);
            // SAFETY: the caller guarantees out[r] is ours to write.
            unsafe { *out.add(r) = v };
        }
    }

    /// Σ of the eight i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// Σ a·b of one 32-byte block as eight i32 lanes (`ua` = |a|, precomputed).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn block_i32(ua: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(b, a)), _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let nb = a.len().min(b.len()) / BLOCK;
        let mut acc = _mm256_setzero_si256();
        for i in 0..nb {
            // SAFETY: block i lies inside both slices.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(i * BLOCK) as *const __m256i),
                    _mm256_loadu_si256(b.as_ptr().add(i * BLOCK) as *const __m256i),
                )
            };
            acc = _mm256_add_epi32(acc, block_i32(_mm256_sign_epi8(va, va), va, vb));
        }
        hsum_i32(acc)
    }

    /// [`dot_i8`] of `w` against four rows: each block of `w` is loaded and made unsigned once.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_i8_x4(w: &[i8], x: &[&[i8]; 4]) -> [i32; 4] {
        let nb = x.iter().fold(w.len(), |n, x| n.min(x.len())) / BLOCK;
        let (x0, x1, x2, x3) = (x[0].as_ptr(), x[1].as_ptr(), x[2].as_ptr(), x[3].as_ptr());
        let z = _mm256_setzero_si256();
        let (mut c0, mut c1, mut c2, mut c3) = (z, z, z, z);
        for i in 0..nb {
            let o = i * BLOCK;
            // SAFETY: block i lies inside every slice (nb is bounded by all their lengths).
            unsafe {
                let a = _mm256_loadu_si256(w.as_ptr().add(o) as *const __m256i);
                let ua = _mm256_sign_epi8(a, a);
                c0 = _mm256_add_epi32(c0, block_i32(ua, a, _mm256_loadu_si256(x0.add(o) as *const __m256i)));
                c1 = _mm256_add_epi32(c1, block_i32(ua, a, _mm256_loadu_si256(x1.add(o) as *const __m256i)));
                c2 = _mm256_add_epi32(c2, block_i32(ua, a, _mm256_loadu_si256(x2.add(o) as *const __m256i)));
                c3 = _mm256_add_epi32(c3, block_i32(ua, a, _mm256_loadu_si256(x3.add(o) as *const __m256i)));
            }
        }
        [hsum_i32(c0), hsum_i32(c1), hsum_i32(c2), hsum_i32(c3)]
    }

    /// [`dot_q8`] of one weight row against four activation rows: each weight block is loaded
    /// and made unsigned once for all four.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_q8_x4(w: &[i8], wd: &[f32], x: &[QActsRef<'_>; 4]) -> [f32; 4] {
        let nb = x.iter().fold(wd.len().min(w.len() / BLOCK), |n, x| n.min(x.d.len()).min(x.qs.len() / BLOCK));
        let ones = _mm256_set1_epi16(1);
        let (mut a0, mut a1, mut a2, mut a3) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let (q0, q1, q2, q3) = (x[0].qs.as_ptr(), x[1].qs.as_ptr(), x[2].qs.as_ptr(), x[3].qs.as_ptr());
        let (d0, d1, d2, d3) = (x[0].d.as_ptr(), x[1].d.as_ptr(), x[2].d.as_ptr(), x[3].d.as_ptr());
        let (wp, wdp) = (w.as_ptr(), wd.as_ptr());
        // One token's share of a block: Σ w·x as f32 lanes, scaled into its accumulator.
        macro_rules! step {
            ($acc:ident, $q:ident, $d:ident, $a:ident, $ua:ident, $ws:ident, $b:ident) => {
                // SAFETY: block $b lies inside every slice (nb is bounded by all their lengths).
                let (v, xd) = unsafe { (_mm256_loadu_si256($q.add($b * BLOCK) as *const __m256i), *$d.add($b)) };
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16($ua, _mm256_sign_epi8(v, $a)), ones));
                $acc = _mm256_fmadd_ps(_mm256_set1_ps($ws * xd), p, $acc);
            };
        }
        for b in 0..nb {
            // SAFETY: as above.
            let (a, ws) = unsafe { (_mm256_loadu_si256(wp.add(b * BLOCK) as *const __m256i), *wdp.add(b)) };
            let ua = _mm256_sign_epi8(a, a);
            step!(a0, q0, d0, a, ua, ws, b);
            step!(a1, q1, d1, a, ua, ws, b);
            step!(a2, q2, d2, a, ua, ws, b);
            step!(a3, q3, d3, a, ua, ws, b);
        }
        [hsum(a0), hsum(a1), hsum(a2), hsum(a3)]
    }

    /// The 32 weights of Q4 block `b` (at `wp`) as signed (Q4_0: nibble − 8) or unsigned
    /// (Q4_1: nibble) bytes, in element order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_nibbles(wp: *const u8, b: usize) -> __m256i {
        // SAFETY: the caller guarantees block b lies inside the row.
        let packed = unsafe { _mm_loadu_si128(wp.add(b * 16) as *const __m128i) };
        let low = _mm_set1_epi8(15);
        let lo = _mm_and_si128(packed, low);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
        _mm256_set_m128i(hi, lo) // elements 0..16 low lane, 16..32 high lane
    }

    /// Σ over one block of nibbles·x as 8 f32 lanes (`q41`: nibbles are unsigned, else − 8).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn q4_block(nib: __m256i, v: __m256i, q41: bool) -> __m256 {
        if q41 {
            // Nibbles are 0..15: already a valid unsigned maddubs operand.
            _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(nib, v), _mm256_set1_epi16(1)))
        } else {
            block_i8(_mm256_sub_epi8(nib, _mm256_set1_epi8(8)), v)
        }
    }

    /// The end of a Q4 row product: the two block accumulators summed, plus Q4_1's offset term
    /// Σ m·s as an 8-wide dot over the block minima and activation sums. One function, so a
    /// token alone ([`dot_q4`]) and in a tile ([`dot_q4_x4`]) gets the same bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn q4_finish(acc0: __m256, acc1: __m256, m: Option<&[f32]>, s: &[f32], nb: usize) -> f32 {
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        if let Some(m) = m {
            let n = nb.min(m.len()).min(s.len());
            let (mp, sp) = (m.as_ptr(), s.as_ptr());
            let mut offs = _mm256_setzero_ps();
            let mut i = 0;
            while i + 8 <= n {
                // SAFETY: i + 8 <= n, which bounds both slices.
                offs = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(mp.add(i)), _mm256_loadu_ps(sp.add(i)), offs) };
                i += 8;
            }
            sum += hsum(offs);
            for j in i..n {
                sum += m[j] * s[j];
            }
        }
        sum
    }

    /// One Q4_0 / Q4_1 row against one activation row. Two accumulators (even and odd blocks)
    /// halve the FMA dependency chain; the offset term is [`q4_finish`]'s.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_q4(w: &[u8], wd: &[f32], m: Option<&[f32]>, x: QActsRef<'_>) -> f32 {
        let nb = wd.len().min(x.d.len()).min(w.len() / 16).min(x.qs.len() / BLOCK);
        let (wp, xp, q41) = (w.as_ptr(), x.qs.as_ptr(), m.is_some());
        // Σ over block b, scaled by both block scales.
        let block = |b: usize| {
            // SAFETY: block b < nb lies inside both slices (nb is bounded by both lengths).
            let (nib, v) = unsafe { (q4_nibbles(wp, b), _mm256_loadu_si256(xp.add(b * BLOCK) as *const __m256i)) };
            (_mm256_set1_ps(wd[b] * x.d[b]), q4_block(nib, v, q41))
        };
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut b = 0;
        while b + 2 <= nb {
            let ((s0, p0), (s1, p1)) = (block(b), block(b + 1));
            acc0 = _mm256_fmadd_ps(s0, p0, acc0);
            acc1 = _mm256_fmadd_ps(s1, p1, acc1);
            b += 2;
        }
        if b < nb {
            let (s0, p0) = block(b);
            acc0 = _mm256_fmadd_ps(s0, p0, acc0);
        }
        q4_finish(acc0, acc1, m, x.s, nb)
    }

    /// [`dot_q4`] of one weight row against four activation rows (a prefill tile or a batch):
    /// each block's nibbles are unpacked once for all four, and every token's sums are added in
    /// the same order as alone.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_q4_x4(w: &[u8], wd: &[f32], m: Option<&[f32]>, x: &[QActsRef<'_>; 4]) -> [f32; 4] {
        let nb = x.iter().fold(wd.len().min(w.len() / 16), |n, x| n.min(x.d.len()).min(x.qs.len() / BLOCK));
        let (wp, q41) = (w.as_ptr(), m.is_some());
        let z = _mm256_setzero_ps();
        let (mut e, mut o) = ([z; 4], [z; 4]); // even- and odd-block accumulators per token
        // Block b of every token into `acc`.
        macro_rules! blocks {
            ($acc:ident, $b:expr) => {{
                let b = $b;
                // SAFETY: block b < nb lies inside the row and every activation row.
                let nib = unsafe { q4_nibbles(wp, b) };
                for t in 0..4 {
                    // SAFETY: as above.
                    let v = unsafe { _mm256_loadu_si256(x[t].qs.as_ptr().add(b * BLOCK) as *const __m256i) };
                    $acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * x[t].d[b]), q4_block(nib, v, q41), $acc[t]);
                }
            }};
        }
        let mut b = 0;
        while b + 2 <= nb {
            blocks!(e, b);
            blocks!(o, b + 1);
            b += 2;
        }
        if b < nb {
            blocks!(e, b);
        }
        std::array::from_fn(|t| q4_finish(e[t], o[t], m, x[t].s, nb))
    }

    /// Rows `rows` of a Q4_0 / Q4_1 matrix (`nb` blocks per row) against one activation row,
    /// written to `out[r]`: the row loop runs inside the AVX2 code, so nothing is dispatched
    /// per row (the decode path, where one token meets every row once).
    ///
    /// # Safety
    /// `out` must be valid for writes at every `r` in `rows`, and nobody else may access them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_q4(qs: &[u8], d: &[f32], m: Option<&[f32]>, nb: usize, x: QActsRef<'_>, rows: std::ops::Range<usize>, out: *mut f32) {
        for r in rows {
            let (w, wd) = (&qs[r * nb * 16..(r + 1) * nb * 16], &d[r * nb..(r + 1) * nb]);
            let v = dot_q4(w, wd, m.map(|m| &m[r * nb..(r + 1) * nb]), x);
            // SAFETY: the caller guarantees out[r] is ours to write.
            unsafe { *out.add(r) = v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn random_q4_view(rows: usize, cols: usize, q41: bool, rng: &mut Rng) -> Vec<u8> {
        let bb = if q41 { 20 } else { 18 };
        let mut bytes = Vec::with_capacity(rows * cols / BLOCK * bb);
        for _ in 0..rows * cols / BLOCK {
            bytes.extend_from_slice(&half::f16::from_f32(rng.uniform() * 0.1).to_le_bytes());
            if q41 {
                bytes.extend_from_slice(&half::f16::from_f32(-rng.uniform() * 0.5).to_le_bytes());
            }
            for _ in 0..16 {
                bytes.push((rng.next_u64() & 0xff) as u8);
            }
        }
        bytes
    }

    /// Every quantized product, fast and slow, against the f32 product of the dequantized
    /// matrix with the dequantized activations.
    #[test]
    fn quantized_matvec_matches_twins_and_dequantized_f32() {
        let mut rng = Rng::new(11);
        let (rows, cols) = (13, 96);
        let f = rng.vec(rows * cols, 1.0);
        let fbytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        let int8 = Weight::from_view(&TensorView { dtype: DType::F32, shape: vec![rows, cols], data: &fbytes }, rows, cols, Precision::Int8, "w").unwrap();
        assert_eq!(int8.format(), "q8_row");
        let mut weights = vec![int8.to_q8()];
        for q41 in [false, true] {
            let b = random_q4_view(rows, cols, q41, &mut rng);
            let dt = if q41 { DType::Q4_1 } else { DType::Q4_0 };
            weights.push(Weight::from_view(&TensorView { dtype: dt, shape: vec![rows, cols], data: &b }, rows, cols, Precision::Native, "w").unwrap());
        }
        let x = rng.vec(cols, 1.0);
        let mut xq = QActs::with_len(cols);
        xq.quantize(&x);
        let xdq: Vec<f32> = (0..cols).map(|i| xq.qs[i] as f32 * xq.d[i / BLOCK]).collect();
        for w in &weights {
            let wf = w.to_f32();
            let mut fast = vec![0.0; rows];
            w.matvec(&mut fast, &x, &xq);
            for r in 0..rows {
                let (qs, d, m) = match w {
                    Weight::Q8 { d, .. } => (None, d, None),
                    Weight::Q4_0 { qs, d, .. } => (Some(qs), d, None),
                    Weight::Q4_1 { qs, d, m, .. } => (Some(qs), d, Some(m)),
                    _ => unreachable!(),
                };
                let nb = cols / BLOCK;
                let xr = xq.at(0, cols);
                let slow = match (w, qs) {
                    (Weight::Q8 { qs, .. }, _) => dot_q8_ref(&qs[r * cols..(r + 1) * cols], &d[r * nb..(r + 1) * nb], xr),
                    (_, Some(qs)) => dot_q4_ref(&qs[r * nb * 16..(r + 1) * nb * 16], &d[r * nb..(r + 1) * nb], m.map(|m| &m[r * nb..(r + 1) * nb]), xr),
                    _ => unreachable!(),
                };
                let Weight::F32 { data, .. } = &wf else { unreachable!() };
                let exact = crate::ops::dot_ref(&data[r * cols..(r + 1) * cols], &xdq);
                let tol = QDOT_TOL * (1.0 + exact.abs());
                assert!((fast[r] - slow).abs() <= tol, "{} row {r}: fast {} slow {slow}", w.format(), fast[r]);
                assert!((slow - exact).abs() <= tol * 10.0, "{} row {r}: slow {slow} exact {exact}", w.format());
            }
        }
    }

    /// Blockwise formats in tiles: a 5-token product (one 4-token tile + one alone) gives every
    /// token the same bits as its own matvec, so prefill, decode and batches agree exactly.
    #[test]
    fn blockwise_tiles_equal_single_tokens_bit_for_bit() {
        let mut rng = Rng::new(13);
        let (rows, cols, n) = (7, 160, 5);
        let mut weights = Vec::new();
        for q41 in [false, true] {
            let b = random_q4_view(rows, cols, q41, &mut rng);
            let dt = if q41 { DType::Q4_1 } else { DType::Q4_0 };
            weights.push(Weight::from_view(&TensorView { dtype: dt, shape: vec![rows, cols], data: &b }, rows, cols, Precision::Native, "w").unwrap());
        }
        weights.push(weights[0].to_q8());
        let x = rng.vec(n * cols, 1.0);
        let mut xq = QActs::with_len(n * cols);
        xq.quantize(&x); // per 32-block: each token's blocks are its own
        for w in &weights {
            let mut tiled = vec![0.0; n * rows];
            w.matmul_rows(&mut tiled, rows, &x, &xq, n, 0..rows);
            for t in 0..n {
                let mut one = QActs::with_len(cols);
                one.quantize(&x[t * cols..(t + 1) * cols]);
                let mut alone = vec![0.0; rows];
                w.matvec(&mut alone, &x[t * cols..(t + 1) * cols], &one);
                let got: Vec<u32> = tiled[t * rows..(t + 1) * rows].iter().map(|v| v.to_bits()).collect();
                let want: Vec<u32> = alone.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{} token {t}", w.format());
            }
        }
    }

    /// The row-scaled int8 path: fast and slow integer dots agree exactly, the tiled
    /// multi-token product equals token-by-token products, and both track f32.
    #[test]
    fn row_int8_matmul_matches_twins_tiles_and_f32() {
        let mut rng = Rng::new(12);
        let (rows, cols, n_tok) = (9, 160, 7); // 7 tokens: one tile of four and three singles
        let wf = Weight::F32 { rows, cols, data: rng.vec(rows * cols, 0.5) };
        let w = wf.to_q8_row();
        let x = rng.vec(n_tok * cols, 1.0);
        let mut xq = QActs::with_len(n_tok * cols);
        xq.quantize_for(&x, cols, &[&w]);
        let Weight::Q8Row { qs, d, .. } = &w else { unreachable!() };
        for r in 0..rows {
            let wr = &qs[r * cols..(r + 1) * cols];
            let xs: Vec<&[i8]> = (0..4).map(|t| &xq.rqs[t * cols..(t + 1) * cols]).collect();
            let four = dot_i8_x4(wr, [xs[0], xs[1], xs[2], xs[3]]);
            for t in 0..4 {
                assert_eq!(dot_i8(wr, xs[t]), dot_i8_ref(wr, xs[t]));
                assert_eq!(four[t], dot_i8_ref(wr, xs[t]));
            }
        }
        let mut tiled = vec![0.0; n_tok * rows];
        w.matmul_rows(&mut tiled, rows, &x, &xq, n_tok, 0..rows);
        let Weight::F32 { data, .. } = &wf else { unreachable!() };
        for t in 0..n_tok {
            let mut one = QActs::with_len(cols);
            one.quantize_for(&x[t * cols..(t + 1) * cols], cols, &[&w]);
            let mut single = vec![0.0; rows];
            w.matvec(&mut single, &x[t * cols..(t + 1) * cols], &one);
            for r in 0..rows {
                assert_eq!(tiled[t * rows + r], single[r], "token {t} row {r}");
                let slow = d[r] * one.rd[0] * dot_i8_ref(&qs[r * cols..(r + 1) * cols], &one.rqs[..cols]) as f32;
                assert_eq!(single[r], slow);
                let exact = crate::ops::dot_ref(&data[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols]);
                // Each rounding moves a value by at most half a step (scale d): the hard bound.
                let (wr, xr) = (&data[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols]);
                let l1 = |v: &[f32]| v.iter().map(|a| a.abs()).sum::<f32>();
                let bound = d[r] / 2.0 * l1(xr) + one.rd[0] / 2.0 * l1(wr) + cols as f32 * d[r] * one.rd[0] / 4.0;
                assert!((single[r] - exact).abs() <= bound * 1.001 + 1e-5, "token {t} row {r}: {} vs {exact} (bound {bound})", single[r]);
            }
        }
    }

    #[test]
    fn round_even_matches_ties_to_even() {
        for (y, want) in [(0.5f32, 0.0f32), (1.5, 2.0), (2.5, 2.0), (-0.5, 0.0), (-1.5, -2.0), (126.7, 127.0), (-3.49, -3.0)] {
            assert_eq!(round_even(y), want, "{y}");
        }
    }

    #[test]
    fn int8_quantization_error_is_bounded() {
        let mut rng = Rng::new(5);
        let x = rng.vec(64, 2.0);
        let mut qs = vec![0i8; 64];
        let mut d = vec![0.0; 2];
        quantize_row_q8(&x, &mut qs, &mut d);
        for (i, v) in x.iter().enumerate() {
            assert!((qs[i] as f32 * d[i / 32] - v).abs() <= d[i / 32] * 0.5 + 1e-7);
        }
    }
}
