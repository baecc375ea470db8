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

/// Tasks of our own that hand the assistant its material (a paragraph, a list, figures, a piece
/// of code) and say what to do with it: MT-Bench's extraction and many of its reasoning, writing
/// and coding turns have that shape, and its longest prompts are of it. Written for this list,
/// none from MT-Bench or any evaluation set.
pub const SEED_PASSAGES: &[&str] = &[
    "Read the paragraph below and list every animal it mentions, with the number of times each appears. Paragraph: 'At dawn the farmer fed the hens, then chased a fox from the barn while two goats watched. By noon the hens were laying again and the fox was back at the fence.'",
    "Classify each of these messages as a complaint, a question or a compliment, and answer in a numbered list: 1) 'My order arrived broken.' 2) 'Do you ship to Canada?' 3) 'The staff were lovely.' 4) 'Why was I charged twice?'",
    "Here are the monthly sales of a bakery: January 1,200 loaves, February 950, March 1,430, April 1,100. Which month was best, which was worst, and what was the average? Show the numbers.",
    "Turn the following recipe note into a numbered list of steps with quantities: 'Melt 50 g of butter, stir in 100 g of oats and a spoon of honey, press into a tin and bake for 20 minutes at 180 degrees.'",
    "Find the bug in this Python function and explain how to fix it: def average(xs): total = 0; for x in xs: total += x; return total / len(xs) + 1",
    "Summarise this email in one sentence and say what the sender wants me to do: 'Hi Sam, the printer on the second floor is broken again. Could you call the repair company before Thursday? We have the board report to print on Friday morning. Thanks, Priya.'",
    "Group these hotel comments by what they are about (rooms, food or staff) and say which group is the most positive: 'Clean rooms but a noisy street.' 'Best breakfast I have ever had!' 'The receptionist kept our bags safe all day.' 'The soup was cold.'",
    "From the timetable below, which bus should I take to reach the station before 9:15, and how long will I wait? Bus 4 leaves at 8:40 and takes 30 minutes; bus 7 leaves at 8:50 and takes 20 minutes; bus 9 leaves at 9:00 and takes 10 minutes.",
    "Make a table of the people, the places and the dates in this sentence: 'Maria Lopez, the new director of the Riverside Museum, met the mayor of Porto on 14 June and visited Lisbon two days later.'",
    "Read the poem below and explain in three sentences what its mood is and which words create it: 'Grey rain on the window, / a kettle that will not sing, / and letters left unopened / since the end of spring.'",
    "Put these events in the order they happened and give each one its year: the first Moon landing, the fall of the Berlin Wall, the invention of the printing press, the first flight of the Wright brothers.",
    "Check the following argument for a flaw and explain it in a short paragraph: 'Every time I wash my car it rains the next day. So washing my car makes it rain.'",
    "Correct the spelling and grammar of this paragraph, then list the changes you made: 'Their going to the libary tomorow, because they needs books for there project about rivers.'",
    "Here are four chores and how long they take: painting the fence 3 hours, mowing the lawn 1 hour, cleaning the gutters 2 hours, washing the windows 2 hours. Plan them over two days so that each day has the same amount of work.",
    "Rewrite the following sign in plain English for tourists, then suggest a version of five words or fewer: 'Visitors are kindly requested to refrain from consuming food or beverages within the gallery premises.'",
    "Compare the two phone plans below and recommend one for someone who makes few calls but streams music every day: Plan A costs $15 a month with 2 GB of data and unlimited calls; Plan B costs $20 a month with 10 GB of data and 100 minutes of calls.",
    "Write every date in the text below in the form YYYY-MM-DD: 'The shop opened on 4 March 2019, closed for repairs on 12 August 2021 and reopened on 1 February 2022.'",
    "Write a reply to this customer message that apologises and offers a solution, in under 80 words: 'I booked a table for four on Saturday, but when we arrived you had no record of it and we had to leave.'",
    "Explain in plain words what this SQL query returns and when it would return nothing: SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3;",
    "Give the main idea of the passage below in one sentence, then suggest a title for it: 'Bees visit thousands of flowers a day. As they gather nectar, pollen sticks to their bodies and is carried to the next flower, which lets many fruits and vegetables grow.'",
];

