//! Makes the tiny golden model (Hugging Face layout, < 1 MB) and its expected greedy output.
//!
//! ```text
//! cargo run --release -p ulm-runtime --example make_golden -- crates/runtime/tests/data/golden
//! ```
//! Seeded, so it always writes the same files. The weights are random but scaled so that the
//! greedy path has clear margins (int8 must not flip a token); the byte-level tokenizer has the
//! 256 byte symbols and the three ChatML specials, no merges.

use std::collections::BTreeMap;
use std::path::Path;

use ulm_runtime::generate::{GenerateOptions, LoadedModel, generate};
use ulm_runtime::sampler::Sampling;
use ulm_runtime::{Config, Model, Precision, RopeStyle, Session};

/// GPT-2's byte → printable character table.
fn byte_chars() -> Vec<char> {
    let mut keep: Vec<u32> = ('!' as u32..='~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut extra = 0;
    let mut table = vec!['\0'; 256];
    for b in 0..256u32 {
        if keep.contains(&b) {
            table[b as usize] = char::from_u32(b).unwrap();
        } else {
            table[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
        }
    }
    keep.clear();
    table
}

fn tokenizer_json() -> serde_json::Value {
    let mut vocab = BTreeMap::new();
    for (i, s) in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().enumerate() {
        vocab.insert(s.to_string(), i);
    }
    for (b, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), 3 + b);
    }
    let added: Vec<_> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []}
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "crates/runtime/tests/data/golden".into());
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let config = Config {
        dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn_dim: 192,
        vocab_size: 259,
        max_seq_len: 256,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_style: RopeStyle::Half,
        tied_embeddings: true,
    };
    // Large weights give peaked logits: clear greedy margins that survive int8.
    let model = Model::random(config.clone(), 20261124);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut rng = ulm_runtime::sampler::Rng::new(7);
    for (name, shape, data) in model.tensors_f32() {
        let gain = if name.contains("norm") { 1.0 } else if name.contains("embed") { 40.0 } else { 8.0 };
        let mut data: Vec<f32> = if name.contains("norm") { data.iter().map(|_| 1.0 + rng.normal(0.1)).collect() } else { data.iter().map(|v| v * gain).collect() };
        if name.contains("embed") {
            // Tied head: rows with larger norms win argmax more often. Favour printable ASCII so
            // the golden text is readable, and keep the specials (end of turn) rare.
            for (t, row) in data.chunks_mut(config.dim).enumerate() {
                let printable = (3 + 0x20..3 + 0x7f).contains(&t);
                if !printable {
                    row.iter_mut().for_each(|v| *v *= 0.25);
                }
            }
        }
        tensors.push((name, shape, data.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors"))?;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim, "num_hidden_layers": config.n_layers, "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads, "head_dim": config.head_dim, "vocab_size": config.vocab_size,
        "rms_norm_eps": config.norm_eps, "rope_theta": config.rope_theta, "max_position_embeddings": config.max_seq_len,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
    });
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&cfg)? + "\n")?;
    std::fs::write(out.join("tokenizer.json"), serde_json::to_string(&tokenizer_json())? + "\n")?;
    let tcfg = serde_json::json!({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "chat_template": "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    });
    std::fs::write(out.join("tokenizer_config.json"), serde_json::to_string_pretty(&tcfg)? + "\n")?;

    // Expected greedy output of the f32 path, with the smallest top-1/top-2 margin on the way.
    let lm = LoadedModel::open(out, Precision::F32, None)?;
    let mut cases = Vec::new();
    for prompt in ["Hello", "What is the capital of France?", "Ça va? 👍"] {
        let ids = lm.chat_prompt(prompt)?;
        let mut s = Session::new(&lm.model);
        let opts = GenerateOptions { max_tokens: 24, words: None, sampling: Sampling::greedy(), copy: None, candidates: None };
        let g = generate(&lm, &mut s, &ids, &opts, &mut |_| true)?;
        let mut s2 = Session::new(&lm.model);
        let mut seq = ids.clone();
        let mut min_margin = f32::INFINITY;
        for &t in &g.tokens {
            let at = s2.pos();
            let mut v = lm.model.forward(&mut s2, &seq[at..])?.to_vec();
            v.sort_by(|a, b| b.total_cmp(a));
            min_margin = min_margin.min(v[0] - v[1]);
            seq.push(t);
        }
        println!("{prompt:?}: {} tokens, min margin {min_margin:.3}, text {:?}", g.tokens.len(), g.text);
        cases.push(serde_json::json!({"prompt": prompt, "prompt_ids": ids, "tokens": g.tokens, "text": g.text, "min_margin": min_margin}));
    }
    std::fs::write(out.join("expected.json"), serde_json::to_string_pretty(&serde_json::json!({"cases": cases}))? + "\n")?;
    Ok(())
}
