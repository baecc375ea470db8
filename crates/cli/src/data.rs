//! `ulm data`: build the token shards that `train/` reads, and the dev set of evaluation prompts.
//!
//! ```text
//! ulm data --eval-prompts                 # data/eval/dev.jsonl (committed; never trained on)
//! ulm data --stage lm                     # runs/data/lm:  shards + manifest.json + tokenizer files
//! ulm data --stage sft                    # runs/data/sft: assistant-style chats only
//! ulm data --stage sft --mix openers      # single exchanges cut to their first 24 words
//! ulm data --stage lm --out /tmp/lm --tokenizer data/tokenizer/tokenizer.json
//! ulm data --stage pref --distill-corpus corpus/student5 --out runs/data/pref   # DPO pairs
//! ```
//! Sources: the assets fetched by scripts/fetch-assets.sh and the distilled pairs (packed
//! `corpus/distill/*.jsonl.gz` plus the working file of a running `ulm distill`). The logic lives
//! in `ulm_data::build`; this module reads the inputs and prints the summary.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ulm_data::build::{Corpus, Settings, SftMix, assemble, write_shards};
use ulm_data::distilled::{Finish, Pair, STUDENT_SUFFIX};
use ulm_data::eval::{dev_prompts, read_jsonl, write_jsonl};
use ulm_data::pref::{PrefSettings, Stock, pairs_of, write_pref};
use ulm_data::render::Stage;
use ulm_data::{Split, sources};

use crate::distill;

/// Prompts in the dev set.
const DEV_PROMPTS: usize = 200;

