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

/// Many-part tasks of our own in the register of MT-Bench's first turns (a task, then what the
/// answer must hold, how long, for whom), one or two of every kind it asks (writing, role-play,
/// reasoning, maths, coding, extraction, STEM, humanities); written for this list, none from
/// MT-Bench or any evaluation set, and on topics MT-Bench does not ask about.
pub const SEED_TASKS: &[&str] = &[
    "Write a welcome letter for new volunteers at a community garden. Explain when they should arrive, what to wear, and who to ask for help, and keep it under 150 words.",
    "Draft a short speech for a retirement party of a school librarian who worked there for 30 years. Mention one funny moment, thank her on behalf of the students, and end with a toast.",
    "Compose a product description for a solar-powered camping lantern. Highlight its battery life, its weight and its price, and write it for busy parents who go camping with children.",
    "Write a two-paragraph story about a lighthouse keeper who finds a message in a bottle. The first paragraph should set the scene and the second should end with a surprise.",
    "Pretend you are a medieval blacksmith explaining your craft to a curious child. Describe your tools, your working day and the hardest thing you ever made, in a friendly voice.",
    "Act as a personal fitness coach. I am 45, I sit at a desk all day and I have 20 minutes each morning. Suggest a weekly routine and explain why each exercise helps.",
    "Imagine you are a tour guide on a boat trip through the fjords of Norway. Greet the passengers, point out two sights, and tell them one local legend.",
    "Three friends share a pizza cut into 12 slices. Anna eats a quarter of it, Ben eats twice as many slices as Anna, and Carl eats the rest. How many slices does Carl eat? Explain each step.",
    "A shop sells notebooks for $3 each or a pack of five for $12. What is the cheapest way to buy 17 notebooks, and how much does it cost? Show your reasoning.",
    "If every bloop is a razzle and some razzles are lazzles, can we conclude that some bloops are lazzles? Explain your answer with a simple example.",
    "Solve for x: 4x - 7 = 2x + 9. Then check your answer by putting it back into the equation.",
    "Write a Python function that takes a list of words and returns the word that appears most often. If two words tie, return the one that comes first alphabetically. Add a short docstring.",
    "Write a JavaScript function that checks whether a string is a palindrome, ignoring spaces, punctuation and capital letters. Include two example calls.",
    "Explain what a hash table is and why looking up a key is usually fast. Use an everyday analogy and mention one case where it becomes slow.",
    "Read the following note and list every date and place it mentions as a table with two columns: 'Meet at the harbour on 3 May, then take the train to Lyon on 5 May and fly home from Geneva on 9 May.'",
    "From the review below, extract the product name, the star rating and the main complaint, and return them as JSON. Review: 'The BrightBrew kettle boils fast, but the lid sticks. Three stars.'",
    "Describe how a rainbow forms, using the words refraction and reflection. Then explain why we never see a rainbow at noon in summer.",
    "Explain how the heart pumps blood through the body in five simple steps, and suggest two habits that keep it healthy.",
    "What were the main causes of the Industrial Revolution in Britain? Discuss three causes and explain how each one changed daily life for ordinary workers.",
    "Compare the leadership styles of two famous explorers of your choice. Describe what each did well, what went wrong, and what a modern manager could learn from them.",
    "Write a persuasive paragraph for a school newsletter arguing that students should learn to cook. Give three reasons and answer one common objection.",
    "Plan a three-day trip to Kyoto for a family with two teenagers on a modest budget. Suggest one main activity and one place to eat for each day.",
    "Summarise the pros and cons of working from home in a table, then give your own recommendation for a small design company in two sentences.",
    "Rewrite the following sentence in three styles (formal, playful and poetic): 'The meeting has been moved to Friday because the projector is broken.'",
    "You are a detective in 1920s London. Describe the crime scene you have just walked into, name three clues, and say which one worries you most.",
    "Create a lesson plan for a 40-minute class that teaches twelve-year-olds about volcanoes. Include a warm-up question, an experiment and a short quiz.",
    "Write a polite complaint to an airline about a lost suitcase. Give the flight number, what was inside, and what you would like them to do, in no more than 120 words.",
    "Give me a step-by-step plan for learning basic Spanish in three months with 30 minutes a day. Include free resources and a way to measure progress.",
];

