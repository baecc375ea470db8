//! The Hugging Face layout: `config.json` + `model.safetensors` (+ `tokenizer.json`,
//! `tokenizer_config.json`), memory-mapped. A checkpoint split into shards
//! (`model.safetensors.index.json` + `model-00001-of-0000N.safetensors` …) loads the same way.
//!
//! ```no_run
//! use ulm_runtime::load::{hf::HfModel, TensorSource};
//! let m = HfModel::open("models/ulm-30m")?; // the directory, its config.json or its .safetensors
//! let config = m.config()?; // checks every tensor's type and shape
//! let wq = m.tensor("model.layers.0.self_attn.q_proj.weight")?;
//! assert_eq!(wq.shape, [config.q_dim(), config.dim]);
//! # Ok::<(), ulm_runtime::Error>(())
//! ```
//!
//! `config.json` may use the LlamaConfig names (`hidden_size`, `num_hidden_layers`, …) or the
//! Swen/MiniMind names (`dim`, `n_layers`, …). A safetensors file is an 8-byte little-endian
//! header length, a JSON header `{name: {dtype, shape, data_offsets: [start, end]}}` and the data;
//! offsets are relative to the end of the header and checked against the file before use.
//! The shard index is `{"metadata": {…}, "weight_map": {tensor name: shard file name}}`; every
//! shard sits beside the index and every tensor it lists must be in the shard it names.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{check_shapes, tensor_view, Bytes, Entry, DEFAULT_MAX_SEQ_LEN, DType, Part, TensorSource, TensorView};
use crate::config::{Config, RopeStyle};
use crate::error::{Error, Result};

/// Largest safetensors header accepted (the format's own limit).
const MAX_HEADER: u64 = 100 << 20;
/// Types ulm runs, for error messages.
const SUPPORTED: &str = "F32, F16, BF16";

/// `config.json` as written by transformers (LlamaConfig) or by Swen/MiniMind; every field is
/// optional here and [`HfConfig::to_config`] decides what is required.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HfConfig {
    /// `model_type` (`llama`, `minimind`, `mistral` are accepted).
    pub model_type: Option<String>,
    /// Hidden size (LlamaConfig).
    pub hidden_size: Option<usize>,
    /// Hidden size (MiniMind).
    pub dim: Option<usize>,
    /// FFN width (LlamaConfig).
    pub intermediate_size: Option<usize>,
    /// FFN width (MiniMind).
    pub hidden_dim: Option<usize>,
    /// FFN rounding (MiniMind), used when the FFN width is absent.
    pub multiple_of: Option<usize>,
    /// Layers (LlamaConfig).
    pub num_hidden_layers: Option<usize>,
    /// Layers (MiniMind).
    pub n_layers: Option<usize>,
    /// Query heads (LlamaConfig).
    pub num_attention_heads: Option<usize>,
    /// Query heads (MiniMind).
    pub n_heads: Option<usize>,
    /// Key/value heads (LlamaConfig).
    pub num_key_value_heads: Option<usize>,
    /// Key/value heads (MiniMind).
    pub n_kv_heads: Option<usize>,
    /// Head dimension, when not `dim / heads`.
    pub head_dim: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: Option<usize>,
    /// RMSNorm epsilon (LlamaConfig).
    pub rms_norm_eps: Option<f64>,
    /// RMSNorm epsilon (MiniMind).
    pub norm_eps: Option<f64>,
    /// RoPE base.
    pub rope_theta: Option<f64>,
    /// RoPE scaling (only `null` is supported).
    pub rope_scaling: Option<serde_json::Value>,
    /// Context length (LlamaConfig).
    pub max_position_embeddings: Option<usize>,
    /// Context length (MiniMind).
    pub max_seq_len: Option<usize>,
    /// Whether the LM head is the embedding.
    pub tie_word_embeddings: Option<bool>,
    /// Activation (only `silu` is supported).
    pub hidden_act: Option<String>,
    /// Attention biases (only `false` is supported).
    pub attention_bias: Option<bool>,
    /// MLP biases (only `false` is supported).
    pub mlp_bias: Option<bool>,
}

