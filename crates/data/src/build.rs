//! The data builder: sources and distilled pairs → cleaned, deduplicated, split, shuffled and
//! rendered token shards with a manifest.
//!
//! ```no_run
//! use ulm_data::build::{assemble, write_shards, Settings};
//! use ulm_data::render::Stage;
//! let docs = ulm_data::sources::load_all(std::path::Path::new("assets"))?;
//! let settings = Settings::for_stage(Stage::Lm);
//! let corpus = assemble(docs, Vec::new(), &[], &settings);
//! let tok_path = std::path::Path::new("data/tokenizer/tokenizer.json");
//! let manifest = write_shards(&corpus, tok_path, std::path::Path::new("runs/data/lm"), &settings)?;
//! println!("{} training tokens", manifest.tokens(ulm_data::Split::Train));
//! # Ok::<(), ulm_data::Error>(())
//! ```
//!
//! The steps, in order:
//! 1. **Clean**: drop empty documents, chats with a turn over [`Settings::max_turn_chars`] or a
//!    total over [`Settings::max_chat_chars`], texts over [`Settings::max_text_chars`]; distilled
//!    pairs go through [`Pair::verdict`] (empty, echo of the prompt, repetition loop).
//! 2. **Drop evaluation prompts**: any train chat with a turn equal (normalised) to a dev prompt.
//! 3. **Deduplicate** across all sources on the normalised text ([`dedup_key`]). Held-out units
//!    are seen first, so when a text is both held out and trained on, the held-out copy is kept
//!    and no held-out text reaches the train shards.
//! 4. **Select** the stage's units (`lm`: all; `sft`: distilled pairs, chatterbot, and a stable
//!    share of chitchat chats cut to a few turns).
//! 5. **Shuffle** deterministically (by a hash of seed, source and id) and **render**
//!    ([`crate::render`]) into `train-NNN` / `heldout-NNN` shards.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;
use ulm_runtime::copy::names_topic;

use crate::clean::dedup_key;
use crate::distilled::{Finish, Pair, STUDENT_SUFFIX, Verdict, prompt_id};
use crate::render::{Renderer, Stage, Tokens};
use crate::shards::{Manifest, ShardWriter, SourceStats};
use crate::sources::{Body, Document, Role, SOURCES, SourceInfo, Turn};
use crate::split::{Split, mix_hash};
use crate::{Error, Result, tokenizer};

/// The distilled pairs as a source of the manifest.
pub const DISTILLED: SourceInfo = SourceInfo {
    name: "distilled",
    licence: "Apache-2.0 (outputs of SmolLM2-135M-Instruct; prompts from the sources above)",
    origin: "ulm distill: corpus/distill/*.jsonl.gz and runs/distill/smollm2.jsonl",
};

/// Build settings; every field is recorded in the manifest.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Stage of the shards.
    pub stage: Stage,
    /// Seed of the document shuffle.
    pub seed: u64,
    /// A shard is closed at the first document boundary past this many tokens.
    pub shard_tokens: usize,
    /// Chats with a longer turn (in bytes) are dropped.
    pub max_turn_chars: usize,
    /// Chats longer than this in total (bytes) are dropped.
    pub max_chat_chars: usize,
    /// Plain texts longer than this (bytes) are dropped.
    pub max_text_chars: usize,
    /// `sft`: share of chitchat chats taken, per mille (stable by id).
    pub sft_chitchat_per_mille: u64,
    /// `sft`: a chitchat chat is cut to at most this many turns.
    pub sft_chitchat_max_turns: usize,
    /// `sft`: whole chats, or single exchanges cut to their opener ([`SftMix::Openers`]).
    pub sft_mix: SftMix,
    /// `sft` openers: a reply is cut after this many words (and then has no end-of-turn token).
    pub opener_reply_words: usize,
    /// `sft` openers: share of chitchat question → reply exchanges taken, per mille.
    pub opener_chitchat_per_mille: u64,
    /// `sft` openers: share of WordNet synsets turned into definition questions, per mille.
    pub opener_wordnet_per_mille: u64,
    /// `sft` openers: leave out distilled replies that open with one of the teacher's stock
    /// phrases ([`GENERIC_OPENERS`]); `lm`: leave out a distilled chat with such a reply.
    pub opener_drop_generic: bool,
    /// `sft` openers: leave out distilled (and student) replies that open with a hedge that
    /// answers nothing ([`HEDGE_OPENERS`]); `lm`: leave out a distilled chat with such a reply.
    pub opener_drop_hedges: bool,
    /// `sft` openers: a train exchange whose reply names the question's topic in its first eight
    /// words ([`ulm_runtime::copy::names_topic`]) is written this many times (1 = once): the mix
    /// leans toward openers that say what was asked instead of a stock phrase.
    pub opener_topic_repeat: usize,
    /// Leave out a distilled first answer whose first eight words do not name the question's
    /// topic when the same prompt asked again (`<id>#redo`, `ulm distill --redo`) got one that does.
    pub drop_superseded: bool,
    /// `sft` openers: a train exchange of the student's own openers (`ulm distill --student`,
    /// ids `<id>#student`) is written this many times, in place of `opener_topic_repeat`.
    pub opener_student_repeat: usize,
    /// `sft` openers: a train exchange of the teacher's replies to the longer, many-part requests
    /// (ids `instruct:task:…`, [`crate::instruct`]) is written this many times, in place of
    /// `opener_topic_repeat`.
    pub opener_task_repeat: usize,
    /// `sft` openers: each train exchange of a family named here ([`family`]: `chitchat`,
    /// `instruct`, `invented`, `wordnet`, …) is written this many times over, on top of the
    /// repeats above, so a family keeps its share of the mix when another one grows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub opener_family_repeat: Vec<(String, usize)>,
}

/// The family of a unit, for [`Settings::opener_family_repeat`]: the first `:`-separated part of a
/// distilled id (`chitchat:…` → `chitchat`, `instruct:task:…` → `instruct`, `wordnet-q:n:…` →
/// `wordnet-q`), and a source's own name for its documents (`chitchat`, `chatterbot`, `wordnet`).
pub fn family(u: &Unit) -> &str {
    if u.source == DISTILLED.name { u.id.split(':').next().unwrap_or_default() } else { u.source }
}

