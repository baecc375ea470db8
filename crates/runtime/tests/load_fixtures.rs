//! Files on disk: the fuzz corpus (seeds and the inputs fuzzing found) fed to both loaders, and
//! hand-made broken files opened through the real mmap path, with their exact messages.
//!
//! Regenerate the seeds and broken files (after changing the builders in `common`):
//! `cargo test -p ulm-runtime --test load_fixtures -- --ignored write_fixtures`

mod common;

use std::path::PathBuf;

use common::*;
use ulm_runtime::load::gguf::Gguf;
use ulm_runtime::load::hf::HfModel;

fn corpus_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["gguf", "hf"] {
        let dir = data_dir().join("fuzz_corpus").join(sub);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    files
}

#[test]
fn every_corpus_file_loads_or_fails_naming_the_file() {
    let files = corpus_files();
    assert!(files.len() >= 5, "the corpus went missing: {files:?}");
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(total < 200_000, "keep the corpus under 200 KB (it is {total} bytes)");
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let name = f.display().to_string();
        exercise::gguf(&name, &data);
        exercise::hf(&name, &data);
        // The mmap path too.
        if let Err(e) = Gguf::open(f) {
            assert!(e.to_string().starts_with(&format!("{name}: ")), "{e}");
        }
    }
}

#[test]
fn seeds_are_valid_models() {
    let dir = data_dir().join("fuzz_corpus");
    let g = Gguf::open(dir.join("gguf/seed-micro.gguf-fixture")).unwrap();
    assert_eq!(g.config().unwrap().n_layers, 1);
    ulm_runtime::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let data = std::fs::read(dir.join("hf/seed-micro")).unwrap();
    let (config, weights) = exercise::split_hf(&data);
    let m = HfModel::from_bytes("seed", config, weights).unwrap();
    let c = m.config().unwrap();
    assert!(!c.tied_embeddings);
    assert_eq!(c.ffn_dim, 16);
}

fn broken(name: &str) -> PathBuf {
    data_dir().join("broken").join(name)
}

fn gguf_err(name: &str) -> (String, String) {
    let p = broken(name);
    let e = Gguf::open(&p).and_then(|g| g.config()).unwrap_err();
    (p.display().to_string(), e.to_string())
}

#[test]
fn broken_gguf_files_have_exact_messages() {
    let (p, e) = gguf_err("truncated.gguf-fixture");
    let t = Gguf::from_bytes("", &micro_gguf().to_bytes()).unwrap().tensor_info("blk.0.ffn_up.weight").unwrap().range.clone();
    assert_eq!(
        e,
        format!("{p}: truncated: tensor `blk.0.ffn_up.weight` needs bytes {}..{} but the file has {} (re-download or re-export it)", t.start, t.end, t.start + 7)
    );
    let (p, e) = gguf_err("not_gguf.gguf-fixture");
    assert_eq!(e, format!("{p}: not a GGUF file (starts with [7b, 22, 64, 69], expected the magic `GGUF`)"));
    let (p, e) = gguf_err("huge_string.gguf-fixture");
    assert_eq!(e, format!("{p}: truncated: metadata key #0 needs bytes 32..18446744073709551615 but the file has 48 (re-download or re-export it)"));
    let (p, e) = gguf_err("wrong_shape.gguf-fixture");
    assert_eq!(e, format!("{p}: tensor `blk.0.attn_k.weight` has shape [32, 32], expected [16, 32]"));
    let (p, e) = gguf_err("q4_k.gguf-fixture");
    assert_eq!(e, format!("{p}: tensor `blk.0.ffn_down.weight` has type Q4_K, supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1"));
    let (p, e) = gguf_err("gemma3.gguf-fixture");
    assert_eq!(e, format!("{p}: config: architecture `gemma3` is not supported; ulm runs `llama`-architecture GGUF files (Llama, SmolLM, Swen/MiniMind)"));
}

#[test]
fn broken_hf_dirs_have_exact_messages() {
    let d = broken("hf_truncated");
    let w = d.join("model.safetensors");
    let e = HfModel::open(&d).unwrap_err().to_string();
    let len = w.metadata().unwrap().len();
    assert!(e.starts_with(&format!("{}: truncated: tensor `", w.display())), "{e}");
    assert!(e.ends_with(&format!("but the file has {len} (re-download or re-export it)")), "{e}");
    let d = broken("hf_bad_config");
    let e = HfModel::open(d.join("config.json")).unwrap_err().to_string();
    assert_eq!(e, format!("{}: config: not a valid config.json: expected `,` or `}}` at line 1 column 11", d.join("config.json").display()));
    let d = broken("hf_wrong_dtype");
    let e = HfModel::open(&d).and_then(|m| m.config()).unwrap_err().to_string();
    assert_eq!(e, format!("{}: tensor `model.layers.0.mlp.up_proj.weight` has type I8, supported: F32, F16, BF16", d.join("model.safetensors").display()));
}

