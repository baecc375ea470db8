//! Shared helpers of the runtime tests: a seeded RNG, a GGUF writer, a tiny byte-level BPE
//! vocabulary, builders of the tiny fixtures under `tests/data/`, and llama.cpp's real server
//! (from the `xllamacpp` wheel) on a free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod exercise;

/// Root of the fixtures.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The SmolLM2 GGUF fetched by `scripts/fetch-assets.sh`, or `None` with a loud message.
pub fn smollm2() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "\n!!!!! SKIPPED: {} is missing; run scripts/fetch-assets.sh models to run this test !!!!!\n",
            p.display()
        );
        None
    }
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!("ulm-test-{}-{tag}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// xorshift64*: small, seeded, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ------------------------------------------------------------------ GGUF writer

/// A GGUF metadata value to write.
#[derive(Clone, Debug)]
pub enum G {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    /// Raw: value type id and the already-encoded value bytes.
    Raw(u32, Vec<u8>),
}

/// Writes GGUF v3 (or v2) files; tensors are given with their shape outermost-first, as the
/// loader presents them, and written innermost-first as GGUF stores them.
pub struct GgufWriter {
    pub version: u32,
    pub alignment: usize,
    pub kv: Vec<(String, G)>,
    pub tensors: Vec<(String, Vec<usize>, u32, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter { version: 3, alignment: 32, kv: Vec::new(), tensors: Vec::new() }
    }

    pub fn kv(&mut self, k: &str, v: G) -> &mut Self {
        self.kv.retain(|(key, _)| key != k);
        self.kv.push((k.to_string(), v));
        self
    }

    pub fn tensor(&mut self, name: &str, shape: &[usize], ggml_type: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_string(), shape.to_vec(), ggml_type, data));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend(b"GGUF");
        o.extend(self.version.to_le_bytes());
        o.extend((self.tensors.len() as u64).to_le_bytes());
        o.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut o, k);
            match v {
                G::U32(x) => {
                    o.extend(4u32.to_le_bytes());
                    o.extend(x.to_le_bytes());
                }
                G::I32(x) => {
                    o.extend(5u32.to_le_bytes());
                    o.extend(x.to_le_bytes());
                }
                G::F32(x) => {
                    o.extend(6u32.to_le_bytes());
                    o.extend(x.to_le_bytes());
                }
                G::Bool(x) => {
                    o.extend(7u32.to_le_bytes());
                    o.push(*x as u8);
                }
                G::Str(s) => {
                    o.extend(8u32.to_le_bytes());
                    put_str(&mut o, s);
                }
                G::Strs(a) => {
                    o.extend(9u32.to_le_bytes());
                    o.extend(8u32.to_le_bytes());
                    o.extend((a.len() as u64).to_le_bytes());
                    for s in a {
                        put_str(&mut o, s);
                    }
                }
                G::I32s(a) => {
                    o.extend(9u32.to_le_bytes());
                    o.extend(5u32.to_le_bytes());
                    o.extend((a.len() as u64).to_le_bytes());
                    for x in a {
                        o.extend(x.to_le_bytes());
                    }
                }
                G::Raw(t, bytes) => {
                    o.extend(t.to_le_bytes());
                    o.extend(bytes);
                }
            }
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for (name, shape, ty, data) in &self.tensors {
            put_str(&mut o, name);
            o.extend((shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                o.extend((d as u64).to_le_bytes());
            }
            o.extend(ty.to_le_bytes());
            o.extend((offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len()).next_multiple_of(self.alignment);
        }
        let data_start = o.len().next_multiple_of(self.alignment);
        o.resize(data_start, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            o.resize(data_start + off, 0);
            o.extend(data);
        }
        o
    }
}

// ------------------------------------------------------------------ tensor encodings

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect()
}

pub fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect()
}

/// Q8_0 blocks of 32: f16 scale, 32 × i8.
pub fn q8_0_bytes(v: &[f32]) -> Vec<u8> {
    let mut o = Vec::new();
    for b in v.chunks(32) {
        let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        o.extend(half::f16::from_f32(d).to_le_bytes());
        o.extend(b.iter().map(|&x| if d == 0.0 { 0 } else { (x / d).round() as i8 as u8 }));
    }
    o
}

/// Q4_0 blocks of 32: f16 scale, 16 bytes of nibbles offset by 8 (low nibbles first half).
pub fn q4_0_bytes(v: &[f32]) -> Vec<u8> {
    let mut o = Vec::new();
    for b in v.chunks(32) {
        let max = b.iter().fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        let d = max / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        o.extend(half::f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            let q = |x: f32| ((x * id + 8.5) as i32).clamp(0, 15) as u8;
            o.push(q(b[j]) | (q(b[j + 16]) << 4));
        }
    }
    o
}

