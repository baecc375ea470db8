//! What the fuzz targets and the corpus regression test do with one input: load it, use
//! everything a caller could use, and check that every error names the file. Shared by
//! `fuzz/fuzz_targets/*.rs` (through `#[path]`) and `tests/load_fixtures.rs`.
#![allow(dead_code)]

use ulm_runtime::load::gguf::Gguf;
use ulm_runtime::load::hf::HfModel;
use ulm_runtime::load::TensorSource;
use ulm_runtime::tokenizer::{StreamDecoder, Tokenizer};

fn names(name: &str, e: &ulm_runtime::Error) {
    let msg = e.to_string();
    assert!(msg.contains(name), "error does not name `{name}`: {msg}");
}

/// Treats `data` as a GGUF file called `name`.
pub fn gguf(name: &str, data: &[u8]) {
    let g = match Gguf::from_bytes(name, data) {
        Ok(g) => g,
        Err(e) => return names(name, &e),
    };
    if let Err(e) = g.config() {
        names(name, &e);
    }
    for info in g.tensor_infos() {
        match g.tensor(&info.name) {
            Ok(t) => assert_eq!(t.data.len(), t.dtype.bytes_for(t.shape.iter().product()), "{}", info.name),
            Err(e) => names(name, &e),
        }
    }
    let tok = match Tokenizer::from_gguf(&g) {
        Ok(t) => t,
        Err(e) => return names(name, &e),
    };
    for parse_special in [true, false] {
        let Ok(ids) = tok.encode("Hi <|im_start|>ab 12 \u{1F600}\u{4}", parse_special) else { continue };
        let _ = tok.decode(&ids);
        let mut d = StreamDecoder::new(&tok);
        for id in ids {
            let _ = d.push(id);
        }
        let _ = d.flush();
    }
    for id in [0, 1, 2, u32::MAX] {
        let _ = tok.token_piece(id);
        let _ = tok.is_end_of_turn(id);
    }
}

/// Splits an `hf` fuzz input: u16 LE length of config.json, config.json, safetensors image.
pub fn split_hf(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (&[], data);
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    (&data[2..2 + n], &data[2 + n..])
}

/// Treats `data` as an `hf` fuzz input standing for the model directory `name`.
pub fn hf(name: &str, data: &[u8]) {
    let (config, weights) = split_hf(data);
    let m = match HfModel::from_bytes(name, config, weights) {
        Ok(m) => m,
        Err(e) => return names(name, &e),
    };
    if let Err(e) = m.config() {
        names(name, &e);
    }
    for tname in m.tensor_infos().keys() {
        match m.tensor(tname) {
            Ok(t) => assert_eq!(t.data.len(), t.dtype.bytes_for(t.shape.iter().product()), "{tname}"),
            Err(e) => names(name, &e),
        }
    }
}
