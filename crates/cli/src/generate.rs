//! `ulm generate`: stream a local reply to stdout, with timings on stderr.
//!
//! ```text
//! ulm generate "What is the capital of France?"
//! ulm generate --model smollm2 --words 8 --temperature 0 "How do I boil an egg?"
//! ```

use std::io::Write;

use anyhow::Result;
use ulm_runtime::Session;
use ulm_runtime::generate::{GenerateOptions, Generation, generate};
use ulm_runtime::sampler::Sampling;

use crate::models;

/// Options shared by `generate` and `chat`.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model: a .gguf file, a Hugging Face folder, or a name (ulm-8m, ulm-15m, ulm-30m, smollm2).
    #[arg(long)]
    pub model: Option<String>,
    /// Weight storage: auto (int8 for a float μLM folder, as stored for GGUF), native (as
    /// stored), f32, or int8 (quantize f32/f16 matrices at load).
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Threads for matrix products.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Context length a session allocates.
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// Use the model's own chat template (with its default system prompt, if it has one)
    /// instead of plain ChatML with no system message.
    #[arg(long)]
    pub template: bool,
}

/// Sampling and stop options.
#[derive(clap::Args, Clone, Debug)]
pub struct SampleArgs {
    /// Stop after this many words, at a word boundary (default: no word limit).
    #[arg(long)]
    pub words: Option<usize>,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.5)]
    pub temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Copy boost: logit added to the tokens of the question's content words until the reply
    /// uses them (0 = the model alone; default: the model's generation_config.json — 1 for the
    /// shipped μLMs, 0 for other models; docs/models/ulm-8m.md).
    #[arg(long)]
    pub copy_boost: Option<f32>,
    /// Sample this many openers and print the best (does not loop, names the topic, then most probable; 1 =
    /// the first, streamed as written). Default with --words: the model's generation_config.json
    /// (8 for ulm-8m); without --words: 1.
    #[arg(long)]
    pub candidates: Option<usize>,
    /// With several candidates, subtract this weight × each one's probability without the
    /// question before choosing (0–1; 0: the model's probability alone; default: the model's
    /// generation_config.json).
    #[arg(long, value_parser = parse_pmi, allow_negative_numbers = true)]
    pub pmi: Option<f32>,
    /// Random seed: the same seed gives the same reply.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `--pmi`: a weight in 0–1, as in a model's generation_config.json.
pub fn parse_pmi(s: &str) -> Result<f32, String> {
    let w: f32 = s.parse().map_err(|e| format!("{e}: give a number such as 0.5"))?;
    if (0.0..=1.0).contains(&w) { Ok(w) } else { Err(format!("{w} is outside 0–1 (0: the model's probability alone)")) }
}

impl SampleArgs {
    pub fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            words: self.words,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                ..Sampling::default()
            },
            copy: None,
            candidates: None,
        }
    }

    /// The best-of-n choice for a reply to `question`: the flag, else the model's default when
    /// the reply is an opener (--words); `None` for one reply.
    pub fn candidates(&self, lm: &ulm_runtime::generate::LoadedModel, question: &str) -> Option<ulm_runtime::generate::Candidates> {
        let n = self.candidates.or_else(|| self.words.map(|_| lm.defaults.candidates_or(None)))?;
        ulm_runtime::generate::Candidates::optional(question, n).map(|c| ulm_runtime::generate::Candidates { pmi: self.pmi, ..c })
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sample: SampleArgs,
    /// Print timings as one JSON object on stderr instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// The user's message.
    pub prompt: String,
}

pub fn run(a: Args) -> Result<()> {
    if a.prompt.trim().is_empty() {
        anyhow::bail!("empty prompt: give the message to reply to, e.g. ulm generate \"What is a comet?\"");
    }
    let lm = models::load(a.model.model.as_deref(), &a.model.precision, a.model.ctx)?;
    let prompt = lm.conversation_prompt(&[ulm_runtime::tokenizer::ChatMessage::user(&a.prompt)], a.model.template)?;
    let mut session = Session::new(&lm.model).with_threads(a.model.threads);
    let mut stdout = std::io::stdout().lock();
    let mut opts = a.sample.options();
    opts.copy = ulm_runtime::copy::CopyBoost::optional(&lm.tokenizer, &a.prompt, lm.defaults.copy_boost_or(a.sample.copy_boost))?;
    opts.candidates = a.sample.candidates(&lm, &a.prompt);
    let out = generate(&lm, &mut session, &prompt, &opts, &mut |p| {
        let _ = stdout.write_all(p.text.as_bytes());
        let _ = stdout.flush();
        true
    })?;
    let _ = writeln!(stdout);
    report(&lm.name, &out, a.sample.words, a.json);
    Ok(())
}

/// Timing line on stderr: time to first token, to N words, ms/token, peak memory.
pub fn report(name: &str, g: &Generation, words: Option<usize>, json: bool) {
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let rss = models::peak_rss().map(|b| b as f64 / (1 << 20) as f64);
    if json {
        let v = serde_json::json!({
            "model": name, "prompt_tokens": g.prompt_tokens, "tokens": g.tokens.len(), "stop": format!("{:?}", g.stop),
            "prefill_ms": g.prefill.as_secs_f64() * 1e3, "first_token_ms": ms(g.first_piece), "words_ms": ms(g.words_done),
            "ms_per_token": g.ms_per_token(), "total_ms": g.total.as_secs_f64() * 1e3, "peak_rss_mib": rss,
        });
        eprintln!("{v}");
    } else {
        eprintln!(
            "[{name}] {} prompt tokens, {} generated ({:?}) | first token {:.1} ms | first {} words {} | {:.2} ms/token | peak RSS {}",
            g.prompt_tokens,
            g.tokens.len(),
            g.stop,
            ms(g.first_piece).unwrap_or(f64::NAN),
            words.unwrap_or(8),
            ms(g.words_done).map_or("n/a".into(), |v| format!("{v:.1} ms")),
            g.ms_per_token(),
            rss.map_or("n/a".into(), |r| format!("{r:.0} MiB")),
        );
    }
}