/// Q4_1 blocks of 32: f16 scale, f16 min, 16 bytes of nibbles.
pub fn q4_1_bytes(v: &[f32]) -> Vec<u8> {
    let mut o = Vec::new();
    for b in v.chunks(32) {
        let min = b.iter().fold(f32::MAX, |m, &x| m.min(x));
        let max = b.iter().fold(f32::MIN, |m, &x| m.max(x));
        let d = (max - min) / 15.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        o.extend(half::f16::from_f32(d).to_le_bytes());
        o.extend(half::f16::from_f32(min).to_le_bytes());
        for j in 0..16 {
            let q = |x: f32| (((x - min) * id + 0.5) as i32).clamp(0, 15) as u8;
            o.push(q(b[j]) | (q(b[j + 16]) << 4));
        }
    }
    o
}

// ------------------------------------------------------------------ tiny vocabulary

/// GPT-2's byte → printable char table.
pub fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = ('!' as u32..='~' as u32).chain('¡' as u32..='¬' as u32).chain('®' as u32..='ÿ' as u32).collect();
    let mut table = vec!['\0'; 256];
    for &b in &printable {
        table[b as usize] = char::from_u32(b).unwrap();
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            table[b as usize] = char::from_u32(256 + n).unwrap();
            n += 1;
            printable.push(b);
        }
    }
    table
}

/// Specials of the μLM family, in id order.
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A small byte-level BPE vocabulary: the 3 specials, the 256 byte symbols, then one token per
/// merge. Returns (tokens, merges).
pub fn tiny_vocab() -> (Vec<String>, Vec<String>) {
    let bc = byte_chars();
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(bc.iter().map(|c| c.to_string()));
    let merges_src = [
        ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("r", "e"),
        ("Ġ", "s"), ("Ġ", "w"), ("o", "u"), ("Ġ", "h"), ("l", "l"), ("Ġ", "c"), ("Ġ", "i"), ("Ġ", "Ġ"),
        ("ĠĠ", "ĠĠ"), ("Ġh", "e"), ("l", "o"), ("Ġ", "y"), ("Ġy", "ou"), ("Ċ", "Ċ"), ("a", "t"), ("i", "s"),
    ];
    let mut merges = Vec::new();
    for (a, b) in merges_src {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
    }
    (tokens, merges)
}

/// The tiny vocabulary as an HF `tokenizer.json` (byte-level BPE, written by hand).
pub fn tiny_tokenizer_json() -> String {
    let (tokens, merges) = tiny_vocab();
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| (t.clone(), serde_json::json!(i))).collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                               "normalized": false, "special": true})
        })
        .collect();
    let j = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    serde_json::to_string(&j).unwrap()
}

/// A byte-fallback BPE `tokenizer.json` in the Llama/SentencePiece style: `▁` for spaces,
/// `<0xNN>` tokens for bytes outside the vocabulary, Metaspace-like decoding.
pub fn byte_fallback_tokenizer_json() -> String {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    let words = ["▁", "a", "b", "c", "e", "h", "l", "o", "t", "▁t", "he", "▁the", "é", "日"];
    tokens.extend(words.iter().map(|s| s.to_string()));
    let merges = ["▁ t", "h e", "▁t he"];
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| (t.clone(), serde_json::json!(i))).collect();
    let added: Vec<serde_json::Value> = ["<unk>", "<s>", "</s>"]
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                                          "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let j = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    serde_json::to_string(&j).unwrap()
}

// ------------------------------------------------------------------ tiny models

/// Shape of the tiny fixtures: dim 32, 2 layers, 4 heads / 2 kv heads (head 8), FFN 64.
pub const DIM: usize = 32;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const FFN: usize = 64;

pub fn tiny_vocab_size() -> usize {
    tiny_vocab().0.len()
}

fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * 0.1).collect()
}

