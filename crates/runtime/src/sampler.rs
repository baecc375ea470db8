//! Seeded sampling: greedy, temperature, top-k, top-p and repetition penalty (and the
//! [`CopyBoost`] of an opener).
//!
//! ```
//! use ulm_runtime::{Sampler, Sampling};
//! let mut s = Sampler::new(Sampling::greedy(), 4);
//! assert_eq!(s.sample(&[0.1, 2.0, -1.0, 0.5], &[]), 1);
//! ```

use crate::copy::CopyBoost;
use crate::utf8::Utf8Guard;

/// Sampling settings. Temperature 0 is argmax.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; `<= 0` picks the most likely token.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1.0: off).
    pub top_p: f32,
    /// Divide positive logits (multiply negative ones) of recent tokens by this (1.0: off).
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub penalty_window: usize,
    /// Seed of the random stream: the same seed gives the same output.
    pub seed: u64,
}

impl Default for Sampling {
    /// The paper demo's opener settings: temperature 0.5, top-p 0.9.
    fn default() -> Self {
        Sampling { temperature: 0.5, top_k: 0, top_p: 0.9, repetition_penalty: 1.0, penalty_window: 64, seed: 0 }
    }
}

impl Sampling {
    /// Argmax decoding.
    pub fn greedy() -> Sampling {
        Sampling { temperature: 0.0, top_p: 1.0, ..Sampling::default() }
    }
}

/// xoshiro256** seeded through SplitMix64: small, fast, the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E3779B97F4A7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D049BB133111EB);
            x ^ (x >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Normal with mean 0 and standard deviation `std` (Box–Muller).
    pub fn normal(&mut self, std: f32) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std
    }

    /// `n` normal values.
    pub fn vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal(std)).collect()
    }
}

/// Picks the next token. Holds its scratch, sized once for the vocabulary.
#[derive(Clone, Debug)]
pub struct Sampler {
    settings: Sampling,
    rng: Rng,
    probs: Vec<f32>,    // (vocab)
    order: Vec<u32>,    // (vocab) candidate ids
}

impl Sampler {
    /// A sampler for a vocabulary of `vocab` tokens.
    pub fn new(settings: Sampling, vocab: usize) -> Sampler {
        Sampler { rng: Rng::new(settings.seed), settings, probs: vec![0.0; vocab], order: Vec::with_capacity(vocab) }
    }

    /// The settings in use.
    pub fn settings(&self) -> &Sampling {
        &self.settings
    }

    /// Chooses a token from `logits`; `recent` are the tokens the repetition penalty sees.
    pub fn sample(&mut self, logits: &[f32], recent: &[u32]) -> u32 {
        self.sample_boosted(logits, recent, None, &[], None)
    }

    /// [`Sampler::sample`] with `copy`'s boost applied first for the next token after `reply`,
    /// and only among the tokens `utf8` allows (the caller advances it with the token chosen).
    pub fn sample_boosted(&mut self, logits: &[f32], recent: &[u32], copy: Option<&CopyBoost>, reply: &[u32], utf8: Option<&mut Utf8Guard>) -> u32 {
        let st = &self.settings;
        let probs = &mut self.probs[..logits.len()];
        probs.copy_from_slice(logits);
        if let Some(c) = copy {
            c.apply(reply, probs);
        }
        if let Some(g) = utf8 {
            g.mask(probs);
        }
        if st.repetition_penalty != 1.0 {
            let from = recent.len().saturating_sub(st.penalty_window);
            for &t in &recent[from..] {
                if let Some(l) = probs.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / st.repetition_penalty } else { *l * st.repetition_penalty };
                }
            }
        }
        if st.temperature <= 0.0 {
            return argmax(probs);
        }
        for p in probs.iter_mut() {
            *p /= st.temperature;
        }
        crate::ops::softmax(probs);
        self.order.clear();
        self.order.extend(0..probs.len() as u32);
        let probs = &self.probs[..logits.len()];
        let by_prob = |a: &u32, b: &u32| probs[*b as usize].total_cmp(&probs[*a as usize]).then(a.cmp(b));
        let mut n = self.order.len();
        if st.top_k > 0 && st.top_k < n {
            self.order.select_nth_unstable_by(st.top_k - 1, by_prob);
            n = st.top_k;
        }
        if st.top_p < 1.0 {
            // Only the head of the distribution can matter: drop tokens below (1 - p) / n first.
            let floor = (1.0 - st.top_p) / n as f32;
            let mut kept = 0;
            for i in 0..n {
                if probs[self.order[i] as usize] >= floor {
                    self.order.swap(kept, i);
                    kept += 1;
                }
            }
            n = kept.max(1);
        }
        let cand = &mut self.order[..n];
        cand.sort_unstable_by(by_prob);
        if st.top_p < 1.0 {
            let mut cum = 0.0;
            let mut cut = cand.len();
            for (i, &t) in cand.iter().enumerate() {
                cum += probs[t as usize];
                if cum >= st.top_p {
                    cut = i + 1;
                    break;
                }
            }
            n = cut;
        }
        let cand = &self.order[..n];
        let total: f32 = cand.iter().map(|&t| probs[t as usize]).sum();
        let mut r = self.rng.uniform() * total;
        for &t in cand {
            r -= probs[t as usize];
            if r <= 0.0 {
                return t;
            }
        }
        cand[n - 1]
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(Sampling { temperature: 1.0, seed, ..Sampling::default() }, 50);
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        let mut k1 = Sampler::new(Sampling { temperature: 1.0, top_k: 1, ..Sampling::default() }, 50);
        assert_eq!(k1.sample(&logits, &[]), argmax(&logits));
    }

    #[test]
    fn top_p_keeps_only_the_head() {
        // p(0) = 0.9 roughly, the others share the rest: top-p 0.5 must always pick token 0.
        let mut logits = vec![0.0f32; 10];
        logits[0] = 5.0;
        let mut s = Sampler::new(Sampling { temperature: 1.0, top_p: 0.5, seed: 9, ..Sampling::default() }, 10);
        assert!((0..200).all(|_| s.sample(&logits, &[]) == 0));
    }

    #[test]
    fn repetition_penalty_moves_greedy_choice() {
        let logits = [2.0f32, 1.9, 0.0];
        let mut s = Sampler::new(Sampling { repetition_penalty: 1.5, ..Sampling::greedy() }, 3);
        assert_eq!(s.sample(&logits, &[]), 0);
        assert_eq!(s.sample(&logits, &[0]), 1);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let mut s = Sampler::new(Sampling { temperature: 1.0, top_p: 1.0, seed: 1, ..Sampling::default() }, 2);
        let ones = (0..4000).filter(|_| s.sample(&logits, &[]) == 1).count();
        assert!((2850..3150).contains(&ones), "{ones}");
    }
}
