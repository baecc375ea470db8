//! The three recovery modes and a deterministic classifier that labels which one a reply took.
//!
//! The continuator is told (see [`crate::contract`]) to handle the opener in one of three ways;
//! [`classify`] reads the opener and the continuation and says which way it went:
//! - **fragment completion**: the opener stops mid-sentence and the continuation finishes it;
//! - **clean continuation**: the opener is a complete sentence and the continuation goes on;
//! - **self-repair pivot**: the continuation steers away from the opener with a short bridge
//!   ("Actually, ...", "To be precise, ...", "or rather ...").
//!
//! A fourth label is not a mode but the contract broken: **restart**, the opener stops
//! mid-sentence and the continuation ignores it and begins the answer again ("The best way to
//! learn cooking is" + " The best way to learn to cook is to start small."). Without it such a
//! reply was labelled a fragment completion, because the opener was unfinished and no bridge
//! marker was found. [`restarts`] says when.
//!
//! Why this label exists: with SmolLM2 as continuator the `completion` provider was once seen to
//! restart the answer, and the reply was labelled a fragment completion. The provider was not the
//! cause. On a ChatML server `completion` sends exactly the text `prefill` makes the server render
//! (tested in `provider`), and the opener never ends in whitespace (the engine holds trailing
//! whitespace back and `continuation_request` trims it), so no token boundary differs at the seam:
//! against `ulm serve` 60 of 60 sampled dev-prompt handoffs gave byte-identical continuations
//! under both providers (two `ulm bench-handoff --provider completion|prefill` runs, seeds 0 and
//! 100). A small continuator simply restarts now and then, whatever the provider; what was wrong
//! was the label, since the classifier had no name for a broken contract.
//!
//! A pivot is recognised by a marker phrase at the start of a clause (after a sentence start, a
//! comma, a semicolon, a colon, a dash or a bracket, skipping fillers such as "or" and "well") in
//! the bridge window: the first sentence of the continuation, plus the second one when the first
//! only finished the opener's fragment. The pivot contract (a bridge of at most
//! [`MAX_BRIDGE_WORDS`] words, no blunt negation) is checked by [`check_pivot`].
//!
//! ```
//! use ulm_handoff::recovery::{classify, Mode};
//! assert_eq!(classify("The capital of France is", " Paris."), Mode::FragmentCompletion);
//! assert_eq!(classify("Paris is the capital.", " It lies on the Seine."), Mode::CleanContinuation);
//! assert_eq!(classify("The capital of Australia is Sydney", ", or rather Canberra."), Mode::SelfRepairPivot);
//! assert_eq!(classify("The best way to learn cooking is", " The best way to learn is to cook."), Mode::Restart);
//! ```

use serde::Serialize;

use crate::words::{count_words, ends_sentence, is_sentence_end};

/// Longest bridge sentence the pivot contract allows.
pub const MAX_BRIDGE_WORDS: usize = 12;

/// How the continuation handled the opener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The opener was unfinished; the continuation completed it.
    FragmentCompletion,
    /// The opener was a complete sentence; the continuation went on from it.
    CleanContinuation,
    /// The continuation steered away from the opener with a bridge.
    SelfRepairPivot,
    /// The opener was unfinished and the continuation began the answer again instead of
    /// finishing it (the contract broken; see [`restarts`]).
    Restart,
}