/// The tiny llama model as a GGUF: Q8_0 embedding, Q4_0/Q4_1 attention, F16 FFN, BF16 wo of
/// layer 1, F32 norms, tied head; tokenizer metadata with the tiny vocabulary.
pub fn tiny_gguf() -> GgufWriter {
    let (tokens, merges) = tiny_vocab();
    let vocab = tokens.len();
    let mut types = vec![1i32; vocab];
    types[..3].fill(3);
    let mut w = GgufWriter::new();
    w.kv("general.architecture", G::Str("llama".into()))
        .kv("general.name", G::Str("ulm tiny test model".into()))
        .kv("llama.block_count", G::U32(LAYERS as u32))
        .kv("llama.context_length", G::U32(8192))
        .kv("llama.embedding_length", G::U32(DIM as u32))
        .kv("llama.feed_forward_length", G::U32(FFN as u32))
        .kv("llama.attention.head_count", G::U32(HEADS as u32))
        .kv("llama.attention.head_count_kv", G::U32(KV_HEADS as u32))
        .kv("llama.rope.freq_base", G::F32(100000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", G::F32(1e-5))
        .kv("tokenizer.ggml.model", G::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", G::Str("smollm".into()))
        .kv("tokenizer.ggml.tokens", G::Strs(tokens))
        .kv("tokenizer.ggml.token_type", G::I32s(types))
        .kv("tokenizer.ggml.merges", G::Strs(merges))
        .kv("tokenizer.ggml.bos_token_id", G::U32(1))
        .kv("tokenizer.ggml.eos_token_id", G::U32(2))
        .kv("tokenizer.chat_template", G::Str(SMOL_TEMPLATE.into()));
    let mut rng = Rng(0x5eed);
    let kv_dim = KV_HEADS * DIM / HEADS;
    w.tensor("token_embd.weight", &[vocab, DIM], 8, q8_0_bytes(&rand_vec(&mut rng, vocab * DIM)));
    for l in 0..LAYERS {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        w.tensor(&n("attn_norm"), &[DIM], 0, f32_bytes(&[1.0; DIM]));
        w.tensor(&n("attn_q"), &[DIM, DIM], 2, q4_0_bytes(&rand_vec(&mut rng, DIM * DIM)));
        w.tensor(&n("attn_k"), &[kv_dim, DIM], 3, q4_1_bytes(&rand_vec(&mut rng, kv_dim * DIM)));
        w.tensor(&n("attn_v"), &[kv_dim, DIM], 3, q4_1_bytes(&rand_vec(&mut rng, kv_dim * DIM)));
        let wo = rand_vec(&mut rng, DIM * DIM);
        if l == 1 {
            w.tensor(&n("attn_output"), &[DIM, DIM], 30, bf16_bytes(&wo));
        } else {
            w.tensor(&n("attn_output"), &[DIM, DIM], 2, q4_0_bytes(&wo));
        }
        w.tensor(&n("ffn_norm"), &[DIM], 0, f32_bytes(&[1.0; DIM]));
        w.tensor(&n("ffn_gate"), &[FFN, DIM], 1, f16_bytes(&rand_vec(&mut rng, FFN * DIM)));
        w.tensor(&n("ffn_up"), &[FFN, DIM], 1, f16_bytes(&rand_vec(&mut rng, FFN * DIM)));
        w.tensor(&n("ffn_down"), &[DIM, FFN], 1, f16_bytes(&rand_vec(&mut rng, DIM * FFN)));
    }
    w.tensor("output_norm.weight", &[DIM], 0, f32_bytes(&[1.0; DIM]));
    w
}

/// SmolLM2's template, shape for shape (a default system prompt when there is none).
pub const SMOL_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// `config.json` of the tiny model in LlamaConfig names.
pub fn tiny_config_json() -> String {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": DIM,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": tiny_vocab_size(),
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": true,
        "hidden_act": "silu",
        "torch_dtype": "float32"
    })
    .to_string()
}

/// (name, shape, dtype, bytes) of the tiny model's tensors in HF names: F32 norms and
/// embedding, F16 attention, BF16 MLP.
pub fn tiny_hf_tensors() -> Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> {
    use safetensors::Dtype;
    let vocab = tiny_vocab_size();
    let kv_dim = KV_HEADS * DIM / HEADS;
    let mut rng = Rng(0xcafe);
    let mut t = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, dt: Dtype, rng: &mut Rng| {
        let n: usize = shape.iter().product();
        let v = if shape.len() == 1 { vec![1.0; n] } else { rand_vec(rng, n) };
        let bytes = match dt {
            Dtype::F32 => f32_bytes(&v),
            Dtype::F16 => f16_bytes(&v),
            _ => bf16_bytes(&v),
        };
        t.push((name, shape, dt, bytes));
    };
    add("model.embed_tokens.weight".into(), vec![vocab, DIM], Dtype::F32, &mut rng);
    for l in 0..LAYERS {
        let n = |s: &str| format!("model.layers.{l}.{s}.weight");
        add(n("input_layernorm"), vec![DIM], Dtype::F32, &mut rng);
        add(n("self_attn.q_proj"), vec![DIM, DIM], Dtype::F16, &mut rng);
        add(n("self_attn.k_proj"), vec![kv_dim, DIM], Dtype::F16, &mut rng);
        add(n("self_attn.v_proj"), vec![kv_dim, DIM], Dtype::F16, &mut rng);
        add(n("self_attn.o_proj"), vec![DIM, DIM], Dtype::F16, &mut rng);
        add(n("post_attention_layernorm"), vec![DIM], Dtype::F32, &mut rng);
        add(n("mlp.gate_proj"), vec![FFN, DIM], Dtype::BF16, &mut rng);
        add(n("mlp.up_proj"), vec![FFN, DIM], Dtype::BF16, &mut rng);
        add(n("mlp.down_proj"), vec![DIM, FFN], Dtype::BF16, &mut rng);
    }
    add("model.norm.weight".into(), vec![DIM], Dtype::F32, &mut rng);
    t
}

/// Serializes tensors with the `safetensors` crate (an independent writer).
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, safetensors::Dtype, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// `tokenizer_config.json` of the tiny model (ChatML template with the μLM default system).
pub fn tiny_tokenizer_config_json() -> String {
    serde_json::json!({
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "add_bos_token": false,
        "chat_template": "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{{ '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}{% else %}{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n<|im_start|>assistant\\n' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"
    })
    .to_string()
}

/// Writes the tiny HF model directory (config, weights, tokenizer) into `dir`.
pub fn write_tiny_hf(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), tiny_config_json()).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&tiny_hf_tensors())).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), tiny_tokenizer_config_json()).unwrap();
}

