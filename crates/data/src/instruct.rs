//! Task-style requests for distillation: "Write a short poem about a lighthouse.", "Write a Python
//! function that reverses a string.", "What is 17% of 240?", "Rewrite this sentence more formally:
//! …". The chats and glosses hold almost none, so without them the μLM never sees an instruction
//! and its openers ignore the task (docs/models/ulm-8m.md). The templates are our own, written per
//! kind of request (writing, role-play, explanation, advice, comparison, maths, code, rewriting);
//! topics are the common WordNet lemmas, passages are chitchat turns of the training split.
//!
//! Every prompt has a stable id `instruct:<kind>:<key>` and the split `split_of("instruct", rest)`
//! (what `distilled::prompt_split` computes); a passage is used only when its chat is also on the
//! training side, so no held-out turn reaches the teacher.
//!
//! ```
//! use ulm_data::instruct::{topic_request, math_request};
//! assert_eq!(topic_request('n', "lighthouse", 0), "Write a short poem about a lighthouse.");
//! assert!(math_request(7).ends_with('?') || math_request(7).ends_with('.'));
//! ```

use crate::split::{Split, fnv1a, split_of};

fn article(w: &str) -> &'static str {
    if w.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// Requests about a noun topic; `{a}` is the topic with its article, `{w}` the bare word.
const NOUN_TEMPLATES: &[&str] = &[
    "Write a short poem about {a}.",
    "Write a short story in which {a} plays a central role.",
    "Compose a blog post about {w} for beginners.",
    "Draft a friendly email inviting a colleague to a talk about {w}.",
    "Give me three tips for choosing {a}.",
    "Explain {w} to a ten-year-old.",
    "List five interesting facts about {w}.",
    "What are the pros and cons of {w}?",
    "Pretend you are {a}. Describe your day in a few sentences.",
    "Summarize in one paragraph why {w} matters in everyday life.",
    "Write a product description for {a}.",
    "How has {w} changed over the last hundred years?",
    "Describe {a} to someone who has never seen one.",
    "Write a persuasive paragraph about the importance of {w}.",
    "What should I know before buying {a}?",
    "Create a catchy slogan for a company that makes {w}.",
    "Imagine you are a tour guide. Introduce {a} to your group.",
    "Write a limerick about {a}.",
    "What is the history of {w}?",
    "Give a step-by-step plan for a school project on {w}.",
];

/// Requests about a verb; `{w}` is the verb.
const VERB_TEMPLATES: &[&str] = &[
    "Write step-by-step instructions on how to {w}.",
    "Give me five tips to {w} better.",
    "Explain why people {w}.",
    "Write a short motivational speech encouraging a friend to {w}.",
    "What are common mistakes people make when they {w}?",
    "Describe the first time a child learns to {w}.",
];

/// Programming tasks and languages for code requests.
const CODE_TASKS: &[&str] = &[
    "reverses a string",
    "checks whether a number is prime",
    "counts the vowels in a string",
    "finds the largest number in a list",
    "sorts a list of words by their length",
    "computes the factorial of n",
    "removes duplicates from a list while keeping the order",
    "converts a temperature from Celsius to Fahrenheit",
    "counts how often each word occurs in a text file",
    "checks whether a string is a palindrome",
    "merges two sorted lists into one sorted list",
    "returns the n-th Fibonacci number",
    "finds the common elements of two arrays",
    "validates an email address",
    "computes the average of a list of numbers",
    "flattens a nested list",
];
const CODE_LANGS: &[&str] = &["Python", "JavaScript", "C++", "Java", "Rust", "Go"];
const CODE_FORMS: &[&str] = &[
    "Write a {l} function that {t}.",
    "Implement a {l} program that {t}.",
    "How can I write {l} code that {t}?",
];

/// Requests that work on a passage (a chat turn), quoted.
const PASSAGE_TEMPLATES: &[&str] = &[
    "Rewrite this sentence more formally: \"{p}\"",
    "What is the sentiment of this message: \"{p}\"?",
    "Summarize this message in a few words: \"{p}\"",
    "Correct any grammar mistakes in this sentence: \"{p}\"",
    "Reply politely to this message: \"{p}\"",
    "Extract the main topic of this message: \"{p}\"",
];

/// A request about the lemma `w` of part of speech `pos`; `variant` picks the template.
pub fn topic_request(pos: char, w: &str, variant: u64) -> String {
    if pos == 'v' {
        let t = VERB_TEMPLATES[(variant % VERB_TEMPLATES.len() as u64) as usize];
        return t.replace("{w}", w);
    }
    let t = NOUN_TEMPLATES[(variant % NOUN_TEMPLATES.len() as u64) as usize];
    t.replace("{a}", &format!("{} {w}", article(w))).replace("{w}", w)
}