impl HfConfig {
    /// Converts to a plain [`Config`]. `lm_head_present` decides tying when
    /// `tie_word_embeddings` is absent; `embedding_rows` fills a missing `vocab_size`.
    /// Defaults follow the naming family: LlamaConfig names get LlamaConfig's defaults (eps 1e-6,
    /// theta 1e4), MiniMind names get Swen's (eps 1e-5, theta 1e6).
    pub fn to_config(&self, lm_head_present: bool, embedding_rows: Option<usize>) -> Result<Config, String> {
        if let Some(t) = &self.model_type {
            if !matches!(t.as_str(), "llama" | "minimind" | "mistral" | "swen") {
                return Err(format!(
                    "model_type `{t}` is not supported; ulm runs Llama-architecture models (llama, minimind, mistral)"
                ));
            }
        }
        if let Some(a) = &self.hidden_act {
            if a != "silu" {
                return Err(format!("hidden_act `{a}` is not supported; ulm runs SwiGLU (`silu`)"));
            }
        }
        if self.attention_bias == Some(true) || self.mlp_bias == Some(true) {
            return Err("attention_bias / mlp_bias are true; ulm runs bias-free Llama blocks".into());
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("rope_scaling is set; ulm runs plain RoPE (set it to null)".into());
        }
        let minimind = self.hidden_size.is_none() && self.dim.is_some();
        let need = |a: Option<usize>, b: Option<usize>, names: &str| a.or(b).ok_or_else(|| format!("{names} is missing"));
        let dim = need(self.hidden_size, self.dim, "hidden_size (or dim)")?;
        let n_layers = need(self.num_hidden_layers, self.n_layers, "num_hidden_layers (or n_layers)")?;
        let n_heads = need(self.num_attention_heads, self.n_heads, "num_attention_heads (or n_heads)")?;
        let n_kv_heads = self.num_key_value_heads.or(self.n_kv_heads).unwrap_or(n_heads);
        let head_dim = self.head_dim.unwrap_or(dim.checked_div(n_heads).unwrap_or(0));
        let ffn_dim = match (self.intermediate_size.or(self.hidden_dim), self.multiple_of) {
            (Some(f), _) => f,
            // MiniMind: hidden = multiple_of * ceil((2 * 4 * dim / 3) / multiple_of).
            (None, Some(m)) if m > 0 && m != 64 => m * (8 * dim / 3).div_ceil(m),
            (None, _) => Config::ffn_rule(dim),
        };
        let vocab_size = self
            .vocab_size
            .or(embedding_rows)
            .ok_or("vocab_size is missing and there is no embedding to read it from")?;
        let context = self.max_position_embeddings.or(self.max_seq_len).unwrap_or(2048);
        let (eps, theta) = if minimind { (1e-5, 1e6) } else { (1e-6, 1e4) };
        let config = Config {
            dim,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab_size,
            max_seq_len: context.min(DEFAULT_MAX_SEQ_LEN),
            norm_eps: self.rms_norm_eps.or(self.norm_eps).unwrap_or(eps) as f32,
            rope_theta: self.rope_theta.unwrap_or(theta) as f32,
            rope_style: RopeStyle::Half,
            tied_embeddings: self.tie_word_embeddings.unwrap_or(!lm_head_present),
        };
        config.validate()?;
        Ok(config)
    }
}

/// One tensor of the safetensors header.
#[derive(Clone, Debug)]
pub struct SafeTensorInfo {
    /// Type name as written in the file (`F32`, `BF16`, `I8`, …).
    pub dtype_name: String,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Byte range inside the file.
    pub range: Range<usize>,
    /// Index of the file holding it in [`HfModel::weight_files`] (0 unless sharded).
    pub shard: usize,
}

impl SafeTensorInfo {
    /// The storage type, if ulm runs it.
    pub fn dtype(&self) -> Option<DType> {
        match self.dtype_name.as_str() {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// Bits per element of every safetensors dtype, to check sizes of types ulm does not run.
fn dtype_bits(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        "F4" | "F6_E2M3" | "F6_E3M2" => return None,
        _ => return None,
    })
}

/// Parses `config.json` (all fields optional).
fn parse_config(path: &Path, text: &[u8]) -> Result<HfConfig> {
    serde_json::from_slice(text).map_err(|e| Error::Config { path: path.to_path_buf(), msg: format!("not a valid config.json: {e}") })
}

/// Parses a safetensors image: tensor infos by name, with ranges checked against `buf`.
fn parse_safetensors(path: &Path, buf: &[u8]) -> Result<BTreeMap<String, SafeTensorInfo>> {
    let len = buf.len() as u64;
    let Some(head) = buf.get(..8) else {
        return Err(Error::Truncated { path: path.into(), what: "the safetensors header length".into(), start: 0, end: 8, len });
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(head);
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Err(Error::format(path, format!("safetensors header claims {n} bytes (limit {MAX_HEADER}); the file is corrupted or not safetensors")));
    }
    let header_end = 8 + n;
    let Some(header) = buf.get(8..header_end as usize) else {
        return Err(Error::Truncated { path: path.into(), what: "the safetensors header".into(), start: 8, end: header_end, len });
    };
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| Error::format(path, format!("safetensors header is not a JSON object: {e}")))?;
    #[derive(Deserialize)]
    struct Entry {
        dtype: String,
        shape: Vec<u64>,
        data_offsets: (u64, u64),
    }
    let mut entries = Vec::with_capacity(header.len());
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        match serde_json::from_value::<Entry>(v) {
            Ok(e) => entries.push((name, e)),
            Err(e) => return Err(Error::format(path, format!("tensor `{name}`: bad header entry: {e}"))),
        }
    }
    // In file order, so that a cut file names the tensor the cut falls in.
    entries.sort_by_key(|(_, e)| e.data_offsets);
    let mut tensors = BTreeMap::new();
    for (name, e) in entries {
        let bad = |msg: String| Error::format(path, format!("tensor `{name}`: {msg}"));
        let (s, t) = e.data_offsets;
        if t < s {
            return Err(bad(format!("data_offsets [{s}, {t}] run backwards")));
        }
        let n_elems = e.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| bad(format!("shape {:?} overflows", e.shape)))?;
        if let Some(bits) = dtype_bits(&e.dtype) {
            let size = n_elems.checked_mul(bits).map(|b| b / 8).ok_or_else(|| bad(format!("shape {:?} overflows", e.shape)))?;
            if t - s != size {
                return Err(bad(format!("{} × {:?} needs {size} bytes but data_offsets [{s}, {t}] hold {}", e.dtype, e.shape, t - s)));
            }
        }
        let (start, end) = match (header_end.checked_add(s), header_end.checked_add(t)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(bad(format!("data_offsets [{s}, {t}] overflow"))),
        };
        if end > len {
            return Err(Error::Truncated { path: path.into(), what: format!("tensor `{name}`"), start, end, len });
        }
        let shape = e.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<_>, _>>().map_err(|_| bad("shape too large".into()))?;
        tensors.insert(name, SafeTensorInfo { dtype_name: e.dtype, shape, range: start as usize..end as usize, shard: 0 });
    }
    Ok(tensors)
}

