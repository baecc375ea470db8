//! Free-form user requests written by a base model from a few examples, for the teacher to answer.
//!
//! ```
//! use ulm_data::invent::{Guard, list_prompt, parse_list};
//! let examples = ["Why do cats purr?", "Write a short poem about the sea."];
//! let prompt = list_prompt(&examples); // "Here is a list of messages … 1. Why do cats purr?\n2. …\n3."
//! assert!(prompt.ends_with("\n3."));
//! // the base model goes on with the list; its lines become requests
//! let got = parse_list(" How do I keep basil alive indoors?\n4. What is a good name for a grey kitten?\n\nThat was", 3);
//! assert_eq!(got, ["How do I keep basil alive indoors?", "What is a good name for a grey kitten?"]);
//! // a request too close to a held-out prompt is never kept
//! let guard = Guard::new(["Why does a cat purr at night?"]);
//! assert!(guard.leaks("why do cats purr at night"));
//! assert!(!guard.leaks("How do I keep basil alive indoors?"));
//! ```
//!
//! The distillation prompts are templates ("What is a {lemma}?", composed tasks) and chat lines,
//! and the μLM learns each family it is shown while MT-Bench's free-form requests barely move
//! (sessions 22–25). SmolLM2 cannot write requests (asked to, it echoes the instruction), but a
//! base model continues a numbered list of examples with new ones of its own: Gemma 3 270M, the
//! other model the package registries hold. `ulm distill --invent` drives it.

use std::collections::HashSet;

use ulm_runtime::copy::content_words;

/// Requests of our own that open the example lists beside ones drawn from the training prompts:
/// everyday questions and tasks of every kind a person asks an assistant (written for this list,
/// none from MT-Bench or any evaluation set).
pub const SEED_REQUESTS: &[&str] = &[
    "Write a short poem about the first snow of winter.",
    "Can you explain how a refrigerator keeps food cold?",
    "Pretend you are a pirate captain and greet your new crew.",
    "What are three good ways to save money on groceries?",
    "Help me write an email asking my landlord to fix the heater.",
    "Why do cats purr?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "If a train leaves at 3 pm and travels 120 miles at 60 mph, when does it arrive?",
    "Write a Python function that returns the largest number in a list.",
    "Describe the water cycle for a ten-year-old.",
    "What should I pack for a weekend camping trip?",
    "Give me a catchy slogan for a coffee shop.",
    "How do vaccines train the immune system?",
    "I feel nervous about my job interview tomorrow. Any advice?",
    "Compare electric cars and gasoline cars in a few points.",
    "Act as a tour guide and describe the old market square.",
    "What caused the fall of the Roman Empire?",
    "Translate 'good morning, how are you?' into French.",
    "List five fun things to do on a rainy day.",
    "Explain the difference between weather and climate.",
    "Rewrite this sentence to sound more polite: give me the report now.",
    "Which is heavier, a kilogram of feathers or a kilogram of iron?",
    "Tell me a bedtime story about a brave little turtle.",
    "What is the best way to learn to play the guitar as an adult?",
];

/// The examples of list number `seed`: three of [`SEED_REQUESTS`] and five of `pool` (distinct,
/// in an order of their own), the same for the same seed.
pub fn examples<'a>(seed: u64, pool: &[&'a str]) -> Vec<&'a str> {
    let mut state = seed;
    let mut ex = pick(SEED_REQUESTS, 3, &mut state);
    ex.extend(pick(pool, 5, &mut state));
    // Fisher–Yates, so our own requests do not always come first.
    for i in (1..ex.len()).rev() {
        ex.swap(i, (splitmix(&mut state) % (i as u64 + 1)) as usize);
    }
    ex
}