/// How many times over [`Settings::opener_family_repeat`] writes a train exchange of `u`'s family.
fn family_repeat(u: &Unit, s: &Settings) -> usize {
    let f = family(u);
    s.opener_family_repeat.iter().find(|(name, _)| name == f).map_or(1, |&(_, n)| n.max(1))
}

/// Id prefix of the longer, many-part requests ([`crate::instruct`]).
pub const TASK_PREFIX: &str = "instruct:task:";

/// The teacher's stock openers (first words, lower case): about 2,000 of the 23,553 distilled
/// replies of corpus/distill begin with one, whatever was asked.
pub const GENERIC_OPENERS: &[&str] =
    &["i'm so glad you", "i'm sorry for the", "i'm sorry for any", "i'm so sorry to", "i'm so sorry for", "i'm glad to hear"];

/// Hedges that answer nothing (first words, lower case): about 1,200 replies of corpus/distill
/// and corpus/student, nearly all to chitchat, and the student's written six times over, so the
/// μLM meets a chat message with "I'm not sure what to say, but I'm" (docs/eval/reading-s23b).
pub const HEDGE_OPENERS: &[&str] = &[
    "i'm not sure what",
    "i'm not sure i",
    "i'm glad you're enjoying",
    "i'm glad you're interested",
    "i'm sorry, but as",
    "i'm sorry, i'm not",
    "i'm here to help",
    "i'd be happy to help",
];

/// The first words of `reply`, lower case, single-spaced, with straight apostrophes.
fn head_words(reply: &str) -> String {
    reply.split_whitespace().take(5).collect::<Vec<_>>().join(" ").to_lowercase().replace('’', "'")
}

/// True if `reply` begins with one of [`GENERIC_OPENERS`] (case and spacing ignored).
pub fn is_generic_opener(reply: &str) -> bool {
    let head = head_words(reply);
    GENERIC_OPENERS.iter().any(|g| head.starts_with(g))
}

/// True if `reply` begins with one of [`HEDGE_OPENERS`] (case and spacing ignored).
pub fn is_hedge_opener(reply: &str) -> bool {
    let head = head_words(reply);
    HEDGE_OPENERS.iter().any(|g| head.starts_with(g))
}

/// True if the first eight words of `reply` name the topic of `prompt`
/// ([`ulm_runtime::copy::names_topic`]): the test the openers mix, `ulm distill --tries` and
/// `--redo off-topic` share.
pub fn reply_names_topic(prompt: &str, reply: &str) -> bool {
    names_topic(prompt, &first_words(reply, 8).0)
}

/// What the `sft` stage trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SftMix {
    /// Distilled pairs and chatterbot whole, plus a share of chitchat chats cut to a few turns.
    Chats,
    /// Only what the μLM writes: single exchanges (a user turn and the reply to it) with the reply
    /// cut after [`Settings::opener_reply_words`] words — every distilled and chatterbot exchange, the
    /// chitchat turns that ask a question with the turn that answers it, and WordNet glosses as
    /// definition questions (`What is a brace?` → `A brace is a support that …`), which teach the
    /// model to name the subject it was asked about. Several times more exchanges per token.
    Openers,
}

impl Settings {
    /// The defaults of one stage.
    pub fn for_stage(stage: Stage) -> Settings {
        Settings {
            stage,
            seed: 1337,
            shard_tokens: 16 << 20,
            // Long chitchat chats are real conversations (the longest hold ~18% of its text):
            // only monologue-sized turns and runaway documents are dropped.
            max_turn_chars: 4_000,
            max_chat_chars: 200_000,
            max_text_chars: 4_000,
            sft_chitchat_per_mille: 150,
            sft_chitchat_max_turns: 8,
            sft_mix: SftMix::Chats,
            opener_reply_words: 24,
            opener_chitchat_per_mille: 700,
            opener_wordnet_per_mille: 150,
            opener_drop_generic: false,
            opener_drop_hedges: false,
            opener_topic_repeat: 1,
            opener_student_repeat: 1,
            opener_task_repeat: 1,
            opener_family_repeat: Vec::new(),
            drop_superseded: false,
        }
    }
}

/// A cleaned unit of the corpus: a source document or a distilled pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    /// Source name (a [`SOURCES`] name or `distilled`).
    pub source: &'static str,
    /// Identity inside the source.
    pub id: String,
    /// Its split.
    pub split: Split,
    /// Chat or text.
    pub body: Body,
    /// False when the last (assistant) turn was cut short (distilled `finish == "length"`).
    pub complete: bool,
}

impl Unit {
    fn key_text(&self) -> String {
        match &self.body {
            Body::Chat(turns) => turns.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join("\n"),
            Body::Text(t) => t.clone(),
        }
    }
}

/// The cleaned, deduplicated corpus with its per-source bookkeeping.
pub struct Corpus {
    /// Units in dedup order (held-out first).
    pub units: Vec<Unit>,
    /// One entry per source, in [`SOURCES`] order then `distilled`.
    pub stats: Vec<SourceStats>,
}

fn entry<'a>(stats: &'a mut [SourceStats], name: &str) -> &'a mut SourceStats {
    stats.iter_mut().find(|s| s.name == name).expect("every source has a stats entry")
}

