//! The seam heuristics against a hand-labelled set (`data/eval/seams.jsonl`: opener +
//! continuation pairs written by hand, labelled `continue`, `restart` or `repeat`): precision and
//! recall of the restart flag (`ulm_handoff::recovery::restarts`, which `ulm eval` reports) and of
//! the repetition flag, with floors at the values measured when the set was written.
//!
//! `cargo test -p ulm-eval --test seams -- --nocapture` prints the numbers.

use serde_json::Value;

/// Measured on the set as committed (53 pairs: 29 continue, 20 restart, 4 repeat; 52 written by
/// hand, one seen in a real `ulm eval` run, marked `seen`): restart precision 16/17 = 0.94, recall
/// 16/20 = 0.80. The false positive is a continuation with a stray capital ("The problem asks us
/// to find" + " The value of x ..."); the misses start over with a word the rule does not know
/// ("Subject:", "Japan's") or restate only the opener's first two words ("Photosynthesis is how
/// ...", "Quantum entanglement is ..."). Before the handoff's rule learnt that an opener ending in
/// a dash is not mid-sentence, the `seen` pair was a second false positive (16/18 = 0.89); the
/// eval's own earlier rule (a shorter starter list, no restatement, no name guard) scored 14/19 =
/// 0.74 and 14/20 = 0.70. A change to the heuristic that lowers either number fails here.
const MIN_RESTART_PRECISION: f64 = 0.94;
const MIN_RESTART_RECALL: f64 = 0.80;

struct Pair {
    opener: String,
    continuation: String,
    label: String,
}

fn pairs() -> Vec<Pair> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/eval/seams.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}: {l}"));
            let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{path}: no `{k}` in {l}")).to_string();
            Pair { opener: s("opener"), continuation: s("continuation"), label: s("label") }
        })
        .collect()
}

/// (precision, recall, misses) of `flag` against the pairs labelled `positive`.
fn measure(pairs: &[Pair], positive: &str, flag: impl Fn(&str, &str) -> bool) -> (f64, f64, Vec<String>) {
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    let mut misses = Vec::new();
    for p in pairs {
        let got = flag(&p.opener, &p.continuation);
        let want = p.label == positive;
        match (got, want) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
        if got != want {
            misses.push(format!("{} {:?} + {:?} (labelled {})", if got { "false positive" } else { "missed" }, p.opener, p.continuation, p.label));
        }
    }
    let precision = if tp + fp == 0 { 0.0 } else { tp as f64 / (tp + fp) as f64 };
    let recall = if tp + fneg == 0 { 0.0 } else { tp as f64 / (tp + fneg) as f64 };
    (precision, recall, misses)
}

#[test]
fn the_set_is_balanced_enough_to_measure() {
    let ps = pairs();
    let count = |l: &str| ps.iter().filter(|p| p.label == l).count();
    assert!(ps.len() >= 30, "{} pairs", ps.len());
    assert!(count("restart") >= 15 && count("continue") >= 15 && count("repeat") >= 3);
    assert!(ps.iter().all(|p| ["continue", "restart", "repeat"].contains(&p.label.as_str())));
}

#[test]
fn restart_flag_precision_and_recall() {
    let ps = pairs();
    let (p, r, misses) = measure(&ps, "restart", ulm_eval::restarts);
    eprintln!("restart flag on {} pairs: precision {p:.2}, recall {r:.2}\n  {}", ps.len(), misses.join("\n  "));
    assert!(p >= MIN_RESTART_PRECISION && r >= MIN_RESTART_RECALL, "restart precision {p:.2} (floor {MIN_RESTART_PRECISION}), recall {r:.2} (floor {MIN_RESTART_RECALL}):\n{}", misses.join("\n"));
}

#[test]
fn restart_mode_agrees_with_the_flag_on_the_set() {
    // The engine's Mode::Restart is the flag unless a pivot marker comes first; none of these pivot.
    for p in pairs() {
        let mode = ulm_handoff::recovery::classify(&p.opener, &p.continuation);
        assert_eq!(mode == ulm_handoff::Mode::Restart, ulm_eval::restarts(&p.opener, &p.continuation), "{:?} + {:?}: {mode}", p.opener, p.continuation);
    }
}

#[test]
fn repetition_flag_precision_and_recall() {
    // A restart that restates the opener repeats it too, so restarts are left out here.
    let ps: Vec<Pair> = pairs().into_iter().filter(|p| p.label != "restart").collect();
    let (p, r, misses) = measure(&ps, "repeat", ulm_eval::repeats_opener);
    eprintln!("repetition flag on {} continue/repeat pairs: precision {p:.2}, recall {r:.2}\n  {}", ps.len(), misses.join("\n  "));
    assert!(p >= 0.99 && r >= 0.99, "repeat precision {p:.2}, recall {r:.2}:\n{}", misses.join("\n"));
}
