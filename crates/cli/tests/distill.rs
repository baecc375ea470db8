//! `ulm distill` against a real teacher: `ulm serve` with the shipped ulm-8m on loopback. Records
//! are appended with their provenance, a second run resumes (asks only new prompts), a line cut
//! by a kill is skipped and its prompt asked again, `--pack` moves the records into the corpus,
//! and `--redo generic` asks again, with a system message, only the prompts whose stored reply
//! opened with a stock phrase. Needs the prompt sources of scripts/fetch-assets.sh.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;
use support::Served;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn distill(teacher: &str, dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ulm"))
        .current_dir(root())
        .args(["distill", "--teacher", teacher, "--concurrency", "2", "--max-tokens", "12"])
        .args(["--out", dir.join("work.jsonl").to_str().unwrap(), "--corpus", dir.join("corpus").to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "ulm distill {extra:?} failed: {err}");
    err
}

fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn packed(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("corpus")).unwrap() {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(e.unwrap().path()).unwrap()).read_to_string(&mut text).unwrap();
        out.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    out
}

#[test]
fn distill_appends_resumes_packs_and_redoes_stock_replies() {
    assert!(root().join("assets").exists(), "assets/ is missing: run scripts/fetch-assets.sh (scripts/test.sh does)");
    let model = root().join("models/ulm-8m");
    let server = Served::start(&["--model", model.to_str().unwrap(), "--ctx", "256"], None);
    let dir = std::env::temp_dir().join(format!("ulm-distill-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let work = dir.join("work.jsonl");

    // First run: 4 records, each with its provenance.
    let err = distill(&server.url, &dir, &["--limit", "4"]);
    assert!(err.contains("4/4 (100.0 %) ") && err.contains("tok/s"), "a plain progress line in a log: {err}");
    let first = records(&work);
    assert_eq!(first.len(), 4);
    for r in &first {
        for key in ["id", "source", "prompt", "reply", "finish", "teacher", "seed"] {
            assert!(!r[key].is_null(), "{key} missing in {r}");
        }
        assert!(r["n_tokens"].as_u64().unwrap() > 0, "{r}");
        assert!(r.get("system").is_none() && r.get("tries").is_none(), "plain run records no system message: {r}");
    }

    // A kill mid-write: a partial last line. The next run resumes with new prompts only, starts
    // its records on a line of their own, and reports the partial line.
    std::fs::write(&work, std::fs::read_to_string(&work).unwrap() + "{\"id\":\"chitchat:cut").unwrap();
    let err = distill(&server.url, &dir, &["--limit", "3"]);
    assert!(err.contains("incomplete, skipped"), "{err}");
    let all = records(&work);
    assert_eq!(all.len(), 7, "4 old + 3 new, the partial line unreadable");
    let ids: HashSet<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 7, "no prompt asked twice");
    let lines = std::io::BufReader::new(std::fs::File::open(&work).unwrap()).lines().count();
    assert_eq!(lines, 8, "the partial line stays one line of its own");

    // --pack: the working file's records move into the corpus; a resume still skips them.
    distill(&server.url, &dir, &["--pack"]);
    assert_eq!(packed(&dir).len(), 7);
    assert_eq!(std::fs::read_to_string(&work).unwrap(), "");
    distill(&server.url, &dir, &["--limit", "1"]);
    let after = records(&work);
    assert_eq!(after.len(), 1);
    assert!(!ids.contains(after[0]["id"].as_str().unwrap()));

    // --redo generic: forge a stock reply for one stored prompt; that prompt, and any other whose
    // stored reply happens to open with a stock phrase, is asked again under `<id>#redo`, with
    // the system message recorded.
    let mut stock = after[0].clone();
    stock["reply"] = "I'm so glad you asked! Let me help.".into();
    std::fs::write(&work, format!("{stock}\n")).unwrap();
    let stored: Vec<Value> = packed(&dir).into_iter().chain([stock.clone()]).collect();
    let want: HashSet<String> = stored
        .iter()
        .filter(|r| ulm_data::build::is_generic_opener(r["reply"].as_str().unwrap()))
        .map(|r| format!("{}#redo", r["id"].as_str().unwrap()))
        .collect();
    let err = distill(&server.url, &dir, &["--redo", "generic", "--tries", "2", "--system", "Answer directly."]);
    assert!(err.contains(&format!("{} stored replies to ask again (Generic)", want.len())), "{err}");
    let redo: Vec<Value> = records(&work).into_iter().filter(|r| r["id"].as_str().unwrap().ends_with("#redo")).collect();
    let got: HashSet<String> = redo.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, want);
    assert!(got.contains(&format!("{}#redo", stock["id"].as_str().unwrap())));
    for r in &redo {
        assert_eq!(r["system"], "Answer directly.");
        let first = stored.iter().find(|s| format!("{}#redo", s["id"].as_str().unwrap()) == r["id"].as_str().unwrap()).unwrap();
        assert_eq!(r["prompt"], first["prompt"]);
    }
    // Asked again later, nothing is left to redo.
    let err = distill(&server.url, &dir, &["--redo", "generic", "--tries", "2"]);
    assert!(err.contains("0 to ask"), "{err}");

    // --redo off-topic: the first answers whose opener does not name the question's topic (a
    // question without content words never counts), less those already asked again above.
    let off: Vec<&Value> = stored
        .iter()
        .filter(|r| {
            let (prompt, reply) = (r["prompt"].as_str().unwrap(), r["reply"].as_str().unwrap());
            let opener: String = reply.split_whitespace().take(8).collect::<Vec<_>>().join(" ");
            !ulm_runtime::copy::content_words(prompt).is_empty() && !ulm_runtime::copy::names_topic(prompt, &opener)
        })
        .collect();
    let want_off: HashSet<String> = off.iter().map(|r| format!("{}#redo", r["id"].as_str().unwrap())).filter(|id| !got.contains(id)).collect();
    let err = distill(&server.url, &dir, &["--redo", "off-topic"]);
    assert!(err.contains(&format!("{} stored replies to ask again (OffTopic)", off.len())), "{err}");
    let all: HashSet<String> = records(&work).iter().map(|r| r["id"].as_str().unwrap().to_string()).filter(|id| id.ends_with("#redo")).collect();
    assert_eq!(all, got.union(&want_off).cloned().collect::<HashSet<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ulm distill --student`: the shipped ulm-8m writes three openers per prompt and SmolLM2 (the
/// teacher, as a scorer) keeps one. Records carry the `#student` id, the scorer's mean
/// log-likelihood and at most eight words; the two shards split the prompts; a second run resumes.
#[test]
fn student_openers_scored_by_the_teacher_are_stored_and_resume() {
    assert!(root().join("assets").exists(), "assets/ is missing: run scripts/fetch-assets.sh (scripts/test.sh does)");
    let smol = root().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(smol.exists(), "{} missing: run scripts/fetch-assets.sh", smol.display());
    let dir = std::env::temp_dir().join(format!("ulm-distill-student-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = |shard: &str, out: &str, limit: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_ulm"))
            .current_dir(root())
            .args(["distill", "--student", "models/ulm-8m", "--scorer", smol.to_str().unwrap(), "--candidates", "3"])
            .args(["--shard", shard, "--limit", limit, "--min-ll", "-99"])
            .args(["--out", dir.join(out).to_str().unwrap(), "--corpus", dir.join("corpus").to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "ulm distill --student failed: {err}");
        err
    };
    let err = run("0/2", "a.jsonl", "3");
    // Written to a pipe, the progress bar draws nothing: a plain line says how far it got.
    assert!(err.contains("3/3 (100.0 %) ") && err.contains("openers scored/s, kept"), "{err}");
    run("1/2", "b.jsonl", "3");
    let (a, b) = (records(&dir.join("a.jsonl")), records(&dir.join("b.jsonl")));
    assert_eq!((a.len(), b.len()), (3, 3));
    for r in a.iter().chain(&b) {
        let id = r["id"].as_str().unwrap();
        assert!(id.ends_with("#student"), "{r}");
        let reply = r["reply"].as_str().unwrap();
        assert!(!reply.is_empty() && reply.split_whitespace().count() <= 8, "{r}");
        let ll = r["scorer_ll"].as_f64().unwrap();
        assert!(ll < 0.0 && ll > -20.0, "a mean log-likelihood per token: {r}");
        assert_eq!(r["tries"].as_u64(), Some(3), "{r}");
        assert!(r["teacher"].as_str().unwrap().contains("best of 3"), "{r}");
        // Every distinct opener is kept with the scorer's judgement, the kept one first.
        let c = r["candidates"].as_array().unwrap();
        assert!((1..=3).contains(&c.len()), "{r}");
        assert_eq!(c[0]["text"].as_str(), Some(reply), "{r}");
        assert_eq!(c[0]["ll"].as_f64(), Some(ll), "{r}");
        let key = |c: &Value| (!c["loops"].as_bool().unwrap(), c["topic"].as_bool().unwrap(), c["ll"].as_f64().unwrap());
        assert!(c.windows(2).all(|w| key(&w[0]) >= key(&w[1])), "best first: {r}");
    }
    let ids = |v: &[Value]| v.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect::<HashSet<_>>();
    assert!(ids(&a).is_disjoint(&ids(&b)), "the shards share no prompt");
    // Resume: two more in shard 0, none of the first three again.
    run("0/2", "a.jsonl", "2");
    let again = records(&dir.join("a.jsonl"));
    assert_eq!(again.len(), 5);
    assert_eq!(ids(&again).len(), 5);
    // Preference pairs from those candidates: the prompt ids are exactly what the runtime feeds
    // the model for that message, the openers' ids are the tokenizer's.
    // `ulm data --stage pref` with `flags` into `dir/out`: its manifest, every pair, its stderr.
    let pref = |flags: &[&str], out: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_ulm"))
            .current_dir(root())
            .args(["data", "--stage", "pref", "--pref-margin", "0", "--min-student-ll", "-99", "--tokenizer", "models/ulm-8m/tokenizer.json"])
            .args(flags)
            .args(["--distill-corpus", dir.join("corpus").to_str().unwrap(), "--distill-working", dir.join("a.jsonl").to_str().unwrap()])
            .args(["--out", dir.join(out).to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "ulm data --stage pref {flags:?} failed: {err}");
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(out).join("manifest.json")).unwrap()).unwrap();
        let mut pairs = records(&dir.join(out).join("pref-train.jsonl"));
        pairs.extend(records(&dir.join(out).join("pref-heldout.jsonl")));
        (manifest, pairs, err)
    };
    let (manifest, pairs, err) = pref(&[], "pref");
    assert_eq!(manifest["stage"], "pref");
    let with_two = again.iter().filter(|r| r["candidates"].as_array().unwrap().len() >= 2).count();
    assert!(with_two > 0 && !pairs.is_empty(), "{with_two} prompts with two openers, {} pairs: {err}", pairs.len());
    let lm = ulm_runtime::generate::LoadedModel::open(&root().join("models/ulm-8m"), ulm_runtime::Precision::Int8, Some(512)).unwrap();
    let prompts: Vec<Vec<u32>> = again.iter().map(|r| lm.chat_prompt(r["prompt"].as_str().unwrap()).unwrap()).collect();
    for p in &pairs {
        let ids = |k: &str| p[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<u32>>();
        assert!(prompts.contains(&ids("prompt")), "{p}");
        assert_ne!(ids("chosen"), ids("rejected"), "{p}");
        assert!(again.iter().any(|r| r["reply"].as_str() == Some(lm.tokenizer.decode(&ids("chosen")).unwrap().as_str())), "chosen = a kept opener: {p}");
    }
    // --leave-out drops the records of an id prefix before anything is built from them.
    let gone = again.iter().find(|r| r["candidates"].as_array().unwrap().len() >= 2).unwrap_or(&again[0]);
    let gone_id = gone["id"].as_str().unwrap();
    let (_, left, err) = pref(&["--leave-out", gone_id], "pref-leave");
    assert!(err.contains(&format!("--leave-out {gone_id}: 1 records left out")), "{err}");
    let gone_prompt = lm.chat_prompt(gone["prompt"].as_str().unwrap()).unwrap();
    let prompt_of = |p: &Value| p["prompt"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<u32>>();
    assert!(left.iter().all(|p| prompt_of(p) != gone_prompt), "a left-out prompt still makes pairs");
    // (without the flag, that prompt made pairs: the flag is what took them away)
    assert!(pairs.iter().any(|p| prompt_of(p) == gone_prompt) && left.len() < pairs.len(), "{} pairs against {}", left.len(), pairs.len());
    // Judged by topic: the chosen opener names it, and the settings are in the manifest.
    let (manifest, pairs, _) = pref(&["--pref-topic-chosen", "--pref-stock", "2"], "pref-topic");
    assert_eq!((manifest["settings"]["topic_chosen"].as_bool(), manifest["settings"]["stock_min_prompts"].as_u64()), (Some(true), Some(2)));
    for p in &pairs {
        let chosen = lm.tokenizer.decode(&p["chosen"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>()).unwrap();
        let c = again.iter().flat_map(|r| r["candidates"].as_array().unwrap()).find(|c| c["text"].as_str() == Some(chosen.as_str()));
        assert_eq!(c.map(|c| c["topic"].as_bool()), Some(Some(true)), "the chosen opener names the topic: {p}");
    }
    // A scorer that does not exist is named in the error.
    let o = Command::new(env!("CARGO_BIN_EXE_ulm"))
        .current_dir(root())
        .args(["distill", "--student", "models/ulm-8m", "--scorer", "no-such-model", "--limit", "1"])
        .args(["--out", dir.join("c.jsonl").to_str().unwrap(), "--corpus", dir.join("corpus").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no-such-model"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--print-prompts` lists the prompts `ulm distill` asks; `--heldout` lists the held-out split's,
/// which share no id and no text with them and hold every source, task-style requests included.
#[test]
fn print_prompts_heldout_is_disjoint_from_the_asked_set() {
    assert!(root().join("assets").exists(), "assets/ is missing: run scripts/fetch-assets.sh (scripts/test.sh does)");
    let list = |extra: &[&str]| -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(["distill", "--print-prompts"]).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (asked, held) = (list(&[]), list(&["--heldout"]));
    assert!(held.len() > 1000 && asked.len() > 10 * held.len(), "{} asked, {} held out", asked.len(), held.len());
    let field = |v: &[Value], k: &str| v.iter().map(|p| p[k].as_str().unwrap().to_string()).collect::<HashSet<_>>();
    assert!(field(&asked, "id").is_disjoint(&field(&held, "id")));
    assert!(field(&asked, "text").is_disjoint(&field(&held, "text")));
    let sources = field(&held, "source");
    for s in ["chitchat", "wordnet-q", "instruct"] {
        assert!(sources.contains(s), "no {s} prompt held out: {sources:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(["distill", "--heldout"]).output().unwrap();
    assert!(!out.status.success(), "--heldout without --print-prompts must be refused");
}

/// `--print-prompts --heldout --requests FILE` lists exactly the requests of FILE that `ulm data`
/// never trains on (held out by prompt or record id), and without `--heldout` every request.
#[test]
fn heldout_requests_are_the_ones_never_trained_on() {
    assert!(root().join("assets").exists(), "assets/ is missing: run scripts/fetch-assets.sh (scripts/test.sh does)");
    let dir = std::env::temp_dir().join(format!("ulm-heldout-requests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("requests.jsonl");
    let ids: Vec<String> = (0..400u64).map(|i| format!("invented:{:016x}", i.wrapping_mul(0x9e3779b97f4a7c15))).collect();
    let lines: Vec<String> = ids.iter().enumerate().map(|(i, id)| format!(r#"{{"id":"{id}","source":"invented","text":"What is request number {i}?"}}"#)).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let listed = |heldout: bool| -> HashSet<String> {
        let mut args = vec!["distill", "--print-prompts", "--requests", file.to_str().unwrap()];
        if heldout {
            args.push("--heldout");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|p| p["source"] == "invented")
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    let want: HashSet<String> = ids.iter().filter(|id| ulm_data::distilled::record_split(id) == ulm_data::Split::Heldout).cloned().collect();
    assert!(!want.is_empty() && want.len() < ids.len() / 4, "about 8 % held out, got {} of {}", want.len(), ids.len());
    assert_eq!(listed(true), want);
    assert_eq!(listed(false).len(), ids.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--invent`: a model behind `ulm serve` (SmolLM2, raw completions) continues numbered lists of
/// example requests; the file gets distinct requests that read as such and none close to a
/// held-out or MT-Bench prompt, a second run appends without repeating, and `--requests` puts them
/// into the prompt set the teacher is asked.
#[test]
fn invent_writes_distinct_requests_resumes_and_joins_the_prompt_set() {
    assert!(root().join("assets").exists(), "assets/ is missing: run scripts/fetch-assets.sh (scripts/test.sh does)");
    let server = Served::start(&["--model", "smollm2", "--ctx", "512"], None);
    let dir = std::env::temp_dir().join(format!("ulm-invent-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("invented.jsonl");
    let invent = |n: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ulm"))
            .current_dir(root())
            .args(["distill", "--invent", n, "--writer", &server.url, "--requests", file.to_str().unwrap(), "--concurrency", "2"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ulm distill --invent {n} failed: {}", String::from_utf8_lossy(&out.stderr));
        records(&file)
    };
    let first = invent("2");
    assert!(first.len() >= 2, "{first:?}");
    let second = invent("5");
    assert!(second.len() >= 5 && second[..first.len()] == first[..], "a second run appends");
    let texts: Vec<&str> = second.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let norms: HashSet<String> = texts.iter().map(|t| ulm_data::invent::norm(t)).collect();
    assert_eq!(norms.len(), texts.len(), "no request twice: {texts:?}");
    let ids: HashSet<&str> = second.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), second.len());
    for r in &second {
        assert_eq!(r["source"], "invented");
        assert!(r["id"].as_str().unwrap().starts_with("invented:"));
        assert!(ulm_data::invent::is_request(r["text"].as_str().unwrap()), "{r}");
    }
    // None close to a held-out prompt or an MT-Bench turn.
    let held = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(["distill", "--print-prompts", "--heldout"]).output().unwrap();
    let mut heldout: Vec<String> = String::from_utf8_lossy(&held.stdout).lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_string()).collect();
    let mt = std::fs::read_to_string(root().join("assets/data/mt_bench_questions.jsonl")).unwrap();
    heldout.extend(mt.lines().flat_map(|l| serde_json::from_str::<Value>(l).unwrap()["turns"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect::<Vec<_>>()));
    let guard = ulm_data::invent::Guard::new(&heldout);
    assert!(guard.leaks(&heldout[0]), "the guard sees the held-out prompts");
    assert!(texts.iter().all(|t| !guard.leaks(t)));

    // --invent-style tasks: long many-part lines, in a file of their own, none near a held-out prompt.
    let tasks_file = dir.join("tasks.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_ulm"))
        .current_dir(root())
        .args(["distill", "--invent", "2", "--invent-style", "tasks", "--writer", &server.url, "--requests", tasks_file.to_str().unwrap(), "--concurrency", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ulm distill --invent-style tasks failed: {}", String::from_utf8_lossy(&out.stderr));
    let tasks = records(&tasks_file);
    assert!(tasks.len() >= 2, "{tasks:?}");
    for r in &tasks {
        let t = r["text"].as_str().unwrap();
        assert!(ulm_data::invent::Style::Tasks.reads(t) && t.split_whitespace().count() >= 12, "{t}");
        assert!(!guard.leaks(t), "{t}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(["distill", "--invent", "2", "--invent-style", "essays", "--requests", tasks_file.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("questions, tasks or passages"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(["distill", "--invent-style", "tasks", "--print-prompts"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--invent"), "a style without --invent is refused: {}", String::from_utf8_lossy(&out.stderr));

    // They join the prompt set.
    let out = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(["distill", "--print-prompts", "--requests", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let listed: HashSet<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|p| p["source"] == "invented").map(|p| p["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed.len(), texts.len());
    // … from a gzipped file as well (how the corpus keeps them).
    let gz = dir.join("invented.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, std::fs::read(&file).unwrap().as_slice()).unwrap();
    enc.finish().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(["distill", "--print-prompts", "--requests", gz.to_str().unwrap()]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("\"source\":\"invented\"")).count(), texts.len());
    // An empty file is refused with the fix.
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ulm")).current_dir(root()).args(["distill", "--print-prompts", "--requests", empty.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--invent"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
