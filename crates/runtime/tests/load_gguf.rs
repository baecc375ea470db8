//! GGUF loader: the tiny fixture, SmolLM2 (when fetched), and broken files with their messages.

mod common;

use common::*;
use ulm_runtime::load::gguf::{Gguf, Value};
use ulm_runtime::load::{DType, Part, TensorSource, DEFAULT_MAX_SEQ_LEN};
use ulm_runtime::{Error, RopeStyle};

fn tiny() -> Gguf {
    Gguf::from_bytes("tiny.gguf", &tiny_gguf().to_bytes()).unwrap()
}

fn err_of(w: &GgufWriter) -> Error {
    match Gguf::from_bytes("bad.gguf", &w.to_bytes()).and_then(|g| g.config()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn tiny_fixture_gives_its_config() {
    let g = tiny();
    let c = g.config().unwrap();
    assert_eq!((c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim), (DIM, LAYERS, HEADS, KV_HEADS, 8, FFN));
    assert_eq!(c.vocab_size, tiny_vocab_size());
    assert_eq!(c.max_seq_len, DEFAULT_MAX_SEQ_LEN, "8192 declared, capped");
    assert_eq!(g.context_length(), Some(8192));
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.norm_eps, 1e-5);
    assert_eq!(c.rope_style, RopeStyle::Interleaved);
    assert!(c.tied_embeddings);
    assert_eq!(g.version(), 3);
    assert_eq!(g.data_offset() % 32, 0);
}

#[test]
fn tensors_come_outermost_first_with_their_types() {
    let g = tiny();
    let vocab = tiny_vocab_size();
    let e = g.tensor(&Part::Embedding.gguf_name(0)).unwrap();
    assert_eq!((e.dtype, e.shape.clone()), (DType::Q8_0, vec![vocab, DIM]));
    assert_eq!(e.data.len(), vocab * DIM / 32 * 34);
    let k = g.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!((k.dtype, k.shape.clone()), (DType::Q4_1, vec![16, DIM]));
    assert_eq!(g.tensor("blk.0.attn_q.weight").unwrap().dtype, DType::Q4_0);
    assert_eq!(g.tensor("blk.1.attn_output.weight").unwrap().dtype, DType::BF16);
    let down = g.tensor("blk.1.ffn_down.weight").unwrap();
    assert_eq!((down.dtype, down.shape.clone()), (DType::F16, vec![DIM, FFN]));
    let norm = g.tensor("output_norm.weight").unwrap();
    assert_eq!(norm.dtype, DType::F32);
    assert_eq!(&norm.data[..4], &1.0f32.to_le_bytes());
    // The bytes are exactly what was written.
    let w = tiny_gguf();
    let (_, _, _, want) = w.tensors.iter().find(|t| t.0 == "blk.1.ffn_down.weight").unwrap();
    assert_eq!(down.data, &want[..]);
    assert_eq!(g.part_name(Part::Wq, 1), "blk.1.attn_q.weight");
    assert!(!g.contains("output.weight"));
}

#[test]
fn metadata_accessors() {
    let g = tiny();
    assert_eq!(g.meta_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.meta_u32("llama.block_count").unwrap(), LAYERS as u32);
    assert_eq!(g.meta_u64("llama.embedding_length").unwrap(), DIM as u64);
    assert_eq!(g.meta_f32("llama.rope.freq_base").unwrap(), 100000.0);
    let tokens = g.meta_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens[1], "<|im_start|>");
    assert_eq!(g.meta_i32_array("tokenizer.ggml.token_type").unwrap()[0], 3);
    assert_eq!(g.meta("llama.block_count"), Some(&Value::U32(LAYERS as u32)));
    let e = g.meta_str("llama.block_count").unwrap_err().to_string();
    assert_eq!(e, "tiny.gguf: metadata `llama.block_count` is a u32, expected a string");
    let e = g.meta_u32("no.such.key").unwrap_err().to_string();
    assert_eq!(e, "tiny.gguf: metadata `no.such.key` is missing");
}