impl Mode {
    /// `fragment_completion`, `clean_continuation`, `self_repair_pivot` or `restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::FragmentCompletion => "fragment_completion",
            Mode::CleanContinuation => "clean_continuation",
            Mode::SelfRepairPivot => "self_repair_pivot",
            Mode::Restart => "restart",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Phrases that open a bridge at the start of any clause. Lower case; matched on word
/// boundaries ("rather" not when "rather than").
const CLAUSE_MARKERS: &[&str] = &[
    "actually", "to be precise", "more precisely", "to be accurate", "more accurately",
    "strictly speaking", "to clarify", "let me clarify", "let me correct", "let me rephrase",
    "let me reconsider", "let me start over", "correction", "on second thought", "rather",
    "instead,", "i should say", "i mean,", "i misspoke", "my mistake", "scratch that",
    "to be clear", "not quite", "that's not quite", "that is not quite", "that's wrong",
    "that is wrong", "that's incorrect", "that is incorrect", "that's not right",
    "that is not right", "that's not correct", "that is not correct", "it's actually",
    "it is actually", "the correct answer", "the right answer",
];

/// Phrases that open a bridge only at the start of a sentence: mid-sentence they are ordinary
/// contrast ("In winter, however, it is cold").
const SENTENCE_MARKERS: &[&str] = &[
    "however", "that said", "then again", "though", "although", "no,", "nope", "wait,", "hold on",
    "sorry", "my apologies", "apologies",
];

/// Words the pivot contract forbids in the bridge.
const BLUNT_NEGATIONS: &[&str] = &[
    "wrong", "incorrect", "not correct", "not right", "not true", "untrue", "false", "not possible",
    "impossible", "mistake", "mistaken", "error", "no,", "nope",
];

/// Fillers skipped before looking for a marker at a clause start.
const FILLERS: &[&str] = &["or", "but", "well", "oh", "and", "so", "um", "hmm", "erm", "ah"];

/// Labels the reply. An empty continuation counts as a clean continuation of a complete opener
/// and as a fragment completion of an unfinished one.
pub fn classify(opener: &str, continuation: &str) -> Mode {
    if find_bridge(opener, continuation).is_some() {
        Mode::SelfRepairPivot
    } else if restarts(opener, continuation) {
        Mode::Restart
    } else if ends_sentence(opener) || opener.trim().is_empty() {
        Mode::CleanContinuation
    } else {
        Mode::FragmentCompletion
    }
}

/// Capitalized words that begin a sentence rather than go on with one. Proper nouns ("France"
/// after "The capital of") are a fine completion, so only these count; "I" does not, because it
/// goes on a sentence as often as it starts one, and neither does "A", which is as often a name
/// ("The relationship between A and C is that" + " A is the father of B", seen with SmolLM2).
const SENTENCE_STARTS: &[&str] = &[
    "the", "an", "it", "its", "this", "that", "these", "those", "there", "here", "in", "to", "we", "you", "yes",
    "no", "sure", "of", "as", "when", "if", "oh", "well", "certainly", "hello", "hi", "my", "our", "your", "what",
    "how", "why", "let", "for", "title", "dear", "absolutely", "great", "thank", "thanks", "okay", "ok", "once",
    "imagine", "one", "some", "many", "most", "first", "today", "while", "after", "before",
];

/// Words of the opener's start that a continuation must repeat to count as restating it.
const RESTATED_WORDS: usize = 3;

/// True if the opener stops mid-sentence and the continuation begins the answer again rather
/// than finishing it: it restates the opener's first [`RESTATED_WORDS`] words, or its first word
/// is a capitalized sentence opener ("The", "It", "Sure", ...) that is not the start of a name or
/// title ("The Hobbit"). A heuristic on text alone; it misses restarts that begin with "I", "A"
/// or a proper noun. A whole repeated opener never reaches it: the seam strips that.
///
/// ```
/// use ulm_handoff::recovery::restarts;
/// assert!(restarts("To make cold brew, you", " To make cold brew coffee, combine grounds and water."));
/// assert!(restarts("Sure! The easiest way to", " The easiest way is to start small."));
/// assert!(!restarts("The capital of France is", " Paris."));
/// assert!(!restarts("My favourite book is", " The Hobbit, by Tolkien."));
/// assert!(!restarts("Paris is the capital.", " The city lies on the Seine."), "a finished opener is not restarted");
/// assert!(!restarts("1. **The Starry Night** by Salvador Dali -", " This iconic painting shows a dream."));
/// ```
pub fn restarts(opener: &str, continuation: &str) -> bool {
    let o = opener.trim_end();
    // Mid-sentence: the opener does not end a sentence, a clause list (":"), a line, a quote, or
    // a dash that opens a new clause ("1. **The Starry Night** by Salvador Dali -" + " This iconic
    // painting ...", a false restart seen in `ulm eval` with SmolLM2).
    if o.is_empty() || ends_sentence(o) || o.ends_with(['\n', '"', '”', '>', ')', '*', '—', '–']) || o.ends_with(" -") {
        return false;
    }
    let cont: Vec<&str> = continuation.split_whitespace().collect();
    let Some(first) = cont.first() else { return false };
    // Restating: the opener's (last sentence's) first words come again.
    let start = last_sentence(o);
    let head: Vec<String> = start.split_whitespace().take(RESTATED_WORDS).map(crate::words::norm).collect();
    if head.len() == RESTATED_WORDS && cont.len() >= RESTATED_WORDS && cont.iter().take(RESTATED_WORDS).map(|w| crate::words::norm(w)).eq(head.iter().cloned()) {
        return true;
    }
    // A capitalized sentence opener, unless a capitalized word follows it (a name or a title).
    let bare: String = first.chars().take_while(|c| c.is_alphabetic()).collect();
    let starter = bare.chars().next().is_some_and(char::is_uppercase) && SENTENCE_STARTS.contains(&bare.to_lowercase().as_str());
    let name = bare.len() == first.len() && cont.get(1).is_some_and(|w| w.chars().next().is_some_and(char::is_uppercase));
    starter && !name
}

// The last sentence of `text` (all of it when it holds one).
fn last_sentence(text: &str) -> &str {
    split_sentences(text).last().copied().unwrap_or(text).trim_start()
}

/// How a pivot's bridge measures up against the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PivotCheck {
    /// The bridge: from the marker to the end of its sentence.
    pub bridge: String,
    /// Its length in words.
    pub bridge_words: usize,
    /// True if it is at most [`MAX_BRIDGE_WORDS`] words long.
    pub within_limit: bool,
    /// The first blunt negation found in it ("wrong", "incorrect", ...), which the contract forbids.
    pub blunt_negation: Option<String>,
}

