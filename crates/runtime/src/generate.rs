//! Streaming generation with stop rules: end of turn, max tokens, or N words at a word boundary.
//!
//! ```no_run
//! use ulm_runtime::generate::{LoadedModel, GenerateOptions, generate};
//! use ulm_runtime::{Precision, Session};
//! let lm = LoadedModel::open("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), Precision::Native, None).unwrap();
//! let prompt = lm.chat_prompt("What is the capital of France?").unwrap();
//! let mut session = Session::new(&lm.model);
//! let opts = GenerateOptions { words: Some(8), ..GenerateOptions::default() };
//! let out = generate(&lm, &mut session, &prompt, &opts, &mut |p| { print!("{}", p.text); true }).unwrap();
//! eprintln!("\n{:?} after {} tokens", out.stop, out.tokens.len());
//! ```
//!
//! Word rule: a word is a run of non-whitespace, punctuation included ("Paris." is one word).
//! Generation stops when word N+1 *begins*, so it never stops inside a word, and the text is cut
//! at the end of word N — no trailing space (a trailing space derails a continuator).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::copy::{CopyBoost, names_topic};
use crate::error::{Error, Result};
use crate::load::gguf::Gguf;
use crate::load::hf::HfModel;
use crate::model::Model;
use crate::quant::Precision;
use crate::sampler::{Sampler, Sampling};
use crate::session::Session;
use crate::tokenizer::{ChatMessage, StreamDecoder, Tokenizer, render_chatml};
use crate::utf8::Utf8Guard;

/// A model with its tokenizer and chat template, as loaded from one file or folder.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Weights (share freely).
    pub model: Arc<Model>,
    /// Tokenizer and chat template.
    pub tokenizer: Tokenizer,
    /// Short name (file or folder name).
    pub name: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The model's own sampling defaults (`generation_config.json`).
    pub defaults: ModelDefaults,
}

/// Settings a model folder recommends for itself in `generation_config.json` (the Hugging Face
/// file; ulm reads its own key from it), used where the caller sets nothing:
///
/// ```json
/// {"copy_boost": 1.0, "candidates": 8, "pmi": 0.0}
/// ```
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct ModelDefaults {
    /// Copy boost of the model's openers ([`CopyBoost`]; 0: the model alone). The shipped μLMs
    /// set 1: it makes more openers name the question's topic at almost no cost in fluency
    /// (docs/models/ulm-8m.md).
    #[serde(default)]
    pub copy_boost: f32,
    /// Openers sampled per reply, the best one kept ([`Candidates`]; 0 or 1: one, as sampled).
    #[serde(default)]
    pub candidates: usize,
    /// Weight of the question-free probability in the choice among candidates ([`Candidates::pmi`];
    /// 0: the model's probability alone).
    #[serde(default)]
    pub pmi: f32,
}

impl ModelDefaults {
    /// File name beside config.json.
    pub const FILE: &'static str = "generation_config.json";

    /// The defaults in `dir` (all zero when the file is absent; an error names a malformed one).
    pub fn read(dir: &Path) -> Result<ModelDefaults> {
        let path = dir.join(Self::FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelDefaults::default()),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let d: ModelDefaults = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config { path: path.clone(), msg: format!("{e} (expected e.g. {{\"copy_boost\": 1.0, \"candidates\": 4}}; delete the file for no defaults)") })?;
        if !d.copy_boost.is_finite() || !(0.0..=100.0).contains(&d.copy_boost) {
            return Err(Error::Config { path, msg: format!("copy_boost {} is outside 0–100", d.copy_boost) });
        }
        if !d.pmi.is_finite() || !(0.0..=1.0).contains(&d.pmi) {
            return Err(Error::Config { path, msg: format!("pmi {} is outside 0–1", d.pmi) });
        }
        if d.candidates > Candidates::MAX {
            return Err(Error::Config { path, msg: format!("candidates {} is above {}", d.candidates, Candidates::MAX) });
        }
        Ok(d)
    }

    /// `flag` if the caller set one, else the model's value.
    pub fn copy_boost_or(&self, flag: Option<f32>) -> f32 {
        flag.unwrap_or(self.copy_boost)
    }

    /// `flag` if the caller set one, else the model's value; at least 1.
    pub fn candidates_or(&self, flag: Option<usize>) -> usize {
        flag.unwrap_or(self.candidates).max(1)
    }

    /// `flag` if the caller set one, else the model's value.
    pub fn pmi_or(&self, flag: Option<f32>) -> f32 {
        flag.unwrap_or(self.pmi)
    }
}