/// What kind of requests the writer is shown, and so writes: short everyday ones, or many-part
/// tasks in MT-Bench's register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Everyday questions and short requests ([`SEED_REQUESTS`]): 3–40 words.
    Questions,
    /// Many-part tasks ([`SEED_TASKS`]): 12–90 words.
    Tasks,
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Style, String> {
        match s {
            "questions" => Ok(Style::Questions),
            "tasks" => Ok(Style::Tasks),
            _ => Err(format!("unknown style {s:?}; choose questions or tasks")),
        }
    }
}

impl Style {
    /// Our own requests that open each list.
    pub fn seeds(self) -> &'static [&'static str] {
        match self {
            Style::Questions => SEED_REQUESTS,
            Style::Tasks => SEED_TASKS,
        }
    }

    /// How many of a list's eight examples are ours ([`Style::seeds`]); the rest come from the pool.
    fn own(self) -> usize {
        match self {
            Style::Questions => 3,
            Style::Tasks => 5,
        }
    }

    /// The words a request of this style may have.
    fn words(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Style::Questions => 3..=40,
            Style::Tasks => 12..=90,
        }
    }

    /// The most characters a request of this style may have.
    fn chars(self) -> usize {
        match self {
            Style::Questions => 300,
            Style::Tasks => 650,
        }
    }

    /// The most tokens the writer may add to one list: room for a few requests of this style.
    pub fn list_tokens(self) -> u32 {
        match self {
            Style::Questions => 160,
            Style::Tasks => 224,
        }
    }

    /// A line worth asking the teacher, in this style (see [`is_request`]); a task may end with
    /// a quoted passage it works on ("…: 'The meeting has moved to Friday.'").
    pub fn reads(self, text: &str) -> bool {
        let words = text.split_whitespace().count();
        let end = if self == Style::Tasks { text.trim_end_matches(['\'', '"', '”', '’']) } else { text };
        self.words().contains(&words)
            && text.len() <= self.chars()
            && end.ends_with(['?', '.', '!'])
            && !content_words(text).is_empty()
            && !text.contains("http")
            && !text.contains("www.")
            && !text.starts_with(['"', '“', '-', '*'])
    }
}

/// The examples of list number `seed`: three of [`SEED_REQUESTS`] and five of `pool` (distinct,
/// in an order of their own), the same for the same seed.
pub fn examples<'a>(seed: u64, pool: &[&'a str]) -> Vec<&'a str> {
    styled_examples(Style::Questions, seed, pool)
}

/// The examples of list number `seed` in `style`: [`Style::seeds`] and `pool` mixed, eight in
/// all (distinct, in an order of their own), the same for the same seed.
pub fn styled_examples<'a>(style: Style, seed: u64, pool: &[&'a str]) -> Vec<&'a str> {
    let mut state = seed;
    let mut ex = pick(style.seeds(), style.own(), &mut state);
    ex.extend(pick(pool, 8 - style.own(), &mut state));
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
    styled_list_prompt(Style::Questions, examples)
}

/// [`list_prompt`] in `style`: many-part tasks are introduced as such.
pub fn styled_list_prompt<S: AsRef<str>>(style: Style, examples: &[S]) -> String {
    let head = match style {
        Style::Questions => "Here is a list of messages that people sent to a helpful AI assistant:",
        Style::Tasks => "Here is a list of detailed tasks that people gave to a helpful AI assistant, each saying exactly what the answer must contain:",
    };
    let mut p = format!("{head}\n\n");
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
    styled_parse_list(Style::Questions, completion, next)
}

/// [`parse_list`], keeping the lines that read as requests in `style` ([`Style::reads`]).
pub fn styled_parse_list(style: Style, completion: &str, next: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, (want, line)) in (next..).zip(completion.lines()).enumerate() {
        let text = if i == 0 {
            line.trim()
        } else {
            let Some(rest) = line.trim_start().strip_prefix(&format!("{want}.")) else { break };
            rest.trim()
        };
        let text = one_line(text);
        if style.reads(&text) && !out.iter().any(|o| norm(o) == norm(&text)) {
            out.push(text);
        }
    }
    out
}

/// A line worth asking the teacher: 3 to 40 words and at most 300 characters, ends as a sentence
/// does (`?`, `.`, `!`), holds a content word, and is neither a link nor a quotation of someone.
pub fn is_request(text: &str) -> bool {
    Style::Questions.reads(text)
}