#[test]
fn every_value_type_and_nested_arrays_parse() {
    let mut w = GgufWriter::new();
    let mut k = 0;
    let mut add = |ty: u32, bytes: Vec<u8>| {
        k += 1;
        w.kv(&format!("k{k}"), G::Raw(ty, bytes));
    };
    add(0, vec![200]);
    add(1, vec![0xff]);
    add(2, 60000u16.to_le_bytes().to_vec());
    add(3, (-2i16).to_le_bytes().to_vec());
    add(10, u64::MAX.to_le_bytes().to_vec());
    add(11, (-5i64).to_le_bytes().to_vec());
    add(12, 2.5f64.to_le_bytes().to_vec());
    // array of 2 arrays of u8: [[1, 2], [3]]
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend(2u64.to_le_bytes());
    for a in [&[1u8, 2][..], &[3u8][..]] {
        nested.extend(0u32.to_le_bytes());
        nested.extend((a.len() as u64).to_le_bytes());
        nested.extend(a);
    }
    add(9, nested);
    w.kv("f32s", G::Raw(9, [6u32.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec(), 1.5f32.to_le_bytes().to_vec(), 2.0f32.to_le_bytes().to_vec()].concat()));
    w.version = 2;
    let g = Gguf::from_bytes("types.gguf", &w.to_bytes()).unwrap();
    let m = g.metadata();
    assert_eq!(m["k1"], Value::U8(200));
    assert_eq!(m["k2"], Value::I8(-1));
    assert_eq!(m["k3"], Value::U16(60000));
    assert_eq!(m["k4"], Value::I16(-2));
    assert_eq!(m["k5"], Value::U64(u64::MAX));
    assert_eq!(m["k6"], Value::I64(-5));
    assert_eq!(m["k7"], Value::F64(2.5));
    assert_eq!(m["k8"], Value::Array(vec![Value::Array(vec![Value::U8(1), Value::U8(2)]), Value::Array(vec![Value::U8(3)])]));
    assert_eq!(g.meta_f32_array("f32s").unwrap(), vec![1.5, 2.0]);
    assert_eq!(g.version(), 2);
    assert!(g.tensor_infos().is_empty());
}

#[test]
fn alignment_from_metadata_is_honoured() {
    let mut w = tiny_gguf();
    w.alignment = 64;
    w.kv("general.alignment", G::U32(64));
    let g = Gguf::from_bytes("a64.gguf", &w.to_bytes()).unwrap();
    assert_eq!(g.data_offset() % 64, 0);
    g.config().unwrap();
    let bad = {
        let mut w = tiny_gguf();
        w.kv("general.alignment", G::U32(48));
        w
    };
    assert_eq!(err_of(&bad).to_string(), "bad.gguf: metadata `general.alignment` is U32(48); it must be a power of two");
}

#[test]
fn smollm2_config_matches_the_package() {
    let Some(path) = smollm2() else { return };
    let g = Gguf::open(&path).unwrap();
    let c = g.config().unwrap();
    assert_eq!((c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim), (576, 30, 9, 3, 64, 1536));
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rope_theta, 100000.0);
    assert!(c.tied_embeddings);
    assert_eq!(c.max_seq_len, 4096);
    assert_eq!(c.rope_style, RopeStyle::Interleaved);
    assert_eq!(c.n_params(), 134_515_008);
    assert_eq!(g.tensor("token_embd.weight").unwrap().dtype, DType::Q8_0);
    assert_eq!(g.tensor("blk.0.attn_q.weight").unwrap().dtype, DType::Q4_1);
    assert_eq!(g.tensor("blk.29.ffn_norm.weight").unwrap().dtype, DType::F32);
    assert_eq!(g.tensor("blk.0.attn_k.weight").unwrap().shape, vec![192, 576]);
    assert_eq!(g.tensor_infos().len(), 272);
}

// ------------------------------------------------------------------ broken files

#[test]
fn truncated_files_name_what_is_cut() {
    let full = tiny_gguf().to_bytes();
    let g = tiny();
    let last = g.tensor_infos().last().unwrap().clone();
    // Cut inside the last tensor's data.
    let cut = &full[..last.range.end - 3];
    let e = Gguf::from_bytes("cut.gguf", cut).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "cut.gguf: truncated: tensor `output_norm.weight` needs bytes {}..{} but the file has {} (re-download or re-export it)",
            last.range.start,
            last.range.end,
            last.range.end - 3
        )
    );
    // Cut inside the token list.
    let at = full.windows(5).position(|w| w == "Ġthe".as_bytes()).unwrap() + 2;
    let e = Gguf::from_bytes("cut.gguf", &full[..at]).unwrap_err().to_string();
    assert!(e.starts_with("cut.gguf: truncated: metadata `tokenizer.ggml.tokens` needs bytes"), "{e}");
    // Every prefix fails cleanly and names the file.
    for n in (0..full.len()).step_by(97).chain([0, 1, 4, 8, 23, 24]) {
        let e = Gguf::from_bytes("cut.gguf", &full[..n]).unwrap_err().to_string();
        assert!(e.starts_with("cut.gguf: "), "{n}: {e}");
    }
}

