//! The `ulm` binary end to end: the golden model's greedy text through `ulm generate`, and
//! one-line errors that say what to do.

use std::path::PathBuf;
use std::process::Command;

fn ulm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ulm"))
}

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/data/golden")
}

fn expected() -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden().join("expected.json")).unwrap()).unwrap();
    v["cases"].as_array().unwrap().iter().map(|c| (c["prompt"].as_str().unwrap().to_string(), c["text"].as_str().unwrap().to_string())).collect()
}

#[test]
fn generate_prints_the_golden_text_on_every_precision() {
    for prec in ["f32", "int8", "native"] {
        for (prompt, text) in expected() {
            let out = ulm()
                .args(["generate", "--model", golden().to_str().unwrap(), "--precision", prec, "--temperature", "0", "--max-tokens", "24", &prompt])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), text, "{prec} {prompt:?}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert!(err.contains("first token") && err.contains("ms/token") && err.contains("peak RSS"), "{err}");
        }
    }
}

#[test]
fn word_limit_cuts_at_a_word_boundary_through_the_cli() {
    // The golden model writes no spaces, so this uses SmolLM2 (fetched by scripts/fetch-assets.sh).
    let smol = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !smol.exists() {
        assert!(std::env::var_os("CI").is_none(), "SmolLM2 missing in CI: scripts/fetch-assets.sh must run first");
        eprintln!("SKIPPED: SmolLM2 missing; run scripts/fetch-assets.sh");
        return;
    }
    for words in [3, 4, 6] {
        let out = ulm()
            .args(["generate", "--model", smol.to_str().unwrap(), "--temperature", "0", "--words", &words.to_string(), "How do I boil an egg?"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let text = text.strip_suffix('\n').unwrap();
        assert_eq!(text.split_whitespace().count(), words, "{text:?}");
        assert_eq!(text, text.trim(), "no space at either end: {text:?}");
        // Greedy: the cut text is a prefix of the full greedy reply, ending at a word end.
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("(Words)") && err.contains(&format!("first {words} words")), "{err}");
    }
}

#[test]
fn bad_input_gets_one_line_errors_that_say_what_to_do() {
    let out = ulm().args(["generate", "--model", "/nonexistent/model.gguf", "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/model.gguf") && err.contains("give a path"), "{err}");

    let out = ulm().args(["generate", "--model", golden().to_str().unwrap(), "   "]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("empty prompt"), "{err}");

    let out = ulm().args(["generate", "--precision", "int3", "--model", golden().to_str().unwrap(), "hi"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("use auto, native, f32 or int8"), "{err}");

    // A truncated model file names the file and the problem.
    let dir = std::env::temp_dir().join(format!("ulm-cli-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(golden().join(f), dir.join(f)).unwrap();
    }
    let st = std::fs::read(golden().join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let out = ulm().args(["generate", "--model", dir.to_str().unwrap(), "hi"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("model.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();

    let out = ulm().args(["generate", "--bogus-flag", "x"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8(out.stderr).unwrap().contains("--bogus-flag"));
    // A mix weight that does not parse names the flag's form and a working example.
    for bad in ["chitchat", "chitchat=0", "chitchat=two", "=2"] {
        let out = ulm().args(["data", "--stage", "sft", "--mix", "openers", "--family-repeat", bad]).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success() && err.contains("FAMILY=N") && err.contains("chitchat=2"), "{bad}: {err}");
    }
}

/// A copy of the golden model folder (without a generation_config.json) under a fresh name.
fn golden_copy(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ulm-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"] {
        std::fs::copy(golden().join(f), dir.join(f)).unwrap();
    }
    dir
}

#[test]
fn a_model_folder_sets_its_own_copy_boost_and_the_flag_overrides_it() {
    let dir = golden_copy("defaults");
    let say = |model: &std::path::Path, extra: &[&str]| -> String {
        let out = ulm()
            .args(["generate", "--model", model.to_str().unwrap(), "--temperature", "0", "--max-tokens", "12"])
            .args(extra)
            .arg("What is a volcano?")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let plain = say(&dir, &[]);
    std::fs::write(dir.join("generation_config.json"), r#"{"copy_boost": 100.0}"#).unwrap();
    let configured = say(&dir, &[]);
    assert_ne!(configured, plain, "the folder's copy boost changed nothing");
    assert!(configured.to_lowercase().contains("volcano"), "a strong boost copies the asked word: {configured:?}");
    assert_eq!(configured, say(&golden(), &["--copy-boost", "100"]), "the same as the flag on the plain model");
    assert_eq!(say(&dir, &["--copy-boost", "0"]), plain, "the flag overrides the folder");

    std::fs::write(dir.join("generation_config.json"), r#"{"copy_boost": "lots"}"#).unwrap();
    let out = ulm().args(["generate", "--model", dir.to_str().unwrap(), "hi"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("generation_config.json") && err.contains("delete the file"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `ulm generate` of the golden model's reply to "Tell me about the volcano." with hot sampling
/// (temperature 1.2, no nucleus), so that its replies differ from seed to seed.
fn say_hot(model: &std::path::Path, seed: u64, copy_boost: &str, extra: &[&str]) -> String {
    let out = ulm()
        .args(["generate", "--model", model.to_str().unwrap(), "--temperature", "1.2", "--top-p", "1", "--copy-boost", copy_boost, "--max-tokens", "24"])
        .args(["--seed", &seed.to_string()])
        .args(extra)
        .arg("Tell me about the volcano.")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn candidates_pick_one_of_the_seeds_replies_from_the_flag_or_the_folder() {
    let dir = golden_copy("candidates");
    // With a strong boost some of the replies spell "volca…" and some do not
    // (crates/runtime/tests/candidates.rs).
    let say = |model: &std::path::Path, seed: u64, extra: &[&str]| say_hot(model, seed, "9", extra);
    std::fs::write(dir.join("generation_config.json"), r#"{"candidates": 4}"#).unwrap();
    let mut changed = 0;
    for seed in 0..6u64 {
        let singles: Vec<String> = (0..4).map(|k| say(&golden(), seed + k, &["--words", "4"])).collect();
        let best = say(&golden(), seed, &["--words", "4", "--candidates", "4"]);
        assert!(singles.contains(&best), "seed {seed}: {best:?} is none of {singles:?}");
        changed += usize::from(best != singles[0]);
        assert_eq!(say(&dir, seed, &["--words", "4"]), best, "seed {seed}: the folder's candidates = the flag");
        assert_eq!(say(&dir, seed, &["--words", "4", "--candidates", "1"]), singles[0], "seed {seed}: the flag overrides the folder");
        assert_eq!(say(&dir, seed, &[]), say(&golden(), seed, &[]), "seed {seed}: a whole reply (no --words) is not an opener: one sample");
    }
    assert!(changed > 0, "best of 4 never differed from the first reply");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn pmi_from_the_flag_or_the_folder_changes_the_choice_and_a_bad_weight_is_refused() {
    let dir = golden_copy("pmi");
    let say = |model: &std::path::Path, seed: u64, extra: &[&str]| say_hot(model, seed, "0", &[&["--words", "4", "--candidates", "8"], extra].concat());
    std::fs::write(dir.join("generation_config.json"), r#"{"pmi": 1.0}"#).unwrap();
    let mut changed = 0;
    for seed in 0..6u64 {
        let (plain, weighed) = (say(&golden(), seed, &[]), say(&golden(), seed, &["--pmi", "1"]));
        assert_eq!(say(&dir, seed, &[]), weighed, "seed {seed}: the folder's pmi = the flag");
        assert_eq!(say(&dir, seed, &["--pmi", "0"]), plain, "seed {seed}: the flag overrides the folder");
        changed += usize::from(weighed != plain);
    }
    assert!(changed > 0, "pmi 1 never changed the choice");
    for bad in ["1.5", "-0.2", "much"] {
        let out = ulm().args(["generate", "--model", dir.to_str().unwrap(), "--pmi", bad, "hi"]).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success() && err.contains("--pmi"), "{bad}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
