//! `ulm eval` end to end with the tiny golden model as opener, scorer and (through `ulm serve`)
//! continuator: the report's numbers are recomputed from per_prompt.jsonl, a run resumes per
//! prompt, and the handoff metrics are filled.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;
use support::Served;

fn golden() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/tests/data/golden").to_string()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ulm-eval-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn prompts(dir: &Path) -> PathBuf {
    let p = dir.join("prompts.jsonl");
    let lines = [
        r#"{"id":"t1","source":"chitchat","category":"chitchat-opening","prompt":"Hello there!"}"#,
        r#"{"id":"t2","source":"mtbench","category":"stem","prompt":"What is a comet?"}"#,
        r#"{"id":"t3","source":"mtbench","category":"stem","prompt":"Why is the sky blue?"}"#,
        r#"{"id":"t4","source":"chitchat","category":"chitchat-question","prompt":"How are you today?"}"#,
        // `text` instead of `prompt`: as `ulm distill --print-prompts` writes a prompt.
        r#"{"id":"t5","source":"mtbench","category":"writing","text":"Write a haiku about rain."}"#,
    ];
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn eval(prompts: &Path, out: &Path, extra: &[&str]) {
    let g = golden();
    let o = Command::new(env!("CARGO_BIN_EXE_ulm"))
        .args(["eval", "--prompts", prompts.to_str().unwrap(), "--out", out.to_str().unwrap(), "--models", &g, "--scorer", &g, "--words", "4,8", "--ctx", "512"])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "ulm eval failed: {}", String::from_utf8_lossy(&o.stderr));
}