/// The `i`-th arithmetic or word problem (numbers drawn from `i` by a hash: stable).
pub fn math_request(i: u64) -> String {
    let h = fnv1a(format!("math:{i}").as_bytes());
    let n = |k: u32, lo: u64, hi: u64| lo + (h >> (k * 8)) % (hi - lo + 1);
    let (a, b, c) = (n(0, 2, 99), n(1, 2, 60), n(2, 3, 400));
    match i % 10 {
        0 => format!("What is {a} times {b}?"),
        1 => format!("Solve for x: {a}x + {b} = {c}."),
        2 => format!("A train travels {c} km in {} hours. What is its average speed?", b % 9 + 1),
        3 => format!("What is {}% of {c}?", a % 50 + 1),
        4 => format!("The sum of two numbers is {c} and their difference is {}. What are the numbers?", 2 * (a % 40) + c % 2),
        5 => format!("If I buy {} apples at {b} cents each, how much do I pay in total?", a % 20 + 2),
        6 => format!("What is the area of a rectangle that is {a} m long and {b} m wide?"),
        7 => format!("A shop gives a {}% discount on a jacket that costs ${c}. What is the new price?", (a % 9 + 1) * 5),
        8 => format!("What is the square root of {}?", (a % 30 + 2) * (a % 30 + 2)),
        _ => format!("Is {c} a prime number? Explain briefly."),
    }
}

/// How many maths problems the prompt set holds.
pub const N_MATH: u64 = 2_000;

/// Code requests: every task × language × phrasing (stable order).
pub fn code_requests() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (ti, t) in CODE_TASKS.iter().enumerate() {
        for (li, l) in CODE_LANGS.iter().enumerate() {
            let f = CODE_FORMS[(ti + li) % CODE_FORMS.len()];
            out.push((format!("{ti}-{li}"), f.replace("{l}", l).replace("{t}", t)));
        }
    }
    out
}

/// A request on the passage `p`.
pub fn passage_request(p: &str, variant: u64) -> String {
    PASSAGE_TEMPLATES[(variant % PASSAGE_TEMPLATES.len() as u64) as usize].replace("{p}", p)
}

/// The id and text of every instruct prompt of `split`: topics (`lemmas`: `(pos, word)`, already
/// filtered to common words), maths, code and passages (`(chat id, turn, text)` of training chats).
pub fn instruct_prompts(lemmas: &[(char, String)], passages: &[(String, usize, String)], split: Split) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // A text made twice (small numbers repeat) keeps its first id on both sides of the split, so
    // no held-out text has a twin in training.
    let mut seen = std::collections::HashSet::new();
    let mut keep = |rest: String, text: String| {
        if seen.insert(text.clone()) && split_of("instruct", &rest) == split {
            out.push((format!("instruct:{rest}"), text));
        }
    };
    for (pos, w) in lemmas {
        let key = format!("{pos}:{w}");
        keep(format!("topic:{key}"), topic_request(*pos, w, fnv1a(key.as_bytes()) >> 7));
    }
    for i in 0..N_MATH {
        keep(format!("math:{i}"), math_request(i));
    }
    for (key, text) in code_requests() {
        keep(format!("code:{key}"), text);
    }
    for (doc, turn, text) in passages {
        let key = format!("{doc}:{turn}");
        keep(format!("passage:{key}"), passage_request(text, fnv1a(key.as_bytes()) >> 7));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_every_slot() {
        for v in 0..NOUN_TEMPLATES.len() as u64 {
            let s = topic_request('n', "umbrella", v);
            assert!(s.contains("umbrella") && !s.contains('{'), "{s}");
        }
        assert!(topic_request('n', "umbrella", 0).contains("an umbrella"));
        for v in 0..VERB_TEMPLATES.len() as u64 {
            let s = topic_request('v', "swim", v);
            assert!(s.contains("swim") && !s.contains('{'), "{s}");
        }
        for i in 0..50 {
            let s = math_request(i);
            assert!(!s.contains('{') && s.chars().any(|c| c.is_ascii_digit()), "{s}");
        }
        let code = code_requests();
        assert_eq!(code.len(), CODE_TASKS.len() * CODE_LANGS.len());
        assert!(code.iter().all(|(_, t)| !t.contains('{')));
        assert!(passage_request("hi there", 1).contains("\"hi there\""));
    }

    #[test]
    fn the_split_is_the_one_prompt_split_computes() {
        let lemmas: Vec<(char, String)> = (0..400).map(|i| ('n', format!("thing{i}"))).collect();
        let train = instruct_prompts(&lemmas, &[], Split::Train);
        let held = instruct_prompts(&lemmas, &[], Split::Heldout);
        assert!(!held.is_empty() && train.len() > 10 * held.len());
        for (id, _) in train.iter() {
            assert_eq!(crate::distilled::prompt_split(id), Split::Train, "{id}");
        }
        for (id, _) in held.iter() {
            assert_eq!(crate::distilled::prompt_split(id), Split::Heldout, "{id}");
        }
        let mut ids: Vec<_> = train.iter().map(|p| &p.0).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), train.len());
        // maths repeats texts (30 square roots); none crosses the split
        for (_, text) in &held {
            assert!(!train.iter().any(|t| &t.1 == text), "held-out text also in training: {text}");
        }
    }

    #[test]
    fn maths_is_stable() {
        assert_eq!(math_request(3), math_request(3));
        assert_ne!(math_request(3), math_request(13));
    }
}
