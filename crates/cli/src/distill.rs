//! `ulm distill`: ask a teacher for replies to the distillation prompts and store them with
//! their provenance.
//!
//! ```text
//! assets/venv/bin/python scripts/llama_server.py --model assets/models/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --port 8090 --threads 1 --parallel 8 &
//! ulm distill --teacher http://127.0.0.1:8090 --concurrency 8
//! ulm distill --pack          # compress finished records into corpus/distill/ for committing
//! # ask again, with a system message, the prompts whose reply opened with a stock phrase:
//! ulm distill --redo generic --tries 4 --system "Answer the question directly."
//! # … or every prompt whose reply's first eight words do not name the question's topic:
//! ulm distill --redo off-topic --tries 4
//! # on-policy: the μLM writes 8 openers, the teacher as a scorer keeps the one it likes best
//! ulm distill --student models/ulm-8m --scorer smollm2 --candidates 8 --corpus corpus/student --out runs/distill/student.jsonl
//! ```
//! The output is append-only JSON lines, flushed per record: a killed run loses at most the
//! requests in flight, and a restart skips every prompt already answered (in the working file
//! or in the packed corpus).

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use ulm_data::prompts::{Prompt, distill_prompts};
use ulm_data::{Split, sources};

mod invent;
mod student;

/// Progress of a long run: indicatif's bar on a terminal; written to a log file (`nohup … >
/// log 2>&1`), where the bar draws nothing, a plain line once a minute and at the end.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
    plain: bool,
    /// When the last plain line was written.
    last: Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(60);

    pub(crate) fn new(len: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}").unwrap());
        Progress { bar, plain: !std::io::stderr().is_terminal(), last: Instant::now() }
    }

    pub(crate) fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// A line above the bar (a hidden bar's `println` would drop it, so a log gets it directly).
    pub(crate) fn println(&self, line: String) {
        if self.plain { eprintln!("{line}") } else { self.bar.println(line) }
    }

    pub(crate) fn inc(&mut self) {
        self.bar.inc(1);
        if self.plain && self.last.elapsed() >= Self::EVERY {
            self.last = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// `pos/len (pct), msg, rate/s, eta` — what the bar shows, as one line.
    fn line(&self) -> String {
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let secs = self.bar.elapsed().as_secs_f64();
        let rate = pos as f64 / secs.max(1e-9);
        let eta = if rate > 0.0 { (len.saturating_sub(pos)) as f64 / rate } else { f64::NAN };
        let pct = 100.0 * pos as f64 / len.max(1) as f64;
        format!("{pos}/{len} ({pct:.1} %) {}, {rate:.2}/s, {:.0} min elapsed, eta {:.0} min", self.bar.message(), secs / 60.0, eta / 60.0)
    }

    pub(crate) fn finish(&self) {
        self.bar.finish();
        if self.plain {
            eprintln!("{}", self.line());
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Base URL of an OpenAI-compatible server that hosts the teacher (raw /v1/completions).
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    teacher: String,
    /// Name recorded as the teacher in every record.
    #[arg(long, default_value = "SmolLM2-135M-Instruct.Q4_1")]
    teacher_name: String,
    /// Requests in flight (match the server's parallel slots).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Reply length cap in tokens; the opener is the first 16, the rest teaches what follows.
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    #[arg(long, default_value_t = 0.5)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// Ask the prompts of this source (e.g. `instruct`) or id prefix (`instruct:task`, the longer
    /// many-part requests) first, then the rest in the usual mix.
    #[arg(long)]
    prefer: Option<String>,
    /// System message sent before every prompt (recorded in each record; default: none).
    #[arg(long)]
    system: Option<String>,
    /// Ask again only the prompts whose stored first reply is of this kind: `generic` opens with
    /// one of the teacher's stock phrases (`ulm_data::build::GENERIC_OPENERS`); `off-topic`
    /// does not name the question's topic in its first eight words (`ulm_runtime::copy::names_topic`;
    /// prompts without a content word, "How are you?", are never off topic). The new records get
    /// the id `<id>#redo` and sit beside the old ones (`ulm data --drop-generic` drops a stock one).
    #[arg(long, value_enum)]
    redo: Option<Redo>,
    /// Ask each prompt up to this many times (seeds seed, seed+1, …) and keep the first reply
    /// whose first eight words name the question's topic and are not a stock phrase (failing
    /// that, the first reply that is not a stock phrase; failing that, the first).
    #[arg(long, default_value_t = 1)]
    tries: u32,
    /// Stop after this many new records (default: the whole prompt set).
    #[arg(long)]
    limit: Option<usize>,
    /// Working file (append-only).
    #[arg(long, default_value = "runs/distill/smollm2.jsonl")]
    out: PathBuf,
    /// Folder of packed, committed records (`*.jsonl.gz`).
    #[arg(long, default_value = "corpus/distill")]
    corpus: PathBuf,
    /// Folder filled by scripts/fetch-assets.sh.
    #[arg(long, default_value = "assets")]
    assets: PathBuf,
    /// Compress the working file's records into the corpus folder and exit.
    #[arg(long)]
    pack: bool,
    /// Print the prompt set as JSON lines and exit.
    #[arg(long)]
    print_prompts: bool,
    /// With --print-prompts: the held-out split's prompts instead, less any whose text is also in
    /// the asked set: never asked, never trained on (for reading a μLM on prompts like the
    /// training ones that it has not seen).
    /// With `--requests FILE` too: also those requests of FILE that fall on the held-out side
    /// (by prompt or record id), which `ulm data` never trains on.
    #[arg(long, requires = "print_prompts")]
    heldout: bool,
    /// On-policy distillation instead of asking a teacher server: this μLM (folder or name)
    /// writes `--candidates` openers to each prompt and `--scorer` keeps one ([`student`]).
    #[arg(long)]
    student: Option<String>,
    /// With --student: the model that judges the openers (the teacher; folder, file or name).
    #[arg(long, default_value = "smollm2")]
    scorer: String,
    /// With --student: openers sampled per prompt.
    #[arg(long, default_value_t = 8)]
    candidates: u32,
    /// With --student: words per opener.
    #[arg(long, default_value_t = 8)]
    words: usize,
    /// With --student: copy boost of the sampling (default: the student's own).
    #[arg(long)]
    copy_boost: Option<f32>,
    /// With --student: a prompt whose best opener has a lower mean log-likelihood under the
    /// scorer (nats per token) gets an empty reply, which `ulm data` drops.
    #[arg(long, default_value_t = -3.5, allow_negative_numbers = true)]
    min_ll: f64,
    /// With --student: only the prompts of shard K of N (`0/2`, `1/2`: one process per core).
    #[arg(long)]
    shard: Option<String>,
    /// Have a base model write this many free-form requests into `--requests` (appending,
    /// resumable) and exit ([`invent`]).
    #[arg(long, requires = "requests")]
    invent: Option<usize>,
    /// With --invent: what the writer is shown and writes, `questions` (everyday questions and
    /// short requests), `tasks` (many-part tasks in MT-Bench's register, 12–90 words) or
    /// `passages` (tasks that give their text, list, figures or code to work on, 20–160 words).
    #[arg(long, default_value = "questions", requires = "invent")]
    invent_style: ulm_data::invent::Style,
    /// With --invent: base URL of the OpenAI-compatible server hosting the writer (Gemma 3 270M).
    #[arg(long, default_value = "http://127.0.0.1:8091")]
    writer: String,
    /// A JSON-lines file of invented requests (`{"id","source","text"}`): with --invent, where
    /// they are written; otherwise they join the prompt set (source `invented`).
    #[arg(long)]
    requests: Option<PathBuf>,
}

/// One teacher reply with its provenance.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Record {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub reply: String,
    /// `stop` (the teacher ended its turn) or `length` (cut at max_tokens).
    pub finish: String,
    pub teacher: String,
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: u32,
    /// Seed of the kept reply.
    pub seed: u64,
    /// Teacher tokens generated for this record (every try counted).
    pub n_tokens: u32,
    pub ms: u64,
    /// The system message the teacher was given, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// How many replies were drawn to find this one (`--tries`, `--candidates`; absent: one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
    /// With `--student`: the kept opener's mean log-likelihood per token under the scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer_ll: Option<f64>,
    /// With `--student` (since session 20): every distinct opener the student wrote, kept one
    /// included, best first — the material of preference pairs (`ulm data --stage pref`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<ulm_data::pref::Candidate>,
}

/// Which stored replies `--redo` asks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Redo {
    /// Replies that open with a stock phrase.
    Generic,
    /// Replies whose first eight words do not name the question's topic.
    OffTopic,
}

impl Redo {
    /// True when `reply` to `prompt` is of this kind.
    fn wants(self, prompt: &str, reply: &str) -> bool {
        match self {
            Redo::Generic => ulm_data::build::is_generic_opener(reply),
            Redo::OffTopic => !ulm_runtime::copy::content_words(prompt).is_empty() && !ulm_data::build::reply_names_topic(prompt, reply),
        }
    }
}

/// Suffix of the id of a prompt asked again (`--redo`).
pub const REDO_SUFFIX: &str = "#redo";

/// Minimum chitchat count of every word of a lemma before it becomes a question.
const MIN_LEMMA_COUNT: u32 = 3;

pub fn prompt_set(assets: &Path) -> Result<Vec<Prompt>> {
    prompts_of(assets, false)
}

/// The prompts `ulm distill` asks (the training side of the split), or with `heldout` the
/// held-out side less any text the asked side also holds: the split is by document, so a common
/// line ("What are you up to?") can sit on both sides. The sources are read once.
fn prompts_of(assets: &Path, heldout: bool) -> Result<Vec<Prompt>> {
    let docs = sources::load_all(assets)?;
    let synsets = sources::wordnet_synsets(Path::new(sources::WORDNET_DIR))?;
    let asked = distill_prompts(&docs, &synsets, Split::Train, MIN_LEMMA_COUNT);
    if !heldout {
        return Ok(asked);
    }
    let texts: HashSet<&str> = asked.iter().map(|p| p.text.as_str()).collect();
    Ok(distill_prompts(&docs, &synsets, Split::Heldout, MIN_LEMMA_COUNT).into_iter().filter(|p| !texts.contains(p.text.as_str())).collect())
}

/// Every record in the packed corpus and the working file.
pub fn read_records(corpus: &Path, out: &Path) -> Result<Vec<Record>> {
    let mut recs = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(corpus) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.to_string_lossy().ends_with(".jsonl.gz")).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    for f in &files {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(f)?);
        for line in std::io::BufReader::new(gz).lines() {
            recs.push(serde_json::from_str(&line?).with_context(|| format!("{}: bad record", f.display()))?);
        }
    }
    if let Ok(file) = std::fs::File::open(out) {
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            // A run killed mid-write can leave one partial last line: skip it, it is re-asked.
            match serde_json::from_str(&line) {
                Ok(r) => recs.push(r),
                Err(_) => eprintln!("{}: line {} is incomplete, skipped (will be asked again)", out.display(), i + 1),
            }
        }
    }
    Ok(recs)
}