/// What kind of requests the writer is shown, and so writes: short everyday ones, many-part
/// tasks in MT-Bench's register, or tasks that hand over their material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Everyday questions and short requests ([`SEED_REQUESTS`]): 3–40 words.
    Questions,
    /// Many-part tasks ([`SEED_TASKS`]): 12–90 words.
    Tasks,
    /// Tasks with their material ([`SEED_PASSAGES`]): 20–160 words, of which five or more come
    /// after a colon or inside quotes.
    Passages,
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Style, String> {
        match s {
            "questions" => Ok(Style::Questions),
            "tasks" => Ok(Style::Tasks),
            "passages" => Ok(Style::Passages),
            _ => Err(format!("unknown style {s:?}; choose questions, tasks or passages")),
        }
    }
}

impl Style {
    /// Our own requests that open each list.
    pub fn seeds(self) -> &'static [&'static str] {
        match self {
            Style::Questions => SEED_REQUESTS,
            Style::Tasks => SEED_TASKS,
            Style::Passages => SEED_PASSAGES,
        }
    }

    /// The style the pool's examples must read as: tasks with their material are rare among
    /// the training prompts, so their lists borrow plain tasks.
    pub fn pool_style(self) -> Style {
        match self {
            Style::Passages => Style::Tasks,
            s => s,
        }
    }

    /// How many of a list's eight examples are ours ([`Style::seeds`]); the rest come from the pool.
    fn own(self) -> usize {
        match self {
            Style::Questions => 3,
            Style::Tasks => 5,
            Style::Passages => 7,
        }
    }

    /// The words a request of this style may have.
    fn words(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Style::Questions => 3..=40,
            Style::Tasks => 12..=90,
            Style::Passages => 20..=160,
        }
    }

    /// The most characters a request of this style may have.
    fn chars(self) -> usize {
        match self {
            Style::Questions => 300,
            Style::Tasks => 650,
            Style::Passages => 1100,
        }
    }

    /// The most tokens the writer may add to one list: room for a few requests of this style.
    pub fn list_tokens(self) -> u32 {
        match self {
            Style::Questions => 160,
            Style::Tasks => 224,
            Style::Passages => 320,
        }
    }

    /// A line worth asking the teacher, in this style (see [`is_request`]); a task may end with
    /// a quoted passage it works on ("…: 'The meeting has moved to Friday.'").
    /// Tasks with their material also end as code or figures may (`;`, a digit), and must hold
    /// it ([`has_material`]). A long line that says the same five words twice is the writer
    /// looping, not a task ([`repeats_itself`]).
    pub fn reads(self, text: &str) -> bool {
        let words = text.split_whitespace().count();
        let end = if self == Style::Questions { text } else { text.trim_end_matches(['\'', '"', '”', '’']) };
        let ends = match self {
            Style::Passages => end.ends_with(['?', '.', '!', ';']) || end.ends_with(|c: char| c.is_ascii_digit()),
            _ => end.ends_with(['?', '.', '!']),
        };
        self.words().contains(&words)
            && text.len() <= self.chars()
            && ends
            && (self != Style::Passages || has_material(text))
            && (self == Style::Questions || !repeats_itself(text))
            && !content_words(text).is_empty()
            && !text.contains("http")
            && !text.contains("www.")
            && !text.starts_with(['"', '“', '-', '*'])
    }
}

/// True when `text` hands over material to work on: five or more words after its first colon,
/// or inside one pair of quotes.
pub fn has_material(text: &str) -> bool {
    let after_colon = text.split_once(':').map_or(0, |(_, rest)| rest.split_whitespace().count());
    after_colon >= 5 || quoted_words(text) >= 5
}

/// True when five words in a row occur twice in `text` (case and punctuation aside): the writer
/// looping ("…explain why. 4. If it's true, explain why.").
pub fn repeats_itself(text: &str) -> bool {
    let words: Vec<String> = norm(text).split(' ').map(str::to_string).collect();
    let mut seen = HashSet::new();
    words.windows(5).any(|w| !seen.insert(w.join(" ")))
}