/// File name of the shard index of a sharded checkpoint.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The shard index: which file holds each tensor.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// A Hugging Face model directory: parsed `config.json` and a mapped `model.safetensors` (or
/// its shards).
pub struct HfModel {
    dir: PathBuf,
    config_path: PathBuf,
    /// `model.safetensors`, or the shard index when sharded (named in errors about the whole).
    weights_path: PathBuf,
    hf_config: HfConfig,
    /// The weight files with their bytes: one, or the shards in index order.
    files: Vec<(PathBuf, Bytes)>,
    tensors: BTreeMap<String, SafeTensorInfo>,
}

impl std::fmt::Debug for HfModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfModel")
            .field("config", &self.config_path)
            .field("weights", &self.weights_path)
            .field("files", &self.files.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl HfModel {
    /// Opens a model directory, or the `config.json`, `.safetensors` file or shard index inside
    /// one. A directory without `model.safetensors` but with a shard index loads the shards.
    pub fn open(path: impl AsRef<Path>) -> Result<HfModel> {
        let path = path.as_ref();
        let (dir, weights_path) = if path.is_dir() {
            let single = path.join("model.safetensors");
            let index = path.join(SHARD_INDEX);
            (path.to_path_buf(), if !single.exists() && index.exists() { index } else { single })
        } else {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let is = |ext: &str| path.extension().is_some_and(|e| e == ext);
            let weights = if is("safetensors") || path.file_name().is_some_and(|n| n == SHARD_INDEX) {
                path.to_path_buf()
            } else {
                let index = dir.join(SHARD_INDEX);
                if !dir.join("model.safetensors").exists() && index.exists() { index } else { dir.join("model.safetensors") }
            };
            (dir, weights)
        };
        let config_path = dir.join("config.json");
        let config_text = std::fs::read(&config_path).map_err(|source| Error::Io { path: config_path.clone(), source })?;
        let hf_config = parse_config(&config_path, &config_text)?;
        if weights_path.file_name().is_some_and(|n| n == SHARD_INDEX) {
            return Self::open_shards(dir, config_path, hf_config, weights_path);
        }
        let bytes = Bytes::map(&weights_path)?;
        let tensors = parse_safetensors(&weights_path, &bytes)?;
        Ok(HfModel { dir, config_path, hf_config, files: vec![(weights_path.clone(), bytes)], weights_path, tensors })
    }

    /// Maps every shard the index names and checks that each tensor is where the index says.
    fn open_shards(dir: PathBuf, config_path: PathBuf, hf_config: HfConfig, index_path: PathBuf) -> Result<HfModel> {
        let text = std::fs::read(&index_path).map_err(|source| Error::Io { path: index_path.clone(), source })?;
        let index: ShardIndex = serde_json::from_slice(&text)
            .map_err(|e| Error::format(&index_path, format!("not a shard index ({{\"weight_map\": {{tensor: file}}}}): {e}")))?;
        let mut names: Vec<&String> = index.weight_map.values().collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(Error::format(&index_path, "the shard index lists no tensors"));
        }
        let mut files = Vec::with_capacity(names.len());
        let mut per_file = Vec::with_capacity(names.len());
        for name in &names {
            if Path::new(name).file_name().is_none_or(|f| f != name.as_str()) {
                return Err(Error::format(&index_path, format!("shard `{name}` is not a file name beside the index")));
            }
            let path = dir.join(name);
            let bytes = Bytes::map(&path)?;
            per_file.push(parse_safetensors(&path, &bytes)?);
            files.push((path, bytes));
        }
        let mut tensors = BTreeMap::new();
        for (tensor, file) in &index.weight_map {
            let shard = names.binary_search(&file).expect("every file of the map is in names");
            let mut info = per_file[shard].get(tensor).cloned().ok_or_else(|| {
                Error::format(&index_path, format!("tensor `{tensor}` is mapped to `{file}`, which does not hold it; re-export the shards"))
            })?;
            info.shard = shard;
            tensors.insert(tensor.clone(), info);
        }
        Ok(HfModel { dir, config_path, weights_path: index_path, hf_config, files, tensors })
    }

    /// Builds a model from a `config.json` text and a safetensors image held in memory; `dir`
    /// stands for the directory in error messages. Meant for tests, fuzzing and embedding.
    pub fn from_bytes(dir: impl Into<PathBuf>, config_json: &[u8], safetensors: &[u8]) -> Result<HfModel> {
        let dir = dir.into();
        let weights_path = dir.join("model.safetensors");
        let bytes = Bytes::copy(safetensors).map_err(|source| Error::Io { path: weights_path.clone(), source })?;
        let config_path = dir.join("config.json");
        let hf_config = parse_config(&config_path, config_json)?;
        let tensors = parse_safetensors(&weights_path, &bytes)?;
        Ok(HfModel { dir, config_path, weights_path: weights_path.clone(), hf_config, files: vec![(weights_path, bytes)], tensors })
    }

    /// The weight files: `model.safetensors`, or every shard.
    pub fn weight_files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// The directory holding the model files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `config.json` as read (all fields optional).
    pub fn hf_config(&self) -> &HfConfig {
        &self.hf_config
    }

    /// The safetensors header, by tensor name.
    pub fn tensor_infos(&self) -> &BTreeMap<String, SafeTensorInfo> {
        &self.tensors
    }

    /// `tokenizer.json` beside the weights, if present.
    pub fn tokenizer_json(&self) -> Option<PathBuf> {
        Some(self.dir.join("tokenizer.json")).filter(|p| p.is_file())
    }

    /// `tokenizer_config.json` beside the weights, if present.
    pub fn tokenizer_config_json(&self) -> Option<PathBuf> {
        Some(self.dir.join("tokenizer_config.json")).filter(|p| p.is_file())
    }

    /// The model's shape from `config.json`; checks every tensor the model needs for type and
    /// shape. RoPE runs [`RopeStyle::Half`]; `max_seq_len` is capped at [`DEFAULT_MAX_SEQ_LEN`].
    pub fn config(&self) -> Result<Config> {
        if let Some(name) = self.tensors.keys().find(|n| n.ends_with(".bias")) {
            return Err(Error::Config {
                path: self.weights_path.clone(),
                msg: format!("tensor `{name}` is a bias; ulm runs bias-free Llama blocks"),
            });
        }
        let embed_rows = self.tensor_infos_for(Part::Embedding).and_then(|t| t.shape.first().copied());
        let config = self
            .hf_config
            .to_config(self.tensors.contains_key(&Part::LmHead.hf_name(0)), embed_rows)
            .map_err(|msg| Error::Config { path: self.config_path.clone(), msg })?;
        check_shapes(self, &config)?;
        Ok(config)
    }

    fn tensor_infos_for(&self, part: Part) -> Option<&SafeTensorInfo> {
        self.info(&part.hf_name(0))
    }

    /// Looks a tensor up. Tied checkpoints sometimes keep only one of the two names, so a missing
    /// embedding falls back to `lm_head.weight`.
    fn info(&self, name: &str) -> Option<&SafeTensorInfo> {
        self.tensors.get(name).or_else(|| {
            (name == Part::Embedding.hf_name(0)).then(|| self.tensors.get(&Part::LmHead.hf_name(0))).flatten()
        })
    }
}

impl TensorSource for HfModel {
    fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let entry = self.info(name).map(|i| Entry {
            dtype: i.dtype().ok_or_else(|| i.dtype_name.clone()),
            shape: &i.shape,
            range: i.range.clone(),
        });
        let (path, bytes) = match self.info(name) {
            Some(i) => (&self.files[i.shard].0, &self.files[i.shard].1),
            None => (&self.weights_path, &self.files[0].1),
        };
        tensor_view(path, bytes, name, entry, SUPPORTED)
    }

    fn contains(&self, name: &str) -> bool {
        self.info(name).is_some()
    }

    fn path(&self) -> &Path {
        &self.weights_path
    }
}
