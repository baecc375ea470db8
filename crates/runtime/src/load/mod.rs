//! Memory-mapped model files: GGUF (llama architecture) and the Hugging Face layout
//! (`config.json` + `model.safetensors` + `tokenizer.json`).
//!
//! Both loaders present tensors the same way: a [`TensorView`] with a [`DType`], a shape listed
//! outermost dimension first (`[rows, cols]` for a matrix, as safetensors and PyTorch do; GGUF's
//! reversed dimension order is undone here) and the raw little-endian bytes inside the mapping.

use std::ops::Range;
use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};

pub mod gguf;
pub mod hf;

/// Longest sequence the loaders' `config()` sets by default: a session allocates its KV cache
/// for `max_seq_len`, and files often declare 8k–128k contexts a small device never uses. Raise
/// `Config::max_seq_len` afterwards if you need more (GGUF: up to `Gguf::context_length`).
pub const DEFAULT_MAX_SEQ_LEN: usize = 4096;

/// Element or block type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Blocks of 32: f16 scale + 32 × i8 (34 bytes).
    Q8_0,
    /// Blocks of 32: f16 scale + 16 bytes of 4-bit values offset by 8 (18 bytes).
    Q4_0,
    /// Blocks of 32: f16 scale + f16 min + 16 bytes of 4-bit values (20 bytes).
    Q4_1,
}

impl DType {
    /// Elements per block (1 for plain floats).
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
        }
    }

    /// Bytes needed for `n` elements (`n` must be a multiple of the block length).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_len() * self.block_bytes()
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A tensor inside a mapped file.
#[derive(Clone, Debug)]
pub struct TensorView<'a> {
    /// Storage type.
    pub dtype: DType,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Raw little-endian bytes (exactly `dtype.bytes_for(product of shape)` long).
    pub data: &'a [u8],
}

/// Anything that hands out named tensors: a GGUF file or a safetensors file.
pub trait TensorSource {
    /// The tensor called `name`, or `Error::MissingTensor` naming the file.
    fn tensor(&self, name: &str) -> Result<TensorView<'_>>;
    /// Whether a tensor of that name exists.
    fn contains(&self, name: &str) -> bool;
    /// The file the tensors come from (for error messages).
    fn path(&self) -> &Path;
    /// Name of `part` of block `layer` in this source's naming scheme (Hugging Face names unless
    /// the format overrides it; GGUF does).
    fn part_name(&self, part: Part, layer: usize) -> String {
        part.hf_name(layer)
    }
}

/// The role of a weight tensor in the Llama/Swen block; each file format names it its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Token embedding `(vocab, dim)`.
    Embedding,
    /// RMSNorm weight before attention `(dim)`.
    AttnNorm,
    /// Query projection `(q_dim, dim)`.
    Wq,
    /// Key projection `(kv_dim, dim)`.
    Wk,
    /// Value projection `(kv_dim, dim)`.
    Wv,
    /// Attention output projection `(dim, q_dim)`.
    Wo,
    /// RMSNorm weight before the MLP `(dim)`.
    FfnNorm,
    /// SwiGLU gate `(ffn_dim, dim)`.
    Gate,
    /// SwiGLU up `(ffn_dim, dim)`.
    Up,
    /// SwiGLU down `(dim, ffn_dim)`.
    Down,
    /// Final RMSNorm `(dim)`.
    FinalNorm,
    /// Untied LM head `(vocab, dim)`.
    LmHead,
}

impl Part {
    /// Parts that appear once per model (the LM head only when untied).
    pub const GLOBAL: [Part; 3] = [Part::Embedding, Part::FinalNorm, Part::LmHead];
    /// Parts that appear once per transformer block.
    pub const PER_LAYER: [Part; 9] = [
        Part::AttnNorm,
        Part::Wq,
        Part::Wk,
        Part::Wv,
        Part::Wo,
        Part::FfnNorm,
        Part::Gate,
        Part::Up,
        Part::Down,
    ];

    /// Shape this part must have for `c`, outermost dimension first.
    pub fn shape(self, c: &Config) -> Vec<usize> {
        match self {
            Part::Embedding | Part::LmHead => vec![c.vocab_size, c.dim],
            Part::AttnNorm | Part::FfnNorm | Part::FinalNorm => vec![c.dim],
            Part::Wq => vec![c.q_dim(), c.dim],
            Part::Wk | Part::Wv => vec![c.kv_dim(), c.dim],
            Part::Wo => vec![c.dim, c.q_dim()],
            Part::Gate | Part::Up => vec![c.ffn_dim, c.dim],
            Part::Down => vec![c.dim, c.ffn_dim],
        }
    }