/// Steps 1–3: cleans documents and pairs, drops train chats with a turn that is an evaluation prompt, and
/// deduplicates across sources (see the module docs).
pub fn assemble(docs: Vec<Document>, pairs: Vec<Pair>, eval_prompts: &[String], s: &Settings) -> Corpus {
    let mut stats: Vec<SourceStats> = SOURCES
        .iter()
        .chain([&DISTILLED])
        .map(|i| SourceStats { name: i.name.into(), licence: i.licence.into(), origin: i.origin.into(), ..Default::default() })
        .collect();
    let mut units = Vec::new();
    for d in docs {
        let split = d.split();
        let st = entry(&mut stats, d.source);
        st.read += 1;
        let (empty, long) = match &d.body {
            Body::Chat(turns) => {
                let total: usize = turns.iter().map(|t| t.text.len()).sum();
                (
                    turns.iter().all(|t| t.role == Role::User) || turns.iter().any(|t| t.text.trim().is_empty()),
                    total > s.max_chat_chars || turns.iter().any(|t| t.text.len() > s.max_turn_chars),
                )
            }
            Body::Text(t) => (t.trim().is_empty(), t.len() > s.max_text_chars),
        };
        if empty {
            st.dropped_empty += 1;
        } else if long {
            st.dropped_long += 1;
        } else {
            units.push(Unit { source: d.source, id: d.id, split, body: d.body, complete: true });
        }
    }

    let mut pairs: Vec<Pair> = pairs.into_iter().map(Pair::normalized).collect();
    pairs.sort_by(|a, b| a.id.cmp(&b.id));
    pairs.dedup_by(|a, b| a.id == b.id); // a record both packed and in the working file
    let on_topic = |p: &Pair| reply_names_topic(&p.prompt, &p.reply);
    let better_again: HashSet<String> = if s.drop_superseded {
        pairs.iter().filter(|p| p.id.contains('#') && on_topic(p)).map(|p| prompt_id(&p.id).to_string()).collect()
    } else {
        HashSet::new()
    };
    for p in pairs {
        let st = entry(&mut stats, DISTILLED.name);
        st.read += 1;
        if !p.id.contains('#') && better_again.contains(&p.id) && !on_topic(&p) {
            *st.dropped_filter.entry("superseded".into()).or_default() += 1;
            continue;
        }
        match p.verdict() {
            Verdict::Keep => {}
            Verdict::Empty => {
                st.dropped_empty += 1;
                continue;
            }
            v => {
                *st.dropped_filter.entry(v.name().into()).or_default() += 1;
                continue;
            }
        }
        if p.prompt.len() + p.reply.len() > s.max_chat_chars || p.prompt.len() > s.max_turn_chars {
            st.dropped_long += 1;
            continue;
        }
        units.push(Unit {
            source: DISTILLED.name,
            split: p.split(),
            complete: p.finish == Finish::Stop,
            body: Body::Chat(vec![Turn { role: Role::User, text: p.prompt }, Turn { role: Role::Assistant, text: p.reply }]),
            id: p.id,
        });
    }

    let eval: HashSet<u64> = eval_prompts.iter().map(|p| dedup_key(p)).collect();
    units.retain(|u| {
        // Held-out chats stay: they only ever reach the held-out loss (the dev set comes from them).
        let hit = u.split == Split::Train
            && matches!(&u.body, Body::Chat(turns) if turns.iter().any(|t| eval.contains(&dedup_key(&t.text))));
        if hit {
            entry(&mut stats, u.source).dropped_eval += 1;
        }
        !hit
    });

    // Held-out first (stable sort keeps the source and read order within a split).
    units.sort_by_key(|u| u.split != Split::Heldout);
    let mut seen = HashSet::new();
    units.retain(|u| {
        let fresh = seen.insert(dedup_key(&u.key_text()));
        if !fresh {
            entry(&mut stats, u.source).dropped_duplicate += 1;
        }
        fresh
    });
    Corpus { units, stats }
}

/// The texts the tokenizer is trained on: every train-split unit, chat turns as "{role}\n{text}"
/// (so the role headers become tokens), texts as they are.
pub fn tokenizer_texts(corpus: &Corpus) -> Vec<String> {
    let mut out = Vec::new();
    for u in corpus.units.iter().filter(|u| u.split == Split::Train) {
        match &u.body {
            Body::Chat(turns) => out.extend(turns.iter().map(|t| {
                let role = if t.role == Role::User { "user" } else { "assistant" };
                format!("{role}\n{}", t.text)
            })),
            Body::Text(t) => out.push(t.clone()),
        }
    }
    out
}

/// Step 4: the units the stage makes of `u` (none when the stage leaves it out).
pub fn stage_units(u: &Unit, s: &Settings) -> Vec<Unit> {
    match (s.stage, s.sft_mix) {
        (Stage::Lm, _) if has_dropped_reply(u, s) => Vec::new(),
        (Stage::Lm, _) => vec![u.clone()],
        (Stage::Sft, SftMix::Chats) => sft_chat(u, s).into_iter().collect(),
        (Stage::Sft, SftMix::Openers) => sft_openers(u, s),
    }
}

/// A distilled reply the settings leave out: a stock phrase ([`Settings::opener_drop_generic`])
/// or a hedge ([`Settings::opener_drop_hedges`]).
fn is_dropped_reply(reply: &str, s: &Settings) -> bool {
    (s.opener_drop_generic && is_generic_opener(reply)) || (s.opener_drop_hedges && is_hedge_opener(reply))
}

/// `lm`: a distilled chat with a reply that the openers mix leaves out: language modelling on it
/// would teach the opener that the openers mix leaves out.
fn has_dropped_reply(u: &Unit, s: &Settings) -> bool {
    let Body::Chat(turns) = &u.body else { return false };
    u.source == "distilled" && turns.iter().any(|t| t.role == Role::Assistant && is_dropped_reply(&t.text, s))
}

fn sft_chat(u: &Unit, s: &Settings) -> Option<Unit> {
    match (u.source, &u.body) {
        ("distilled" | "chatterbot", Body::Chat(_)) => Some(u.clone()),
        ("chitchat", Body::Chat(turns)) => {
            if mix_hash(format!("sft:{}", u.id).as_bytes()) % 1000 >= s.sft_chitchat_per_mille {
                return None;
            }
            let mut turns: Vec<Turn> = turns.iter().take(s.sft_chitchat_max_turns).cloned().collect();
            while turns.last().is_some_and(|t| t.role == Role::User) {
                turns.pop(); // a trailing user turn teaches nothing in sft
            }
            (!turns.is_empty()).then(|| Unit { body: Body::Chat(turns), ..u.clone() })
        }
        _ => None,
    }
}

/// The first `words` words of `text` and whether anything was cut.
fn first_words(text: &str, words: usize) -> (String, bool) {
    let mut it = text.split_whitespace();
    let head: Vec<&str> = it.by_ref().take(words).collect();
    (head.join(" "), it.next().is_some())
}

