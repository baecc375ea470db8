//! Parity of ulm-runtime with an independent implementation: candle-transformers' llama on the
//! same seeded random weights. The crate has no code of its own; run its tests with
//! `cargo test -p ulm-parity` (they live in `tests/candle_llama.rs`).
//!
//! It is a separate crate so that candle stays a test-only dependency of the workspace and never
//! a dependency of `ulm-runtime` (`scripts/test.sh` checks that with `cargo tree`).