pub fn run(a: Args) -> Result<()> {
    if a.pack {
        return pack(&a);
    }
    let mut prompts = prompts_of(&a.assets, a.heldout)?;
    if let Some(n) = a.invent {
        let heldout = invent::heldout_texts(&a.assets, &prompts_of(&a.assets, true)?)?;
        return invent::run(&a.writer, a.invent_style, n, a.requests.as_deref().expect("clap: requires"), &prompts, &heldout, a.concurrency);
    }
    if let Some(path) = &a.requests {
        let extra = invent::read_requests(path)?;
        if extra.is_empty() {
            bail!("{}: no requests; write some with --invent N --requests {}", path.display(), path.display());
        }
        // With --heldout (--print-prompts only): the requests `ulm data` never trains on.
        prompts.extend(extra.into_iter().filter(|p| !a.heldout || ulm_data::distilled::record_split(&p.id) == Split::Heldout));
    }
    if a.print_prompts {
        let mut out = std::io::stdout().lock();
        for p in &prompts {
            match writeln!(out, "{}", serde_json::to_string(p)?) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break, // `| head`
                r => r?,
            }
        }
        return Ok(());
    }
    if let Some(student) = a.student.clone() {
        return student::run(a, prompts, &student);
    }
    let records = read_records(&a.corpus, &a.out)?;
    let done: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let mut todo: Vec<Prompt> = if let Some(kind) = a.redo {
        // First answers only: a prompt asked again already had its tries.
        let again: HashSet<&str> =
            records.iter().filter(|r| !r.id.contains('#') && kind.wants(&r.prompt, &r.reply)).map(|r| r.id.as_str()).collect();
        eprintln!("{} stored replies to ask again ({kind:?})", again.len());
        prompts
            .iter()
            .filter(|p| again.contains(p.id.as_str()))
            .map(|p| Prompt { id: format!("{}{REDO_SUFFIX}", p.id), ..p.clone() })
            .filter(|p| !done.contains(p.id.as_str()))
            .collect()
    } else {
        prompts.iter().filter(|p| !done.contains(p.id.as_str())).cloned().collect()
    };
    if let Some(src) = &a.prefer {
        if !todo.iter().any(|p| preferred(p, src)) {
            bail!("--prefer {src}: no unanswered prompt has that source or id prefix (sources: chitchat, chatterbot, wordnet-q, instruct; kinds such as instruct:task)");
        }
        todo.sort_by_key(|p| !preferred(p, src)); // stable: each part keeps its mix
    }
    todo.truncate(a.limit.unwrap_or(usize::MAX));
    eprintln!("{} prompts, {} answered, {} to ask {}", prompts.len(), done.len(), todo.len(), a.teacher);
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(ask_all(a, todo))
}