fn sft_openers(u: &Unit, s: &Settings) -> Vec<Unit> {
    let taken = |salt: &str, per_mille: u64| mix_hash(format!("opener:{salt}:{}", u.id).as_bytes()) % 1000 < per_mille;
    match (u.source, &u.body) {
        (source, Body::Chat(turns)) => {
            let mut out = Vec::new();
            for (i, w) in turns.windows(2).enumerate() {
                let (ask, reply) = (&w[0], &w[1]);
                let wanted = match source {
                    // Either speaker may ask; the other one's next turn is the reply.
                    "chitchat" => ask.text.trim_end().ends_with('?') && taken(&i.to_string(), s.opener_chitchat_per_mille),
                    "distilled" if is_dropped_reply(&reply.text, s) => false,
                    "distilled" | "chatterbot" => ask.role == Role::User && reply.role == Role::Assistant,
                    _ => false,
                };
                if !wanted {
                    continue;
                }
                let (text, cut) = first_words(&reply.text, s.opener_reply_words);
                let last = i + 2 == turns.len();
                let copies = if u.split != Split::Train {
                    1
                } else {
                    let repeat = if u.id.ends_with(STUDENT_SUFFIX) {
                        s.opener_student_repeat
                    } else if u.id.starts_with(TASK_PREFIX) {
                        s.opener_task_repeat
                    } else if reply_names_topic(&ask.text, &text) {
                        s.opener_topic_repeat
                    } else {
                        1
                    };
                    repeat.max(1) * family_repeat(u, s)
                };
                for copy in 0..copies {
                    out.push(Unit {
                        id: copy_id(format!("{}#{i}", u.id), copy),
                        body: Body::Chat(vec![Turn { role: Role::User, text: ask.text.clone() }, Turn { role: Role::Assistant, text: text.clone() }]),
                        complete: !cut && (!last || u.complete),
                        ..u.clone()
                    });
                }
            }
            out
        }
        ("wordnet", Body::Text(t)) if taken("wordnet", s.opener_wordnet_per_mille) => {
            let Some((q, a)) = definition_exchange(t, mix_hash(u.id.as_bytes())) else { return Vec::new() };
            let (a, cut) = first_words(&a, s.opener_reply_words);
            let copies = if u.split == Split::Train { family_repeat(u, s) } else { 1 };
            (0..copies)
                .map(|copy| Unit {
                    id: copy_id(format!("{}#def", u.id), copy),
                    body: Body::Chat(vec![Turn { role: Role::User, text: q.clone() }, Turn { role: Role::Assistant, text: a.clone() }]),
                    complete: !cut,
                    ..u.clone()
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The id of the `copy`-th copy of an exchange whose first copy is `first` (`v#0`, `v#0.1`, …):
/// each copy has its own id, since the shuffle orders by id.
fn copy_id(first: String, copy: usize) -> String {
    if copy == 0 { first } else { format!("{first}.{copy}") }
}

/// A WordNet gloss text (`brace, bracing (noun): a support that steadies …; "an example"`) as a
/// definition question and its answer, the question's wording picked by `pick`; `None` for adverbs
/// and glosses that do not read as a definition.
pub fn definition_exchange(text: &str, pick: u64) -> Option<(String, String)> {
    let (head, gloss) = text.split_once("): ")?;
    let (words, pos) = head.rsplit_once(" (")?;
    let word = words.split(", ").next()?.trim();
    // The definition proper: before the examples and alternative senses, without a leading "(botany)".
    let mut def = gloss.split(';').next()?.trim();
    if def.starts_with('(') {
        def = def.split_once(") ").map(|(_, rest)| rest.trim())?;
    }
    let def = def.trim_end_matches(['.', ',', ':']);
    if word.is_empty() || def.split_whitespace().count() < 2 || def.contains('"') {
        return None;
    }
    // A count noun's gloss starts with "a"/"an" ("a support that …"); a mass or proper noun's does
    // not ("synthesis of …"), and then no article reads right ("Photosynthesis is synthesis of …").
    let counted = def.starts_with("a ") || def.starts_with("an ");
    let article = if !counted || word.chars().next().is_some_and(char::is_uppercase) {
        ""
    } else if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an "
    } else {
        "a "
    };
    let n = pick as usize;
    let (q, a) = match pos {
        "noun" => {
            let subject = format!("{article}{word}");
            let qs = [
                format!("What is {subject}?"),
                format!("What's {subject}?"),
                format!("Can you tell me what {subject} is?"),
                format!("What does \"{word}\" mean?"),
                format!("Explain what {subject} is."),
            ];
            (qs[n % qs.len()].clone(), format!("{} is {def}.", capitalize(&subject)))
        }
        "verb" => {
            let qs = [format!("What does it mean to {word}?"), format!("What does \"{word}\" mean?"), format!("What is it to {word}?")];
            (qs[n % qs.len()].clone(), format!("To {word} means to {def}."))
        }
        "adjective" => {
            let qs = [format!("What does \"{word}\" mean?"), format!("What does it mean to be {word}?")];
            (qs[n % qs.len()].clone(), format!("{} means {def}.", capitalize(word)))
        }
        _ => return None,
    };
    Some((q, a))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Steps 4–5: selects, shuffles and renders the corpus into `out` with the tokenizer at
/// `tokenizer_path`; copies the tokenizer files beside the shards and writes the manifest.
pub fn write_shards(corpus: &Corpus, tokenizer_path: &Path, out: &Path, s: &Settings) -> Result<Manifest> {
    let tok = tokenizer::load(tokenizer_path)?;
    remove_old_shards(out)?;
    let renderer = Renderer::new(&tok, s.stage)?;
    let mut stats = corpus.stats.clone();
    let mut order: Vec<(u64, Unit)> = Vec::new();
    for u in &corpus.units {
        let made = stage_units(u, s);
        if made.is_empty() {
            entry(&mut stats, u.source).not_in_stage += 1;
        }
        for u in made {
            order.push((mix_hash(format!("{}:{}:{}", s.seed, u.source, u.id).as_bytes()), u));
        }
    }
    order.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| (a.1.source, &a.1.id).cmp(&(b.1.source, &b.1.id))));

    let mut train = ShardWriter::new(out, Split::Train, s.shard_tokens)?;
    let mut heldout = ShardWriter::new(out, Split::Heldout, s.shard_tokens)?;
    let mut t = Tokens::default();
    for (_, u) in &order {
        t.clear();
        match &u.body {
            Body::Chat(turns) => renderer.chat(turns, u.complete, &mut t)?,
            Body::Text(text) => renderer.text(text, &mut t)?,
        }
        let st = entry(&mut stats, u.source);
        match u.split {
            Split::Train => {
                st.train.add(&t.classes);
                train.push(&t.ids, &t.classes)?;
            }
            Split::Heldout => {
                st.heldout.add(&t.classes);
                heldout.push(&t.ids, &t.classes)?;
            }
        }
    }
    let mut shards = train.finish()?;
    shards.extend(heldout.finish()?);

    copy(tokenizer_path, &out.join("tokenizer.json"))?;
    let config = tokenizer_path.with_file_name("tokenizer_config.json");
    if config.exists() {
        copy(&config, &out.join("tokenizer_config.json"))?;
    }
    let manifest = Manifest {
        vocab_size: tok.get_vocab_size(true),
        tokenizer: "tokenizer.json".into(),
        tokenizer_sha256: tokenizer::sha256_file(tokenizer_path)?,
        stage: s.stage.name().into(),
        shards,
        sources: stats,
        settings: serde_json::to_value(s).expect("settings serialize"),
        builder: format!("ulm-data {}", env!("CARGO_PKG_VERSION")),
    };
    manifest.write(out)?;
    Ok(manifest)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).map(|_| ()).map_err(|source| Error::Write { path: to.to_owned(), source })
}

/// Removes shards of an earlier build so that the directory holds only what the manifest lists.
fn remove_old_shards(dir: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let shard = (name.starts_with("train-") || name.starts_with("heldout-")) && (name.ends_with(".u16") || name.ends_with(".u8"));
        if shard || name == "manifest.json" {
            std::fs::remove_file(&p).map_err(|source| Error::Write { path: p.clone(), source })?;
        }
    }
    Ok(())
}

/// Per-source token counts as rows (source, train docs, train tokens, held-out docs, held-out
/// tokens, loss tokens) for the summary table.
pub fn summary(m: &Manifest) -> Vec<(String, u64, u64, u64, u64, u64)> {
    m.sources
        .iter()
        .map(|s| (s.name.clone(), s.train.documents, s.train.tokens, s.heldout.documents, s.heldout.tokens, s.train.loss_tokens))
        .collect()
}

/// Per-source counters by name (for reports).
pub fn stats_by_name(m: &Manifest) -> BTreeMap<&str, &SourceStats> {
    m.sources.iter().map(|s| (s.name.as_str(), s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::read_shard;
    use crate::testutil::chat;

    fn text(id: &str, t: &str) -> Document {
        Document { source: "wordnet", id: id.into(), body: Body::Text(t.into()) }
    }

    /// About 300 documents from every source, ~5% of them held out by their ids.
    fn fixture() -> (Vec<Document>, Vec<Pair>) {
        let mut docs = Vec::new();
        for i in 0..120 {
            docs.push(chat("chitchat", &format!("c{i}"), &[&format!("Hi, I like number {i}."), "Me too!", "Why?", "It is round."]));
            docs.push(chat("chatterbot", &format!("food:{i}"), &[&format!("Do you eat food {i}?"), "I am a bot."]));
            docs.push(text(&format!("n{i}"), &format!("thing {i} (noun): an object numbered {i}")));
        }
        let pairs = (0..60)
            .map(|i| Pair {
                id: format!("wordnet-q:n:thing{i}"),
                source: "wordnet-q".into(),
                prompt: format!("What is thing {i}?"),
                reply: format!("Thing {i} is an object with the number {i} written on it."),
                finish: if i % 2 == 0 { Finish::Stop } else { Finish::Length },
            })
            .collect();
        (docs, pairs)
    }

    #[test]
    fn duplicates_across_sources_are_dropped_keeping_the_held_out_copy() {
        let (mut docs, pairs) = fixture();
        // Find a held-out chatterbot doc and copy its text into a train doc of another source.
        let held = docs.iter().find(|d| d.source == "chatterbot" && d.split() == Split::Heldout).unwrap().clone();
        let Body::Chat(turns) = &held.body else { unreachable!() };
        let copy_id = (0..).map(|i| format!("copy{i}")).find(|id| crate::split::split_of("chitchat", id) == Split::Train).unwrap();
        let shouted: Vec<String> = turns.iter().map(|t| t.text.to_uppercase() + "!!").collect();
        docs.push(chat("chitchat", &copy_id, &shouted.iter().map(String::as_str).collect::<Vec<_>>()));
        docs.push(text("dup-empty", "   "));
        let corpus = assemble(docs, pairs, &[], &Settings::for_stage(Stage::Lm));
        assert!(corpus.units.iter().any(|u| u.id == held.id));
        assert!(!corpus.units.iter().any(|u| u.id == copy_id), "the train copy of a held-out text survived");
        let st = |n: &str| corpus.stats.iter().find(|s| s.name == n).unwrap().clone();
        assert_eq!(st("chitchat").dropped_duplicate, 1);
        assert_eq!(st("wordnet").dropped_empty, 1);
    }

    #[test]
    fn eval_prompts_and_bad_replies_never_reach_the_shards() {
        let (docs, mut pairs) = fixture();
        pairs.push(Pair { id: "wordnet-q:n:echo".into(), source: "wordnet-q".into(), prompt: "What is an echo chamber?".into(),
                          reply: "What is an echo chamber? It is a room.".into(), finish: Finish::Stop });
        let i = (0..).find(|i| crate::split::split_of("chatterbot", &format!("food:{i}")) == Split::Train).unwrap();
        let j = (0..).find(|i| crate::split::split_of("chatterbot", &format!("food:{i}")) == Split::Heldout).unwrap();
        let eval = [format!("do you eat FOOD {i}"), format!("Do you eat food {j}?")];
        let corpus = assemble(docs, pairs, &eval, &Settings::for_stage(Stage::Lm));
        assert!(!corpus.units.iter().any(|u| u.id == format!("food:{i}")));
        assert!(corpus.units.iter().any(|u| u.id == format!("food:{j}")), "a held-out chat may hold a dev prompt");
        let st = corpus.stats.iter().find(|s| s.name == "chatterbot").unwrap();
        assert_eq!(st.dropped_eval, 1);
        let d = corpus.stats.iter().find(|s| s.name == "distilled").unwrap();
        assert_eq!(d.dropped_filter.get("echoes_prompt"), Some(&1));
    }

    #[test]
    fn wordnet_glosses_become_definition_questions() {
        let ex = |t: &str, k: u64| definition_exchange(t, k);
        assert_eq!(
            ex("brace, bracing (noun): a support that steadies or strengthens something else; \"the house needed a brace\"", 0),
            Some(("What is a brace?".into(), "A brace is a support that steadies or strengthens something else.".into()))
        );
        assert_eq!(
            ex("photosynthesis (noun): (biology) synthesis of compounds with the aid of radiant energy", 1),
            Some(("What's photosynthesis?".into(), "Photosynthesis is synthesis of compounds with the aid of radiant energy.".into()))
        );
        assert_eq!(ex("owl (noun): a nocturnal bird of prey", 2).unwrap().1, "An owl is a nocturnal bird of prey.");
        assert_eq!(
            ex("run (verb): move fast by using one's feet", 0),
            Some(("What does it mean to run?".into(), "To run means to move fast by using one's feet.".into()))
        );
        assert_eq!(ex("able (adjective): having the necessary means or skill", 0).unwrap().1, "Able means having the necessary means or skill.");
        assert_eq!(ex("quickly (adverb): with speed", 0), None);
        assert_eq!(ex("zero (noun): nothing", 0), None, "a one-word gloss does not read as a definition");
    }

    #[test]
    fn the_opener_mix_is_single_exchanges_with_cut_replies() {
        let (mut docs, pairs) = fixture();
        let long: String = (0..40).map(|i| format!("w{i} ")).collect();
        docs.push(chat("chitchat", "q1", &["Hello there.", "Hi! Do you like tea?", long.trim(), "Why?", "Because."]));
        let mut s = Settings::for_stage(Stage::Sft);
        s.sft_mix = SftMix::Openers;
        s.opener_wordnet_per_mille = 1000;
        s.opener_chitchat_per_mille = 1000;
        let corpus = assemble(docs, pairs, &[], &s);
        let units: Vec<Unit> = corpus.units.iter().flat_map(|u| stage_units(u, &s)).collect();
        for u in &units {
            let Body::Chat(turns) = &u.body else { panic!("plain text in the opener mix: {}", u.id) };
            assert_eq!(turns.len(), 2);
            assert_eq!((turns[0].role, turns[1].role), (Role::User, Role::Assistant));
            assert!(turns[1].text.split_whitespace().count() <= s.opener_reply_words);
        }
        // Only the question turns of the chitchat chat are asked, whoever asks them; the long answer is cut.
        let q: Vec<&Unit> = units.iter().filter(|u| u.id.starts_with("q1#")).collect();
        assert_eq!(q.len(), 2, "{q:?}");
        let Body::Chat(t) = &q[0].body else { unreachable!() };
        assert_eq!(t[0].text, "Hi! Do you like tea?");
        assert!(t[1].text.starts_with("w0 w1") && t[1].text.ends_with("w23") && !q[0].complete);
        let Body::Chat(t) = &q[1].body else { unreachable!() };
        assert_eq!((t[0].text.as_str(), t[1].text.as_str(), q[1].complete), ("Why?", "Because.", true));
        // Every WordNet gloss of the fixture reads as a definition; a distilled reply cut by the teacher stays cut.
        let defs = units.iter().filter(|u| u.id.ends_with("#def")).count();
        assert_eq!(defs, corpus.units.iter().filter(|u| u.source == "wordnet").count());
        assert!(units.iter().any(|u| u.source == "distilled" && !u.complete) && units.iter().any(|u| u.source == "distilled" && u.complete));
        // Held-out stays held out: a unit keeps the split of the document it came from.
        for u in &units {
            let id = u.id.rsplit_once('#').unwrap().0;
            let from = corpus.units.iter().find(|d| d.id == id && d.source == u.source).unwrap();
            assert_eq!(u.split, from.split);
        }
    }

    #[test]
    fn stock_openers_of_the_teacher_can_be_left_out() {
        assert!(is_generic_opener("I'm so glad you're enjoying it"));
        assert!(is_generic_opener("i’m  SORRY for the misunderstanding."));
        assert!(!is_generic_opener("I'm so happy for you"));
        assert!(!is_generic_opener("A volcano is a mountain"));
        let pairs = [("a", "I'm glad to hear that you like it."), ("b", "Paris is the capital of France.")];
        for (drop, expect) in [(false, 2), (true, 1)] {
            assert_eq!(opener_exchanges(&pairs, |s| s.opener_drop_generic = drop), expect, "drop_generic = {drop}");
        }
    }

    /// Exchanges the openers mix makes of one chitchat question per `(id, reply)`, with `set` applied
    /// to the `sft` openers settings.
    fn opener_exchanges(pairs: &[(&str, &str)], set: impl FnOnce(&mut Settings)) -> usize {
        let pairs = chitchat_questions(pairs);
        let mut s = Settings::for_stage(Stage::Sft);
        s.sft_mix = SftMix::Openers;
        set(&mut s);
        let corpus = assemble(Vec::new(), pairs, &[], &s);
        corpus.units.iter().flat_map(|u| stage_units(u, &s)).count()
    }

    /// One distilled chitchat question per `(id, reply)`.
    fn chitchat_questions(pairs: &[(&str, &str)]) -> Vec<Pair> {
        pairs
            .iter()
            .map(|(id, reply)| Pair { id: id.to_string(), source: "chitchat".into(), prompt: format!("Question {id}?"), reply: reply.to_string(), finish: Finish::Stop })
            .collect()
    }

    #[test]
    fn language_modelling_can_leave_out_the_stock_replies_and_hedges_too() {
        let pairs = chitchat_questions(&[("a", "I'm glad to hear that you like it."), ("b", "I'm not sure what you mean, but"), ("c", "Paris is the capital of France.")]);
        let (docs, _) = fixture();
        let lm_units = |generic: bool, hedges: bool| {
            let mut s = Settings::for_stage(Stage::Lm);
            (s.opener_drop_generic, s.opener_drop_hedges) = (generic, hedges);
            let corpus = assemble(docs.clone(), pairs.clone(), &[], &s);
            let units: Vec<Unit> = corpus.units.iter().flat_map(|u| stage_units(u, &s)).collect();
            let distilled = units.iter().filter(|u| u.source == "distilled").count();
            (units.len() - distilled, distilled)
        };
        let (others, all) = lm_units(false, false);
        assert_eq!(all, 3);
        assert_eq!(lm_units(true, false), (others, 2), "a stock reply goes, the rest stays");
        assert_eq!(lm_units(false, true), (others, 2), "a hedge goes, the rest stays");
        assert_eq!(lm_units(true, true), (others, 1));
    }

    #[test]
    fn hedges_can_be_left_out_students_too() {
        assert!(is_hedge_opener("I'm not sure what to say, but I'm"));
        assert!(is_hedge_opener("i’m  glad you're INTERESTED in learning"));
        assert!(!is_hedge_opener("I'm not a bot."));
        assert!(!is_hedge_opener("I'm glad you asked"));
        let student = format!("b{STUDENT_SUFFIX}");
        let pairs = [
            ("a", "I'm not sure what you're asking, but I'll try."),
            (student.as_str(), "I'm sorry, but as a chatbot, I don't"),
            ("c", "Paris is the capital of France."),
        ];
        for (drop, expect) in [(false, 3), (true, 1)] {
            assert_eq!(opener_exchanges(&pairs, |s| s.opener_drop_hedges = drop), expect, "drop_hedges = {drop}");
        }
    }

    #[test]
    fn train_exchanges_that_name_the_topic_can_be_repeated() {
        let pair = |id: &str, prompt: &str, reply: &str| Pair { id: id.into(), source: "chitchat".into(), prompt: prompt.into(), reply: reply.into(), finish: Finish::Stop };
        let pairs = vec![
            pair("v", "What is a volcano?", "A volcano is a mountain that opens to the magma below."),
            pair("t", "Do you like green tea?", "I'm so glad you asked! I like many drinks."),
            pair("p", "Why is Paris famous?", "Well, you see, the city of Paris is known for art."),
        ];
        let mut s = Settings::for_stage(Stage::Sft);
        s.sft_mix = SftMix::Openers;
        s.opener_topic_repeat = 3;
        let corpus = assemble(Vec::new(), pairs, &[], &s);
        assert!(corpus.units.iter().all(|u| u.split == Split::Train), "the fixture ids should all land in train");
        let units: Vec<Unit> = corpus.units.iter().flat_map(|u| stage_units(u, &s)).collect();
        let count = |id: &str| units.iter().filter(|u| u.id.starts_with(&format!("{id}#"))).count();
        // "volcano" and "Paris" are named within eight words; the tea reply never says "tea".
        assert_eq!((count("v"), count("t"), count("p")), (3, 1, 3));
        let ids: HashSet<&str> = units.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids.len(), units.len(), "each copy has its own id (the shuffle orders by id)");
        s.opener_topic_repeat = 1;
        assert_eq!(corpus.units.iter().flat_map(|u| stage_units(u, &s)).count(), 3);
    }

    #[test]
    fn the_students_own_openers_have_their_own_repeat() {
        let pair = |id: &str, reply: &str| Pair { id: id.into(), source: "chitchat".into(), prompt: "What is a volcano?".into(), reply: reply.into(), finish: Finish::Length };
        let pairs = vec![
            pair("v", "A volcano is a mountain that opens to the magma below."),
            pair("v#student", "A volcano is a mountain that erupts"),
            pair("w#student", "I like to go hiking in the"), // off topic: the student repeat still applies
        ];
        let mut s = Settings::for_stage(Stage::Sft);
        s.sft_mix = SftMix::Openers;
        s.opener_topic_repeat = 3;
        s.opener_student_repeat = 5;
        let corpus = assemble(Vec::new(), pairs, &[], &s);
        assert!(corpus.units.iter().all(|u| u.split == Split::Train), "the fixture ids should all land in train");
        let units: Vec<Unit> = corpus.units.iter().flat_map(|u| stage_units(u, &s)).collect();
        let count = |id: &str| units.iter().filter(|u| u.id.starts_with(&format!("{id}#")) && u.id.contains("#student") == id.contains("#student")).count();
        assert_eq!((count("v"), count("v#student"), count("w#student")), (3, 5, 5));
        assert!(units.iter().all(|u| !u.complete), "an opener cut at eight words has no end of turn");
    }

    #[test]
    fn the_longer_tasks_have_their_own_repeat() {
        let pair = |id: &str, reply: &str| Pair { id: id.into(), source: "instruct".into(), prompt: "Write a poem about a kite.".into(), reply: reply.into(), finish: Finish::Length };
        let pairs = vec![
            pair("instruct:topic:n:kite", "Here is a poem about a kite that flies"),
            pair("instruct:task:t:3:kite", "Sure! Here's a short poem about a kite"),
            pair("instruct:task:t:4:kite", "I'd be happy to help with that"), // off topic: the task repeat still applies
        ];
        let mut s = Settings::for_stage(Stage::Sft);
        s.sft_mix = SftMix::Openers;
        s.opener_topic_repeat = 3;
        s.opener_task_repeat = 4;
        let corpus = assemble(Vec::new(), pairs, &[], &s);
        let train: Vec<&Unit> = corpus.units.iter().filter(|u| u.split == Split::Train).collect();
        let units: Vec<Unit> = train.iter().flat_map(|u| stage_units(u, &s)).collect();
        for u in &train {
            let want = if u.id.starts_with(TASK_PREFIX) { 4 } else { 3 };
            assert_eq!(units.iter().filter(|v| v.id.starts_with(&format!("{}#", u.id))).count(), want, "{}", u.id);
        }
        assert!(train.iter().any(|u| u.id.starts_with(TASK_PREFIX)), "no fixture id landed in train");
    }

    #[test]
    fn a_family_can_be_repeated_on_top_of_the_other_repeats() {
        let pair = |id: &str, prompt: &str, reply: &str| Pair { id: id.into(), source: "x".into(), prompt: prompt.into(), reply: reply.into(), finish: Finish::Length };
        let pairs = vec![
            pair("chitchat:c1:0", "What is a volcano?", "A volcano is a mountain that opens"),
            pair("chitchat:c2:0", "Do you like green tea?", "I like many drinks, and I"),
            pair("chitchat:c2:0#student", "Do you like green tea?", "I like many drinks"),
            pair("instruct:task:t:1:kite", "Write a poem about a kite.", "Here is a poem about a kite"),
            pair("invented:0001", "What is a volcano?", "A volcano is a mountain that opens"),
        ];
        let mut s = Settings::for_stage(Stage::Sft);
        s.sft_mix = SftMix::Openers;
        s.opener_topic_repeat = 3;
        s.opener_student_repeat = 5;
        s.opener_task_repeat = 4;
        let corpus = assemble(Vec::new(), pairs, &[], &s);
        let train: Vec<&Unit> = corpus.units.iter().filter(|u| u.split == Split::Train).collect();
        let count = |s: &Settings| -> BTreeMap<String, usize> {
            train.iter().map(|u| (u.id.clone(), stage_units(u, s).len())).collect()
        };
        let before = count(&s);
        s.opener_family_repeat = vec![("chitchat".into(), 2), ("wordnet".into(), 3)];
        let after = count(&s);
        for u in &train {
            let want = if family(u) == "chitchat" { 2 } else { 1 };
            assert_eq!(after[&u.id], want * before[&u.id], "{}", u.id);
        }
        assert!(train.iter().any(|u| family(u) == "chitchat") && train.iter().any(|u| family(u) != "chitchat"), "{:?}", before);
        let units: Vec<Unit> = train.iter().flat_map(|u| stage_units(u, &s)).collect();
        let ids: HashSet<&str> = units.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids.len(), units.len(), "each copy has its own id");
        // Held-out exchanges are written once whatever the repeat.
        let held: Vec<&Unit> = corpus.units.iter().filter(|u| u.split != Split::Train).collect();
        assert!(held.iter().all(|u| stage_units(u, &s).len() <= 1));
    }

    #[test]
    fn families_are_named_by_the_distilled_id_or_the_source() {
        let unit = |source: &'static str, id: &str| Unit { source, id: id.into(), split: Split::Train, body: Body::Text(String::new()), complete: true };
        assert_eq!(family(&unit("distilled", "chitchat:abc:3#student")), "chitchat");
        assert_eq!(family(&unit("distilled", "instruct:task:t:1")), "instruct");
        assert_eq!(family(&unit("distilled", "wordnet-q:n:dog")), "wordnet-q");
        assert_eq!(family(&unit("chitchat", "abc")), "chitchat");
        assert_eq!(family(&unit("wordnet", "n123")), "wordnet");
    }

    #[test]
    fn a_first_answer_off_topic_gives_way_to_an_answer_asked_again_on_topic() {
        let pair = |id: &str, reply: &str| Pair { id: id.into(), source: "chitchat".into(), prompt: "What is a volcano?".into(), reply: reply.into(), finish: Finish::Stop };
        let pairs = vec![
            pair("a", "I like many mountains."),
            pair("a#redo", "A volcano is a mountain that opens to the magma below."),
            pair("b", "I like tall hills."),
            pair("b#redo", "Mountains are tall."), // asked again, still off topic: both stay
            pair("c", "A volcano erupts."),
            pair("c#redo", "Volcanoes are mountains."), // the first was on topic already: both stay
        ];
        let mut s = Settings::for_stage(Stage::Sft);
        let ids = |s: &Settings| -> Vec<String> { assemble(Vec::new(), pairs.clone(), &[], s).units.into_iter().map(|u| u.id).collect() };
        assert_eq!(ids(&s).len(), 6);
        s.drop_superseded = true;
        let kept = ids(&s);
        assert!(!kept.contains(&"a".to_string()) && kept.len() == 5, "{kept:?}");
        let corpus = assemble(Vec::new(), pairs.clone(), &[], &s);
        let st = corpus.stats.iter().find(|st| st.name == DISTILLED.name).unwrap();
        assert_eq!(st.dropped_filter.get("superseded"), Some(&1));
    }

    /// Decodes every document of a split back to text (documents end with `<|endoftext|>`).
    fn shard_texts(dir: &Path, m: &Manifest, split: &str, tok: &tokenizers::Tokenizer) -> String {
        let mut all = String::new();
        for e in m.shards.iter().filter(|e| e.split == split) {
            let (ids, classes) = read_shard(dir, e).unwrap();
            assert_eq!(ids.len(), classes.len());
            assert!(classes.iter().all(|&c| c <= 2));
            let ids: Vec<u32> = ids.into_iter().map(u32::from).collect();
            all.push_str(&tokenizer::decode(tok, &ids).unwrap());
        }
        all
    }

    #[test]
    fn shards_hold_each_split_and_the_manifest_reads_back() {
        let (docs, pairs) = fixture();
        let dir = crate::testutil::temp_dir("build");
        let tok = crate::tokenizer::tests::tiny();
        crate::tokenizer::save(&tok, &dir.join("tok")).unwrap();
        let tok_path = dir.join("tok/tokenizer.json");
        for stage in [Stage::Lm, Stage::Sft] {
            let mut s = Settings::for_stage(stage);
            s.shard_tokens = 2_000; // several shards
            s.sft_chitchat_per_mille = 500;
            let corpus = assemble(docs.clone(), pairs.clone(), &[], &s);
            let out = dir.join(stage.name());
            let m = write_shards(&corpus, &tok_path, &out, &s).unwrap();
            let back = Manifest::read(&out).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.vocab_size, 400);
            assert!(out.join("tokenizer.json").exists() && out.join("tokenizer_config.json").exists());
            assert!(m.shards.iter().filter(|e| e.split == "train").count() >= 2);
            let sum: u64 = m.sources.iter().map(|s| s.train.tokens + s.heldout.tokens).sum();
            assert_eq!(sum, m.tokens(Split::Train) + m.tokens(Split::Heldout));

            let train = shard_texts(&out, &m, "train", &tok);
            let held = shard_texts(&out, &m, "heldout", &tok);
            assert!(!held.is_empty());
            for u in &corpus.units {
                let Body::Chat(turns) = &u.body else {
                    if stage == Stage::Lm {
                        let Body::Text(t) = &u.body else { unreachable!() };
                        let (mine, other) = if u.split == Split::Train { (&train, &held) } else { (&held, &train) };
                        assert!(mine.contains(&format!("{t}<|endoftext|>")) && !other.contains(&format!("{t}<|endoftext|>")));
                    }
                    continue;
                };
                let first = format!("<|im_start|>user\n{}<|im_end|>", turns[0].text);
                if u.split == Split::Heldout {
                    assert!(!train.contains(&first), "held-out {} reached train", u.id);
                }
            }
            if stage == Stage::Sft {
                assert!(!train.contains("(noun)"), "plain text in sft");
                let d = m.sources.iter().find(|s| s.name == "distilled").unwrap();
                assert!(d.train.opener_tokens > 0 && d.train.loss_tokens < d.train.tokens);
            }
            // A cut reply is followed by <|endoftext|>, never by <|im_end|>.
            assert!(train.contains("written on it.<|im_end|>") && train.contains("written on it.<|endoftext|>"));
        }
    }
}