/// `k` distinct items of `xs` (all of them if it holds fewer).
fn pick<'a>(xs: &[&'a str], k: usize, state: &mut u64) -> Vec<&'a str> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    let k = k.min(xs.len());
    for i in 0..k {
        let j = i + (splitmix(state) % (xs.len() - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx[..k].iter().map(|&i| xs[i]).collect()
}

/// SplitMix64: a small, good generator for picking examples.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The prompt that asks a base model for more requests: a numbered list of `examples`, left open
/// at the next number.
pub fn list_prompt<S: AsRef<str>>(examples: &[S]) -> String {
    let mut p = String::from("Here is a list of messages that people sent to a helpful AI assistant:\n\n");
    for (i, e) in examples.iter().enumerate() {
        p.push_str(&format!("{}. {}\n", i + 1, one_line(e.as_ref())));
    }
    p.push_str(&format!("{}.", examples.len() + 1));
    p
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The requests in a base model's continuation of [`list_prompt`] whose list ended at `next`
/// (the number the prompt left open): the first line, then each line numbered one more than the
/// last, up to the first line that is not (the list is over); each kept only if it reads as a
/// request ([`is_request`]) and is not one already kept.
pub fn parse_list(completion: &str, next: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, (want, line)) in (next..).zip(completion.lines()).enumerate() {
        let text = if i == 0 {
            line.trim()
        } else {
            let Some(rest) = line.trim_start().strip_prefix(&format!("{want}.")) else { break };
            rest.trim()
        };
        let text = one_line(text);
        if is_request(&text) && !out.iter().any(|o| norm(o) == norm(&text)) {
            out.push(text);
        }
    }
    out
}

/// A line worth asking the teacher: 3 to 40 words and at most 300 characters, ends as a sentence
/// does (`?`, `.`, `!`), holds a content word, and is neither a link nor a quotation of someone.
pub fn is_request(text: &str) -> bool {
    let words = text.split_whitespace().count();
    (3..=40).contains(&words)
        && text.len() <= 300
        && text.ends_with(['?', '.', '!'])
        && !content_words(text).is_empty()
        && !text.contains("http")
        && !text.contains("www.")
        && !text.starts_with(['"', '“', '-', '*'])
}

/// Lowercase letters and digits of `s`, one space between words: what makes two requests the same.
pub fn norm(s: &str) -> String {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// Keeps invented requests away from the evaluation prompts: one whose content words overlap a
/// held-out prompt's by half or more (Jaccard ≥ 0.5, on prompts with at least two content words;
/// else the same normalised text) leaks, and is dropped.
pub struct Guard {
    heldout: Vec<HashSet<String>>,
    exact: HashSet<String>,
}

impl Guard {
    /// A guard over these held-out prompts.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(heldout: I) -> Guard {
        let (mut sets, mut exact) = (Vec::new(), HashSet::new());
        for h in heldout {
            let w: HashSet<String> = content_words(h.as_ref()).into_iter().map(|w| stem(&w)).collect();
            if w.len() >= 2 {
                sets.push(w);
            }
            exact.insert(norm(h.as_ref()));
        }
        Guard { heldout: sets, exact }
    }

    /// True when `text` is too close to a held-out prompt to train on.
    pub fn leaks(&self, text: &str) -> bool {
        if self.exact.contains(&norm(text)) {
            return true;
        }
        let w: HashSet<String> = content_words(text).into_iter().map(|w| stem(&w)).collect();
        !w.is_empty()
            && self.heldout.iter().any(|h| {
                let inter = h.intersection(&w).count();
                inter * 2 >= h.union(&w).count()
            })
    }
}

/// A crude stem, so "cats" meets "cat": a final "s" goes (not from "ss").
fn stem(w: &str) -> String {
    match w.strip_suffix('s') {
        Some(s) if !s.ends_with('s') && s.len() >= 3 => s.to_string(),
        _ => w.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_stops_where_the_numbering_breaks() {
        let c = " What is a good name for a puppy?\n10. How do I fix a flat bike tire?\n12. Skipped a number, so the list is over?\n13. Never read.";
        assert_eq!(parse_list(c, 9), ["What is a good name for a puppy?", "How do I fix a flat bike tire?"]);
        // a blank line ends it too, and a line that is not a request is passed over
        let c = " ok\n5. Why is the sea salty?\n\n6. After the gap.";
        assert_eq!(parse_list(c, 4), ["Why is the sea salty?"]);
        // the same request twice is kept once
        let c = " If you were a pirate, what would you do?\n3. If you were a pirate, what would you do?\n4. If you were a pirate, what would you do!";
        assert_eq!(parse_list(c, 2).len(), 1);
    }

    #[test]
    fn what_reads_as_a_request() {
        assert!(is_request("How do I keep basil alive indoors?"));
        assert!(is_request("Write a haiku about autumn leaves."));
        assert!(!is_request("Why not?"), "too short");
        assert!(!is_request("What was the first robot to take off in"), "cut off");
        assert!(!is_request("See https://example.com for more."));
        assert!(!is_request("“I’m a fan of the Red Sox.”"), "a quotation");
        assert!(!is_request(&format!("{}?", "pizza ".repeat(41).trim())), "too long");
    }

    #[test]
    fn the_guard_drops_near_copies_of_held_out_prompts_only() {
        let g = Guard::new(["Describe the process of photosynthesis in plants.", "hi", "What is your favorite color?"]);
        assert!(g.leaks("Can you describe photosynthesis in plants?"));
        assert!(g.leaks("HI!"), "a held-out prompt without two content words still matches as text");
        assert!(!g.leaks("How do plants drink water?"));
        assert!(!g.leaks("What is your favorite movie about dogs?"), "one shared content word of four is not a copy");
    }

    #[test]
    fn examples_are_distinct_mixed_and_fixed_by_the_seed() {
        let pool = ["a one?", "b two?", "c three?", "d four?", "e five?", "f six?", "g seven?"];
        for seed in 0..50 {
            let ex = examples(seed, &pool);
            assert_eq!(ex.len(), 8);
            assert_eq!(ex.iter().filter(|e| SEED_REQUESTS.contains(e)).count(), 3);
            assert_eq!(ex.iter().collect::<HashSet<_>>().len(), 8, "distinct");
            assert_eq!(ex, examples(seed, &pool));
        }
        assert_ne!(examples(1, &pool), examples(2, &pool));
        assert!((0..50).any(|s| !SEED_REQUESTS.contains(&examples(s, &pool)[0])), "ours do not always come first");
    }

    #[test]
    fn the_prompt_numbers_the_examples_and_leaves_the_next_open() {
        let p = list_prompt(&["Why?\nReally why?", "Tell me a joke."]);
        assert!(p.ends_with("1. Why? Really why?\n2. Tell me a joke.\n3."), "{p}");
    }
}