/// Writes the seeds and the broken files. Ignored: run it by hand after changing a builder.
#[test]
#[ignore]
fn write_fixtures() {
    let corpus = data_dir().join("fuzz_corpus");
    let (gdir, hdir, bdir) = (corpus.join("gguf"), corpus.join("hf"), data_dir().join("broken"));
    for d in [&gdir, &hdir, &bdir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let write = |p: PathBuf, b: &[u8]| std::fs::write(p, b).unwrap();
    // Seeds: valid files and near misses.
    let micro = micro_gguf().to_bytes();
    write(gdir.join("seed-micro.gguf-fixture"), &micro);
    let mut v2 = micro_gguf();
    v2.version = 2;
    v2.alignment = 64;
    v2.kv("general.alignment", G::U32(64));
    write(gdir.join("seed-v2-align64.gguf-fixture"), &v2.to_bytes());
    let mut types = GgufWriter::new();
    for (i, (t, b)) in [(0u32, vec![1u8]), (3, vec![1, 2]), (10, vec![9; 8]), (12, vec![0; 8])].into_iter().enumerate() {
        types.kv(&format!("k{i}"), G::Raw(t, b));
    }
    types.kv("s", G::Strs(vec!["x".into(), "yz".into()]));
    write(gdir.join("seed-metadata.gguf-fixture"), &types.to_bytes());
    let (config, weights) = micro_hf();
    write(hdir.join("seed-micro"), &hf_fuzz_input(config.as_bytes(), &weights));
    let llama = r#"{"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":8,"tie_word_embeddings":true,"rope_scaling":null}"#;
    write(hdir.join("seed-llama-names"), &hf_fuzz_input(llama.as_bytes(), &weights));

    // Broken files.
    let t = Gguf::from_bytes("", &micro).unwrap().tensor_info("blk.0.ffn_up.weight").unwrap().range.clone();
    write(bdir.join("truncated.gguf-fixture"), &micro[..t.start + 7]);
    write(bdir.join("not_gguf.gguf-fixture"), br#"{"dim": 8}"#);
    let mut huge = b"GGUF".to_vec();
    huge.extend(3u32.to_le_bytes());
    huge.extend(0u64.to_le_bytes());
    huge.extend(1u64.to_le_bytes());
    huge.extend(u64::MAX.to_le_bytes());
    huge.extend([b'k'; 16]);
    write(bdir.join("huge_string.gguf-fixture"), &huge);
    let mut w = micro_gguf();
    let k = w.tensors.iter_mut().find(|t| t.0 == "blk.0.attn_k.weight").unwrap();
    k.1 = vec![32, 32];
    k.3 = q4_1_bytes(&vec![0.5; 32 * 32]);
    write(bdir.join("wrong_shape.gguf-fixture"), &w.to_bytes());
    let mut w = micro_gguf();
    let d = w.tensors.iter_mut().find(|t| t.0 == "blk.0.ffn_down.weight").unwrap();
    d.1 = vec![1, 1024]; // keeps the file small; the type is reported before the shape
    d.2 = 12;
    d.3 = vec![0; 4 * 144];
    write(bdir.join("q4_k.gguf-fixture"), &w.to_bytes());
    let mut w = micro_gguf();
    w.kv("general.architecture", G::Str("gemma3".into()));
    write(bdir.join("gemma3.gguf-fixture"), &w.to_bytes());
    let hf_dir = |name: &str, config: &str, weights: &[u8]| {
        let d = bdir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        write(d.join("config.json"), config.as_bytes());
        write(d.join("model.safetensors"), weights);
    };
    hf_dir("hf_truncated", &config, &weights[..weights.len() - 100]);
    hf_dir("hf_bad_config", r#"{"dim": 8 "n_layers": 1}"#, &weights);
    let mut t = safetensors::SafeTensors::deserialize(&weights)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.dtype(), v.data().to_vec()))
        .collect::<Vec<_>>();
    let up = t.iter_mut().find(|x| x.0 == "model.layers.0.mlp.up_proj.weight").unwrap();
    up.2 = safetensors::Dtype::I8;
    up.3.truncate(up.3.len() / 2);
    hf_dir("hf_wrong_dtype", &config, &safetensors_bytes(&t));
}