#[test]
fn not_gguf_and_wrong_versions() {
    let e = Gguf::from_bytes("x.bin", b"PK\x03\x04 this is a zip").unwrap_err().to_string();
    assert_eq!(e, "x.bin: not a GGUF file (starts with [50, 4b, 03, 04], expected the magic `GGUF`)");
    let mut v1 = tiny_gguf().to_bytes();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = Gguf::from_bytes("v1.gguf", &v1).unwrap_err().to_string();
    assert!(e.contains("GGUF version 1 is not supported"), "{e}");
    let mut be = tiny_gguf().to_bytes();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    let e = Gguf::from_bytes("be.gguf", &be).unwrap_err().to_string();
    assert_eq!(e, "be.gguf: big-endian GGUF is not supported; use the little-endian file");
    let e = Gguf::from_bytes("empty.gguf", b"").unwrap_err().to_string();
    assert_eq!(e, "empty.gguf: truncated: the GGUF header needs bytes 0..4 but the file has 0 (re-download or re-export it)");
}

#[test]
fn garbage_counts_fail_without_allocating() {
    let header = |n_tensors: u64, n_kv: u64| {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    };
    let e = Gguf::from_bytes("kv.gguf", &header(0, u64::MAX)).unwrap_err().to_string();
    assert!(e.starts_with("kv.gguf: truncated: the metadata count (18446744073709551615 entries) needs bytes 24.."), "{e}");
    let e = Gguf::from_bytes("t.gguf", &header(1 << 60, 0)).unwrap_err().to_string();
    assert!(e.starts_with("t.gguf: truncated: the tensor count"), "{e}");
    // A key whose length is 2^63.
    let mut b = header(0, 1);
    b.extend((1u64 << 63).to_le_bytes());
    b.extend([0u8; 16]);
    let e = Gguf::from_bytes("key.gguf", &b).unwrap_err().to_string();
    assert!(e.starts_with("key.gguf: truncated: metadata key #0"), "{e}");
    // An array of 2^40 u64.
    let mut w = GgufWriter::new();
    w.kv("big", G::Raw(9, [10u32.to_le_bytes().to_vec(), (1u64 << 40).to_le_bytes().to_vec()].concat()));
    let e = Gguf::from_bytes("arr.gguf", &w.to_bytes()).unwrap_err().to_string();
    assert!(e.starts_with("arr.gguf: truncated: metadata `big`"), "{e}");
    // Arrays nested without end.
    let mut deep = Vec::new();
    for _ in 0..1000 {
        deep.extend(9u32.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    let mut w = GgufWriter::new();
    w.kv("deep", G::Raw(9, deep));
    let e = Gguf::from_bytes("deep.gguf", &w.to_bytes()).unwrap_err().to_string();
    assert_eq!(e, "deep.gguf: metadata `deep`: arrays nested more than 4 deep");
    // Unknown value type, bad bool, invalid UTF-8.
    let mut w = GgufWriter::new();
    w.kv("odd", G::Raw(13, vec![0; 8]));
    assert_eq!(Gguf::from_bytes("v.gguf", &w.to_bytes()).unwrap_err().to_string(), "v.gguf: metadata `odd`: unknown value type 13");
    let mut w = GgufWriter::new();
    w.kv("b", G::Raw(7, vec![2]));
    assert_eq!(Gguf::from_bytes("v.gguf", &w.to_bytes()).unwrap_err().to_string(), "v.gguf: metadata `b`: bool byte is 2, expected 0 or 1");
    let mut w = GgufWriter::new();
    w.kv("s", G::Raw(8, [2u64.to_le_bytes().to_vec(), vec![0xc3, 0x28]].concat()));
    let e = Gguf::from_bytes("v.gguf", &w.to_bytes()).unwrap_err().to_string();
    assert!(e.starts_with("v.gguf: metadata `s`: a string is not valid UTF-8"), "{e}");
}

#[test]
fn bad_tensor_tables() {
    // Dimensions whose product overflows.
    let mut w = GgufWriter::new();
    w.tensor("huge", &[1 << 40, 1 << 40], 0, vec![]);
    assert_eq!(err_of(&w).to_string(), "bad.gguf: tensor `huge`: dimensions [1099511627776, 1099511627776] overflow");
    // Data beyond the end of the file.
    let mut w = GgufWriter::new();
    w.tensor("big", &[1000, 1000], 0, vec![0; 64]);
    let e = err_of(&w).to_string();
    assert!(e.starts_with("bad.gguf: truncated: tensor `big` needs bytes"), "{e}");
    // Five dimensions.
    let mut w = GgufWriter::new();
    w.tensor("t5", &[1, 1, 1, 1, 1], 0, vec![0; 4]);
    assert_eq!(err_of(&w).to_string(), "bad.gguf: tensor `t5` has 5 dimensions; ggml allows at most 4");
    // A Q4_0 row that is not whole blocks.
    let mut w = GgufWriter::new();
    w.tensor("q", &[2, 20], 2, vec![0; 64]);
    assert_eq!(err_of(&w).to_string(), "bad.gguf: tensor `q`: Q4_0 rows of 20 elements are not a whole number of 32-element blocks");
    // The same name twice.
    let mut w = GgufWriter::new();
    w.tensor("a", &[8], 0, vec![0; 32]).tensor("a", &[8], 0, vec![0; 32]);
    assert_eq!(err_of(&w).to_string(), "bad.gguf: tensor `a`: appears twice in the tensor table");
}

#[test]
fn unsupported_types_fail_only_when_used() {
    // A Q4_K tensor the model never reads: the file opens and runs.
    let mut w = tiny_gguf();
    w.tensor("extra.weight", &[2, 256], 12, vec![0; 2 * 144]);
    let g = Gguf::from_bytes("k.gguf", &w.to_bytes()).unwrap();
    g.config().unwrap();
    let e = g.tensor("extra.weight").unwrap_err().to_string();
    assert_eq!(e, "k.gguf: tensor `extra.weight` has type Q4_K, supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1");
    // The same type on a tensor the model needs.
    let mut w = tiny_gguf();
    let t = w.tensors.iter_mut().find(|t| t.0 == "blk.1.ffn_up.weight").unwrap();
    t.2 = 6; // Q5_0: 22 bytes per 32
    t.3 = vec![0; FFN * DIM / 32 * 22];
    let e = err_of(&w);
    assert!(matches!(e, Error::DType { .. }));
    assert_eq!(e.to_string(), "bad.gguf: tensor `blk.1.ffn_up.weight` has type Q5_0, supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1");
    // An id unknown to ggml as we know it.
    let mut w = GgufWriter::new();
    w.tensor("odd", &[4], 99, vec![]);
    let g = Gguf::from_bytes("odd.gguf", &w.to_bytes()).unwrap();
    assert_eq!(g.tensor("odd").unwrap_err().to_string(), "odd.gguf: tensor `odd` has type type 99, supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1");
}

#[test]
fn mismatched_models_name_tensor_and_shapes() {
    let mut w = tiny_gguf();
    let t = w.tensors.iter_mut().find(|t| t.0 == "blk.0.attn_k.weight").unwrap();
    t.1 = vec![DIM, DIM];
    t.3 = q4_1_bytes(&vec![0.0; DIM * DIM]);
    let e = err_of(&w);
    assert_eq!(e.to_string(), "bad.gguf: tensor `blk.0.attn_k.weight` has shape [32, 32], expected [16, 32]");
    let mut w = tiny_gguf();
    w.tensors.retain(|t| t.0 != "blk.1.ffn_gate.weight");
    let e = err_of(&w);
    assert_eq!(e.to_string(), "bad.gguf: tensor `blk.1.ffn_gate.weight` is missing (is this a Llama-architecture checkpoint?)");
    let mut w = tiny_gguf();
    w.kv("general.architecture", G::Str("gemma3".into()));
    assert_eq!(
        err_of(&w).to_string(),
        "bad.gguf: config: architecture `gemma3` is not supported; ulm runs `llama`-architecture GGUF files (Llama, SmolLM, Swen/MiniMind)"
    );
    let mut w = tiny_gguf();
    w.kv("llama.attention.head_count_kv", G::U32(3));
    assert_eq!(err_of(&w).to_string(), "bad.gguf: config: n_heads (4) is not a multiple of n_kv_heads (3)");
    let mut w = tiny_gguf();
    w.kv.retain(|(k, _)| k != "llama.block_count");
    assert_eq!(err_of(&w).to_string(), "bad.gguf: config: `llama.block_count` is missing");
    // An untied head is picked up and checked.
    let mut w = tiny_gguf();
    w.tensor("output.weight", &[tiny_vocab_size(), DIM], 0, f32_bytes(&vec![0.0; tiny_vocab_size() * DIM]));
    let g = Gguf::from_bytes("untied.gguf", &w.to_bytes()).unwrap();
    assert!(!g.config().unwrap().tied_embeddings);
}

#[test]
fn open_names_missing_files() {
    let e = Gguf::open("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
    assert!(e.to_string().starts_with("/nonexistent/model.gguf: "), "{e}");
    // And a real file round-trips through the mmap path.
    let d = temp_dir("gguf");
    let p = d.join("tiny.gguf");
    std::fs::write(&p, tiny_gguf().to_bytes()).unwrap();
    let g = Gguf::open(&p).unwrap();
    assert_eq!(g.config().unwrap().n_layers, LAYERS);
    assert_eq!(g.path(), p.as_path());
    std::fs::write(&p, b"").unwrap();
    let e = Gguf::open(&p).unwrap_err().to_string();
    assert!(e.contains("tiny.gguf: truncated: the GGUF header"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}
