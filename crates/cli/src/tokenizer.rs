//! `ulm tokenizer`: train ulm's byte-level BPE tokenizer on the train split of every source and
//! the distilled pairs.
//!
//! ```text
//! ulm tokenizer                            # data/tokenizer/{tokenizer.json, tokenizer_config.json}
//! ulm tokenizer --out /tmp/tok --vocab 4096
//! ```
//! Specials `<|endoftext|>` = 0, `<|im_start|>` = 1, `<|im_end|>` = 2; the same inputs give the
//! same file. Prints the compression on held-out text (characters per token).

use std::path::PathBuf;

use anyhow::Result;
use ulm_data::build::{Settings, tokenizer_texts};
use ulm_data::render::Stage;
use ulm_data::{Body, Split, tokenizer};

use crate::data::{Inputs, load_corpus};

#[derive(clap::Args)]
pub struct Args {
    /// Output folder.
    #[arg(long, default_value = "data/tokenizer")]
    out: PathBuf,
    /// Vocabulary size, specials included.
    #[arg(long, default_value_t = tokenizer::VOCAB_SIZE)]
    vocab: usize,
    #[command(flatten)]
    inputs: Inputs,
}

pub fn run(a: Args) -> Result<()> {
    let t0 = std::time::Instant::now();
    let corpus = load_corpus(&a.inputs, &Settings::for_stage(Stage::Lm))?;
    let texts = tokenizer_texts(&corpus);
    let bytes: usize = texts.iter().map(String::len).sum();
    eprintln!("training a {}-entry BPE on {} train texts ({:.1} MB) ...", a.vocab, texts.len(), bytes as f64 / 1e6);
    let mut tok = tokenizer::train(texts.into_iter(), a.vocab)?;
    tokenizer::save(&tok, &a.out)?;
    let path = a.out.join("tokenizer.json");
    eprintln!("{} ({} entries, sha256 {}) in {:.0} s", path.display(), tok.get_vocab_size(true), tokenizer::sha256_file(&path)?, t0.elapsed().as_secs_f64());

    // Compression on held-out text, per source, the way the shards encode it.
    tok.set_encode_special_tokens(true);
    println!("{:<11} {:>10} {:>10} {:>11} {:>11}", "held out", "chars", "tokens", "chars/tok", "bytes/tok");
    for s in &corpus.stats {
        let (mut chars, mut bytes, mut tokens) = (0usize, 0usize, 0usize);
        for u in corpus.units.iter().filter(|u| u.split == Split::Heldout && u.source == s.name) {
            let texts: Vec<&str> = match &u.body {
                Body::Chat(turns) => turns.iter().map(|t| t.text.as_str()).collect(),
                Body::Text(t) => vec![t.as_str()],
            };
            for t in texts {
                chars += t.chars().count();
                bytes += t.len();
                tokens += tokenizer::encode(&tok, t)?.len();
            }
        }
        if tokens > 0 {
            println!("{:<11} {:>10} {:>10} {:>11.2} {:>11.2}", s.name, chars, tokens, chars as f64 / tokens as f64, bytes as f64 / tokens as f64);
        }
    }
    Ok(())
}
