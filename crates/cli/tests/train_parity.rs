//! The seam between PyTorch and Rust: a model built by train/model.py and exported by
//! train/export.py gives the same f32 logits in ulm-runtime (within `TOL`) and the same greedy
//! tokens. Needs train/.venv (scripts/setup-train.sh; scripts/test.sh runs it first).

use std::path::PathBuf;
use std::process::Command;

use ulm_runtime::generate::LoadedModel;
use ulm_runtime::sampler::argmax;
use ulm_runtime::{Precision, Session};

/// Max |PyTorch − Rust| per logit, relative to 1 + |logit|.
const TOL: f32 = 1e-4;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const MAKE: &str = r#"
import json, os, shutil, sys, torch
repo, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(repo, "train"))
from model import ModelConfig, Transformer
from export import hf_state_dict, hf_config, dump_logits, save_weights
from safetensors.torch import save_file
torch.manual_seed(0)
cfg = ModelConfig.preset("tiny")
m = Transformer(cfg)
with torch.no_grad():  # non-trivial norms and peaked logits, so the check can fail
    for n, p in m.named_parameters():
        p.add_(torch.randn_like(p) * 0.1) if "norm" in n else p.mul_(8.0)
os.makedirs(out, exist_ok=True)
save_file({k: v.contiguous() for k, v in hf_state_dict(m).items()}, os.path.join(out, "model.safetensors"))
json.dump(hf_config(cfg, "float32"), open(os.path.join(out, "config.json"), "w"))
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(repo, "data/tokenizer", f), out)
# The same weights as shards of at most 1 MB + index, as export.py writes models above its limit.
sharded = os.path.join(out, "sharded")
os.makedirs(sharded)
save_weights({k: v.contiguous() for k, v in hf_state_dict(m).items()}, sharded, 1_000_000)
for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(out, f), sharded)
ids = [1, 872, 25, 300, 2, 1, 77, 4000, 12000, 9]
json.dump(dump_logits(m, ids, 12), open(os.path.join(out, "logits.json"), "w"))
"#;

#[test]
fn pytorch_export_and_runtime_agree() {
    let py = repo().join("train/.venv/bin/python");
    if !py.exists() {
        assert!(std::env::var_os("CI").is_none(), "train/.venv missing in CI: scripts/test.sh runs scripts/setup-train.sh first");
        eprintln!("SKIPPED: train/.venv missing; run scripts/setup-train.sh");
        return;
    }
    let out = std::env::temp_dir().join(format!("ulm-train-parity-{}", std::process::id()));
    let st = Command::new(&py).args(["-c", MAKE, repo().to_str().unwrap(), out.to_str().unwrap()]).status().unwrap();
    assert!(st.success(), "python side failed");
    let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("logits.json")).unwrap()).unwrap();
    let ids: Vec<u32> = want["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let lm = LoadedModel::open(&out, Precision::F32, None).unwrap();
    let mut s = Session::new(&lm.model);
    let mut worst = 0.0f32;
    lm.model
        .forward_each(&mut s, &ids, &mut |i, logits| {
            let row = want["logits"][i].as_array().unwrap();
            assert_eq!(row.len(), logits.len());
            for (a, b) in logits.iter().zip(row) {
                let b = b.as_f64().unwrap() as f32;
                let d = (a - b).abs() / (1.0 + b.abs());
                worst = worst.max(d);
                assert!(d <= TOL, "position {i}: rust {a} vs torch {b}");
            }
        })
        .unwrap();
    eprintln!("largest relative logit difference: {worst:.2e}");
    // Greedy tokens, with the KV cache on the Rust side and full recomputation on the Python side.
    let greedy: Vec<u32> = want["greedy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let mut tok = argmax(s.logits());
    let mut ours = vec![tok];
    for _ in 1..greedy.len() {
        tok = argmax(lm.model.forward(&mut s, &[tok]).unwrap());
        ours.push(tok);
    }
    assert_eq!(ours, greedy);
    // The sharded export loads to the very same model.
    let shards = std::fs::read_dir(out.join("sharded")).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".safetensors")).count();
    assert!(shards >= 2, "{shards} shards");
    let sharded = LoadedModel::open(&out.join("sharded"), Precision::F32, None).unwrap();
    let mut s2 = Session::new(&sharded.model);
    assert_eq!(sharded.model.forward(&mut s2, &ids).unwrap(), lm.model.forward(&mut Session::new(&lm.model), &ids).unwrap());
    std::fs::remove_dir_all(&out).ok();
}
