//! `ulm chat`: an interactive multi-turn conversation with a local model.
//!
//! ```text
//! ulm chat                      # the default model
//! ulm chat --model smollm2 --words 8
//! ulm chat --cloud http://127.0.0.1:8080/v1 --provider prefill   # with the handoff
//! ```
//! Type a message and press Enter; `/reset` starts over, `/quit` (or Ctrl-D) leaves. The KV cache
//! is kept between turns, so each turn only pays for its new tokens. With `--cloud` every reply
//! is a handoff: the local opener, then the cloud's continuation; both sides see the conversation.

use std::io::{BufRead, Write};

use anyhow::Result;
use ulm_runtime::Session;
use ulm_runtime::generate::generate;
use ulm_runtime::tokenizer::ChatMessage;

use crate::generate::{ModelArgs, SampleArgs, report};
use crate::models;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sample: SampleArgs,
    /// Print timings after every reply.
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub cloud: crate::ask::CloudArgs,
}

fn run_handoff(a: Args) -> Result<()> {
    let handoff = a.cloud.handoff(a.sample.words)?;
    let mut opener = crate::ask::opener(&a.model, a.sample.temperature, a.sample.seed, a.sample.copy_boost, a.sample.candidates, a.sample.pmi)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut history: Vec<ulm_handoff::Turn> = Vec::new();
    eprintln!("ulm chat (handoff to {}) — /reset to start over, /quit to leave", handoff.config().base_url);
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            msg => history.push(ulm_handoff::Turn::user(msg)),
        }
        let reply = crate::ask::turn(&rt, &handoff, &mut opener, &history);
        println!();
        crate::ask::summary(&reply);
        history.push(ulm_handoff::Turn::assistant(reply.text));
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if a.cloud.given() {
        return run_handoff(a);
    }
    let lm = models::load(a.model.model.as_deref(), &a.model.precision, a.model.ctx)?;
    let mut session = Session::new(&lm.model).with_threads(a.model.threads);
    let mut history: Vec<ChatMessage> = Vec::new();
    eprintln!("ulm chat with {} — /reset to start over, /quit to leave", lm.name);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut turn = 0u64;
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.clear();
                session.truncate(0);
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(line));
        let mut prompt = lm.conversation_prompt(&history, a.model.template)?;
        // Keep the conversation inside the context: drop the oldest turns first.
        while prompt.len() + a.sample.max_tokens >= session.max_seq() && history.len() > 1 {
            history.drain(..2.min(history.len() - 1));
            prompt = lm.conversation_prompt(&history, a.model.template)?;
        }
        let mut opts = a.sample.options();
        opts.sampling.seed = a.sample.seed.wrapping_add(turn);
        opts.copy = ulm_runtime::copy::CopyBoost::optional(&lm.tokenizer, line, lm.defaults.copy_boost_or(a.sample.copy_boost))?;
        opts.candidates = a.sample.candidates(&lm, line);
        turn += 1;
        let g = generate(&lm, &mut session, &prompt, &opts, &mut |p| {
            let _ = out.write_all(p.text.as_bytes());
            let _ = out.flush();
            true
        })?;
        println!();
        if a.stats {
            report(&lm.name, &g, a.sample.words, false);
        }
        history.push(ChatMessage::assistant(g.text));
    }
    Ok(())
}