impl LoadedModel {
    /// Loads a GGUF file (llama architecture) or a Hugging Face folder (config.json +
    /// model.safetensors + tokenizer.json). `max_seq` caps the context a session allocates.
    pub fn open(path: &Path, prec: Precision, max_seq: Option<usize>) -> Result<LoadedModel> {
        let is_gguf = path.is_file() && {
            let mut magic = [0u8; 4];
            std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok() && &magic == b"GGUF"
        };
        let (model, tokenizer, defaults) = if is_gguf {
            let g = Gguf::open(path)?;
            let mut config = g.config()?;
            if let Some(m) = max_seq {
                config.max_seq_len = m;
            }
            (Model::from_source(&g, config, prec, true)?, Tokenizer::from_gguf(&g)?, ModelDefaults::default())
        } else {
            let h = HfModel::open(path)?;
            let mut config = h.config()?;
            if let Some(m) = max_seq {
                config.max_seq_len = m;
            }
            let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
            (Model::from_source(&h, config, prec, false)?, Tokenizer::from_hf(&h)?, ModelDefaults::read(dir)?)
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| path.display().to_string());
        tokenizer.utf8_table(); // read now, not on the first reply
        Ok(LoadedModel { model: Arc::new(model), tokenizer, name, path: path.to_owned(), defaults })
    }

    /// Tokens of a single user turn rendered for a reply. Models that ship a chat template get
    /// it; `raw_chatml` models (whose template forces a system prompt, as SmolLM2's does) get
    /// plain ChatML with no system message.
    pub fn chat_prompt(&self, user: &str) -> Result<Vec<u32>> {
        self.conversation_prompt(&[ChatMessage::user(user)], false)
    }

    /// Tokens of an empty user turn and the assistant's generation prompt: the baseline against
    /// which [`Candidates::pmi`] asks how much the question made a reply likely.
    pub fn empty_question_prompt(&self) -> Result<Vec<u32>> {
        self.render(&[ChatMessage::user("")], false)
    }

    /// Tokens of a whole conversation ending with a generation prompt for the assistant.
    /// `template` chooses the model's own chat template; otherwise plain ChatML, no system turn.
    pub fn conversation_prompt(&self, messages: &[ChatMessage], template: bool) -> Result<Vec<u32>> {
        if messages.iter().all(|m| m.content.trim().is_empty()) {
            return Err(Error::Request("empty prompt: type a question or a message".into()));
        }
        self.render(messages, template)
    }

    /// [`LoadedModel::conversation_prompt`] without the check for an empty conversation.
    fn render(&self, messages: &[ChatMessage], template: bool) -> Result<Vec<u32>> {
        // Message text is encoded literally: special-token text a user types stays text.
        let mut ids = self.tokenizer.encode_chat(messages, |m| {
            if template { self.tokenizer.render_chat(m, true) } else { Ok(render_chatml(m, true)) }
        })?;
        if self.tokenizer.add_bos() {
            if let Some(b) = self.tokenizer.bos_id() {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
            }
        }
        Ok(ids)
    }
}

/// What ends a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn (an end-of-turn token).
    EndOfTurn,
    /// `max_tokens` were generated.
    MaxTokens,
    /// N words were complete and the next one began.
    Words,
    /// The session's context is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
    /// With a word limit ([`GenerateOptions::words`], an opener): the current word ran on as
    /// one piece repeated ([`runs_on`]: "non-re-re-re-re"), a loop inside a word that the word
    /// rule never ends. The text keeps what was streamed. Without a word limit nothing stops a
    /// run but `max_tokens` and the end of turn.
    RunsOn,
}

/// Generation settings.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Cap on generated tokens.
    pub max_tokens: usize,
    /// Stop after this many words, at a word boundary.
    pub words: Option<usize>,
    /// Sampling settings.
    pub sampling: Sampling,
    /// Pull the reply toward the question's content words (openers of μLMs; `None`: off).
    pub copy: Option<CopyBoost>,
    /// Sample several replies and keep the best (openers of μLMs; `None`: one, streamed as made).
    pub candidates: Option<Candidates>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 256, words: None, sampling: Sampling::default(), copy: None, candidates: None }
    }
}

/// Best of several openers: [`generate`] samples `n` replies (seeds `seed`, `seed + 1`, …; the
/// prompt is fed once, each reply after the first re-feeds only the prompt's last token) and
/// keeps the one that does not loop ([`repeats_a_pair`], [`runs_on`]), names the question's
/// topic ([`names_topic`]) and has the highest mean log-probability under the model itself (a
/// sampled slip — a made-up word, a broken phrase — pulls the mean down), in that order. With
/// [`Candidates::pmi`] above 0 the last step weighs how much the question made each reply more
/// probable than an empty question does (read blind on ulm-8m: +1.7 ± 1.2 points on topic, lower
/// under SmolLM2, 15–20 ms more per opener; off by default, docs/models/ulm-8m.md, session 25).
///
/// ```no_run
/// use ulm_runtime::generate::{Candidates, GenerateOptions};
/// let opts = GenerateOptions { words: Some(8), candidates: Some(Candidates::new("What is a volcano?", 4)), ..GenerateOptions::default() };
/// ```
///
/// The chosen reply reaches `on_piece` in one piece once all are written, so the first words
/// arrive when the last candidate is done (ulm-8m, 8 words on a 2-core x86 VM: the best of four
/// whole at about 21 ms, one opener streamed from 3 ms and whole at 7–11 ms), and `on_piece`
/// cannot stop the candidates midway. The session is left holding the last sampled reply; the
/// next call's prompt reuse takes care of that.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidates {
    /// Replies to sample (1: no choice).
    pub n: usize,
    /// The question answered: its content words decide what is on topic.
    pub question: String,
    /// Among candidates that fit alike, rank by `mean log p(reply | question) − pmi · mean log
    /// p(reply | an empty question)` (the mutual-information choice of Li et al. 2016): a stock
    /// reply that fits any question ("I'm glad to help") is probable without the question too,
    /// so it loses to one the question made likely. `None`: the model's default
    /// ([`ModelDefaults::pmi`]); 0: the model's probability alone.
    pub pmi: Option<f32>,
}