/// Where the corpus comes from (shared with `ulm tokenizer`).
#[derive(clap::Args, Clone)]
pub struct Inputs {
    /// Folder filled by scripts/fetch-assets.sh.
    #[arg(long, default_value = "assets")]
    pub assets: PathBuf,
    /// Folder of packed distilled records (`*.jsonl.gz`); repeat the flag for several
    /// (`--distill-corpus corpus/distill --distill-corpus corpus/student`).
    #[arg(long, default_values = ["corpus/distill"])]
    pub distill_corpus: Vec<PathBuf>,
    /// Working file of `ulm distill` (may be growing; a partial last line is skipped).
    #[arg(long, default_value = "runs/distill/smollm2.jsonl")]
    pub distill_working: PathBuf,
    /// Leave out the student's own openers (`ulm distill --student`) whose mean log-likelihood
    /// per token under the scorer is below this (nats; default: keep all).
    #[arg(long, allow_negative_numbers = true)]
    pub min_student_ll: Option<f64>,
    /// Leave out the distilled records whose prompt id starts with this (repeat the flag for
    /// several): `--leave-out instruct:task:composed` builds a mix without corpus/distill
    /// part-008, as the shipped ulm-8m saw it.
    #[arg(long)]
    pub leave_out: Vec<String>,
    /// The dev set: train chats with a turn equal to one of its prompts are dropped.
    #[arg(long, default_value = "data/eval/dev.jsonl")]
    pub eval: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StageArg {
    Lm,
    Sft,
    /// Preference pairs from the student's scored candidates (`ulm_data::pref`).
    Pref,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MixArg {
    Chats,
    Openers,
}

#[derive(clap::Args)]
pub struct Args {
    /// Which shards to build: `lm` (everything) or `sft` (assistant-style chats, masked).
    #[arg(long, value_enum, required_unless_present = "eval_prompts")]
    stage: Option<StageArg>,
    /// Write the dev set of evaluation prompts instead of shards.
    #[arg(long, conflicts_with = "stage")]
    eval_prompts: bool,
    /// Output folder (shards; default runs/data/<stage>) or file (dev set; default data/eval/dev.jsonl).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The tokenizer (`ulm tokenizer` writes it).
    #[arg(long, default_value = "data/tokenizer/tokenizer.json")]
    tokenizer: PathBuf,
    /// Seed of the document shuffle.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// `sft` only: `chats` (whole chats) or `openers` (single exchanges with the reply cut after
    /// --opener-words words, chitchat questions and WordNet definition questions added).
    #[arg(long, value_enum, default_value = "chats")]
    mix: MixArg,
    /// With --mix openers: words of a reply kept.
    #[arg(long, default_value_t = 24)]
    opener_words: usize,
    /// With --mix openers: leave out distilled replies that open with the teacher's stock phrases
    /// ("I'm so glad you…", "I'm sorry for the…"); with --stage lm, the distilled chats that hold one.
    #[arg(long)]
    drop_generic: bool,
    /// With --mix openers: leave out distilled and student replies that open with a hedge that
    /// answers nothing ("I'm not sure what…", "I'm glad you're enjoying…", "I'm here to help");
    /// with --stage lm, the distilled chats that hold one.
    #[arg(long)]
    drop_hedges: bool,
    /// With --mix openers: write each train exchange whose reply names the question's topic in
    /// its first eight words this many times (1 = once).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    topic_repeat: u16,
    /// Leave out a distilled first answer that does not name the question's topic when the
    /// prompt, asked again (`ulm distill --redo`), got one that does.
    #[arg(long)]
    drop_superseded: bool,
    /// With --mix openers: write each train exchange of the student's own openers
    /// (`ulm distill --student`, ids `<id>#student`) this many times, instead of --topic-repeat.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    student_repeat: u16,
    /// With --mix openers: write each train exchange of the longer, many-part requests
    /// (ids `instruct:task:…`, `ulm distill --prefer instruct:task`) this many times, instead of
    /// --topic-repeat.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    task_repeat: u16,
    /// With --mix openers: write each train exchange of a family this many times over, on top
    /// of the repeats above (`chitchat=2`; repeat the flag for more families). A family is the
    /// first part of a distilled id (`chitchat`, `chatterbot`, `instruct`, `invented`,
    /// `wordnet-q`) or a source of its own (`chitchat`, `chatterbot`, `wordnet`).
    #[arg(long, value_name = "FAMILY=N", value_parser = parse_family_repeat)]
    family_repeat: Vec<(String, usize)>,
    /// `pref` only: a less likely opener makes a pair with the chosen one when the scorer's
    /// mean LL per token differs by at least this (nats).
    #[arg(long, default_value_t = 0.5)]
    pref_margin: f64,
    /// `pref` only: pairs per prompt at most (worst rejected first).
    #[arg(long, default_value_t = 2)]
    pref_per_prompt: usize,
    /// `pref` only: let a hedge ("I'm not sure what you're asking, but…") be the chosen opener.
    #[arg(long)]
    pref_hedge_chosen: bool,
    /// `pref` only: choose only an opener that names the question's topic.
    #[arg(long)]
    pref_topic_chosen: bool,
    /// `pref` only: an opening (first four words) that the student wrote to at least this many
    /// prompts, sharing no word with the prompt at hand, is stock: rejected, never chosen
    /// (`ulm_data::pref::Stock`; 0: off).
    #[arg(long, default_value_t = 0)]
    pref_stock: usize,
    #[command(flatten)]
    inputs: Inputs,
}

pub fn run(a: Args) -> Result<()> {
    if a.eval_prompts {
        let out = a.out.clone().unwrap_or_else(|| PathBuf::from("data/eval/dev.jsonl"));
        let dev = build_dev_set(&a.inputs.assets)?;
        write_jsonl(&out, &dev)?;
        let count = |s: &str| dev.iter().filter(|p| p.source == s).count();
        eprintln!(
            "{}: {} prompts ({} mtbench, {} chatterbot, {} chitchat)",
            out.display(),
            dev.len(),
            count("mtbench"),
            count("chatterbot"),
            count("chitchat")
        );
        return Ok(());
    }
    let stage = match a.stage {
        Some(StageArg::Lm) => Stage::Lm,
        Some(StageArg::Sft) => Stage::Sft,
        Some(StageArg::Pref) => return build_pref(&a),
        None => bail!("pass --stage lm, --stage sft, --stage pref or --eval-prompts"),
    };
    let mut settings = Settings::for_stage(stage);
    settings.seed = a.seed;
    settings.sft_mix = match a.mix {
        MixArg::Chats => SftMix::Chats,
        MixArg::Openers => SftMix::Openers,
    };
    settings.opener_reply_words = a.opener_words;
    settings.opener_drop_generic = a.drop_generic;
    settings.opener_drop_hedges = a.drop_hedges;
    settings.opener_topic_repeat = usize::from(a.topic_repeat);
    settings.drop_superseded = a.drop_superseded;
    settings.opener_student_repeat = usize::from(a.student_repeat);
    settings.opener_task_repeat = usize::from(a.task_repeat);
    settings.opener_family_repeat = a.family_repeat.clone();
    let out = a.out.clone().unwrap_or_else(|| Path::new("runs/data").join(stage.name()));
    let t0 = std::time::Instant::now();
    let corpus = load_corpus(&a.inputs, &settings)?;
    eprintln!("{} units after cleaning and dedup ({:.1} s); rendering {} ...", corpus.units.len(), t0.elapsed().as_secs_f64(), stage.name());
    let m = write_shards(&corpus, &a.tokenizer, &out, &settings)?;
    print_summary(&m);
    eprintln!("{}: {} shards, manifest.json ({:.1} s)", out.display(), m.shards.len(), t0.elapsed().as_secs_f64());
    Ok(())
}

/// `--family-repeat chitchat=2` → `("chitchat", 2)`.
fn parse_family_repeat(arg: &str) -> std::result::Result<(String, usize), String> {
    let (family, n) = arg.split_once('=').ok_or_else(|| format!("`{arg}`: write FAMILY=N, e.g. chitchat=2"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("`{arg}`: N must be a whole number from 1 to 16, e.g. chitchat=2"))?;
    if family.trim().is_empty() || !(1..=16).contains(&n) {
        return Err(format!("`{arg}`: write FAMILY=N with N from 1 to 16, e.g. chitchat=2"));
    }
    Ok((family.trim().to_string(), n))
}

/// Longest prompt + opener of a preference pair (tokens; the training window of the μLMs).
const PREF_MAX_TOKENS: usize = 256;

/// `--stage pref`: preference pairs from every student record that kept its candidates.
fn build_pref(a: &Args) -> Result<()> {
    let t0 = std::time::Instant::now();
    let settings = PrefSettings {
        min_chosen_ll: a.inputs.min_student_ll.unwrap_or(PrefSettings::default().min_chosen_ll),
        margin: a.pref_margin,
        max_per_prompt: a.pref_per_prompt,
        hedge_chosen: a.pref_hedge_chosen,
        topic_chosen: a.pref_topic_chosen,
        stock_min_prompts: a.pref_stock,
    };
    let records = read_all_records(&a.inputs)?;
    let eval: std::collections::HashSet<String> =
        if a.inputs.eval.exists() { read_jsonl(&a.inputs.eval)?.into_iter().map(|p| p.prompt).collect() } else { Default::default() };
    let with = records.iter().filter(|r| !r.candidates.is_empty()).count();
    if with == 0 {
        bail!(
            "no record in {:?} keeps its candidates: pairs need a round of `ulm distill --student` made since session 20 \
             (older rounds kept only the best opener)",
            a.inputs.distill_corpus
        );
    }
    let asked: Vec<_> = records.iter().filter(|r| !eval.contains(&r.prompt)).collect();
    let stock = Stock::count(asked.iter().map(|r| r.candidates.as_slice()), settings.stock_min_prompts);
    if !stock.is_empty() {
        eprintln!("{} openings are stock (written to {} prompts or more)", stock.len(), settings.stock_min_prompts);
    }
    let pairs: Vec<_> = asked.iter().flat_map(|r| pairs_of(&r.id, &r.prompt, &r.candidates, &settings, &stock)).collect();
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs/data/pref"));
    let tok = ulm_data::tokenizer::load(&a.tokenizer)?;
    let m = write_pref(&pairs, &a.tokenizer, &tok, &out, PREF_MAX_TOKENS, &settings)?;
    let prompts = pairs.iter().map(|p| p.id.as_str()).collect::<std::collections::HashSet<_>>().len();
    eprintln!(
        "{} records with candidates; {} pairs from {prompts} prompts ({} train, {} held out; {:?}; {} too long) -> {} ({:.1} s)",
        with,
        pairs.len(),
        m.train_pairs,
        m.heldout_pairs,
        m.why,
        m.too_long,
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The dev set, from the sources alone (deterministic).
fn build_dev_set(assets: &Path) -> Result<Vec<ulm_data::eval::EvalPrompt>> {
    let docs = sources::load_all(assets)?;
    let mt = sources::mtbench(&assets.join("data/mt_bench_questions.jsonl"))?;
    let train_prompts: Vec<String> = distill::prompt_set(assets)?.into_iter().map(|p| p.text).collect();
    Ok(dev_prompts(&docs, &mt, &train_prompts, DEV_PROMPTS))
}

/// Every source and distilled pair, cleaned and deduplicated, with the dev prompts removed.
pub fn load_corpus(inputs: &Inputs, settings: &Settings) -> Result<Corpus> {
    let docs = sources::load_all(&inputs.assets)?;
    let mut records = read_all_records(inputs)?;
    let (loops, weak) = keep_students(&mut records, inputs.min_student_ll);
    if loops > 0 {
        eprintln!("{loops} of the student's openers loop (a pair of words said twice, a word that runs on): left out");
    }
    if let Some(min) = inputs.min_student_ll {
        eprintln!("--min-student-ll {min}: {weak} of the student's openers left out");
    }
    let pairs: Vec<Pair> = records
        .into_iter()
        .map(|r| Pair { finish: Finish::parse(&r.finish), id: r.id, source: r.source, prompt: r.prompt, reply: r.reply })
        .collect();
    let eval: Vec<String> = if inputs.eval.exists() {
        read_jsonl(&inputs.eval)?.into_iter().map(|p| p.prompt).collect()
    } else {
        eprintln!("{}: missing, so the dev set is computed here (commit it with `ulm data --eval-prompts`)", inputs.eval.display());
        build_dev_set(&inputs.assets)?.into_iter().map(|p| p.prompt).collect()
    };
    Ok(assemble(docs, pairs, &eval, settings))
}

/// Every distilled record of every `--distill-corpus` folder, and of the working file (read once,
/// with the first folder), less those of `--leave-out`.
fn read_all_records(inputs: &Inputs) -> Result<Vec<distill::Record>> {
    let mut records = Vec::new();
    for (i, corpus) in inputs.distill_corpus.iter().enumerate() {
        let working = if i == 0 { inputs.distill_working.as_path() } else { Path::new("/nonexistent") };
        records.extend(
            distill::read_records(corpus, working)
                .with_context(|| format!("reading distilled records from {} and {}", corpus.display(), working.display()))?,
        );
    }
    let before = records.len();
    records.retain(|r| !inputs.leave_out.iter().any(|p| r.id.starts_with(p.as_str())));
    if !inputs.leave_out.is_empty() {
        eprintln!("--leave-out {}: {} records left out", inputs.leave_out.join(" "), before - records.len());
    }
    Ok(records)
}

/// Drops the student's openers (`ulm distill --student`) that are no training target: those that
/// loop ([`ulm_runtime::generate::Fit`] — whatever the scorer thought of them; their ranking may
/// predate [`ulm_runtime::generate::runs_on`], or every candidate looped) and, with `min_ll`,
/// those the scorer found less likely than `min_ll` nats per token. Returns (loops, weak) dropped;
/// the teacher's records are kept as they are.
fn keep_students(records: &mut Vec<distill::Record>, min_ll: Option<f64>) -> (usize, usize) {
    let student = |r: &distill::Record| r.id.ends_with(STUDENT_SUFFIX);
    let before = records.len();
    records.retain(|r| !student(r) || !ulm_runtime::generate::Fit::of(&r.prompt, &r.reply).loops);
    let loops = before - records.len();
    let before = records.len();
    if let Some(min) = min_ll {
        records.retain(|r| !student(r) || r.scorer_ll.is_some_and(|ll| ll >= min));
    }
    (loops, before - records.len())
}

fn print_summary(m: &ulm_data::shards::Manifest) {
    println!("{:<11} {:>9} {:>12} {:>12} {:>9} {:>12} {:>8}", "source", "docs", "tokens", "loss tok", "ho docs", "ho tokens", "dropped");
    let (mut docs, mut toks, mut loss, mut hd, mut ht) = (0, 0, 0, 0, 0);
    for s in &m.sources {
        let dropped = s.dropped_empty + s.dropped_long + s.dropped_duplicate + s.dropped_eval + s.dropped_filter.values().sum::<u64>();
        println!(
            "{:<11} {:>9} {:>12} {:>12} {:>9} {:>12} {:>8}",
            s.name, s.train.documents, s.train.tokens, s.train.loss_tokens, s.heldout.documents, s.heldout.tokens, dropped
        );
        docs += s.train.documents;
        toks += s.train.tokens;
        loss += s.train.loss_tokens;
        hd += s.heldout.documents;
        ht += s.heldout.tokens;
    }
    println!("{:<11} {:>9} {:>12} {:>12} {:>9} {:>12}", "total", docs, toks, loss, hd, ht);
    debug_assert_eq!(toks, m.tokens(Split::Train));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, reply: &str, ll: Option<f64>) -> distill::Record {
        distill::Record {
            id: id.into(),
            source: "chitchat".into(),
            prompt: "What is a banjo?".into(),
            reply: reply.into(),
            finish: "length".into(),
            teacher: "test".into(),
            temperature: 0.5,
            top_p: 0.9,
            max_tokens: 16,
            seed: 1,
            n_tokens: 8,
            ms: 1,
            system: None,
            tries: None,
            scorer_ll: ll,
            candidates: Vec::new(),
        }
    }

    #[test]
    fn a_students_loop_or_weak_opener_is_left_out_and_the_teachers_are_kept() {
        let loop_word = "A banjo is a type of non-re-re-re-re-re-re";
        let mut records = vec![
            record("c1#student", "A banjo is a string instrument with a", Some(-1.2)),
            record("c2#student", loop_word, Some(-0.4)),
            record("c3#student", "A banjo is a banjo is a", Some(-0.9)),
            record("c4#student", "A banjo is a musical instrument that you", Some(-2.6)),
            record("c5", loop_word, None), // the teacher's: never judged here
        ];
        let mut all = records.clone();
        assert_eq!(keep_students(&mut records, Some(-2.0)), (2, 1));
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["c1#student", "c5"]);
        assert_eq!(keep_students(&mut all, None), (2, 0), "without --min-student-ll only the loops go");
        assert_eq!(all.len(), 3);
    }
}
