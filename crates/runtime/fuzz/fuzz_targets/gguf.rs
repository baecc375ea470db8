//! GGUF bytes → parser, config, every tensor, the tokenizer built from the metadata.
#![no_main]

#[path = "../../tests/common/exercise.rs"]
mod exercise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| exercise::gguf("fuzz.gguf", data));
