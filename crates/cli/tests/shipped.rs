//! Every model shipped in `models/` loads through the CLI's names and writes an opener: a real
//! check of the committed weights (one file or shards), their config, tokenizer and chat template.

use std::path::PathBuf;
use std::process::Command;

fn shipped() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_shipped_model_writes_an_eight_word_opener() {
    let models = shipped();
    assert!(!models.is_empty(), "models/ holds no shipped model");
    for m in models {
        let name = m.file_name().unwrap().to_str().unwrap().to_string();
        for prec in ["int8", "f32"] {
            // By name, as a user types it (resolved from the repository's models/ folder).
            let out = Command::new(env!("CARGO_BIN_EXE_ulm"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["generate", "--model", &name, "--precision", prec, "--words", "8", "--seed", "7", "What is a volcano?"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name} {prec}: {err}");
            let text = String::from_utf8(out.stdout).unwrap();
            let words = text.split_whitespace().count();
            assert!((1..=8).contains(&words), "{name} {prec}: {words} words: {text:?}");
            assert!(!text.contains("<|im_"), "{name} {prec}: special tokens in the opener: {text:?}");
            assert!(err.contains("first token"), "{name} {prec}: {err}");
        }
    }
}
