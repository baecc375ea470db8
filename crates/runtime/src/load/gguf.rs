//! GGUF v2/v3 files, memory-mapped: metadata, tensor infos and the llama-architecture config.
//!
//! ```no_run
//! use ulm_runtime::load::{gguf::Gguf, TensorSource};
//! let g = Gguf::open("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let config = g.config()?; // checks every tensor's type and shape
//! let embed = g.tensor("token_embd.weight")?; // shape [vocab, dim], outermost first
//! assert_eq!(embed.shape, [config.vocab_size, config.dim]);
//! # Ok::<(), ulm_runtime::Error>(())
//! ```
//!
//! Layout (all little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64,
//! then the metadata (key string, value type u32, value), then the tensor infos (name string,
//! n_dims u32, dims u64 × n_dims innermost first, ggml type u32, offset u64), then padding to
//! `general.alignment` (default 32), then the tensor data. A string is a u64 length and UTF-8
//! bytes. Every length read from the file is checked against the bytes that remain before
//! anything is allocated, so a corrupted file gets an error, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{check_shapes, tensor_view, Bytes, Entry, DEFAULT_MAX_SEQ_LEN, DType, Part, TensorSource, TensorView};
use crate::config::{Config, RopeStyle};
use crate::error::{Error, Result};


/// Alignment of the tensor data when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays nested deeper than this are rejected (real files nest at most one level).
const MAX_NESTING: usize = 4;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Types ulm runs, for error messages.
const SUPPORTED: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1";

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f32`.
    F32(f32),
    /// `f64`.
    F64(f64),
    /// `bool`.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values of one type.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (either float width, or an integer).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Name of the GGUF value type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
        }
    }
}

/// One entry of the tensor table, as declared in the file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape, outermost dimension first (GGUF's innermost-first order reversed).
    pub shape: Vec<usize>,
    /// ggml type id (0 = F32, 1 = F16, 2 = Q4_0, 3 = Q4_1, 8 = Q8_0, 30 = BF16, …).
    pub ggml_type: u32,
    /// Byte range of the data inside the file (empty when the type's size is unknown here).
    pub range: Range<usize>,
}

impl TensorInfo {
    /// The storage type, if ulm runs it.
    pub fn dtype(&self) -> Option<DType> {
        match self.ggml_type {
            0 => Some(DType::F32),
            1 => Some(DType::F16),
            2 => Some(DType::Q4_0),
            3 => Some(DType::Q4_1),
            8 => Some(DType::Q8_0),
            30 => Some(DType::BF16),
            _ => None,
        }
    }

    /// ggml's name of the type (`Q4_K`, `IQ2_XS`, …), or `type N` for ids unknown here.
    pub fn type_name(&self) -> String {
        match ggml_type_layout(self.ggml_type) {
            Some((name, _, _)) => name.to_string(),
            None => format!("type {}", self.ggml_type),
        }
    }
}

/// (name, elements per block, bytes per block) of the ggml types known to this parser. Only the
/// types in [`TensorInfo::dtype`] can be run; the rest are listed so that sizes can be checked and
/// errors can name them.
fn ggml_type_layout(t: u32) -> Option<(&'static str, u64, u64)> {
    Some(match t {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        _ => return None,
    })
}

/// A memory-mapped GGUF file.
pub struct Gguf {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    index: BTreeMap<String, usize>,
    data_offset: usize,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Gguf {
    /// Maps and parses `path`. Tensor data is not read; its extent is checked against the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let bytes = Bytes::map(path)?;
        Self::parse(path.to_path_buf(), bytes)
    }

    /// Parses a GGUF image held in memory; `name` stands for the file in error messages.
    /// Meant for tests, fuzzing and models embedded in a binary.
    pub fn from_bytes(name: impl Into<PathBuf>, data: &[u8]) -> Result<Gguf> {
        let path = name.into();
        let bytes = Bytes::copy(data).map_err(|source| Error::Io { path: path.clone(), source })?;
        Self::parse(path, bytes)
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Gguf> {
        let mut r = Reader { buf: &bytes, pos: 0, path: &path };
        let magic = r.take(4, "the GGUF header")?;
        if magic != b"GGUF" {
            return Err(Error::format(
                &path,
                format!("not a GGUF file (starts with {magic:02x?}, expected the magic `GGUF`)"),
            ));
        }
        let version = r.u32("the GGUF header")?;
        match version {
            2 | 3 => {}
            1 => return Err(Error::format(&path, "GGUF version 1 is not supported; re-convert the model with a current llama.cpp (version 2 or 3)")),
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(Error::format(&path, "big-endian GGUF is not supported; use the little-endian file"));
            }
            v => return Err(Error::format(&path, format!("unknown GGUF version {v}; ulm reads versions 2 and 3"))),
        }
        let n_tensors = r.u64("the GGUF header")?;
        let n_kv = r.u64("the GGUF header")?;

        // Metadata. Each entry takes at least 13 bytes (key length, type, one byte of value).
        r.check_count(n_kv, 13, "the metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key #{i}"))?;
            let what = format!("metadata `{key}`");
            let ty = r.u32(&what)?;
            let value = r.value(ty, &what, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(Error::format(&path, format!("metadata key `{key}` appears twice")));
            }
        }

        // Tensor infos. Each takes at least 24 bytes (name length, n_dims, type, offset).
        r.check_count(n_tensors, 24, "the tensor count")?;
        let mut raw = Vec::new();
        for i in 0..n_tensors {
            let name = r.string(&format!("tensor info #{i}"))?;
            let what = format!("tensor info `{name}`");
            let n_dims = r.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(Error::format(&path, format!("tensor `{name}` has {n_dims} dimensions; ggml allows at most {MAX_DIMS}")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(r.u64(&what)?);
            }
            let ggml_type = r.u32(&what)?;
            let offset = r.u64(&what)?;
            raw.push((name, ne, ggml_type, offset));
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(Error::format(&path, format!("metadata `general.alignment` is {v:?}; it must be a power of two")));
                }
            },
        };
        let file_len = bytes.len() as u64;
        let data_offset = (r.pos as u64).next_multiple_of(alignment);
        if !raw.is_empty() && data_offset > file_len {
            return Err(Error::Truncated {
                path: path.clone(),
                what: "the padding before the tensor data".into(),
                start: r.pos as u64,
                end: data_offset,
                len: file_len,
            });
        }

        let mut tensors = Vec::with_capacity(raw.len());
        let mut index = BTreeMap::new();
        for (name, ne, ggml_type, offset) in raw {
            let bad = |msg: String| Error::format(&path, format!("tensor `{name}`: {msg}"));
            let n_elems = ne
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| bad(format!("dimensions {ne:?} overflow")))?;
            if offset % alignment != 0 {
                return Err(bad(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
            }
            let start = data_offset
                .checked_add(offset)
                .ok_or_else(|| bad(format!("data offset {offset} overflows")))?;
            let range = match ggml_type_layout(ggml_type) {
                Some((type_name, block, block_bytes)) => {
                    if ne.first().is_some_and(|&d| d % block != 0) {
                        return Err(bad(format!("{type_name} rows of {} elements are not a whole number of {block}-element blocks", ne[0])));
                    }
                    let end = (n_elems / block)
                        .checked_mul(block_bytes)
                        .and_then(|size| start.checked_add(size))
                        .ok_or_else(|| bad(format!("dimensions {ne:?} overflow")))?;
                    if end > file_len {
                        return Err(Error::Truncated { path: path.clone(), what: format!("tensor `{name}`"), start, end, len: file_len });
                    }
                    start as usize..end as usize
                }
                // Unknown type: its size is unknown, so only its start can be checked.
                None => {
                    if start > file_len {
                        return Err(Error::Truncated { path: path.clone(), what: format!("tensor `{name}`"), start, end: start, len: file_len });
                    }
                    start as usize..start as usize
                }
            };
            let shape = ne
                .iter()
                .rev()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad(format!("dimensions {ne:?} do not fit in memory here")))?;
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(bad("appears twice in the tensor table".into()));
            }
            tensors.push(TensorInfo { name, shape, ggml_type, range });
        }
        let data_offset = data_offset.min(file_len) as usize;
        Ok(Gguf { path, bytes, version, metadata, tensors, index, data_offset })
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Byte offset where the tensor data starts.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The tensor table in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor-table entry called `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn required(&self, key: &str) -> Result<&Value> {
        self.meta(key).ok_or_else(|| Error::format(&self.path, format!("metadata `{key}` is missing")))
    }

    fn wrong_type(&self, key: &str, v: &Value, want: &str) -> Error {
        Error::format(&self.path, format!("metadata `{key}` is a {}, expected {want}", v.type_name()))
    }

    /// String value of `key` (error if missing or not a string).
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        let v = self.required(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, v, "a string"))
    }

    /// Non-negative integer value of `key`, any integer width.
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        let v = self.required(key)?;
        v.as_u64().ok_or_else(|| self.wrong_type(key, v, "a non-negative integer"))
    }

    /// Non-negative integer value of `key` that fits in 32 bits.
    pub fn meta_u32(&self, key: &str) -> Result<u32> {
        let v = self.meta_u64(key)?;
        u32::try_from(v).map_err(|_| Error::format(&self.path, format!("metadata `{key}` is {v}, too large for 32 bits")))
    }

    /// Float value of `key` (f32, f64 or an integer).
    pub fn meta_f32(&self, key: &str) -> Result<f32> {
        let v = self.required(key)?;
        v.as_f64().map(|f| f as f32).ok_or_else(|| self.wrong_type(key, v, "a number"))
    }

    /// Bool value of `key`.
    pub fn meta_bool(&self, key: &str) -> Result<bool> {
        let v = self.required(key)?;
        v.as_bool().ok_or_else(|| self.wrong_type(key, v, "a bool"))
    }

    fn meta_array(&self, key: &str) -> Result<&[Value]> {
        let v = self.required(key)?;
        v.as_array().ok_or_else(|| self.wrong_type(key, v, "an array"))
    }

    /// Array of strings at `key` (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`).
    pub fn meta_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.meta_array(key)?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| self.wrong_type(key, v, "an array of strings")))
            .collect()
    }

    /// Array of numbers at `key`, as f32 (`tokenizer.ggml.scores`).
    pub fn meta_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.meta_array(key)?
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32).ok_or_else(|| self.wrong_type(key, v, "an array of numbers")))
            .collect()
    }

    /// Array of integers at `key`, as i32 (`tokenizer.ggml.token_type`).
    pub fn meta_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.meta_array(key)?
            .iter()
            .map(|v| {
                v.as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(|| self.wrong_type(key, v, "an array of 32-bit integers"))
            })
            .collect()
    }

    /// `Some(value)` of an optional integer key; an error if present with the wrong type.
    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.meta(key).map(|_| self.meta_u64(key)).transpose()
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.meta(key).map(|_| self.meta_f32(key)).transpose()
    }

    /// Context length the file declares (`{arch}.context_length`), if any.
    pub fn context_length(&self) -> Option<u64> {
        let arch = self.meta("general.architecture")?.as_str()?;
        self.meta(&format!("{arch}.context_length"))?.as_u64()
    }

    /// The model's shape, for `general.architecture == "llama"`; checks every tensor the model
    /// needs for type and shape. `max_seq_len` is the declared context capped at
    /// [`DEFAULT_MAX_SEQ_LEN`]. RoPE runs [`RopeStyle::Interleaved`]: llama GGUF files store q/k
    /// permuted for it.
    pub fn config(&self) -> Result<Config> {
        let cfg_err = |msg: String| Error::Config { path: self.path.clone(), msg };
        let arch = match self.meta("general.architecture") {
            Some(v) => v.as_str().ok_or_else(|| cfg_err(format!("`general.architecture` is a {}, expected a string", v.type_name())))?,
            None => return Err(cfg_err("`general.architecture` is missing; is this a model file?".into())),
        };
        if arch != "llama" {
            return Err(cfg_err(format!(
                "architecture `{arch}` is not supported; ulm runs `llama`-architecture GGUF files (Llama, SmolLM, Swen/MiniMind)"
            )));
        }
        let k = |s: &str| format!("llama.{s}");
        let to_usize = |key: String, v: u64| usize::try_from(v).map_err(|_| cfg_err(format!("`{key}` is {v}, too large")));
        let get = |s: &str| -> Result<usize> {
            let key = k(s);
            if self.meta(&key).is_none() {
                return Err(cfg_err(format!("`{key}` is missing")));
            }
            let v = self.meta_u64(&key)?;
            to_usize(key, v)
        };
        let opt = |s: &str| -> Result<Option<usize>> {
            let key = k(s);
            self.opt_u64(&key)?.map(|v| to_usize(key, v)).transpose()
        };

        let dim = get("embedding_length")?;
        let n_layers = get("block_count")?;
        let n_heads = get("attention.head_count")?;
        let n_kv_heads = opt("attention.head_count_kv")?.unwrap_or(n_heads);
        let ffn_dim = get("feed_forward_length")?;
        let head_dim = match opt("attention.key_length")? {
            Some(h) => h,
            None => dim.checked_div(n_heads).unwrap_or(0),
        };
        if let Some(v) = opt("attention.value_length")? {
            if v != head_dim {
                return Err(cfg_err(format!("value heads of {v} differ from key heads of {head_dim}; not supported")));
            }
        }
        if let Some(r) = opt("rope.dimension_count")? {
            if r != head_dim {
                return Err(cfg_err(format!("RoPE over {r} of {head_dim} head dimensions (partial rotary) is not supported")));
            }
        }
        if let Some(v) = self.meta(&k("rope.scaling.type")) {
            if v.as_str() != Some("none") {
                return Err(cfg_err(format!("RoPE scaling {v:?} is not supported; use a model without `llama.rope.scaling.type`")));
            }
        }
        if self.contains("rope_freqs.weight") {
            return Err(cfg_err("the file has `rope_freqs.weight` (Llama 3.1 RoPE scaling), which ulm does not run".into()));
        }
        let vocab_size = match self.tensor_info(&Part::Embedding.gguf_name(0)) {
            Some(t) if !t.shape.is_empty() => t.shape[0],
            _ => match self.meta("tokenizer.ggml.tokens").and_then(Value::as_array) {
                Some(tokens) => tokens.len(),
                None => opt("vocab_size")?.unwrap_or(0),
            },
        };
        let context = opt("context_length")?.unwrap_or(2048);
        let config = Config {
            dim,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab_size,
            max_seq_len: context.min(DEFAULT_MAX_SEQ_LEN),
            norm_eps: self.opt_f32(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            rope_theta: self.opt_f32(&k("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_style: RopeStyle::Interleaved,
            tied_embeddings: !self.contains(&Part::LmHead.gguf_name(0)),
        };
        config.validate().map_err(cfg_err)?;
        check_shapes(self, &config)?;
        Ok(config)
    }
}

impl TensorSource for Gguf {
    fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let entry = self.tensor_info(name).map(|i| Entry {
            dtype: i.dtype().ok_or_else(|| i.type_name()),
            shape: &i.shape,
            range: i.range.clone(),
        });
        tensor_view(&self.path, &self.bytes, name, entry, SUPPORTED)
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn part_name(&self, part: Part, layer: usize) -> String {
        part.gguf_name(layer)
    }
}

/// A cursor over the header; every read is bounds-checked and names what it was reading.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                start: self.pos as u64,
                end: (self.pos as u64).saturating_add(n as u64),
                len: self.buf.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Fails unless `count` items of at least `min_bytes` each can fit in what remains.
    fn check_count(&self, count: u64, min_bytes: u64, what: &str) -> Result<()> {
        let need = count.saturating_mul(min_bytes);
        if need > self.remaining() as u64 {
            return Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what: format!("{what} ({count} entries)"),
                start: self.pos as u64,
                end: (self.pos as u64).saturating_add(need),
                len: self.buf.len() as u64,
            });
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let bytes = self.take(usize::try_from(n).unwrap_or(usize::MAX), what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(Error::format(self.path, format!("{what}: a string is not valid UTF-8 ({e})"))),
        }
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Error::format(self.path, format!("{what}: bool byte is {b}, expected 0 or 1"))),
            },
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(Error::format(self.path, format!("{what}: arrays nested more than {MAX_NESTING} deep")));
                }
                let elem = self.u32(what)?;
                let n = self.u64(what)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8, // string length, nested array header, 64-bit values
                    t => return Err(Error::format(self.path, format!("{what}: unknown array element type {t}"))),
                };
                self.check_count(n, min, what)?;
                // Grow with the items actually read rather than trusting the count.
                let mut items = Vec::with_capacity((n as usize).min(1 << 16));
                for _ in 0..n {
                    items.push(self.value(elem, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(Error::format(self.path, format!("{what}: unknown value type {t}"))),
        })
    }
}