    /// Name in the Hugging Face layout (`layer` is ignored for global tensors).
    pub fn hf_name(self, layer: usize) -> String {
        let l = |s: &str| format!("model.layers.{layer}.{s}.weight");
        match self {
            Part::Embedding => "model.embed_tokens.weight".into(),
            Part::AttnNorm => l("input_layernorm"),
            Part::Wq => l("self_attn.q_proj"),
            Part::Wk => l("self_attn.k_proj"),
            Part::Wv => l("self_attn.v_proj"),
            Part::Wo => l("self_attn.o_proj"),
            Part::FfnNorm => l("post_attention_layernorm"),
            Part::Gate => l("mlp.gate_proj"),
            Part::Up => l("mlp.up_proj"),
            Part::Down => l("mlp.down_proj"),
            Part::FinalNorm => "model.norm.weight".into(),
            Part::LmHead => "lm_head.weight".into(),
        }
    }

    /// Name in a GGUF file of the llama architecture.
    pub fn gguf_name(self, layer: usize) -> String {
        let l = |s: &str| format!("blk.{layer}.{s}.weight");
        match self {
            Part::Embedding => "token_embd.weight".into(),
            Part::AttnNorm => l("attn_norm"),
            Part::Wq => l("attn_q"),
            Part::Wk => l("attn_k"),
            Part::Wv => l("attn_v"),
            Part::Wo => l("attn_output"),
            Part::FfnNorm => l("ffn_norm"),
            Part::Gate => l("ffn_gate"),
            Part::Up => l("ffn_up"),
            Part::Down => l("ffn_down"),
            Part::FinalNorm => "output_norm.weight".into(),
            Part::LmHead => "output.weight".into(),
        }
    }
}

/// Checks that every tensor `c` needs is present, of a supported type and of the right shape.
///
/// Errors name the file and the tensor: `Error::MissingTensor`, `Error::DType` or `Error::Shape`
/// (expected vs found). Both loaders call it from their `config()`.
pub fn check_shapes<S: TensorSource + ?Sized>(src: &S, c: &Config) -> Result<()> {
    let global = [Part::Embedding, Part::FinalNorm, Part::LmHead];
    let global = global.iter().filter(|&&p| p != Part::LmHead || !c.tied_embeddings).map(|&p| (p, 0));
    // Lazily: a corrupted layer count must not allocate, it fails at the first missing layer.
    let layers = (0..c.n_layers).flat_map(|layer| Part::PER_LAYER.iter().map(move |&p| (p, layer)));
    for (part, layer) in global.chain(layers) {
        let name = src.part_name(part, layer);
        let t = src.tensor(&name)?;
        let expected = part.shape(c);
        if t.shape != expected {
            return Err(Error::Shape {
                path: src.path().to_path_buf(),
                name,
                expected,
                found: t.shape,
            });
        }
    }
    Ok(())
}

/// What a file's header says about one tensor, as [`tensor_view`] needs it.
pub(crate) struct Entry<'i> {
    /// The storage type, or the file's name for a type ulm does not run.
    pub(crate) dtype: std::result::Result<DType, String>,
    /// Shape, outermost dimension first.
    pub(crate) shape: &'i [usize],
    /// Byte range of the data inside the file.
    pub(crate) range: Range<usize>,
}

/// The common body of every [`TensorSource::tensor`]: `entry` is the loader's lookup of `name`
/// (None when absent); checks that ulm runs its type (`supported` lists those for the error) and
/// slices its bytes out of `bytes`. Errors name `path` and the tensor.
pub(crate) fn tensor_view<'a>(path: &Path, bytes: &'a [u8], name: &str, entry: Option<Entry<'_>>, supported: &str) -> Result<TensorView<'a>> {
    let entry = entry.ok_or_else(|| Error::MissingTensor { path: path.to_path_buf(), name: name.to_string() })?;
    let dtype = entry.dtype.map_err(|found| Error::DType {
        path: path.to_path_buf(),
        name: name.to_string(),
        found,
        supported: supported.into(),
    })?;
    // Both loaders check ranges against the file when they parse the header; this is the backstop.
    let data = bytes.get(entry.range.clone()).ok_or_else(|| Error::Truncated {
        path: path.to_path_buf(),
        what: format!("tensor `{name}`"),
        start: entry.range.start as u64,
        end: entry.range.end as u64,
        len: bytes.len() as u64,
    })?;
    Ok(TensorView { dtype, shape: entry.shape.to_vec(), data })
}

/// Bytes of a model file: a read-only memory map, or a private copy (tests, fuzzing, embedding).
///
/// Both are page-aligned, so tensor data is as aligned as the file lays it out.
pub(crate) struct Bytes {
    map: memmap2::Mmap,
    len: usize,
}

impl Bytes {
    /// Maps `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Bytes> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let len = usize::try_from(len)
            .map_err(|_| Error::format(path, format!("{len} bytes do not fit in memory here")))?;
        if len == 0 {
            return Self::copy(&[]).map_err(io);
        }
        // SAFETY: the mapping is read-only; like every mmap-based loader we rely on the file not
        // being truncated or rewritten while the model is loaded.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Bytes { map, len })
    }

    /// A page-aligned private copy of `data`.
    pub(crate) fn copy(data: &[u8]) -> std::io::Result<Bytes> {
        let mut m = memmap2::MmapOptions::new().len(data.len().max(1)).map_anon()?;
        m[..data.len()].copy_from_slice(data);
        Ok(Bytes { map: m.make_read_only()?, len: data.len() })
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}
