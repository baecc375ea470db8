//! `ulm ask`: the whole handoff — a local opener at once, then the cloud continues it.
//!
//! ```text
//! ulm serve &                                                   # a local stand-in for the cloud
//! ulm ask --cloud http://127.0.0.1:8080/v1 --provider prefill "How do I make cold brew coffee?"
//! ulm ask --cloud https://api.openai.com/v1 --provider instruct --cloud-model gpt-4o \
//!         --api-key-env OPENAI_API_KEY "How do I make cold brew coffee?"
//! ulm ask --config cloud.toml --json "..."                      # one JSON object at the end
//! ```
//! The opener streams to stdout word by word, the continuation right after it; the timeline
//! (first word, cloud TTFT, gap) and the recovery mode go to stderr.

use std::io::Write;

use anyhow::{Context, Result};
use ulm_handoff::{Config, Event, Handoff, Overrides, ProviderKind, Reply, Turn};
use ulm_runtime::sampler::Sampling;
use ulm_server::local_opener::LocalOpener;

use crate::models;

/// Where the cloud is and how to talk to it.
#[derive(clap::Args, Clone, Debug)]
pub struct CloudArgs {
    /// Base URL of the cloud's API (e.g. http://127.0.0.1:8080/v1).
    #[arg(long)]
    pub cloud: Option<String>,
    /// How the cloud continues the opener: prefill, prefix, anthropic, instruct, completion.
    #[arg(long)]
    pub provider: Option<String>,
    /// The cloud's model name.
    #[arg(long = "cloud-model")]
    pub cloud_model: Option<String>,
    /// Environment variable that holds the cloud's API key (never printed).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// A TOML file with the provider config (flags override it).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Choose the opener length from the cloud's measured time to first token.
    #[arg(long)]
    pub adaptive: bool,
    /// Replace an unsure opener with a safe hedge before showing it.
    #[arg(long)]
    pub guard: bool,
    /// Warm the cloud's prompt cache as soon as the message arrives (anthropic: only conversations
    /// long enough for its cache, about 1024 tokens, with a cache_control breakpoint).
    #[arg(long)]
    pub early_request: bool,
    /// Speaking rate used for the gap (words per second; 0 = text shown at once).
    #[arg(long)]
    pub words_per_second: Option<f64>,
}

impl CloudArgs {
    /// The provider config: the file (if any), then the flags.
    pub fn handoff(&self, words: Option<usize>) -> Result<Handoff> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None => {
                let provider: ProviderKind = self.provider.as_deref().unwrap_or("prefill").parse()?;
                let url = self.cloud.clone().context("no cloud: give --cloud URL (e.g. http://127.0.0.1:8080/v1 after `ulm serve`) or --config FILE")?;
                Config::new(provider, url)
            }
        };
        let o = Overrides {
            provider: self.provider.as_deref().map(str::parse).transpose()?,
            base_url: self.cloud.clone(),
            model: self.cloud_model.clone(),
            api_key_env: self.api_key_env.clone(),
            words,
            adaptive: self.adaptive.then_some(true),
            guard: self.guard.then_some(true),
            early_request: self.early_request.then_some(true),
            words_per_second: self.words_per_second,
            ..Overrides::default()
        };
        cfg.apply(&o)?;
        Ok(Handoff::new(cfg)?)
    }

    /// Whether a cloud was given (by flag or config file).
    pub fn given(&self) -> bool {
        self.cloud.is_some() || self.config.is_some()
    }
}

/// The local opener over the chosen μLM.
pub fn opener(local: &crate::generate::ModelArgs, temperature: f32, seed: u64, copy_boost: Option<f32>, candidates: Option<usize>, pmi: Option<f32>) -> Result<LocalOpener> {
    let lm = models::load(local.model.as_deref(), &local.precision, local.ctx)?;
    let copy_boost = lm.defaults.copy_boost_or(copy_boost);
    let candidates = lm.defaults.candidates_or(candidates);
    Ok(LocalOpener::new(lm)
        .template(local.template)
        .sampling(Sampling { temperature, seed, ..Sampling::default() })
        .copy_boost(copy_boost)
        .candidates(candidates)
        .pmi(pmi))
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub cloud: CloudArgs,
    #[command(flatten)]
    pub local: crate::generate::ModelArgs,
    /// Opener length in words (4–8; default from the config, 8).
    #[arg(long)]
    pub words: Option<usize>,
    /// Local sampling temperature.
    #[arg(long, default_value_t = 0.5)]
    pub temperature: f32,
    /// Local sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Copy boost of the local opener: logit added to the question's content words until the
    /// opener uses them (0 = the model alone; default: the model's generation_config.json, 1
    /// for the shipped μLMs; docs/models/ulm-8m.md measures 1–5).
    #[arg(long)]
    pub copy_boost: Option<f32>,
    /// Openers the local model samples, the best kept (does not loop, names the topic, then most probable;
    /// 1 = the first, streamed as written; default: the model's generation_config.json).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Weight of each candidate's probability without the question, subtracted before choosing
    /// (0–1; 0: the model's probability alone; default: the model's generation_config.json).
    #[arg(long, value_parser = crate::generate::parse_pmi, allow_negative_numbers = true)]
    pub pmi: Option<f32>,
    /// Print one JSON object (text, timeline, recovery mode) at the end instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// The user's message.
    pub prompt: String,
}

/// Runs one handoff, streaming text to stdout; returns the reply.
pub fn turn(rt: &tokio::runtime::Runtime, handoff: &Handoff, opener: &mut LocalOpener, conversation: &[Turn]) -> Reply {
    let mut out = std::io::stdout();
    rt.block_on(handoff.run(opener, conversation, |ev| match ev {
        Event::OpenerPiece(t) | Event::ContinuationDelta(t) | Event::FallbackPiece(t) | Event::Notice(t) => {
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        }
        Event::GuardFired { confidence, .. } => eprintln!("[guard: opener confidence {confidence:.2} under threshold, hedged]"),
        Event::Error(e) => eprintln!("\n[{e}]"),
        _ => {}
    }))
}

/// The summary line on stderr.
pub fn summary(r: &Reply) {
    let t = &r.timeline;
    let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0} ms"));
    eprintln!(
        "[{}] first word {} | opener {} words done {} | cloud TTFT {} | gap {} | total {:.0} ms | mode {}",
        r.provider.as_str(),
        ms(t.first_word_ms),
        t.opener_words,
        ms(t.opener_done_ms),
        ms(t.cloud_first_token_ms.zip(t.cloud_request_ms).map(|(a, b)| a - b)),
        ms(t.gap_ms),
        t.done_ms,
        r.mode.map_or("–".to_string(), |m| format!("{m:?}")),
    );
}

pub fn run(a: Args) -> Result<()> {
    if a.prompt.trim().is_empty() {
        anyhow::bail!("empty prompt: give the message to reply to, e.g. ulm ask --cloud URL \"What is a comet?\"");
    }
    let handoff = a.cloud.handoff(a.words)?;
    let mut opener = opener(&a.local, a.temperature, a.seed, a.copy_boost, a.candidates, a.pmi)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let reply = turn(&rt, &handoff, &mut opener, &[Turn::user(&a.prompt)]);
    println!();
    if a.json {
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        summary(&reply);
    }
    if let Some(e) = &reply.error {
        // The text produced so far was shown and kept; the exit code says the reply is partial.
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    Ok(())
}