/// The most words inside one pair of quotes in `text`; a quote opens at the start or after a
/// space, colon or bracket, so the apostrophe of "don't" opens nothing.
fn quoted_words(text: &str) -> usize {
    let mut prev = ' ';
    let mut most = 0;
    for (i, c) in text.char_indices() {
        let close = match c {
            '\'' | '"' => Some(c),
            '“' => Some('”'),
            '‘' => Some('’'),
            _ => None,
        };
        if let Some(close) = close.filter(|_| prev.is_whitespace() || matches!(prev, ':' | '(')) {
            let rest = &text[i + c.len_utf8()..];
            if let Some(j) = rest.find(close) {
                most = most.max(rest[..j].split_whitespace().count());
            }
        }
        prev = c;
    }
    most
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
        Style::Passages => "Here is a list of tasks that people gave to a helpful AI assistant, each giving the text, list, figures or code to work on and saying exactly what to do with it:",
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
        let long = "Write a guide for a new gardener who has a small balcony in a windy city. Say which vegetables grow in pots, when to sow them, how often to water them in summer and how to keep snails away, and end with a checklist for each season of the year.";
        assert!(Style::Tasks.reads(&long) && !is_request(&long));
        let c = format!(" {long}\n10. Why is the sky blue?\n11. Write a cover letter for a junior chef job. Mention two dishes you cook well and why you want to work in a small kitchen.");
        assert_eq!(styled_parse_list(Style::Tasks, &c, 9).len(), 2, "{c}");
        assert_eq!("tasks".parse::<Style>(), Ok(Style::Tasks));
        assert!("essays".parse::<Style>().unwrap_err().contains("questions, tasks or passages"));
    }

    #[test]
    fn passages_are_tasks_that_hand_over_their_material() {
        assert!(SEED_PASSAGES.iter().all(|t| Style::Passages.reads(t)), "every seed reads as one: {:?}", SEED_PASSAGES.iter().find(|t| !Style::Passages.reads(t)));
        // a plain task has no material; one with a quoted passage or a list after a colon has
        let plain = "Write a welcome letter for new volunteers at a garden. Explain when to arrive and what to wear, in under 150 words.";
        assert!(Style::Tasks.reads(plain) && !Style::Passages.reads(plain));
        assert!(Style::Passages.reads("Count the verbs in the sentence below and list them in the order they appear: 'The dog ran home, ate its dinner and slept.'"));
        assert!(Style::Passages.reads("Which of these numbers are prime, and what is the sum of the ones that are not? Numbers: 4, 7, 9, 11, 15, 23"), "ends in a figure");
        assert!(!has_material("Don't tell me it's late, I know what the time is: now."), "apostrophes open no quote, and one word after the colon is no list");
        assert!(!has_material("Write a story about a 'brave knight' who loses his sword in a lake far away."), "two quoted words are a phrase, not material");
        assert!(has_material("Rewrite ‘the meeting has moved to Friday morning’ in a formal voice, then in a playful one."), "quotes alone, no colon");
        // a line that loops is no task
        let looped = "Say whether each line is true: 1. The sky is green today, so explain why. 2. The sky is green today, so explain why.";
        assert!(repeats_itself(looped) && !Style::Passages.reads(looped) && !Style::Tasks.reads(looped));
        assert!(!SEED_PASSAGES.iter().chain(SEED_TASKS).any(|t| repeats_itself(t)));
        // the lists: seven of ours, one plain task from the pool, introduced as tasks with material
        let pool = ["Plan a picnic for six people. Suggest food, games and what to do if it rains, in a numbered list."; 1];
        let ex = styled_examples(Style::Passages, 3, &pool);
        assert_eq!((ex.len(), ex.iter().filter(|e| SEED_PASSAGES.contains(e)).count()), (8, 7));
        assert!(styled_list_prompt(Style::Passages, &ex).contains("each giving the text, list, figures or code to work on"));
        assert_eq!(Style::Passages.pool_style(), Style::Tasks);
        assert_eq!("passages".parse::<Style>(), Ok(Style::Passages));
        // a completion's passage-less tasks are passed over
        let c = format!(" {plain}\n10. {}", SEED_PASSAGES[4]);
        assert_eq!(styled_parse_list(Style::Passages, &c, 9), [SEED_PASSAGES[4]]);
    }

    #[test]
    fn the_prompt_numbers_the_examples_and_leaves_the_next_open() {
        let p = list_prompt(&["Why?\nReally why?", "Tell me a joke."]);
        assert!(p.ends_with("1. Why? Really why?\n2. Tell me a joke.\n3."), "{p}");
    }
}