fn rows(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("per_prompt.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The rows of the report.md table whose header starts with `header`, as cells.
fn table(out: &Path, header: &str) -> Vec<Vec<String>> {
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    md.lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// The openers table of report.md: (words) → cells.
fn report_table(out: &Path) -> BTreeMap<u64, Vec<String>> {
    table(out, "| model | params | words").into_iter().map(|cells| (cells[2].parse().unwrap(), cells)).collect()
}

/// The group a row is broken down by: MT-Bench by category, other sources as one group.
fn category(r: &Value) -> String {
    let k = if r["source"] == "mtbench" { "category" } else { "source" };
    r[k].as_str().unwrap().to_string()
}

/// Mean LL (mean over prompts) and token-weighted acceptance of some rows, formatted as report.md does.
fn ll_and_acceptance(rs: &[&Value]) -> (String, String) {
    let lls: Vec<f64> = rs.iter().filter_map(|r| r["mean_ll"].as_f64()).collect();
    let tok: u64 = rs.iter().map(|r| r["scored_tokens"].as_u64().unwrap()).sum();
    let acc: u64 = rs.iter().map(|r| r["accepted"].as_u64().unwrap()).sum();
    (format!("{:.4}", lls.iter().sum::<f64>() / lls.len() as f64), format!("{:.3}", acc as f64 / tok as f64))
}

#[test]
fn report_is_recomputed_from_the_rows() {
    let dir = scratch("report");
    let out = dir.join("out");
    eval(&prompts(&dir), &out, &[]);
    for f in ["per_prompt.jsonl", "report.md", "meta.json", "quality_vs_params.png", "latency.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let rs = rows(&out);
    assert_eq!(rs.len(), 10, "5 prompts × 2 lengths");
    let openers = report_table(&out);
    assert_eq!(openers.len(), 2);
    for w in [4u64, 8] {
        let g: Vec<&Value> = rs.iter().filter(|r| r["words"] == w).collect();
        let lls: Vec<f64> = g.iter().filter_map(|r| r["mean_ll"].as_f64()).collect();
        assert_eq!(lls.len(), 5, "every opener scored");
        let mean_ll = lls.iter().sum::<f64>() / lls.len() as f64;
        let tok: u64 = g.iter().map(|r| r["scored_tokens"].as_u64().unwrap()).sum();
        let acc: u64 = g.iter().map(|r| r["accepted"].as_u64().unwrap()).sum();
        let cells = &openers[&w];
        assert_eq!(cells[4], "5");
        assert_eq!(cells[5], format!("{mean_ll:.4}"), "mean LL at {w} words");
        assert_eq!(cells[6], format!("{:.3}", acc as f64 / tok as f64), "acceptance at {w} words");
        assert!(mean_ll < 0.0);
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("skipped: no judge configured"));
    assert!(md.contains("their judge, not ours") && md.contains("3.373"));
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["models"][golden()]["model.safetensors"].as_str().unwrap().len(), 64, "sha256 of the weights");
    assert!(meta["machine"]["cores"].as_u64().unwrap() >= 1);

    // By category: every (category, length) cell recomputed from the rows.
    let by_cat = table(&out, "| category | model | words | n | mean LL");
    let want: Vec<(&str, u64, usize)> = vec![("chitchat", 4, 2), ("chitchat", 8, 2), ("stem", 4, 2), ("stem", 8, 2), ("writing", 4, 1), ("writing", 8, 1)];
    let mut got: Vec<(&str, u64, usize)> = by_cat.iter().map(|c| (c[0].as_str(), c[2].parse().unwrap(), c[3].parse().unwrap())).collect();
    got.sort();
    assert_eq!(got, want, "categories × lengths with their n");
    for cells in &by_cat {
        let w: u64 = cells[2].parse().unwrap();
        let g: Vec<&Value> = rs.iter().filter(|r| category(r) == cells[0] && r["words"] == w).collect();
        assert_eq!(ll_and_acceptance(&g), (cells[4].clone(), cells[5].clone()), "{} at {w} words", cells[0]);
    }
    assert!(!md.contains("Recovery modes per category"), "no mode shares without a continuator");

    // The pre-handoff guard: every opener has its confidence and the guard's decision at the
    // handoff's default threshold; the table is recomputed from the rows.
    let guard = table(&out, "| model | words | n | fires | fire rate");
    assert_eq!(guard.len(), 2, "{md}");
    for cells in &guard {
        let w: u64 = cells[1].parse().unwrap();
        let g: Vec<&Value> = rs.iter().filter(|r| r["words"] == w).collect();
        let mut fires = 0;
        let mut conf = Vec::new();
        for r in &g {
            let (c, t) = (r["guard_confidence"].as_f64().expect("confidence recorded"), r["guard_min_confidence"].as_f64().unwrap());
            assert!((0.0..=1.0).contains(&c), "{r}");
            assert!((t - 0.35).abs() < 1e-6, "the handoff's default threshold: {t}");
            assert_eq!(r["guard_fires"].as_bool().unwrap(), c < t, "{r}");
            fires += usize::from(c < t);
            conf.push(c);
        }
        assert_eq!(cells[2], g.len().to_string());
        assert_eq!(cells[3], fires.to_string(), "fires at {w} words");
        assert_eq!(cells[4], format!("{:.3}", fires as f64 / g.len() as f64));
        assert_eq!(cells[5], format!("{:.3}", conf.iter().sum::<f64>() / conf.len() as f64));
        assert_eq!(cells[6], "0.35");
    }
    // "Repeats itself": openers that say the same three words twice.
    for (w, cells) in &openers {
        let n = rs.iter().filter(|r| r["words"] == *w && ulm_eval::opener_repeats_itself(r["opener"].as_str().unwrap())).count();
        assert_eq!(cells[10], format!("{:.3}", n as f64 / 5.0), "repeats itself at {w} words");
        // "Runs on": the golden model's openers are one character over and over, so every
        // opener that is not a number runs on.
        let runs: Vec<&str> = rs.iter().filter(|r| r["words"] == *w).map(|r| r["opener"].as_str().unwrap()).collect();
        let n = runs.iter().filter(|o| ulm_runtime::generate::runs_on(o)).count();
        assert!(n > 0, "golden openers run on: {runs:?}");
        assert_eq!(cells[11], format!("{:.3}", n as f64 / 5.0), "runs on at {w} words");
    }

    // --report-only rewrites the same report from the rows.
    std::fs::remove_file(out.join("report.md")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ulm")).args(["eval", "--report-only", "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(report_table(&out), openers);
    assert_eq!(table(&out, "| category | model | words | n | mean LL"), by_cat);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_run_resumes_per_prompt() {
    let dir = scratch("resume");
    let out = dir.join("out");
    let p = prompts(&dir);
    eval(&p, &out, &["--limit", "3"]);
    let first = rows(&out);
    assert_eq!(first.len(), 6);
    // A kill mid-write leaves a torn last line: it is ignored and the row redone.
    let mut f = std::fs::OpenOptions::new().append(true).open(out.join("per_prompt.jsonl")).unwrap();
    std::io::Write::write_all(&mut f, br#"{"id":"t4","model":"#).unwrap();
    drop(f);
    eval(&p, &out, &[]);
    let text = std::fs::read_to_string(out.join("per_prompt.jsonl")).unwrap();
    let all: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(all.len(), 10);
    assert_eq!(&all[..6], &first[..], "the first rows are kept, not redone");
    let keys: HashSet<(String, u64)> = all.iter().map(|r| (r["id"].as_str().unwrap().to_string(), r["words"].as_u64().unwrap())).collect();
    assert_eq!(keys.len(), 10, "no prompt scored twice");
    assert_eq!(report_table(&out)[&4][4], "5");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The golden model on both sides. Its openers stop after eight repeats of one character (a word
/// that runs on), and continued in place (`prefill`) it ends its turn at once, which the handoff
/// rightly reports as an empty continuation; so the cloud is asked the `instruct` way (the
/// contract as system prompt, the opener in the user turn), whose prompt needs the longer context.
#[test]
fn handoff_metrics_against_ulm_serve() {
    let dir = scratch("handoff");
    let out = dir.join("out");
    let g = golden();
    let server = Served::start(&["--model", &g, "--cloud-model", &g, "--ctx", "2048"], None);
    let cloud = format!("{}/v1", server.url);
    eval(&prompts(&dir), &out, &["--cloud", &cloud, "--provider", "instruct", "--cloud-max-tokens", "8", "--limit", "3"]);
    drop(server);

    let rs = rows(&out);
    assert_eq!(rs.len(), 6);
    for r in &rs {
        let h = &r["handoff"];
        assert!(h.is_object(), "handoff recorded: {r}");
        assert!(h["error"].is_null(), "handoff failed: {h}");
        assert!(["fragment_completion", "clean_continuation", "self_repair_pivot", "restart"].contains(&h["mode"].as_str().unwrap()), "{h}");
        assert!(h["cloud_first_token_ms"].as_f64().unwrap() > 0.0);
        assert!(h["done_ms"].as_f64().unwrap() >= h["opener_done_ms"].as_f64().unwrap());
        assert!(h["cont_ll"].as_f64().is_some(), "continuation scored: {h}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| model | words | n | fragment completion"), "{md}");
    assert!(out.join("recovery_modes.png").exists());

    // Mode shares per category, recomputed from the rows (the binary under test wrote the modes
    // with the classifier the report reruns, so they are the same labels).
    let modes = ["fragment_completion", "clean_continuation", "self_repair_pivot", "restart"];
    let by_cat = table(&out, "| category | model | words | n | fragment completion");
    assert_eq!(by_cat.len(), 4, "chitchat and stem × 2 lengths in the first 3 prompts: {by_cat:?}");
    for cells in &by_cat {
        let w: u64 = cells[2].parse().unwrap();
        let g: Vec<&Value> = rs.iter().filter(|r| category(r) == cells[0] && r["words"] == w).collect();
        assert_eq!(cells[3], g.len().to_string());
        for (i, m) in modes.iter().enumerate() {
            let share = g.iter().filter(|r| r["handoff"]["mode"] == *m).count() as f64 / g.len() as f64;
            assert_eq!(cells[4 + i], format!("{share:.2}"), "{m} share in {} at {w} words", cells[0]);
        }
        let restarts = g.iter().filter(|r| r["handoff"]["restart"] == true).count() as f64 / g.len() as f64;
        assert_eq!(cells[10], format!("{restarts:.2}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The judge through a real endpoint: `ulm serve` hosting SmolLM2-135M-Instruct, asked by
/// `ulm eval --judge` about the golden model's openers. The sixth prompt (150 digits, one SmolLM2
/// token each) makes the judge's prompt longer than the server takes (`--max-prompt-tokens 200`;
/// the others stay under about 140), so the server answers HTTP 400 for it: that reply must be
/// counted as one the judge could not score, with no number.
#[test]
fn judge_through_ulm_serve_with_smollm2() {
    let smollm2 = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !Path::new(smollm2).exists() {
        assert!(std::env::var_os("CI").is_none(), "{smollm2} missing under CI");
        eprintln!("SKIPPED judge_through_ulm_serve_with_smollm2: {smollm2} missing; run scripts/fetch-assets.sh");
        return;
    }
    let dir = scratch("judge");
    let out = dir.join("out");
    let p = prompts(&dir);
    let digits: String = (0..150).map(|i| char::from(b'0' + (i * 7 % 10) as u8)).collect();
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, format!("{{\"id\":\"t6\",\"source\":\"chitchat\",\"category\":\"x\",\"prompt\":\"{digits}\"}}\n").as_bytes()).unwrap();
    drop(f);
    let g = golden();
    let server = Served::start(&["--model", &g, "--cloud-model", smollm2, "--ctx", "1024", "--max-prompt-tokens", "200", "--threads", "1"], None);
    let judge = format!("{}/v1", server.url);
    let o = Command::new(env!("CARGO_BIN_EXE_ulm"))
        .args(["eval", "--prompts", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--models", &g, "--scorer", &g, "--words", "4", "--ctx", "256"])
        .args(["--judge", &judge, "--judge-model", "SmolLM2-135M-Instruct.Q4_1"])
        .output()
        .unwrap();
    drop(server);
    assert!(o.status.success(), "ulm eval failed: {}", String::from_utf8_lossy(&o.stderr));

    let rs = rows(&out);
    assert_eq!(rs.len(), 6, "every prompt has its row, scored or not");
    let mut judged = Vec::new();
    let mut unscored = 0;
    for r in &rs {
        assert_eq!(r["judge_model"], "SmolLM2-135M-Instruct.Q4_1", "{r}");
        match (r["judge"].as_f64(), r["judge_error"].as_str()) {
            (Some(s), None) => {
                assert!((1.0..=5.0).contains(&s), "score outside 1-5: {r}");
                judged.push(s);
            }
            (None, Some(e)) => {
                assert!(!e.is_empty());
                unscored += 1;
            }
            _ => panic!("a row is either scored or has a judge error: {r}"),
        }
    }
    let long = rs.iter().find(|r| r["id"] == "t6").unwrap();
    assert!(long["judge"].is_null(), "{long}");
    assert!(long["judge_error"].as_str().unwrap().contains("HTTP 400"), "{long}");
    assert!(!judged.is_empty(), "SmolLM2 scores at least one reply: {rs:?}");

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let t = table(&out, "| model | words | n | judged | could not score");
    assert_eq!(t.len(), 1, "{md}");
    assert_eq!(t[0][1..].to_vec(), vec![
        "4".to_string(),
        "6".to_string(),
        judged.len().to_string(),
        unscored.to_string(),
        format!("{:.3}", judged.iter().sum::<f64>() / judged.len() as f64),
    ]);
    eprintln!("judge (SmolLM2 through ulm serve): {} scored {judged:?}, {unscored} could not score", judged.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keep_candidates_records_every_opener_the_choice_saw() {
    let dir = scratch("rivals");
    let (kept, plain) = (dir.join("kept"), dir.join("plain"));
    let p = prompts(&dir);
    eval(&p, &kept, &["--candidates", "4", "--pmi", "0.5", "--keep-candidates", "--limit", "3"]);
    eval(&p, &plain, &["--candidates", "4", "--pmi", "0.5", "--limit", "3"]);
    let (kept, plain) = (rows(&kept), rows(&plain));
    assert_eq!(kept.len(), 6);
    for (k, q) in kept.iter().zip(&plain) {
        assert_eq!(k["opener"], q["opener"], "recording the candidates does not change the choice");
        assert!(q.get("rivals").is_none(), "without the flag no candidates are written");
        let rivals = k["rivals"].as_array().unwrap_or_else(|| panic!("no rivals in {k}"));
        assert_eq!(rivals.len(), 4);
        let chosen: Vec<&Value> = rivals.iter().filter(|r| r["chosen"] == true).collect();
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0]["text"].as_str().unwrap().trim(), k["opener"].as_str().unwrap().trim());
        for r in rivals {
            assert!(r["mean_logprob"].as_f64().unwrap() <= 0.0 && r["min_logprob"].as_f64().unwrap() <= r["mean_logprob"].as_f64().unwrap());
            assert!(r["tokens"].as_u64().unwrap() > 0);
            assert!(r["scorer_ll"].as_f64().unwrap() < 0.0 && r["scorer_prior"].as_f64().unwrap() < 0.0, "{r}");
        }
        assert!(rivals.iter().any(|r| r["prior"].is_number()), "pmi 0.5 scores the best fit without the question: {k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