impl Candidates {
    /// Most candidates a model folder or a request may ask for.
    pub const MAX: usize = 16;

    /// `n` candidates (clamped to 1..=[`Candidates::MAX`]) for a reply to `question`.
    pub fn new(question: &str, n: usize) -> Candidates {
        Candidates { n: n.clamp(1, Self::MAX), question: question.to_string(), pmi: None }
    }

    /// [`Candidates::new`], or `None` when `n` ≤ 1 (nothing to choose).
    pub fn optional(question: &str, n: usize) -> Option<Candidates> {
        (n > 1).then(|| Candidates::new(question, n))
    }

    /// How a candidate ranks: ([`Fit::rank`]: does not loop, names the topic; then the mean
    /// log-probability of its tokens). A loop ("I'm a freshman! I'm a freshman!") is very
    /// probable to the model that wrote it, so it only wins among loops.
    fn rank(&self, g: &Generation) -> (bool, bool, f32) {
        let mean = if g.logprobs.is_empty() { f32::NEG_INFINITY } else { g.logprobs.iter().sum::<f32>() / g.logprobs.len() as f32 };
        let (no_loop, topic) = Fit::of(&self.question, &g.text).rank();
        (no_loop, topic, mean)
    }
}

/// What the choice among candidates looks at before any probability. `ulm distill --student`
/// ranks the μLM's openers the same way before the teacher's score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    /// The reply loops: a pair of words said twice ([`repeats_a_pair`]) or a word that runs on as
    /// one piece repeated ([`runs_on`]).
    pub loops: bool,
    /// The reply names the question's topic ([`names_topic`]).
    pub names_topic: bool,
}

impl Fit {
    /// Judges `reply` as an answer to `question`.
    pub fn of(question: &str, reply: &str) -> Fit {
        let text = reply.trim();
        Fit { loops: repeats_a_pair(text) || runs_on(text), names_topic: !text.is_empty() && names_topic(question, text) }
    }

    /// Greater is better: first not looping — a loop is broken text, very probable to the model
    /// that wrote it (and to a scorer), while an opener off the topic is still a sentence the
    /// cloud can carry on — then naming the topic.
    pub fn rank(self) -> (bool, bool) {
        (!self.loops, self.names_topic)
    }
}

/// One streamed piece of text.
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    /// New text (whole characters only; may be empty-free chunks of several tokens).
    pub text: &'a str,
    /// Time since `generate` was called.
    pub at: Duration,
    /// Words complete or begun so far.
    pub words: usize,
}

/// The result of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// The text shown, cut at the word boundary when the word rule stopped it.
    pub text: String,
    /// Generated token ids (including the one that began word N+1, excluding end of turn).
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Prompt tokens fed (after KV reuse).
    pub prompt_tokens: usize,
    /// Time to feed the prompt.
    pub prefill: Duration,
    /// Time to the first visible text.
    pub first_piece: Option<Duration>,
    /// Time at which the requested number of words was complete.
    pub words_done: Option<Duration>,
    /// Total time.
    pub total: Duration,
    /// Per-token log-probabilities of the generated tokens under the model (for confidence).
    pub logprobs: Vec<f32>,
    /// Per-token entropies (nats) of the model's distribution at each step.
    pub entropies: Vec<f32>,
    /// Tokens generated in all, over every candidate ([`Candidates`]; else `tokens.len()`).
    pub sampled_tokens: usize,
    /// Every candidate of a best-of choice, in sampling order, as the choice saw it (empty
    /// without [`Candidates`]): what `ulm eval --keep-candidates` records to study the choice.
    pub rivals: Vec<Rival>,
}

