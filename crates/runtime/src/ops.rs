//! Numeric kernels on f32 slices: RMSNorm, RoPE, softmax, SwiGLU and f32 dot products.
//!
//! Every fast kernel has a slow twin (`*_ref`) written for clarity; tests compare them with the
//! tolerances below. The fast paths use AVX2+FMA when the CPU has them (checked once at run
//! time); every other target (ARM devices, wasm) runs the portable code.

use crate::config::RopeStyle;

/// Max absolute difference allowed between a fast f32 kernel and its twin, per unit of the
/// result's magnitude (summation order differs).
pub const F32_TOL: f32 = 1e-5;

/// Whether the AVX2+FMA kernels can run here (cached after the first call).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::env::var_os("ULM_NO_SIMD").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out = x / rms(x) * w`, computed in f32.
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ss = dot(x, x) / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * inv * wi;
    }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `gate = silu(gate) * up`, in place.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// RoPE tables: `cos[pos][i]`, `sin[pos][i]` for `i < head_dim / 2`.
#[derive(Clone, Debug)]
pub struct Rope {
    half: usize,
    cos: Vec<f32>, // (max_seq, head_dim / 2)
    sin: Vec<f32>, // (max_seq, head_dim / 2)
    style: RopeStyle,
}

impl Rope {
    /// Tables for positions `0..max_seq` (frequencies in f64, then rounded, so long positions
    /// stay accurate).
    pub fn new(head_dim: usize, max_seq: usize, theta: f32, style: RopeStyle) -> Rope {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_seq * half);
        let mut sin = Vec::with_capacity(max_seq * half);
        for p in 0..max_seq {
            for i in 0..half {
                let freq = 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64);
                let a = p as f64 * freq;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Rope { half, cos, sin, style }
    }

    /// Rotates every head of `x` (`n_heads × head_dim`) for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let c = &self.cos[pos * self.half..(pos + 1) * self.half];
        let s = &self.sin[pos * self.half..(pos + 1) * self.half];
        for head in x.chunks_exact_mut(2 * self.half) {
            match self.style {
                RopeStyle::Half => {
                    let (a, b) = head.split_at_mut(self.half);
                    for i in 0..self.half {
                        let (x0, x1) = (a[i], b[i]);
                        a[i] = x0 * c[i] - x1 * s[i];
                        b[i] = x0 * s[i] + x1 * c[i];
                    }
                }
                RopeStyle::Interleaved => {
                    for i in 0..self.half {
                        let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = x0 * c[i] - x1 * s[i];
                        head[2 * i + 1] = x0 * s[i] + x1 * c[i];
                    }
                }
            }
        }
    }
}

/// Dot product of two f32 slices of equal length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::dot(a, b) };
    }
    dot_ref(a, b)
}

/// Slow twin of [`dot`].
pub fn dot_ref(a: &[f32], b: &[f32]) -> f32 {
    // Four partial sums: the same association depth as a vector loop, good enough as reference.
    let mut s = [0.0f32; 4];
    let n4 = a.len() / 4 * 4;
    for i in (0..n4).step_by(4) {
        for k in 0..4 {
            s[k] += a[i + k] * b[i + k];
        }
    }
    let mut t = (s[0] + s[1]) + (s[2] + s[3]);
    for i in n4..a.len() {
        t += a[i] * b[i];
    }
    t
}

/// `y += a * x` (used for attention's weighted sum of values).
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { avx2::axpy(y, a, x) };
    }
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let n32 = n / 32 * 32;
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at offsets < n32 <= n.
        unsafe {
            while i < n32 {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o = i + 8 * k;
                    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *acc);
                }
                i += 32;
            }
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = hsum(v);
        for j in n32..n {
            s += a[j] * b[j];
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let n8 = n / 8 * 8;
        let va = _mm256_set1_ps(a);
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        // SAFETY: offsets < n8 <= n for both slices.
        unsafe {
            for i in (0..n8).step_by(8) {
                let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), r);
            }
        }
        for j in n8..n {
            y[j] += a * x[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn fast_dot_matches_its_twin() {
        let mut rng = Rng::new(7);
        for n in [1, 7, 8, 31, 32, 33, 64, 100, 576, 1537] {
            let a = rng.vec(n, 1.0);
            let b = rng.vec(n, 1.0);
            let (f, r) = (dot(&a, &b), dot_ref(&a, &b));
            let scale: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>().max(1.0);
            assert!((f - r).abs() <= F32_TOL * scale, "n={n}: {f} vs {r}");
        }
    }

    #[test]
    fn fast_axpy_matches_scalar() {
        let mut rng = Rng::new(3);
        let x = rng.vec(45, 1.0);
        let mut y = rng.vec(45, 1.0);
        let mut z = y.clone();
        axpy(&mut y, 0.37, &x);
        for (zi, xi) in z.iter_mut().zip(&x) {
            *zi += 0.37 * xi;
        }
        for (a, b) in y.iter().zip(&z) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_styles_agree_up_to_the_permutation() {
        // Interleaved on a permuted vector equals Half on the original, permuted back.
        let (hd, pos) = (8, 5);
        let mut rng = Rng::new(1);
        let x = rng.vec(hd, 1.0);
        let mut half = x.clone();
        Rope::new(hd, 16, 10000.0, RopeStyle::Half).apply(&mut half, pos);
        let mut inter: Vec<f32> = (0..hd).map(|j| if j % 2 == 0 { x[j / 2] } else { x[hd / 2 + j / 2] }).collect();
        Rope::new(hd, 16, 10000.0, RopeStyle::Interleaved).apply(&mut inter, pos);
        for i in 0..hd / 2 {
            assert!((half[i] - inter[2 * i]).abs() < 1e-6);
            assert!((half[hd / 2 + i] - inter[2 * i + 1]).abs() < 1e-6);
        }
    }

    #[test]
    fn softmax_sums_to_one_and_norm_scales() {
        let mut v = vec![1.0, 2.0, 3.0, -1e9];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(v[3], 0.0);
        let mut out = [0.0; 2];
        rmsnorm(&mut out, &[3.0, 4.0], &[1.0, 2.0], 0.0);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
    }
}
