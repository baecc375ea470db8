//! `ulm`: instant replies from a micro language model, continued by the cloud.
//!
//! ```text
//! ulm generate "What is the capital of France?"     # local reply, streamed
//! ulm distill --teacher http://127.0.0.1:8090       # build the distillation corpus
//! ```
//! Every subcommand lives in its own module and starts with how to run it.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod ask;
mod bench;
mod bench_handoff;
mod chat;
mod data;
mod distill;
mod eval;
mod generate;
mod models;
mod serve;
mod tokenizer;

#[derive(Parser)]
#[command(name = "ulm", version, about = "Instant replies from a micro language model, continued by the cloud")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The handoff: a local opener at once, then the cloud continues it.
    Ask(ask::Args),
    /// Stream a local reply to one message.
    Generate(generate::Args),
    /// Talk with a local model, turn after turn.
    Chat(chat::Args),
    /// Time the runtime (μLM presets, SmolLM2) against llama.cpp.
    Bench(bench::Args),
    /// Time to first word of the handoff vs cloud-only, against `ulm serve` with injected latency.
    BenchHandoff(bench_handoff::Args),
    /// Ask a teacher model for replies to the prompt set (append-only, resumable).
    Distill(distill::Args),
    /// Train the byte-level BPE tokenizer on the train split.
    Tokenizer(tokenizer::Args),
    /// Build token shards for training (`--stage lm|sft`) or the dev prompt set.
    Data(data::Args),
    /// Serve the OpenAI-compatible API, the handoff stream and the web demo.
    Serve(serve::Args),
    /// Measure openers (plausibility under a scorer), the handoff's seams and latency; write a report.
    Eval(eval::Args),
}

fn main() {
    let cli = Cli::parse();
    let res: Result<()> = match cli.cmd {
        Cmd::Distill(a) => distill::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::BenchHandoff(a) => bench_handoff::run(a),
        Cmd::Ask(a) => ask::run(a),
        Cmd::Tokenizer(a) => tokenizer::run(a),
        Cmd::Data(a) => data::run(a),
        Cmd::Generate(a) => generate::run(a),
        Cmd::Chat(a) => chat::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Eval(a) => eval::run(a),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