/// One candidate of a best-of choice ([`Candidates`]) and what the choice knew of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rival {
    /// Its text.
    pub text: String,
    /// Whether it loops and names the topic.
    pub fit: Fit,
    /// Tokens sampled.
    pub tokens: usize,
    /// Mean log-probability of its tokens under the model (the choice's score before pmi).
    pub mean_logprob: f32,
    /// Its least probable token's log-probability.
    pub min_logprob: f32,
    /// Mean entropy (nats) of the model's distribution over its steps.
    pub mean_entropy: f32,
    /// Mean log-probability of its tokens after an empty question, when the pmi choice scored
    /// it (pmi > 0, and only candidates of the best fit).
    pub prior: Option<f32>,
    /// The one chosen.
    pub chosen: bool,
}

impl Generation {
    /// Decode time per generated token (over every candidate when several were sampled).
    pub fn ms_per_token(&self) -> f64 {
        if self.sampled_tokens > self.tokens.len() {
            return (self.total - self.prefill.min(self.total)).as_secs_f64() * 1e3 / self.sampled_tokens as f64;
        }
        let n = self.tokens.len().saturating_sub(1).max(1);
        (self.total - self.first_piece.unwrap_or(self.prefill).min(self.total)).as_secs_f64() * 1e3 / n as f64
    }
}

/// Counts words in text streamed piece by piece and finds where word N ends.
#[derive(Clone, Debug, Default)]
pub struct WordCounter {
    words: usize,
    in_word: bool,
    /// Byte length of the text up to the end of the last complete-or-current word.
    end_of_word: usize,
    len: usize,
}

impl WordCounter {
    /// Feeds `piece`; returns `Some(cut)` — the byte length of the text to keep — as soon as a
    /// word beyond `limit` begins.
    pub fn push(&mut self, piece: &str, limit: Option<usize>) -> Option<usize> {
        for (i, ch) in piece.char_indices() {
            if ch.is_whitespace() {
                self.in_word = false;
            } else {
                if !self.in_word {
                    self.in_word = true;
                    self.words += 1;
                    if limit.is_some_and(|n| self.words > n) {
                        return Some(self.end_of_word);
                    }
                }
                self.end_of_word = self.len + i + ch.len_utf8();
            }
        }
        self.len += piece.len();
        None
    }

    /// Words begun so far.
    pub fn words(&self) -> usize {
        self.words
    }
}

