//! Model hyper-parameters and the μLM presets.
//!
//! ```
//! use ulm_runtime::Config;
//! let c = Config::micro_30m();
//! assert_eq!(c.n_params(), 28_844_544);
//! ```

/// How RoPE pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Hugging Face / NEOX layout: dimension `i` pairs with `i + head_dim/2` ("rotate half").
    /// Used by safetensors checkpoints (Swen, MiniMind, HF Llama).
    Half,
    /// Original Llama layout: dimension `2i` pairs with `2i + 1`. GGUF files of the llama
    /// architecture store q/k permuted for this layout, so they run with it.
    Interleaved,
}

/// Shape of a Llama/Swen decoder. Plain data; see the presets.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Hidden size (model width).
    pub dim: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention: `n_heads % n_kv_heads == 0`).
    pub n_kv_heads: usize,
    /// Dimension of one head (usually `dim / n_heads`).
    pub head_dim: usize,
    /// Width of the SwiGLU hidden layer.
    pub ffn_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence a session can hold (KV cache length).
    pub max_seq_len: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RoPE dimension pairing.
    pub rope_style: RopeStyle,
    /// Whether the LM head shares the input embedding.
    pub tied_embeddings: bool,
}

/// The paper's vocabulary size (byte-level BPE, 12,288 entries).
pub const MICRO_VOCAB: usize = 12_288;

impl Config {
    /// FFN width rule of the Swen/MiniMind family: `64 * ceil((8 * dim / 3) / 64)`.
    pub fn ffn_rule(dim: usize) -> usize {
        let raw = 8 * dim / 3;
        64 * raw.div_ceil(64)
    }

    fn micro(dim: usize, n_layers: usize) -> Config {
        Config {
            dim,
            n_layers,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: dim / 8,
            ffn_dim: Self::ffn_rule(dim),
            vocab_size: MICRO_VOCAB,
            max_seq_len: 1024,
            norm_eps: 1e-5,
            rope_theta: 1e6,
            rope_style: RopeStyle::Half,
            tied_embeddings: true,
        }
    }

    /// The paper's 8.8M shape: 256 × 8 layers, 8/2 heads, FFN 704 (8,786,176 parameters).
    pub fn micro_8m() -> Config {
        Self::micro(256, 8)
    }

    /// The paper's 14.43M shape: 256 × 16 layers (14,426,368 parameters).
    pub fn micro_15m() -> Config {
        Self::micro(256, 16)
    }

    /// The paper's 28.85M shape (Swen-28M): 512 × 8 layers, FFN 1408 (28,844,544 parameters).
    pub fn micro_30m() -> Config {
        Self::micro(512, 8)
    }

    /// A preset by name: `micro_8m`, `micro_15m`, `micro_30m` (also `8m`, `15m`, `30m`).
    pub fn preset(name: &str) -> Option<Config> {
        match name.trim_start_matches("micro_").trim_start_matches("ulm-") {
            "8m" => Some(Self::micro_8m()),
            "15m" => Some(Self::micro_15m()),
            "30m" => Some(Self::micro_30m()),
            _ => None,
        }
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Parameter count, counting norms and (if untied) the LM head.
    pub fn n_params(&self) -> usize {
        let embed = self.vocab_size * self.dim;
        let attn = self.dim * self.q_dim() * 2 + self.dim * self.kv_dim() * 2;
        let mlp = 3 * self.dim * self.ffn_dim;
        let norms = 2 * self.dim;
        let head = if self.tied_embeddings { 0 } else { embed };
        embed + self.n_layers * (attn + mlp + norms) + self.dim + head
    }

    /// Checks the invariants forward() relies on; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let nz = [
            ("dim", self.dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("ffn_dim", self.ffn_dim),
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
        ];
        for (name, v) in nz {
            if v == 0 {
                return Err(format!("{name} is 0; it must be positive"));
            }
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return Err(format!(
                "n_heads ({}) is not a multiple of n_kv_heads ({})",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!("head_dim ({}) must be even for RoPE", self.head_dim));
        }
        if !(self.norm_eps > 0.0) || !(self.rope_theta > 0.0) {
            return Err("norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_paper_family_exactly() {
        assert_eq!(Config::micro_8m().n_params(), 8_786_176);
        assert_eq!(Config::micro_15m().n_params(), 14_426_368);
        assert_eq!(Config::micro_30m().n_params(), 28_844_544);
        assert_eq!(Config::micro_8m().ffn_dim, 704);
        assert_eq!(Config::micro_30m().ffn_dim, 1408);
        assert_eq!(Config::micro_30m().head_dim, 64);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut c = Config::micro_8m();
        c.n_kv_heads = 3;
        assert!(c.validate().unwrap_err().contains("n_kv_heads"));
    }
}
