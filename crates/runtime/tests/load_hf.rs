//! Hugging Face layout loader: config names of both families, paths, and broken files.

mod common;

use common::*;
use ulm_runtime::load::hf::{HfConfig, HfModel};
use ulm_runtime::load::{DType, Part, TensorSource};
use ulm_runtime::{Config, Error, RopeStyle};

fn tiny_dir() -> std::path::PathBuf {
    let d = temp_dir("hf");
    write_tiny_hf(&d);
    d
}

fn from_parts(config: &str, tensors: &[(String, Vec<usize>, safetensors::Dtype, Vec<u8>)]) -> ulm_runtime::Result<Config> {
    HfModel::from_bytes("m", config.as_bytes(), &safetensors_bytes(tensors))?.config()
}

#[test]
fn tiny_dir_opens_by_dir_config_or_weights() {
    let d = tiny_dir();
    for p in [d.clone(), d.join("config.json"), d.join("model.safetensors")] {
        let m = HfModel::open(&p).unwrap();
        let c = m.config().unwrap();
        assert_eq!((c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim), (DIM, LAYERS, HEADS, KV_HEADS, 8, FFN));
        assert_eq!(c.vocab_size, tiny_vocab_size());
        assert_eq!((c.max_seq_len, c.rope_theta, c.norm_eps), (512, 1e6, 1e-5));
        assert_eq!(c.rope_style, RopeStyle::Half);
        assert!(c.tied_embeddings);
        assert_eq!(m.tokenizer_json(), Some(d.join("tokenizer.json")));
        assert_eq!(m.tokenizer_config_json(), Some(d.join("tokenizer_config.json")));
    }
    let m = HfModel::open(&d).unwrap();
    let q = m.tensor(&Part::Wq.hf_name(1)).unwrap();
    assert_eq!((q.dtype, q.shape.clone(), q.data.len()), (DType::F16, vec![DIM, DIM], DIM * DIM * 2));
    assert_eq!(m.tensor(&Part::Up.hf_name(0)).unwrap().dtype, DType::BF16);
    let norm = m.tensor(&Part::FinalNorm.hf_name(0)).unwrap();
    assert_eq!(norm.data, &f32_bytes(&[1.0; DIM])[..]);
    // Exactly the bytes written.
    let want = tiny_hf_tensors();
    let (_, _, _, bytes) = want.iter().find(|t| t.0 == "model.layers.1.mlp.down_proj.weight").unwrap();
    assert_eq!(m.tensor("model.layers.1.mlp.down_proj.weight").unwrap().data, &bytes[..]);
    assert_eq!(m.path(), d.join("model.safetensors"));
    assert_eq!(m.part_name(Part::Wk, 1), "model.layers.1.self_attn.k_proj.weight");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn minimind_names_give_the_same_config() {
    let swen = serde_json::json!({
        "dim": DIM, "n_layers": LAYERS, "n_heads": HEADS, "n_kv_heads": KV_HEADS,
        "vocab_size": tiny_vocab_size(), "hidden_dim": FFN, "norm_eps": 1e-5, "max_seq_len": 512,
        "rope_theta": 1e6, "dropout": 0.0, "flash_attn": true
    });
    let a = from_parts(&swen.to_string(), &tiny_hf_tensors()).unwrap();
    let b = from_parts(&tiny_config_json(), &tiny_hf_tensors()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn config_defaults_and_the_ffn_rule() {
    // The paper's 30M shape in MiniMind names without FFN width, theta or eps.
    let hf: HfConfig = serde_json::from_str(r#"{"dim": 512, "n_layers": 8, "n_heads": 8, "n_kv_heads": 2, "vocab_size": 12288}"#).unwrap();
    let c = hf.to_config(false, None).unwrap();
    assert_eq!(c, Config { max_seq_len: 2048, ..Config::micro_30m() });
    // multiple_of other than 64.
    let hf: HfConfig = serde_json::from_str(r#"{"dim": 256, "n_layers": 1, "n_heads": 8, "multiple_of": 32, "vocab_size": 10}"#).unwrap();
    assert_eq!(hf.to_config(false, None).unwrap().ffn_dim, 704);
    // LlamaConfig names get LlamaConfig defaults; an lm_head means untied unless told.
    let hf: HfConfig = serde_json::from_str(r#"{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "head_dim": null}"#).unwrap();
    let c = hf.to_config(true, Some(99)).unwrap();
    assert_eq!((c.norm_eps, c.rope_theta, c.vocab_size, c.n_kv_heads, c.head_dim, c.tied_embeddings), (1e-6, 1e4, 99, 4, 16, false));
    assert_eq!(c.max_seq_len, 2048);
    let hf: HfConfig = serde_json::from_str(r#"{"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 131072}"#).unwrap();
    assert_eq!(hf.to_config(false, Some(5)).unwrap().max_seq_len, 4096);
}

#[test]
fn unsupported_configs_say_why() {
    let bad = |json: &str| {
        let hf: HfConfig = serde_json::from_str(json).unwrap();
        hf.to_config(false, Some(10)).unwrap_err()
    };
    assert_eq!(bad(r#"{"model_type": "qwen2", "hidden_size": 8}"#), "model_type `qwen2` is not supported; ulm runs Llama-architecture models (llama, minimind, mistral)");
    assert_eq!(bad(r#"{"hidden_act": "gelu"}"#), "hidden_act `gelu` is not supported; ulm runs SwiGLU (`silu`)");
    assert_eq!(bad(r#"{"rope_scaling": {"type": "linear", "factor": 2.0}}"#), "rope_scaling is set; ulm runs plain RoPE (set it to null)");
    assert_eq!(bad(r#"{"hidden_size": 8, "num_attention_heads": 2}"#), "num_hidden_layers (or n_layers) is missing");
    assert_eq!(bad(r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 3, "head_dim": 3}"#), "head_dim (3) must be even for RoPE");
}

#[test]
fn tied_checkpoint_with_only_lm_head_uses_it_as_embedding() {
    let mut t = tiny_hf_tensors();
    for x in t.iter_mut().filter(|x| x.0 == "model.embed_tokens.weight") {
        x.0 = "lm_head.weight".into();
    }
    let cfg = tiny_config_json();
    let m = HfModel::from_bytes("m", cfg.as_bytes(), &safetensors_bytes(&t)).unwrap();
    assert!(m.config().unwrap().tied_embeddings);
    assert_eq!(m.tensor("model.embed_tokens.weight").unwrap().shape, vec![tiny_vocab_size(), DIM]);
}

#[test]
fn mismatches_name_file_tensor_and_shapes() {
    let mut t = tiny_hf_tensors();
    let x = t.iter_mut().find(|x| x.0 == "model.layers.1.mlp.down_proj.weight").unwrap();
    x.1 = vec![FFN, DIM];
    assert_eq!(
        from_parts(&tiny_config_json(), &t).unwrap_err().to_string(),
        "m/model.safetensors: tensor `model.layers.1.mlp.down_proj.weight` has shape [64, 32], expected [32, 64]"
    );
    let mut t = tiny_hf_tensors();
    let x = t.iter_mut().find(|x| x.0 == "model.layers.0.self_attn.q_proj.weight").unwrap();
    x.2 = safetensors::Dtype::I8;
    x.3.truncate(DIM * DIM);
    let e = from_parts(&tiny_config_json(), &t).unwrap_err();
    assert!(matches!(e, Error::DType { .. }));
    assert_eq!(e.to_string(), "m/model.safetensors: tensor `model.layers.0.self_attn.q_proj.weight` has type I8, supported: F32, F16, BF16");
    let mut t = tiny_hf_tensors();
    t.retain(|x| x.0 != "model.norm.weight");
    assert_eq!(
        from_parts(&tiny_config_json(), &t).unwrap_err().to_string(),
        "m/model.safetensors: tensor `model.norm.weight` is missing (is this a Llama-architecture checkpoint?)"
    );
    let untied = tiny_config_json().replace("\"tie_word_embeddings\":true", "\"tie_word_embeddings\":false");
    assert_eq!(
        from_parts(&untied, &tiny_hf_tensors()).unwrap_err().to_string(),
        "m/model.safetensors: tensor `lm_head.weight` is missing (is this a Llama-architecture checkpoint?)"
    );
    let wrong_vocab = tiny_config_json().replace(&format!("\"vocab_size\":{}", tiny_vocab_size()), "\"vocab_size\":300");
    assert_eq!(
        from_parts(&wrong_vocab, &tiny_hf_tensors()).unwrap_err().to_string(),
        format!("m/model.safetensors: tensor `model.embed_tokens.weight` has shape [{}, 32], expected [300, 32]", tiny_vocab_size())
    );
    let mut t = tiny_hf_tensors();
    t.push(("model.layers.0.self_attn.q_proj.bias".into(), vec![DIM], safetensors::Dtype::F32, f32_bytes(&[0.0; DIM])));
    assert_eq!(
        from_parts(&tiny_config_json(), &t).unwrap_err().to_string(),
        "m/model.safetensors: config: tensor `model.layers.0.self_attn.q_proj.bias` is a bias; ulm runs bias-free Llama blocks"
    );
}

#[test]
fn broken_safetensors_fail_with_messages() {
    let cfg = tiny_config_json();
    let good = safetensors_bytes(&tiny_hf_tensors());
    let open = |bytes: &[u8]| HfModel::from_bytes("m", cfg.as_bytes(), bytes).unwrap_err();
    // Truncated data: the message names the first tensor that is cut.
    let m = HfModel::from_bytes("m", cfg.as_bytes(), &good).unwrap();
    let (last, info) = m.tensor_infos().iter().max_by_key(|(_, t)| t.range.end).unwrap();
    let e = open(&good[..good.len() - 10]);
    assert!(matches!(e, Error::Truncated { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "m/model.safetensors: truncated: tensor `{last}` needs bytes {}..{} but the file has {} (re-download or re-export it)",
            info.range.start,
            info.range.end,
            good.len() - 10
        )
    );
    // Truncated header.
    let e = open(&good[..100]).to_string();
    assert!(e.starts_with("m/model.safetensors: truncated: the safetensors header needs bytes 8.."), "{e}");
    assert_eq!(open(&good[..5]).to_string(), "m/model.safetensors: truncated: the safetensors header length needs bytes 0..8 but the file has 5 (re-download or re-export it)");
    // Absurd header length.
    let mut b = good.clone();
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(open(&b).to_string(), "m/model.safetensors: safetensors header claims 18446744073709551615 bytes (limit 104857600); the file is corrupted or not safetensors");
    // Not JSON.
    let mut b = good.clone();
    b[8] = b'[';
    assert!(open(&b).to_string().starts_with("m/model.safetensors: safetensors header is not a JSON object"));
    // Offsets that disagree with the dtype and shape.
    let bad = br#"{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}"#;
    let mut b = (bad.len() as u64).to_le_bytes().to_vec();
    b.extend(bad);
    b.extend([0u8; 16]);
    assert_eq!(open(&b).to_string(), "m/model.safetensors: tensor `w`: F32 × [2, 2] needs 16 bytes but data_offsets [0, 12] hold 12");
    let bad = br#"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 0]}}"#;
    let mut b = (bad.len() as u64).to_le_bytes().to_vec();
    b.extend(bad);
    assert_eq!(open(&b).to_string(), "m/model.safetensors: tensor `w`: shape [4294967296, 4294967296, 16] overflows");
    // A bad config.json names config.json.
    let e = HfModel::from_bytes("m", b"{\"dim\": \"wide\"}", &good).unwrap_err().to_string();
    assert!(e.starts_with("m/config.json: config: not a valid config.json: invalid type: string \"wide\""), "{e}");
}

#[test]
fn missing_files_are_named() {
    let d = temp_dir("hf-missing");
    let e = HfModel::open(&d).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", d.join("config.json").display())), "{e}");
    std::fs::write(d.join("config.json"), tiny_config_json()).unwrap();
    let e = HfModel::open(&d).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", d.join("model.safetensors").display())), "{e}");
    // With a shard index instead, the index is what is read (and named).
    std::fs::write(d.join("model.safetensors.index.json"), "{}").unwrap();
    let e = HfModel::open(&d).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", d.join("model.safetensors.index.json").display())) && e.contains("weight_map"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}

/// Writes the tiny model as two shards + `model.safetensors.index.json` (no `model.safetensors`).
fn write_sharded(d: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    write_tiny_hf(d);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let tensors = tiny_hf_tensors();
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let mut map = serde_json::Map::new();
    for (part, name) in [(a, "model-00001-of-00002.safetensors"), (b, "model-00002-of-00002.safetensors")] {
        std::fs::write(d.join(name), safetensors_bytes(part)).unwrap();
        for t in part {
            map.insert(t.0.clone(), name.into());
        }
    }
    write_index(d, &map);
    map
}

fn write_index(d: &std::path::Path, map: &serde_json::Map<String, serde_json::Value>) {
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_gives_the_same_tensors_and_logits() {
    use ulm_runtime::{Model, Precision, Session};
    let single = tiny_dir();
    let sharded = temp_dir("hf-shards");
    write_sharded(&sharded);
    let one = HfModel::open(&single).unwrap();
    for p in [sharded.clone(), sharded.join("config.json"), sharded.join("model.safetensors.index.json")] {
        let two = HfModel::open(&p).unwrap();
        assert_eq!(two.path(), sharded.join("model.safetensors.index.json"));
        assert_eq!(two.weight_files().count(), 2);
        assert_eq!(two.config().unwrap(), one.config().unwrap());
        for name in one.tensor_infos().keys() {
            assert_eq!(two.tensor(name).unwrap().data, one.tensor(name).unwrap().data, "{name}");
        }
    }
    let two = HfModel::open(&sharded).unwrap();
    let logits = |m: &HfModel| {
        let model = Model::from_source(m, m.config().unwrap(), Precision::F32, false).unwrap();
        let mut s = Session::new(&model);
        model.forward(&mut s, &[1, 5, 9, 3]).unwrap().to_vec()
    };
    let (a, b) = (logits(&one), logits(&two));
    assert!(a.iter().any(|x| *x != 0.0));
    assert_eq!(a, b);
    std::fs::remove_dir_all(single).unwrap();
    std::fs::remove_dir_all(sharded).unwrap();
}

#[test]
fn broken_shards_name_the_file_and_the_tensor() {
    let d = temp_dir("hf-shards-bad");
    let mut map = write_sharded(&d);
    let index = d.join("model.safetensors.index.json");
    // A tensor the index puts in the wrong shard.
    let moved = "model.norm.weight";
    let was = map[moved].clone();
    let other = if was == "model-00001-of-00002.safetensors" { "model-00002-of-00002.safetensors" } else { "model-00001-of-00002.safetensors" };
    map.insert(moved.into(), other.into());
    write_index(&d, &map);
    let e = HfModel::open(&d).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", index.display())) && e.contains(moved) && e.contains(other), "{e}");
    map.insert(moved.into(), was);
    // A shard outside the model directory.
    map.insert(moved.into(), "../model-00001-of-00002.safetensors".into());
    write_index(&d, &map);
    let e = HfModel::open(&d).unwrap_err().to_string();
    assert!(e.contains("not a file name beside the index"), "{e}");
    // A missing shard file.
    write_sharded(&d);
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    let e = HfModel::open(&d).unwrap_err().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
    // A truncated shard names the shard and the tensor the cut falls in.
    write_sharded(&d);
    let p = d.join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let e = HfModel::open(&d).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", p.display())) && e.contains("tensor `"), "{e}");
    // Not an index at all.
    std::fs::write(&index, "[1, 2]").unwrap();
    let e = HfModel::open(&d).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", index.display())) && e.contains("not a shard index"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}