/// Generates from `prompt` in `session`, reusing the cache: the leading tokens of `prompt` that
/// the session already holds are skipped (multi-turn chat pays only for the new turn).
/// `on_piece` receives text as it is produced and returns `false` to stop.
///
/// With [`GenerateOptions::candidates`] it samples several replies and hands out the best one
/// ([`Candidates`]).
pub fn generate(lm: &LoadedModel, session: &mut Session, prompt: &[u32], opts: &GenerateOptions, on_piece: &mut dyn FnMut(Piece<'_>) -> bool) -> Result<Generation> {
    match &opts.candidates {
        Some(c) if c.n > 1 => generate_best(lm, session, prompt, opts, c, on_piece),
        _ => generate_one(lm, session, prompt, opts, on_piece),
    }
}

fn generate_best(lm: &LoadedModel, session: &mut Session, prompt: &[u32], opts: &GenerateOptions, c: &Candidates, on_piece: &mut dyn FnMut(Piece<'_>) -> bool) -> Result<Generation> {
    let start = Instant::now();
    let mut one = GenerateOptions { candidates: None, ..opts.clone() };
    let mut all: Vec<((bool, bool, f32), Generation)> = Vec::with_capacity(c.n);
    let (mut prefill, mut prompt_tokens, mut sampled) = (Duration::ZERO, 0, 0);
    for k in 0..c.n {
        one.sampling.seed = opts.sampling.seed.wrapping_add(k as u64);
        let g = generate_one(lm, session, prompt, &one, &mut |_| true)?;
        if k == 0 {
            (prefill, prompt_tokens) = (g.prefill, g.prompt_tokens);
        }
        sampled += g.tokens.len();
        all.push((c.rank(&g), g));
    }
    let pmi = c.pmi.unwrap_or(lm.defaults.pmi);
    let priors = if pmi > 0.0 { prior_penalty(lm, session, &mut all, pmi)? } else { vec![None; all.len()] };
    // The first of equals wins, as when they were compared one by one.
    let mut best = 0;
    for i in 1..all.len() {
        if all[i].0 > all[best].0 {
            best = i;
        }
    }
    let rivals = all.iter().zip(priors).enumerate().map(|(i, (((no_loop, topic, _), g), prior))| Rival::of(Fit { loops: !no_loop, names_topic: *topic }, g, prior, i == best)).collect();
    let (_, mut g) = all.swap_remove(best);
    g.rivals = rivals;
    let at = start.elapsed();
    if !g.text.is_empty() {
        on_piece(Piece { text: &g.text, at, words: g.text.split_whitespace().count() }); // the last piece: nothing left to stop
        g.first_piece = Some(at);
    } else {
        g.first_piece = None;
    }
    g.words_done = g.words_done.map(|_| at);
    (g.prefill, g.prompt_tokens, g.sampled_tokens) = (prefill, prompt_tokens, sampled);
    g.total = start.elapsed();
    Ok(g)
}

impl Rival {
    /// `fit` as [`Candidates::rank`] judged it (not judged again).
    fn of(fit: Fit, g: &Generation, prior: Option<f32>, chosen: bool) -> Rival {
        let n = g.logprobs.len().max(1) as f32;
        Rival {
            text: g.text.clone(),
            fit,
            tokens: g.tokens.len(),
            mean_logprob: g.logprobs.iter().sum::<f32>() / n,
            min_logprob: g.logprobs.iter().copied().fold(0.0, f32::min),
            mean_entropy: g.entropies.iter().sum::<f32>() / n,
            prior,
            chosen,
        }
    }
}

/// Subtracts `pmi` × the mean log-probability of each candidate's tokens after an empty question
/// from its score, for the candidates of the best fit (the others cannot win), and returns those
/// means (`None` for the others). They are scored in `session`'s side cache (made on first use,
/// sharing its threads), so `session` keeps the prompt.
fn prior_penalty(lm: &LoadedModel, session: &mut Session, all: &mut [((bool, bool, f32), Generation)], pmi: f32) -> Result<Vec<Option<f32>>> {
    let top = all.iter().map(|(r, _)| (r.0, r.1)).max().expect("n > 1 candidates");
    let empty = lm.empty_question_prompt()?;
    let mut prior = match session.side.take() {
        Some(side) if side.max_seq == lm.model.config().max_seq_len => side,
        _ => Box::new(Session::new(&lm.model)),
    };
    prior.pool.clone_from(&session.pool);
    let scored = score_priors(lm, &mut prior, &empty, all, top, pmi);
    session.side = Some(prior);
    scored
}

/// [`prior_penalty`]'s scoring in the side cache `prior`. The candidates go in token order, so
/// one that shares a start with the one before (many do: "I'm glad you…", or the same reply
/// twice) feeds only the tokens after the shared start and reuses their log-probabilities.
fn score_priors(lm: &LoadedModel, prior: &mut Session, empty: &[u32], all: &mut [((bool, bool, f32), Generation)], top: (bool, bool), pmi: f32) -> Result<Vec<Option<f32>>> {
    let mut priors = vec![None; all.len()];
    let mut order: Vec<usize> = (0..all.len()).filter(|&i| (all[i].0.0, all[i].0.1) == top && !all[i].1.tokens.is_empty()).collect();
    order.sort_by(|&a, &b| all[a].1.tokens.cmp(&all[b].1.tokens));
    let (mut ids, mut lps, mut before): (Vec<u32>, Vec<f32>, &[u32]) = (Vec::new(), Vec::new(), &[]);
    for i in order {
        let tokens = &all[i].1.tokens;
        if empty.len() + tokens.len() > prior.max_seq() {
            continue;
        }
        let shared = tokens.iter().zip(before).take_while(|(a, b)| a == b).count();
        lps.truncate(shared);
        if shared < tokens.len() {
            ids.clear();
            ids.extend_from_slice(empty);
            ids.extend_from_slice(tokens);
            // Keep what the cache holds of the empty question and the shared start, up to the
            // token whose logits predict the first new one: that one is fed again.
            let from = prior.common_prefix(&ids).min(empty.len() + shared - 1);
            prior.truncate(from);
            lm.model.forward_each(prior, &ids[from..], &mut |k, logits| {
                let at = from + k + 1;
                if at >= empty.len() + shared && at < ids.len() {
                    lps.push(logprob_entropy(logits, ids[at]).0);
                }
            })?;
        }
        let mean = lps.iter().sum::<f32>() / tokens.len() as f32;
        all[i].0.2 -= pmi * mean;
        priors[i] = Some(mean);
        before = &all[i].1.tokens;
    }
    Ok(priors)
}

/// True when a word of `text` (a run without whitespace) holds one piece of 1–8 ASCII characters
/// said over and over: a piece of one character 8 times, of 2–4 characters 4 times
/// ("re-re-re-re", "R.R.R.R."), of 5–8 characters 3 times ("Brido-Brido-Brido-", which ulm-30m
/// wrote for 56 tokens to a dev prompt before this rule). A μLM loops this way inside a word, where [`repeats_a_pair`]
/// cannot see it and the word rule cannot stop it, and it is very probable to the model that
/// wrote it. Digits never count ("1000000000"). With a word limit the generator stops a reply
/// as soon as its current word runs on ([`StopReason::RunsOn`]).
pub fn runs_on(text: &str) -> bool {
    text.split_whitespace().any(word_runs_on)
}

/// [`runs_on`] for one word, without allocating (checked on the current word at every token).
fn word_runs_on(word: &str) -> bool {
    let b = word.as_bytes();
    (1..=8).any(|len| {
        let times = match len {
            1 => 8,
            2..=4 => 4,
            _ => 3,
        };
        b.windows(len * times).any(|w| {
            let piece = &w[..len];
            piece.is_ascii() && !piece.iter().all(u8::is_ascii_digit) && w.chunks(len).all(|c| c == piece)
        })
    })
}

/// The word `text` ends in (empty after whitespace).
fn last_word(text: &str) -> &str {
    text.rsplit(char::is_whitespace).next().unwrap_or("")
}

/// True when two neighbouring words occur twice in `text` (case and punctuation ignored).
pub fn repeats_a_pair(text: &str) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric() || *c == '\'').flat_map(char::to_lowercase).collect())
        .filter(|w: &String| !w.is_empty())
        .collect();
    let pairs: Vec<(&str, &str)> = words.windows(2).map(|p| (p[0].as_str(), p[1].as_str())).collect();
    pairs.iter().enumerate().any(|(i, p)| pairs[i + 1..].contains(p))
}

