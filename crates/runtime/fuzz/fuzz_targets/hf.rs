//! u16 LE config length + config.json + safetensors → HF loader, config, every tensor.
#![no_main]

#[path = "../../tests/common/exercise.rs"]
mod exercise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| exercise::hf("fuzzdir", data));