/// Whether `--prefer want` picks `p`: its source is `want`, or its id starts with `want:`.
pub(crate) fn preferred(p: &Prompt, want: &str) -> bool {
    p.source == want || p.id.strip_prefix(want).is_some_and(|rest| rest.starts_with(':'))
}

async fn ask_all(a: Args, todo: Vec<Prompt>) -> Result<()> {
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(300)).build()?;
    let mut out = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&a.out).with_context(|| format!("{}", a.out.display()))?;
    end_with_newline(&mut out)?;
    let out = Arc::new(std::sync::Mutex::new(out));
    let mut bar = Progress::new(todo.len() as u64);
    let start = Instant::now();
    let tokens = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let a = Arc::new(a);
    let mut stream = futures_util::stream::iter(todo.into_iter().map(|p| {
        let (client, a) = (client.clone(), a.clone());
        async move { ask(&client, &a, p).await }
    }))
    .buffer_unordered(a.concurrency);
    let mut failures = 0usize;
    while let Some(res) = stream.next().await {
        match res {
            Ok(rec) => {
                let line = serde_json::to_string(&rec)? + "\n";
                let mut f = out.lock().unwrap();
                f.write_all(line.as_bytes())?;
                f.flush()?;
                let t = tokens.fetch_add(rec.n_tokens as u64, std::sync::atomic::Ordering::Relaxed) + rec.n_tokens as u64;
                bar.set_message(format!("{:.0} tok/s", t as f64 / start.elapsed().as_secs_f64()));
            }
            Err(e) => {
                failures += 1;
                bar.println(format!("skipped: {e:#}"));
                if failures > 50 {
                    bail!("more than 50 requests failed; is the teacher at {} up?", a.teacher);
                }
            }
        }
        bar.inc();
    }
    bar.finish();
    eprintln!("{} teacher tokens in {:.2} s", tokens.load(std::sync::atomic::Ordering::Relaxed), start.elapsed().as_secs_f64());
    Ok(())
}