fn generate_one(lm: &LoadedModel, session: &mut Session, prompt: &[u32], opts: &GenerateOptions, on_piece: &mut dyn FnMut(Piece<'_>) -> bool) -> Result<Generation> {
    let mut g = Generator::start(lm, session, prompt, opts)?;
    while let Some(token) = g.step(session, on_piece)? {
        lm.model.forward(session, &[token])?;
    }
    g.finish(on_piece)
}

/// [`generate`] one step at a time, for callers that feed the sampled tokens themselves — a
/// server stepping many sessions in one [`Model::forward_batch`](crate::Model::forward_batch):
///
/// ```no_run
/// # use ulm_runtime::generate::*; use ulm_runtime::Session;
/// # fn f(lm: &LoadedModel, session: &mut Session, prompt: &[u32]) -> ulm_runtime::Result<()> {
/// let opts = GenerateOptions::default();
/// let mut g = Generator::start(lm, session, prompt, &opts)?; // prefill
/// while let Some(token) = g.step(session, &mut |p| { print!("{}", p.text); true })? {
///     lm.model.forward(session, &[token])?; // or one row of a batched pass
/// }
/// let out = g.finish(&mut |p| { print!("{}", p.text); true })?;
/// # Ok(()) }
/// ```
pub struct Generator<'a> {
    lm: &'a LoadedModel,
    start: Instant,
    max_tokens: usize,
    words_limit: Option<usize>,
    sampler: Sampler,
    copy: Option<CopyBoost>,
    decoder: StreamDecoder,
    utf8: Utf8Guard,
    words: WordCounter,
    recent: Vec<u32>,
    steps: usize,
    done: bool,
    out: Generation,
}