/// Input format of the `hf` fuzz target: u16 LE length of the config.json, the config.json,
/// then the safetensors image.
pub fn hf_fuzz_input(config: &[u8], safetensors: &[u8]) -> Vec<u8> {
    let mut o = (config.len() as u16).to_le_bytes().to_vec();
    o.extend(config);
    o.extend(safetensors);
    o
}


// ------------------------------------------------------------------ micro fuzzing seeds

/// A valid GGUF of about 4 KB for fuzzing seeds: dim 32, 1 layer, 2 heads / 1 kv head, FFN 32,
/// 8 tokens with one merge, every supported tensor type, a chat template.
pub fn micro_gguf() -> GgufWriter {
    let bc = byte_chars();
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(["a", "b", "Ġ"].iter().map(|s| s.to_string()));
    tokens.push(bc[b'1' as usize].to_string());
    tokens.push("ab".into());
    let vocab = tokens.len();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", G::Str("llama".into()))
        .kv("llama.block_count", G::U32(1))
        .kv("llama.context_length", G::U32(64))
        .kv("llama.embedding_length", G::U32(32))
        .kv("llama.feed_forward_length", G::U32(32))
        .kv("llama.attention.head_count", G::U32(2))
        .kv("llama.attention.head_count_kv", G::U32(1))
        .kv("tokenizer.ggml.model", G::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", G::Str("smollm".into()))
        .kv("tokenizer.ggml.tokens", G::Strs(tokens))
        .kv("tokenizer.ggml.token_type", G::I32s(vec![3, 3, 3, 1, 1, 1, 1, 1]))
        .kv("tokenizer.ggml.merges", G::Strs(vec!["a b".into()]))
        .kv("tokenizer.ggml.eos_token_id", G::U32(2))
        .kv("tokenizer.chat_template", G::Str("{% for m in messages %}{{ m.content }}{% endfor %}".into()));
    let mut rng = Rng(7);
    let mut v = |n: usize| rand_vec(&mut rng, n);
    w.tensor("token_embd.weight", &[vocab, 32], 1, f16_bytes(&v(vocab * 32)));
    w.tensor("blk.0.attn_norm.weight", &[32], 0, f32_bytes(&v(32)));
    w.tensor("blk.0.attn_q.weight", &[32, 32], 2, q4_0_bytes(&v(32 * 32)));
    w.tensor("blk.0.attn_k.weight", &[16, 32], 3, q4_1_bytes(&v(16 * 32)));
    w.tensor("blk.0.attn_v.weight", &[16, 32], 8, q8_0_bytes(&v(16 * 32)));
    w.tensor("blk.0.attn_output.weight", &[32, 32], 2, q4_0_bytes(&v(32 * 32)));
    w.tensor("blk.0.ffn_norm.weight", &[32], 30, bf16_bytes(&v(32)));
    w.tensor("blk.0.ffn_gate.weight", &[32, 32], 2, q4_0_bytes(&v(32 * 32)));
    w.tensor("blk.0.ffn_up.weight", &[32, 32], 3, q4_1_bytes(&v(32 * 32)));
    w.tensor("blk.0.ffn_down.weight", &[32, 32], 2, q4_0_bytes(&v(32 * 32)));
    w.tensor("output_norm.weight", &[32], 0, f32_bytes(&v(32)));
    w
}

/// A valid HF model of about 1.5 KB for fuzzing seeds (config.json text, safetensors bytes):
/// dim 8, 1 layer, 2 heads / 1 kv head, FFN 16, vocab 8, untied, F32/F16/BF16 tensors.
pub fn micro_hf() -> (String, Vec<u8>) {
    use safetensors::Dtype;
    let config = r#"{"dim":8,"n_layers":1,"n_heads":2,"n_kv_heads":1,"hidden_dim":16,"vocab_size":8,"tie_word_embeddings":false}"#;
    let mut rng = Rng(8);
    let mut t = Vec::new();
    let shapes: [(&str, Vec<usize>, Dtype); 12] = [
        ("model.embed_tokens.weight", vec![8, 8], Dtype::F16),
        ("lm_head.weight", vec![8, 8], Dtype::BF16),
        ("model.norm.weight", vec![8], Dtype::F32),
        ("model.layers.0.input_layernorm.weight", vec![8], Dtype::F32),
        ("model.layers.0.self_attn.q_proj.weight", vec![8, 8], Dtype::F16),
        ("model.layers.0.self_attn.k_proj.weight", vec![4, 8], Dtype::F16),
        ("model.layers.0.self_attn.v_proj.weight", vec![4, 8], Dtype::F16),
        ("model.layers.0.self_attn.o_proj.weight", vec![8, 8], Dtype::F16),
        ("model.layers.0.post_attention_layernorm.weight", vec![8], Dtype::F32),
        ("model.layers.0.mlp.gate_proj.weight", vec![16, 8], Dtype::BF16),
        ("model.layers.0.mlp.up_proj.weight", vec![16, 8], Dtype::BF16),
        ("model.layers.0.mlp.down_proj.weight", vec![8, 16], Dtype::BF16),
    ];
    for (name, shape, dt) in shapes {
        let v = rand_vec(&mut rng, shape.iter().product());
        let bytes = match dt {
            Dtype::F32 => f32_bytes(&v),
            Dtype::F16 => f16_bytes(&v),
            _ => bf16_bytes(&v),
        };
        t.push((name.to_string(), shape, dt, bytes));
    }
    (config.to_string(), safetensors_bytes(&t))
}

/// llama.cpp's server on a port of our own, killed on drop.
pub struct LlamaServer {
    child: Child,
    addr: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LlamaServer {
    /// Starts the server on `model` (1 thread); `None`, with a loud message, when assets/venv is missing.
    pub fn start(model: &Path) -> Option<LlamaServer> {
        Self::start_with(model, 1, &[])
    }

    /// Starts the server with `threads` threads and extra flags for scripts/llama_server.py
    /// (e.g. `--exact`).
    pub fn start_with(model: &Path, threads: usize, extra: &[&str]) -> Option<LlamaServer> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join("assets/venv/bin/python");
        if !python.is_file() {
            eprintln!("\n!!!!! SKIPPED: {} is missing; run scripts/fetch-assets.sh to run the llama.cpp parity test !!!!!\n", python.display());
            return None;
        }
        // A free port: bind 0, read it, release it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut child = Command::new(python)
            .arg(root.join("scripts/llama_server.py"))
            .args(["--model".as_ref(), model.as_os_str()])
            .args(["--port", &port.to_string(), "--threads", &threads.to_string(), "--ctx-per-slot", "512"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scripts/llama_server.py");
        let stdout = child.stdout.take().unwrap();
        let mut server = LlamaServer { child, addr: String::new() };
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read the server's stdout");
            if let Some(url) = line.strip_prefix("listening http://") {
                server.addr = url.trim().to_string();
                return Some(server);
            }
        }
        panic!("llama_server.py exited without printing `listening URL`");
    }

    /// POSTs JSON and returns the response body.
    pub fn post(&self, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(&self.addr).expect("connect to llama.cpp");
        s.set_read_timeout(Some(Duration::from_secs(300))).unwrap(); // generous: CI machines may be loaded
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            let mut out = String::new();
            let mut rest = body;
            while let Some((size, tail)) = rest.split_once("\r\n") {
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                if n == 0 {
                    break;
                }
                out.push_str(&tail[..n]);
                rest = &tail[n + 2..];
            }
            out
        } else {
            body.to_string()
        }
    }

    /// POSTs a JSON value and parses the JSON answer.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let text = self.post(path, &body.to_string());
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}