impl PivotCheck {
    /// True if the bridge keeps the contract.
    pub fn ok(&self) -> bool {
        self.within_limit && self.blunt_negation.is_none()
    }
}

/// The bridge of a pivot and whether it keeps the contract; `None` if the reply did not pivot.
pub fn check_pivot(opener: &str, continuation: &str) -> Option<PivotCheck> {
    let bridge = find_bridge(opener, continuation)?;
    let words = count_words(&bridge);
    let lower = format!(" {} ", bridge.to_lowercase());
    let blunt = BLUNT_NEGATIONS.iter().find(|neg| contains_phrase(&lower, neg)).map(|s| s.trim_end_matches(',').to_string());
    Some(PivotCheck { bridge, bridge_words: words, within_limit: words <= MAX_BRIDGE_WORDS, blunt_negation: blunt })
}

// The bridge sentence (from the marker to its end), if the window holds a marker at a clause start.
fn find_bridge(opener: &str, continuation: &str) -> Option<String> {
    let sentences = split_sentences(continuation);
    let window = if ends_sentence(opener) { 1 } else { 2 };
    let fragment = !ends_sentence(opener) && !opener.trim().is_empty();
    for (k, sentence) in sentences.iter().enumerate().take(window) {
        for start in clause_starts(sentence) {
            // The first words after a fragment opener sit mid-sentence, not at a clause start.
            let sentence_start = start == 0 && !(k == 0 && fragment && !continuation.starts_with('\n'));
            if start == 0 && !sentence_start {
                continue;
            }
            let clause = skip_fillers(&sentence[start..]);
            let lower = clause.to_lowercase();
            let hit = CLAUSE_MARKERS.iter().any(|m| starts_with_phrase(&lower, m))
                || (sentence_start && SENTENCE_MARKERS.iter().any(|m| starts_with_phrase(&lower, m)));
            if hit {
                return Some(clause.trim().to_string());
            }
        }
    }
    None
}

// Sentences of `text`: each ends after sentence-final punctuation followed by whitespace (or at a
// line break). Common abbreviations and decimals do not end a sentence.
fn split_sentences(text: &str) -> Vec<&str> {
    const ABBREVIATIONS: &[&str] = &["e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "ms.", "dr.", "st.", "no."];
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let next = chars.get(k + 1).map(|&(_, n)| n);
        let boundary = if c == '\n' {
            true
        } else if is_sentence_end(c) && next.is_none_or(char::is_whitespace) {
            let word = text[start..i + c.len_utf8()].split_whitespace().last().unwrap_or("").to_lowercase();
            !ABBREVIATIONS.contains(&word.as_str())
        } else {
            false
        };
        if boundary {
            let end = i + c.len_utf8();
            if !text[start..end].trim().is_empty() {
                out.push(&text[start..end]);
            }
            start = end;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(&text[start..]);
    }
    out
}

// Byte offsets where a clause starts: the sentence start and after , ; : — – ( and " - ".
fn clause_starts(sentence: &str) -> Vec<usize> {
    let mut out = vec![0];
    for (i, c) in sentence.char_indices() {
        if matches!(c, ',' | ';' | ':' | '—' | '–' | '(') {
            out.push(i + c.len_utf8());
        } else if c == '-' && sentence[..i].ends_with(' ') && sentence[i + 1..].starts_with(' ') {
            out.push(i + 1);
        }
    }
    out
}

fn skip_fillers(mut clause: &str) -> &str {
    loop {
        let t = clause.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '"' | '“' | '*' | '_'));
        let word: String = t.chars().take_while(|c| c.is_alphabetic()).collect();
        let rest = &t[word.len()..];
        if FILLERS.contains(&word.to_lowercase().as_str()) && rest.starts_with(|c: char| c.is_whitespace() || c == ',') {
            clause = rest.trim_start_matches(',');
        } else {
            return t;
        }
    }
}