impl<'a> Generator<'a> {
    /// Feeds the part of `prompt` that `session` does not hold yet (the prefill); the session's
    /// logits then give the first token. One reply: [`GenerateOptions::candidates`] is
    /// [`generate`]'s.
    pub fn start(lm: &'a LoadedModel, session: &mut Session, prompt: &[u32], opts: &GenerateOptions) -> Result<Generator<'a>> {
        let start = Instant::now();
        if prompt.is_empty() {
            return Err(Error::Request("empty prompt: give at least one token".into()));
        }
        // Keep at least the last prompt token to feed: its logits start the reply.
        let reuse = session.common_prefix(prompt).min(prompt.len() - 1);
        session.truncate(reuse);
        let feed = &prompt[reuse..];
        if session.pos() + feed.len() >= session.max_seq() {
            return Err(Error::Request(format!(
                "prompt of {} tokens does not fit the context of {} tokens; shorten the conversation",
                prompt.len(),
                session.max_seq()
            )));
        }
        lm.model.forward(session, feed)?;
        let prefill = start.elapsed();
        let mut recent = Vec::with_capacity(prompt.len() + opts.max_tokens);
        recent.extend_from_slice(prompt);
        Ok(Generator {
            lm,
            start,
            max_tokens: opts.max_tokens,
            words_limit: opts.words,
            sampler: Sampler::new(opts.sampling.clone(), lm.model.config().vocab_size),
            copy: opts.copy.clone(),
            decoder: StreamDecoder::new(&lm.tokenizer),
            utf8: Utf8Guard::new(lm.tokenizer.utf8_table()),
            words: WordCounter::default(),
            recent,
            steps: 0,
            done: false,
            out: Generation {
                text: String::new(),
                tokens: Vec::with_capacity(opts.max_tokens),
                stop: StopReason::MaxTokens,
                prompt_tokens: feed.len(),
                prefill,
                first_piece: None,
                words_done: None,
                total: Duration::ZERO,
                logprobs: Vec::with_capacity(opts.max_tokens),
                entropies: Vec::with_capacity(opts.max_tokens),
                sampled_tokens: 0,
                rivals: Vec::new(),
            },
        })
    }

    /// Samples the next token from `session`'s logits, streams its text and applies the stop
    /// rules. `Some(token)`: feed it to the session (one forward step) and call again; `None`:
    /// the generation is over, call [`Generator::finish`].
    pub fn step(&mut self, session: &Session, on_piece: &mut dyn FnMut(Piece<'_>) -> bool) -> Result<Option<u32>> {
        if self.done || self.steps >= self.max_tokens {
            self.done = true;
            return Ok(None);
        }
        self.steps += 1;
        let out = &mut self.out;
        let logits = session.logits();
        let token = self.sampler.sample_boosted(logits, &self.recent, self.copy.as_ref(), &out.tokens, Some(&mut self.utf8));
        self.utf8.advance(token);
        let (lp, ent) = logprob_entropy(logits, token);
        if self.lm.tokenizer.is_end_of_turn(token) {
            out.stop = StopReason::EndOfTurn;
            self.done = true;
            return Ok(None);
        }
        out.tokens.push(token);
        out.logprobs.push(lp);
        out.entropies.push(ent);
        self.recent.push(token);
        if let Some(text) = self.decoder.push(token)? {
            if let Some(cut) = self.words.push(&text, self.words_limit) {
                // Word N+1 began inside this piece: keep only what belongs to word N.
                let keep = cut.saturating_sub(out.text.len());
                let tail = &text[..keep.min(text.len())];
                if !tail.is_empty() {
                    out.text.push_str(tail);
                    on_piece(Piece { text: tail, at: self.start.elapsed(), words: self.words.words() - 1 });
                }
                out.words_done = Some(self.start.elapsed());
                out.stop = StopReason::Words;
                self.done = true;
                return Ok(None);
            }
            out.text.push_str(&text);
            out.first_piece.get_or_insert_with(|| self.start.elapsed());
            if !on_piece(Piece { text: &text, at: self.start.elapsed(), words: self.words.words() }) {
                out.stop = StopReason::Cancelled;
                self.done = true;
                return Ok(None);
            }
            if self.words_limit.is_some() && word_runs_on(last_word(&out.text)) {
                out.stop = StopReason::RunsOn;
                self.done = true;
                return Ok(None);
            }
        }
        if session.pos() + 1 >= session.max_seq() {
            out.stop = StopReason::ContextFull;
            self.done = true;
            return Ok(None);
        }
        Ok(Some(token))
    }

    /// Stops the generation as [`StopReason::Cancelled`] (the caller's client went away).
    pub fn cancel(&mut self) {
        if !self.done {
            self.out.stop = StopReason::Cancelled;
            self.done = true;
        }
    }

    /// Hands out the text still held by the streaming decoder (unless the words rule or a
    /// cancel cut the reply) and returns the generation.
    pub fn finish(mut self, on_piece: &mut dyn FnMut(Piece<'_>) -> bool) -> Result<Generation> {
        let out = &mut self.out;
        if matches!(out.stop, StopReason::EndOfTurn | StopReason::MaxTokens | StopReason::ContextFull) {
            if let Some(rest) = self.decoder.flush()? {
                out.text.push_str(&rest);
                on_piece(Piece { text: &rest, at: self.start.elapsed(), words: self.words.words() });
            }
            let trimmed = out.text.trim_end().len();
            out.text.truncate(trimmed);
        }
        if out.words_done.is_none() && self.words_limit.is_some_and(|n| self.words.words() >= n) {
            out.words_done = Some(self.start.elapsed());
        }
        out.total = self.start.elapsed();
        out.sampled_tokens = out.tokens.len();
        Ok(self.out)
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.out.tokens
    }
}

/// Log-probability of `token` and entropy (nats) of softmax(`logits`).
pub fn logprob_entropy(logits: &[f32], token: u32) -> (f32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0.0f64;
    let mut ez = 0.0f64;
    for &l in logits {
        let e = ((l - max) as f64).exp();
        z += e;
        ez += e * (l - max) as f64;
    }
    let logz = z.ln();
    let lp = (logits[token as usize] - max) as f64 - logz;
    let entropy = logz - ez / z;
    (lp as f32, entropy as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(pieces: &[&str], n: usize) -> (String, bool) {
        let mut w = WordCounter::default();
        let mut text = String::new();
        for p in pieces {
            if let Some(c) = w.push(p, Some(n)) {
                text.push_str(p);
                text.truncate(c);
                return (text, true);
            }
            text.push_str(p);
        }
        (text, false)
    }

    #[test]
    fn stops_when_the_next_word_begins_never_inside_a_word() {
        // "Paris" could still grow ("Parisian"): no stop until a new word starts.
        assert_eq!(cut(&["The", " capital", " is", " Par", "is"], 4), ("The capital is Paris".into(), false));
        assert_eq!(cut(&["The", " capital", " is", " Par", "is", ".", " It"], 4), ("The capital is Paris.".into(), true));
        // Punctuation stays with its word; the cut drops the space before the next word.
        assert_eq!(cut(&["Yes,", " of", " course!", "\n\n", "Here"], 3), ("Yes, of course!".into(), true));
        // A piece holding the end of word N and the start of word N+1.
        assert_eq!(cut(&["One two", " three fo", "ur"], 3), ("One two three".into(), true));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        assert_eq!(cut(&["Ça", " va", " très", " bien", " 👍"], 4), ("Ça va très bien".into(), true));
    }

    #[test]
    fn model_defaults_read_absent_valid_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("ulm-defaults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(ModelDefaults::FILE);
        let _ = std::fs::remove_file(&file);
        assert_eq!(ModelDefaults::read(&dir).unwrap(), ModelDefaults::default());
        // Hugging Face's own keys may sit beside ours.
        std::fs::write(&file, r#"{"copy_boost": 1.5, "temperature": 0.7}"#).unwrap();
        let d = ModelDefaults::read(&dir).unwrap();
        assert_eq!(d.copy_boost, 1.5);
        assert_eq!((d.copy_boost_or(None), d.copy_boost_or(Some(0.0))), (1.5, 0.0));
        assert_eq!((d.candidates, d.candidates_or(None), d.candidates_or(Some(3))), (0, 1, 3));
        std::fs::write(&file, r#"{"candidates": 4}"#).unwrap();
        let d = ModelDefaults::read(&dir).unwrap();
        assert_eq!((d.copy_boost, d.candidates_or(None), d.candidates_or(Some(0)), d.pmi_or(None)), (0.0, 4, 1, 0.0));
        std::fs::write(&file, r#"{"candidates": 8, "pmi": 0.5}"#).unwrap();
        let d = ModelDefaults::read(&dir).unwrap();
        assert_eq!((d.pmi_or(None), d.pmi_or(Some(0.0))), (0.5, 0.0));
        for bad in [r#"{"copy_boost": -1}"#, r#"{"copy_boost": "high"}"#, "{", r#"{"candidates": 99}"#, r#"{"candidates": -2}"#, r#"{"pmi": 1.5}"#, r#"{"pmi": -0.1}"#] {
            std::fs::write(&file, bad).unwrap();
            let e = ModelDefaults::read(&dir).unwrap_err().to_string();
            assert!(e.contains(ModelDefaults::FILE), "{bad}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_repeated_word_pair_is_a_loop() {
        assert!(repeats_a_pair("I'm a freshman! I'm a freshman! I'm a"));
        assert!(repeats_a_pair("I'm not sure what to say. I'm not"));
        assert!(!repeats_a_pair("The lightbulb was invented by Thomas Edison in"));
        assert!(!repeats_a_pair("Volcano after volcano erupted"), "one word twice is not a pair");
        assert!(!repeats_a_pair(""));
    }

    #[test]
    fn a_word_that_runs_on_is_a_loop() {
        // The two openers a second on-policy round produced (docs/models/ulm-8m.md, session 12).
        assert!(runs_on("The answer is a non-re-re-re-re-re"));
        assert!(runs_on("The Js.A.R.R.R.R.R"));
        assert!(runs_on("Sooooooooo good"));
        assert!(runs_on("hahahaha that is funny"));
        assert!(!runs_on("The lightbulb was invented by Thomas Edison in"));
        assert!(!runs_on("A billion is 1000000000, and a good-for-nothing Mississippi"));
        assert!(!runs_on("Ooooh, I see. R.R. Martin wrote"), "three or seven times is not a run");
        assert!(!runs_on(""));
        assert!(!runs_on("Ça va, ééééééééé"), "only ASCII pieces count");
        assert!(runs_on("The \"Brido-Brido-Brido-Brid"));
        assert!(!runs_on("The \"Brido-Brido-"), "a longer piece twice is not a run");
        assert!(!runs_on("bye-bye-bye, tuktuk, abracadabra, Baden-Baden, Walla-Walla-Washington"));
        // What the generator checks at every token: the word the text ends in.
        assert_eq!(last_word("The answer is a non-re-re"), "non-re-re");
        assert_eq!(last_word("The answer is "), "");
        assert!(!word_runs_on(last_word("The answer is a non-re-re-re")));
        assert!(word_runs_on(last_word("The answer is a non-re-re-re-re")));
        let looped = Fit::of("What is a rose?", "A rose is a re-re-re-re-re");
        assert_eq!(looped, Fit { loops: true, names_topic: true });
        let off = Fit::of("What is a rose?", "I'm not sure what you mean");
        assert_eq!(off, Fit { loops: false, names_topic: false });
        assert!(off.rank() > looped.rank(), "a sentence off the topic beats a loop on it");
        assert!(Fit::of("What is a rose?", "A rose is a flower").rank() > off.rank());
    }

    #[test]
    fn logprob_and_entropy_of_uniform() {
        let (lp, h) = logprob_entropy(&[0.0; 4], 2);
        assert!((lp - (0.25f32).ln()).abs() < 1e-6 && (h - (4f32).ln()).abs() < 1e-6);
    }
}