/// A run killed mid-write leaves a partial last line: close it, so the next record starts on a
/// line of its own (the partial one is skipped when read and its prompt asked again).
fn end_with_newline(f: &mut std::fs::File) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(());
    }
    let mut last = [0u8];
    f.seek(SeekFrom::End(-1))?;
    f.read_exact(&mut last)?;
    if last[0] != b'\n' {
        f.write_all(b"\n")?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct CompletionResp {
    choices: Vec<CompletionChoice>,
    usage: Option<Usage>,
}
#[derive(Deserialize)]
struct CompletionChoice {
    text: String,
    finish_reason: Option<String>,
}
#[derive(Deserialize)]
struct Usage {
    completion_tokens: u32,
}

/// The raw ChatML prompt, by default with no system message: SmolLM2 answers better without
/// its default system prompt (../shared/ASSETS.md), which the GGUF template would insert.
pub fn chatml_prompt(system: Option<&str>, user: &str) -> String {
    let system = system.map(|s| format!("<|im_start|>system\n{s}<|im_end|>\n")).unwrap_or_default();
    format!("{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

async fn ask(client: &reqwest::Client, a: &Args, p: Prompt) -> Result<Record> {
    let base = ulm_data::split::fnv1a(p.id.as_bytes()) & 0x7fff_ffff;
    let t0 = Instant::now();
    let mut kept: Option<(u8, u64, Answer)> = None; // (rank, seed, reply)
    let mut n_tokens = 0;
    let mut tries = 0;
    for k in 0..a.tries.max(1) as u64 {
        let seed = (base + k) & 0x7fff_ffff;
        let ans = ask_once(client, a, &p, seed).await?;
        n_tokens += ans.n_tokens;
        tries += 1;
        let stock = ulm_data::build::is_generic_opener(&ans.text);
        let on_topic = !stock && ulm_data::build::reply_names_topic(&p.text, &ans.text);
        // Keep the first answer that names the topic; failing that, the first that is not a
        // stock phrase; failing that, the first.
        let rank = if on_topic { 2 } else { u8::from(!stock) };
        if kept.as_ref().is_none_or(|(r, _, _)| rank > *r) {
            kept = Some((rank, seed, ans));
        }
        if on_topic {
            break;
        }
    }
    let (_, seed, ans) = kept.expect("at least one try");
    Ok(Record {
        id: p.id,
        source: p.source,
        prompt: p.text,
        reply: ans.text,
        finish: ans.finish,
        teacher: a.teacher_name.clone(),
        temperature: a.temperature,
        top_p: a.top_p,
        max_tokens: a.max_tokens,
        seed,
        n_tokens,
        ms: t0.elapsed().as_millis() as u64,
        system: a.system.clone(),
        tries: (tries > 1).then_some(tries),
        scorer_ll: None,
        candidates: Vec::new(),
    })
}

/// One reply of the teacher.
struct Answer {
    text: String,
    finish: String,
    n_tokens: u32,
}

/// One request, retried twice on a network error or a bad status.
async fn ask_once(client: &reqwest::Client, a: &Args, p: &Prompt, seed: u64) -> Result<Answer> {
    let body = serde_json::json!({
        "prompt": chatml_prompt(a.system.as_deref(), &p.text),
        "max_tokens": a.max_tokens,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "seed": seed,
        "stop": ["<|im_end|>", "<|endoftext|>"],
    });
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let resp = match client.post(format!("{}/v1/completions", a.teacher.trim_end_matches('/'))).json(&body).send().await {
            Ok(r) => r,
            Err(e) => {
                last = Some(anyhow::anyhow!("{}: {e}", p.id));
                continue;
            }
        };
        if !resp.status().is_success() {
            last = Some(anyhow::anyhow!("{}: HTTP {}: {}", p.id, resp.status(), resp.text().await.unwrap_or_default()));
            continue;
        }
        let r: CompletionResp = resp.json().await?;
        let c = r.choices.into_iter().next().context("no choices in the teacher's answer")?;
        return Ok(Answer {
            text: c.text.trim().to_string(),
            finish: c.finish_reason.unwrap_or_else(|| "stop".into()),
            n_tokens: r.usage.map(|u| u.completion_tokens).unwrap_or(0),
        });
    }
    Err(last.unwrap())
}

/// Moves the working file's records into a new `part-NNN.jsonl.gz` of the corpus (each part
/// well under 50 MB) and empties the working file.
fn pack(a: &Args) -> Result<()> {
    let recs = read_records(Path::new("/nonexistent"), &a.out)?;
    if recs.is_empty() {
        eprintln!("nothing to pack in {}", a.out.display());
        return Ok(());
    }
    std::fs::create_dir_all(&a.corpus)?;
    let n = std::fs::read_dir(&a.corpus)?.count();
    let path = a.corpus.join(format!("part-{n:03}.jsonl.gz"));
    let tmp = path.with_extension("tmp");
    {
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&tmp)?, flate2::Compression::best());
        for r in &recs {
            gz.write_all((serde_json::to_string(r)? + "\n").as_bytes())?;
        }
        gz.finish()?.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::write(&a.out, b"")?;
    eprintln!("packed {} records into {}", recs.len(), path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_takes_a_source_or_an_id_prefix() {
        let p = |id: &str| Prompt { id: id.into(), source: id.split(':').next().unwrap().into(), text: "q".into() };
        assert!(preferred(&p("instruct:task:t:3:kite"), "instruct"));
        assert!(preferred(&p("instruct:task:t:3:kite"), "instruct:task"));
        assert!(!preferred(&p("instruct:topic:n:kite"), "instruct:task"));
        assert!(!preferred(&p("instruct:taskforce:1"), "instruct:task"), "a prefix ends at a colon");
        assert!(!preferred(&p("chitchat:abc:0"), "instruct"));
    }
}