fn starts_with_phrase(lower: &str, phrase: &str) -> bool {
    let Some(rest) = lower.strip_prefix(phrase) else { return false };
    if phrase == "rather" && rest.trim_start().starts_with("than") {
        return false;
    }
    phrase.ends_with(',') || rest.chars().next().is_none_or(|c| !c.is_alphanumeric())
}

// `haystack` is lower case and padded with spaces so that edges count as boundaries.
fn contains_phrase(haystack: &str, phrase: &str) -> bool {
    haystack.match_indices(phrase).any(|(i, _)| {
        let before = haystack[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after = haystack[i + phrase.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        before && after
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mode::*;

    // Hand-written cases: (opener, continuation, expected mode).
    const CASES: &[(&str, &str, Mode)] = &[
        // Fragment completion: the opener stops mid-sentence.
        ("The capital of France is", " Paris, a city of two million people.", FragmentCompletion),
        ("To boil an egg, place it in", " a pot of cold water. Bring it to a boil.", FragmentCompletion),
        ("I'd", " rather take the train: it is faster.", FragmentCompletion), // "rather" mid-clause
        ("Photosynthesis is how plants turn", " light into sugar.", FragmentCompletion),
        ("Sure, here are three", " ideas:\n1. A picnic\n2. A museum", FragmentCompletion),
        ("The answer is", "", FragmentCompletion),
        // Clean continuation: the opener is a complete sentence.
        ("Paris is the capital of France.", " It sits on the Seine.", CleanContinuation),
        ("Great question!", " The short answer is yes.", CleanContinuation),
        ("Here are the steps:", "\n1. Preheat the oven.", CleanContinuation),
        ("It depends on the season.", " In winter, however, it is cold.", CleanContinuation),
        ("I like tea.", " Green tea, rather than black, is my favourite.", CleanContinuation),
        ("Great question!", " No one knows for sure.", CleanContinuation),
        ("Hello!", "", CleanContinuation),
        // Self-repair pivot.
        ("The capital of Australia is Sydney", ", or rather Canberra, which was chosen as a compromise.", SelfRepairPivot),
        ("The fastest land animal is the lion", ". Actually, the cheetah holds that title: it reaches 110 km/h.", SelfRepairPivot),
        ("The fastest land animal is the lion.", " To be precise, it is the cheetah.", SelfRepairPivot),
        ("You can fix that by deleting", " — well, actually, a safer route is to back it up first.", SelfRepairPivot),
        ("Shakespeare wrote Don Quixote.", " Let me clarify: Cervantes wrote it, and Shakespeare wrote Hamlet.", SelfRepairPivot),
        ("Water boils at 50 degrees", ". That's not quite it: at sea level, water boils at 100 °C.", SelfRepairPivot),
        ("The sun orbits the Earth.", " No, it is the other way around.", SelfRepairPivot),
        // Restart: the continuation ignores the unfinished opener and begins again.
        ("The best way to learn cooking is", " The best way to learn to cook is to start small.", Restart),
        ("Sure! Here are three ideas for", " Here are three ideas: a picnic, a museum, a hike.", Restart),
        ("Oh no, no no,", " That's a tragedy.", Restart),
        ("To make cold brew, you", "\nTo make cold brew coffee, combine coarse grounds and cold water.", Restart),
        ("I recently had the pleasure of attending a", " It was a charity gala.", Restart),
        // ... and what is not one.
        ("My favourite book is", " The Hobbit, by Tolkien.", FragmentCompletion),
        ("The capital of", " France is Paris.", FragmentCompletion),
        ("The relationship between A and C is that", " A is the father of B and C is the father of A.", FragmentCompletion),
        ("Well, let me see", " I think so.", FragmentCompletion),
        ("Dear [Supervisor's Name],\n\nI hope this message finds", " you well.", FragmentCompletion),
        ("Here are the steps:", "\nThe first is to preheat the oven.", CleanContinuation),
    ];

    #[test]
    fn hand_written_cases() {
        let mut wrong = Vec::new();
        for &(opener, cont, want) in CASES {
            let got = classify(opener, cont);
            if got != want {
                wrong.push(format!("{opener:?} + {cont:?}: got {got}, want {want}"));
            }
        }
        assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    }

    #[test]
    fn classifier_is_deterministic() {
        for &(o, c, _) in CASES {
            assert_eq!(classify(o, c), classify(o, c));
        }
    }

    #[test]
    fn marker_in_the_third_sentence_is_not_a_pivot() {
        let cont = " Paris. It is large. Actually, it is the largest city in France.";
        assert_eq!(classify("The capital of France is", cont), FragmentCompletion);
        // ... but in the second sentence after a fragment it is the bridge.
        assert_eq!(classify("The capital of France is Lyon", ". Actually, it is Paris."), SelfRepairPivot);
    }

    #[test]
    fn pivot_contract_is_checked() {
        let ok = check_pivot("The fastest land animal is the lion", ". Actually, the cheetah is faster. It reaches 110 km/h.").unwrap();
        assert_eq!(ok.bridge, "Actually, the cheetah is faster.");
        assert_eq!(ok.bridge_words, 5);
        assert!(ok.ok());

        let blunt = check_pivot("The sun orbits the Earth.", " No, that is wrong: the Earth orbits the sun.").unwrap();
        assert_eq!(blunt.blunt_negation.as_deref(), Some("wrong"));
        assert!(!blunt.ok());

        let long = check_pivot(
            "The capital of Australia is Sydney",
            ". Actually, many people think so because Sydney is the largest and best known city there. It is Canberra.",
        )
        .unwrap();
        assert!(long.bridge_words > MAX_BRIDGE_WORDS && !long.within_limit);

        assert!(check_pivot("The capital of France is", " Paris.").is_none());
        // "errors" is not "error": blunt words match whole words only.
        let fine = check_pivot("x.", " Actually, typing errors happen.").unwrap();
        assert_eq!(fine.blunt_negation, None);
    }

    #[test]
    fn sentences_split_on_ends_not_abbreviations_or_decimals() {
        assert_eq!(split_sentences("Use e.g. salt. It costs 3.5 euros! Ok"), vec!["Use e.g. salt.", " It costs 3.5 euros!", " Ok"]);
        assert_eq!(split_sentences(" one\ntwo"), vec![" one\n", "two"]);
        assert_eq!(split_sentences("Wait… what? 東京です。はい"), vec!["Wait…", " what?", " 東京です。はい"]);
        assert_eq!(classify("Well…", " actually… no."), SelfRepairPivot);
    }

    #[test]
    fn random_inputs_never_panic() {
        const PARTS: &[&str] = &[
            "Actually", ",", " ", ".", "…", "!", "\n", "No", "no,", "rather", "than", "wrong", "e.g.", "—", "(", "-",
            "東京", "。", "é", "or", "well", "I", "mean,", "\"", "'", "Paris", "is",
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut text = |n: usize| {
            let mut out = String::new();
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                out.push_str(PARTS[(seed % PARTS.len() as u64) as usize]);
            }
            out
        };
        for round in 0..20000 {
            let (o, c) = (text(round % 6), text(round % 13));
            let mode = classify(&o, &c);
            assert_eq!(check_pivot(&o, &c).is_some(), mode == SelfRepairPivot, "{o:?} + {c:?}");
        }
    }

    #[test]
    fn mode_names() {
        assert_eq!(SelfRepairPivot.to_string(), "self_repair_pivot");
        assert_eq!(serde_json::to_string(&FragmentCompletion).unwrap(), "\"fragment_completion\"");
        assert_eq!(serde_json::to_string(&Restart).unwrap(), "\"restart\"");
    }
}