/// Lowercase letters and digits of `s`, one space between words: what makes two requests the same.
pub fn norm(s: &str) -> String {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// Keeps invented requests away from the evaluation prompts: one whose content words overlap a
/// held-out prompt's by half or more (Jaccard ≥ 0.5, on prompts with at least two content words;
/// else the same normalised text) leaks, and is dropped. So does one that shares three or more
/// content words with a held-out prompt and half of the shorter one's: a long task that holds a
/// short held-out prompt's topic ("…a travel blog post about a trip to Hawaii…") is as near as a
/// copy, though the union of their words is large.
pub struct Guard {
    heldout: Vec<HashSet<String>>,
    exact: HashSet<String>,
}

impl Guard {
    /// A guard over these held-out prompts.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(heldout: I) -> Guard {
        let mut g = Guard { heldout: Vec::new(), exact: HashSet::new() };
        for h in heldout {
            g.add(h.as_ref());
        }
        g
    }

    /// Guards against `text` too, from now on (so the writer's near-repeats of a request it
    /// already wrote, or of an example it was shown, can be dropped as held-out ones are).
    pub fn add(&mut self, text: &str) {
        let w: HashSet<String> = content_words(text).into_iter().map(|w| stem(&w)).collect();
        if w.len() >= 2 {
            self.heldout.push(w);
        }
        self.exact.insert(norm(text));
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
                inter * 2 >= h.union(&w).count() || (inter >= 3 && inter * 2 >= h.len().min(w.len()))
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
        // a long task around a held-out prompt's topic leaks; one that shares a few common words does not
        let mut g = Guard::new(["Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences."]);
        assert!(g.leaks("Write a travel blog post about your trip to Hawaii. Mention the food, the beaches and one surprise, in under 200 words."));
        let bake = "Write a blog post about a recent bake sale at your school. Describe three cakes and thank the parents who helped.";
        assert!(!g.leaks(bake));
        g.add(bake);
        assert!(g.leaks("Write a blog post about the bake sale at your school. Describe three cakes and thank the parents."), "a near-repeat of one added");
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
    fn tasks_are_long_many_part_requests_shown_as_such() {
        let pool = [
            "Plan a picnic for six people. Suggest food, games and what to do if it rains, in a numbered list.",
            "Write a limerick about a cat and its hat. Make the last line funny and keep it clean.",
            "Explain how a bicycle gear works to a beginner, then give two tips for riding up a hill.",
            "Describe your ideal reading corner in three sentences, mentioning the light, the chair and one book.",
        ];
        let ex = styled_examples(Style::Tasks, 7, &pool);
        assert_eq!(ex.len(), 8);
        assert_eq!(ex.iter().collect::<HashSet<_>>().len(), 8, "distinct");
        assert_eq!(ex.iter().filter(|e| SEED_TASKS.contains(e)).count(), 5);
        assert!(SEED_TASKS.iter().all(|t| Style::Tasks.reads(t)), "every seed task reads as a task");
        assert!(styled_list_prompt(Style::Tasks, &ex).starts_with("Here is a list of detailed tasks"));
        // a short question is not a task, and a task too long for a question is kept as one
        assert!(!Style::Tasks.reads("Why do cats purr?"));
        let long = "Write a guide for a new gardener. ".repeat(6) + "End with a checklist.";
        assert!(Style::Tasks.reads(&long) && !is_request(&long));
        let c = format!(" {long}\n10. Why is the sky blue?\n11. Write a cover letter for a junior chef job. Mention two dishes you cook well and why you want to work in a small kitchen.");
        assert_eq!(styled_parse_list(Style::Tasks, &c, 9).len(), 2, "{c}");
        assert_eq!("tasks".parse::<Style>(), Ok(Style::Tasks));
        assert!("essays".parse::<Style>().unwrap_err().contains("questions or tasks"));
    }

    #[test]
    fn the_prompt_numbers_the_examples_and_leaves_the_next_open() {
        let p = list_prompt(&["Why?\nReally why?", "Tell me a joke."]);
        assert!(p.ends_with("1. Why? Really why?\n2. Tell me a joke.\n3."), "{p}");
    }
}
