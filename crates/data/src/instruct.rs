//! Task-style requests for distillation: "Write a short poem about a lighthouse.", "Write a Python
//! function that reverses a string.", "What is 17% of 240?", "Rewrite this sentence more formally:
//! …". The chats and glosses hold almost none, so without them the μLM never sees an instruction
//! and its openers ignore the task (docs/models/ulm-8m.md). The templates are our own, written per
//! kind of request (writing, role-play, explanation, advice, comparison, maths, code, rewriting);
//! topics are the common WordNet lemmas, passages are chitchat turns of the training split.
//! Beside them, longer requests with several parts or constraints (`instruct:task:…`): "Draft a
//! polite email to your neighbour about … Suggest a solution and keep it brief.", multi-step
//! problems, code with tests, extraction from two passages — what MT-Bench asks and a one-line
//! template does not.
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

/// "an" before a vowel letter, else "a" (by spelling: "a unicorn" comes out "an unicorn").
pub(crate) fn article(w: &str) -> &'static str {
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

/// Longer requests with several parts or constraints, the kind MT-Bench asks and the one-line
/// templates above never do (docs/eval/reading-s22c: the μLMs read on topic 64 % of the time on
/// prompts like the ones above, and 10 % on MT-Bench's). Our own. The topics are our own short
/// lists of everyday things, subjects and activities rather than WordNet lemmas, which make odd
/// requests ("an advertisement for a prosperity") once a template asks more of them.
///
/// About a countable thing: `{a}` with its article, `{b}` a second thing, `{w}` the bare word.
const THING_TASKS: &[&str] = &[
    "Write a short story of exactly five sentences about {a}. The last sentence must be a surprise.",
    "Draft a polite email to your neighbour about {a} they left in the shared hallway. Suggest a solution and keep it brief.",
    "Write an advertisement for {a}. Include a catchy headline, three benefits and a call to action.",
    "Write a review of {a} you bought last month. Mention one thing you loved and one thing that disappointed you.",
    "Describe {a} using all five senses, in one paragraph.",
    "Pretend you are a museum guide standing next to {a}. Welcome the visitors and tell them one surprising fact.",
    "Act as a customer service agent. A customer is upset because the {w} they ordered arrived broken. Reply to them.",
    "Roleplay as a detective who has just found {a} at a crime scene. Describe what you notice and what you suspect.",
    "Compare {a} and {b}: give two ways they are alike and two ways they differ.",
    "I have a budget of {n}0 dollars and want to buy {a}. What should I look for, and what should I avoid?",
    "Write a short scene for a play in which {a} is the key to solving a mystery. Include stage directions.",
    "Explain how {a} is made, step by step, and name one thing that can go wrong.",
    "Write a riddle whose answer is {a}, then explain each clue.",
    "Imagine {a} could talk. Write a short monologue in which it complains about its owner.",
];

/// About a subject (uncountable or abstract): `{w}`.
const SUBJECT_TASKS: &[&str] = &[
    "Write a blog post about {w} for busy parents. Keep it under 200 words and end with a practical tip.",
    "Compose a short speech for a school assembly about {w}. Open with a question to the audience and include a personal story.",
    "Write a dialogue between two friends who disagree about {w}. Each of them should speak three times.",
    "Write a poem about {w} in which every line starts with the same letter.",
    "You are a scientist from the year 2200. Explain to a child what {w} was like in our time.",
    "Imagine you are a grandparent telling your grandchild about {w}. What do you say?",
    "Take on the role of a strict but fair coach and convince me to take {w} seriously.",
    "Explain {w} in simple terms, then give one example from everyday life and one common misconception.",
    "What role has {w} played in history? Describe two key moments and their consequences.",
    "I am writing an essay about {w}. Suggest a thesis statement and three supporting points.",
    "Plan a one-week lesson on {w} for high-school students, with one activity for each day.",
    "What are the effects of {w} on the environment and on the economy? Answer in two short paragraphs.",
    "Give me {n} questions for a quiz about {w}, with the answers at the end.",
    "Write a tweet announcing a new museum exhibition about {w}. Use at most two hashtags.",
    "Summarize the arguments for and against {w} in a table with two columns.",
    "Write a short news report about a town that has decided to put {w} at the centre of its school curriculum. Include a quote from a teacher.",
];

/// About an activity: `{v}` ("play the guitar").
const ACTIVITY_TASKS: &[&str] = &[
    "I want to learn to {v} in the next three months. Make a weekly plan and tell me how to track my progress.",
    "Write a short guide on how to {v} for someone who has never tried. Use numbered steps and add one safety tip.",
    "Write a short motivational letter to a teenager who wants to {v} but is afraid of failing.",
    "Describe three mistakes beginners make when they {v}, and how to avoid each one.",
    "My partner and I disagree about whether our children should {v}. Give me two arguments for each side and a compromise.",
    "Pretend you are a famous expert who taught thousands of people to {v}. Give your best advice in three sentences.",
];

const THINGS: &[&str] = &[
    "bicycle", "umbrella", "smartphone", "teapot", "backpack", "violin", "microwave oven", "wristwatch", "sailboat",
    "library card", "coffee machine", "pair of running shoes", "laptop", "telescope", "kite", "winter coat",
    "electric car", "desk lamp", "sandwich", "birthday cake", "houseplant", "fountain pen", "old photograph", "map",
    "suitcase", "guitar", "hammer", "robot vacuum", "bookshelf", "train ticket", "piano", "alarm clock", "camera",
    "chess set", "snow globe", "treasure chest", "candle", "mirror", "key", "tent", "skateboard",
    "pair of headphones", "refrigerator", "toaster", "sofa", "passport", "wedding ring", "pizza", "loaf of bread",
    "apple pie", "cup of coffee", "sunflower", "hot-air balloon", "dictionary", "notebook", "calculator",
    "fire truck", "drone", "smartwatch", "doorbell", "sewing machine", "wooden spoon", "rain jacket", "fishing rod",
    "compass", "lantern", "paintbrush", "scarf", "water bottle", "bird feeder", "video game", "board game",
    "jigsaw puzzle", "postcard", "teddy bear", "bus", "tractor", "solar panel", "aquarium", "lemonade stand",
    "vending machine", "typewriter", "radio", "television",
];

const SUBJECTS: &[&str] = &[
    "climate change", "social media", "remote work", "friendship", "photography", "recycling",
    "artificial intelligence", "space exploration", "healthy eating", "sleep", "music education", "public transport",
    "online shopping", "volunteering", "honesty", "patience", "time management", "city gardening", "renewable energy",
    "fast fashion", "video games", "reading", "homework", "tourism", "ocean pollution", "vaccination", "democracy",
    "kindness", "the printing press", "the internet", "electricity", "coffee", "chocolate", "tea", "football",
    "chess", "jazz", "poetry", "ancient Rome", "the Renaissance", "the Industrial Revolution", "the moon landing",
    "mental health", "exercise", "meditation", "cooking at home", "saving money", "learning languages", "city life",
    "country life", "family traditions", "holidays", "weather", "gardening", "pets", "birdwatching", "street art",
    "cinema", "theatre", "science fiction", "mathematics", "history", "geography", "chemistry", "biology",
    "astronomy", "philosophy", "economics", "architecture", "fashion", "advertising", "journalism", "privacy",
    "free time", "teamwork", "leadership", "creativity", "curiosity", "failure", "success", "happiness", "loneliness",
    "courage", "forgiveness", "tradition", "innovation", "water conservation", "air pollution", "bees", "forests",
    "rivers", "deserts", "volcanoes", "earthquakes", "dinosaurs",
];

const ACTIVITIES: &[&str] = &[
    "swim", "play the guitar", "bake bread", "speak Spanish", "ride a bike", "run a marathon",
    "paint with watercolours", "write poetry", "play chess", "cook for a family", "grow tomatoes", "drive a car",
    "dance salsa", "knit", "code in Python", "take better photos", "meditate", "save money", "speak in public",
    "climb", "ski", "sing", "draw portraits", "play the piano", "juggle", "sail", "fix a bicycle", "study for exams",
    "wake up early", "keep a diary", "make friends in a new city", "play tennis", "do yoga", "fly a kite",
    "build furniture", "surf", "read faster", "write a novel", "negotiate a salary", "train a dog",
];

/// Longer requests on one passage `{p}` or two (`{q}`).
const PASSAGE_TASKS: &[&str] = &[
    "Read this message and answer three questions: who is speaking, how do they feel, and what do they want? Message: \"{p}\"",
    "Here are two messages. 1: \"{p}\" 2: \"{q}\" Which one is more polite? Explain in one sentence.",
    "Identify every noun in this sentence and say whether it is singular or plural: \"{p}\"",
    "Translate this message into French, then explain one of your word choices: \"{p}\"",
    "Extract any people, places and dates from this text and return them as JSON: \"{p}\"",
    "Rate the tone of this message from 1 (angry) to 5 (cheerful) and justify your rating: \"{p}\"",
    "Rewrite this message twice: once for a close friend and once for your boss. \"{p}\"",
    "Continue this conversation with two more lines, one for each speaker: \"{p}\"",
];

/// Languages for the longer code requests (the tasks are `CODE_TASKS`).
const CODE_TASK_FORMS: &[&str] = &[
    "Write a {l} function that {t}. Then write two test cases for it.",
    "Explain the time and space complexity of a {l} function that {t}, and suggest one way to make it faster.",
    "My {l} function that {t} gives the wrong answer for an empty input. What could be wrong, and how do I fix it?",
    "Write a {l} function that {t}, and add comments that explain each step.",
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
    code_prompts(CODE_FORMS, 1)
}

/// Every task × language of `CODE_TASKS` and `CODE_LANGS`, keyed `task-lang`, in the phrasing
/// `forms[(task * stride + lang) % len]` (so the phrasings rotate over both).
fn code_prompts(forms: &[&str], stride: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (ti, t) in CODE_TASKS.iter().enumerate() {
        for (li, l) in CODE_LANGS.iter().enumerate() {
            let f = forms[(ti * stride + li) % forms.len()];
            out.push((format!("{ti}-{li}"), f.replace("{l}", l).replace("{t}", t)));
        }
    }
    out
}

/// A request on the passage `p`.
pub fn passage_request(p: &str, variant: u64) -> String {
    PASSAGE_TEMPLATES[(variant % PASSAGE_TEMPLATES.len() as u64) as usize].replace("{p}", p)
}

/// A longer, many-part request: `kind` 't' a thing, 's' a subject, 'a' an activity; template
/// `k` of that kind; `other` a second thing for comparisons; `n` a small number.
pub fn task_request(kind: char, k: usize, w: &str, other: &str, n: u64) -> String {
    let t = match kind {
        't' => THING_TASKS[k % THING_TASKS.len()],
        's' => SUBJECT_TASKS[k % SUBJECT_TASKS.len()],
        _ => ACTIVITY_TASKS[k % ACTIVITY_TASKS.len()],
    };
    t.replace("{a}", &format!("{} {w}", article(w)))
        .replace("{b}", &format!("{} {other}", article(other)))
        .replace("{w}", w)
        .replace("{v}", w)
        .replace("{n}", &n.to_string())
}

/// Every (id key, request) of the longer topic tasks: each topic with each template of its kind.
pub fn topic_tasks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (kind, topics, n_templates) in
        [('t', THINGS, THING_TASKS.len()), ('s', SUBJECTS, SUBJECT_TASKS.len()), ('a', ACTIVITIES, ACTIVITY_TASKS.len())]
    {
        for (ti, w) in topics.iter().enumerate() {
            for k in 0..n_templates {
                let h = fnv1a(format!("task:{kind}:{k}:{w}").as_bytes());
                let other = topics[(ti + 1 + (h >> 16) as usize % (topics.len() - 1)) % topics.len()];
                out.push((format!("{kind}:{k}:{w}"), task_request(kind, k, w, other, 3 + h % 5)));
            }
        }
    }
    out
}

/// The `i`-th multi-step maths or reasoning problem (numbers drawn from `i` by a hash: stable).
pub fn task_math_request(i: u64) -> String {
    let h = fnv1a(format!("task-math:{i}").as_bytes());
    let n = |k: u32, lo: u64, hi: u64| lo + (h >> (k * 6)) % (hi - lo + 1);
    const NAMES: &[&str] = &["Anna", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas"];
    const DAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let name = |k: u32| NAMES[((h >> (k * 5)) % NAMES.len() as u64) as usize];
    match i % 12 {
        0 => format!(
            "A bakery sells {} loaves of bread a day at {} dollars each, and its costs are {} dollars a day. How much profit does it make in a week? Show your steps.",
            n(0, 20, 200), n(1, 2, 6), n(2, 30, 150)
        ),
        1 => {
            let (k, w) = (n(0, 2, 4), n(1, 2, 15));
            format!("A rectangle's length is {k} times its width, and its perimeter is {} cm. Find its width, its length and its area.", 2 * (k + 1) * w)
        }
        2 => format!(
            "{} reads {} pages on Monday and twice as many on Tuesday. The book has {} pages. How many pages are left? Explain your reasoning.",
            name(0), n(0, 10, 40), n(1, 150, 400)
        ),
        3 => format!(
            "The price of a bike rose by {}% and then fell by {}%. Is it now cheaper or more expensive than at the start, and by how much?",
            n(0, 1, 5) * 10, n(1, 1, 5) * 10
        ),
        4 => {
            let (x, y) = (n(0, 1, 9), n(1, 1, 9));
            let a = n(2, 2, 6);
            format!("Solve this system of equations and check your answer: {a}x + y = {}, x - y = {}.", a * x + y, x as i64 - y as i64)
        }
        5 => {
            let (f, c, both) = (n(0, 8, 15), n(1, 5, 12), n(2, 1, 4));
            format!(
                "A class has {} students. {f} of them play football, {c} play chess and {both} play both. How many play neither? Explain step by step.",
                f + c - both + n(3, 2, 8)
            )
        }
        6 => format!("What is the probability that two dice add up to {}? Explain how you worked it out.", n(0, 2, 12)),
        7 => format!(
            "A car uses {} litres of fuel per 100 km. How much fuel does it need for a {} km trip, and what does that cost at 2 dollars per litre?",
            n(0, 4, 12), n(1, 1, 9) * 50
        ),
        8 => format!("There are {} people at a party and each of them shakes hands with every other person once. How many handshakes are there? Explain step by step.", n(0, 4, 30)),
        9 => format!("If today is {}, what day of the week will it be in {} days? Explain how you worked it out.", DAYS[(h % 7) as usize], n(0, 10, 100)),
        10 => {
            // Three different names: steps of 1–4 around a list of ten.
            let ia = (h % 10) as usize;
            let ib = (ia + 1 + (h >> 8) as usize % 4) % 10;
            let ic = (ib + 1 + (h >> 12) as usize % 4) % 10;
            let (a, b, c) = (NAMES[ia], NAMES[ib], NAMES[ic]);
            format!("{a} is taller than {b}, and {b} is taller than {c}. Who is the shortest, and who is the tallest? Explain your reasoning.")
        }
        _ => {
            let (up, down) = (n(0, 3, 6), n(1, 1, 2));
            format!(
                "A snail climbs {up} m up a wall each day and slides down {down} m each night. The wall is {} m high. On which day does it reach the top? Explain your answer.",
                n(2, 10, 30)
            )
        }
    }
}

/// How many multi-step maths and reasoning problems the prompt set holds.
pub const N_TASK_MATH: u64 = 1_200;

/// Openings of a composed request: who is asking or the role to play (may be empty).
const SETTINGS: &[&str] = &[
    "", "", "", "", "I'm preparing a presentation for work. ", "My daughter asked me this and I didn't know what to say. ",
    "Imagine you are a pirate captain. ", "You are a friendly librarian. ", "Act as a famous chef. ",
    "Pretend you are a time traveller from the year 1850. ", "You are a tour guide in a small town. ",
    "I'm a teacher planning tomorrow's class. ", "I run a small online shop. ", "Imagine you are a cat. ",
    "You are an astronaut on the International Space Station. ", "I'm new to this and a bit nervous. ",
    "Assume the role of a sports commentator. ", "You are a detective in 1920s London. ",
];

/// What to make; `{t}` the topic (a subject, or a thing with its article).
const FORMS: &[&str] = &[
    "Write a poem about {t}", "Write a haiku about {t}", "Write a limerick about {t}", "Write a short story about {t}",
    "Write a blog post about {t}", "Write a speech about {t}", "Write an email to a friend about {t}",
    "Write a letter to the mayor about {t}", "Write a product description for {t}", "Write a review of {t}",
    "Write a news article about {t}", "Write a tweet about {t}", "Write a dialogue between two strangers about {t}",
    "Write a song chorus about {t}", "Outline an essay about {t}", "Write a travel guide entry about {t}",
    "Write an FAQ about {t}", "Describe {t}", "Explain {t}", "Give me five facts about {t}", "List the pros and cons of {t}",
    "Give me three tips about {t}", "Summarize what everyone should know about {t}", "Tell me a joke about {t}",
    "Suggest five names for a podcast about {t}", "Create a quiz about {t}", "Write a short history of {t}",
    "Argue for {t} in one paragraph", "Argue against {t} in one paragraph", "Write a riddle about {t}",
];

/// For whom or in what voice (may be empty).
const AUDIENCES: &[&str] = &[
    "", "", "", " for a five-year-old", " for experts", " for my grandmother", " for a job application",
    " for a school newspaper", " for teenagers", " for a wedding toast", " in the style of Shakespeare",
    " in the voice of a sports commentator", " for a children's book", " for a busy manager", " for tourists",
];

/// Extra constraints (may be empty).
const CONSTRAINTS: &[&str] = &[
    "", "", "Use fewer than 100 words.", "Include a joke.", "Use bullet points.", "End with a question.",
    "Make it rhyme.", "Mention two famous people.", "Keep it to three sentences.", "Use simple words.",
    "Add a title.", "Include one surprising statistic.", "Write it as a numbered list.", "Make it sound urgent.",
    "Avoid the word 'very'.", "Finish with a call to action.", "Start every sentence with a different letter.",
    "Give one example from everyday life.", "Be honest about the downsides.", "Write it in the second person.",
];

/// The `i`-th composed request: a setting, a form about a topic (a subject or a thing), an
/// audience and up to two constraints, each drawn from `i` by a hash (stable). Thousands of
/// surface forms, so the μLM learns to read the request, not to recognise a template.
pub fn composed_request(i: u64) -> String {
    let h = fnv1a(format!("composed:{i}").as_bytes());
    let pick = |k: u32, n: usize| ((h >> (k * 6)) % n as u64) as usize;
    let topic = if pick(0, 2) == 0 {
        SUBJECTS[pick(1, SUBJECTS.len())].to_string()
    } else {
        let w = THINGS[pick(1, THINGS.len())];
        format!("{} {w}", article(w))
    };
    let mut out = String::from(SETTINGS[pick(2, SETTINGS.len())]);
    out += &FORMS[pick(3, FORMS.len())].replace("{t}", &topic);
    out += AUDIENCES[pick(4, AUDIENCES.len())];
    out += ".";
    let (c1, c2) = (pick(5, CONSTRAINTS.len()), pick(6, CONSTRAINTS.len()));
    let second = (c2 != c1).then_some(c2);
    for c in std::iter::once(c1).chain(second) {
        if !CONSTRAINTS[c].is_empty() {
            out += " ";
            out += CONSTRAINTS[c];
        }
    }
    out
}

/// How many composed requests the prompt set holds.
pub const N_COMPOSED: u64 = 8_000;

/// Longer code requests: every task × language, one form each (stable order).
pub fn code_task_requests() -> Vec<(String, String)> {
    code_prompts(CODE_TASK_FORMS, 7)
}

/// A longer request on the passage `p` (and `q`, a second one, for the templates that compare).
pub fn passage_task(p: &str, q: &str, variant: u64) -> String {
    PASSAGE_TASKS[(variant % PASSAGE_TASKS.len() as u64) as usize].replace("{p}", p).replace("{q}", q)
}

/// Trivia questions asked backwards from a WordNet gloss, the way quiz questions are: "Who was
/// the Spanish guitarist who made classical guitar a concert instrument?", "What is the largest
/// island in the West Indies?", "What do you call a drafting instrument resembling a compass …?".
/// The teacher answers by restating the question ("The largest island in the West Indies is …"),
/// which is the opener a μLM can write without knowing the answer and the cloud can finish.
const TRIVIA_PERSON: &[&str] = &["Who was the {d}?", "Can you name the {d}?"];
const TRIVIA_NAMED: &[&str] = &["What is {d}?", "Can you name {d}?", "What is the name of {d}?"];
const TRIVIA_THING: &[&str] = &[
    "What do you call {d}?",
    "What is the word for {d}?",
    "What is {d} called?",
    "Do you know what {d} is called?",
    "Which word means {d}?",
];

/// Longest definition (in words) a trivia question is made from.
pub const TRIVIA_MAX_WORDS: usize = 18;

/// The definition part of a WordNet gloss: before the first `;`, without parentheses, `None`
/// when it is shorter than four words or longer than [`TRIVIA_MAX_WORDS`].
pub fn gloss_definition(gloss: &str) -> Option<String> {
    let head = gloss.split(';').next()?;
    let mut out = String::new();
    let mut depth = 0usize;
    for c in head.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    let ok = (4..=TRIVIA_MAX_WORDS).contains(&words.len()) && !out.contains(['"', '`', ':']);
    ok.then(|| words.join(" ").trim_end_matches([',', '.']).to_string())
}

/// A trivia question whose answer is `lemma`, asked from its gloss (`variant` picks the
/// template): a named person ("English poet who …"), a named place or thing (`lemma` with a
/// capital: "the largest island in …") or a common noun ("a drafting instrument …"). `None` when
/// the gloss is unusable or gives the answer away.
pub fn trivia_question(lemma: &str, gloss: &str, variant: u64) -> Option<String> {
    let d = gloss_definition(gloss)?;
    let low = d.to_lowercase();
    let gives_away = lemma.split([' ', '-']).filter(|w| w.len() > 2).any(|w| low.split(|c: char| !c.is_alphanumeric()).any(|x| x == w.to_lowercase()));
    if gives_away {
        return None;
    }
    let named = lemma.starts_with(char::is_uppercase);
    let pick = |set: &[&str]| set[(variant % set.len() as u64) as usize].replace("{d}", &d);
    Some(if named && d.starts_with(char::is_uppercase) {
        pick(TRIVIA_PERSON)
    } else if named {
        // "record of a British census …" reads as a question only with its article
        if !["a ", "an ", "the "].iter().any(|a| d.starts_with(a)) {
            return None;
        }
        pick(TRIVIA_NAMED)
    } else {
        pick(TRIVIA_THING)
    })
}

/// The id and text of every instruct prompt of `split`: topics (`lemmas`: `(pos, word)`, already
/// filtered to common words), maths, code, passages (`(chat id, turn, text)` of training chats)
/// and trivia (`glosses`: `(synset key, lemma, gloss)` of training-side WordNet nouns).
pub fn instruct_prompts(
    lemmas: &[(char, String)],
    passages: &[(String, usize, String)],
    glosses: &[(String, String, String)],
    split: Split,
) -> Vec<(String, String)> {
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
    // The longer, many-part requests (`instruct:task:…`; `ulm distill --prefer instruct:task`).
    for (key, text) in topic_tasks() {
        keep(format!("task:{key}"), text);
    }
    for i in 0..N_TASK_MATH {
        keep(format!("task:math:{i}"), task_math_request(i));
    }
    for i in 0..N_COMPOSED {
        keep(format!("task:composed:{i}"), composed_request(i));
    }
    for (key, text) in code_task_requests() {
        keep(format!("task:code:{key}"), text);
    }
    // One passage in four, so the passages do not outnumber the rest.
    for (i, (doc, turn, text)) in passages.iter().enumerate() {
        let key = format!("{doc}:{turn}");
        let h = fnv1a(format!("task:{key}").as_bytes());
        if h % 4 != 0 {
            continue;
        }
        let q = &passages[(i + 1 + (h >> 32) as usize % passages.len().max(1)) % passages.len()].2;
        keep(format!("task:passage:{key}"), passage_task(text, q, h >> 7));
    }
    // Trivia (`instruct:trivia:<synset>`; `ulm distill --prefer instruct:trivia`).
    for (key, lemma, gloss) in glosses {
        if let Some(q) = trivia_question(lemma, gloss, fnv1a(key.as_bytes()) >> 7) {
            keep(format!("trivia:{key}"), q);
        }
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
        let train = instruct_prompts(&lemmas, &[], &[], Split::Train);
        let held = instruct_prompts(&lemmas, &[], &[], Split::Heldout);
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
    fn the_longer_tasks_fill_every_slot() {
        for k in 0..THING_TASKS.len() {
            let s = task_request('t', k, "umbrella", "kettle", 4);
            assert!(s.contains("umbrella") && !s.contains('{') && s.len() > 50, "{s}");
        }
        let cmp = THING_TASKS.iter().position(|t| t.contains("{b}")).unwrap();
        assert!(task_request('t', cmp, "umbrella", "kettle", 4).contains("an umbrella and a kettle"));
        for k in 0..SUBJECT_TASKS.len() {
            let s = task_request('s', k, "friendship", "", 4);
            assert!(s.contains("friendship") && !s.contains('{'), "{s}");
        }
        for k in 0..ACTIVITY_TASKS.len() {
            let s = task_request('a', k, "play chess", "", 4);
            assert!(s.contains(" play chess") && !s.contains('{'), "{s}");
        }
        let all = topic_tasks();
        let n = THINGS.len() * THING_TASKS.len() + SUBJECTS.len() * SUBJECT_TASKS.len() + ACTIVITIES.len() * ACTIVITY_TASKS.len();
        assert_eq!(all.len(), n);
        let mut keys: Vec<&String> = all.iter().map(|t| &t.0).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "keys are unique");
        // a comparison never sets a thing beside itself
        for (key, text) in &all {
            let w = key.rsplit(':').next().unwrap();
            assert!(!text.contains(&format!("{w} and a {w}")) && !text.contains(&format!("{w} and an {w}")), "{text}");
        }
        for (_, t) in code_task_requests() {
            assert!(!t.contains('{') && t.len() > 50, "{t}");
        }
        let two = passage_task("first one", "second one", 1);
        assert!(two.contains("\"first one\"") && two.contains("\"second one\""), "{two}");
    }

    #[test]
    fn the_multi_step_problems_have_whole_answers() {
        for i in 0..N_TASK_MATH {
            let s = task_math_request(i);
            assert!(!s.contains('{') && s.ends_with(['.', '?']), "{s}");
            let nums: Vec<i64> = s
                .split(|c: char| !(c.is_ascii_digit() || c == '-'))
                .filter_map(|w| w.trim_start_matches('-').parse().ok())
                .collect();
            match i % 12 {
                // the perimeter 2(k+1)w is a whole number of widths
                1 => assert_eq!(nums[1] % (2 * (nums[0] + 1)), 0, "{s}"),
                // the class is at least as large as the students who play
                5 => assert!(nums[0] >= nums[1] + nums[2] - nums[3], "{s}"),
                10 => {
                    // "A is taller than B, and B is taller than C": three different people
                    let w: Vec<&str> = s.split([' ', ',']).filter(|w| !w.is_empty()).collect();
                    let (a, b, b2, c) = (w[0], w[4], w[6], w[10]);
                    assert!(b == b2 && a != b && b != c && a != c, "{s}");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_kind_of_longer_task_is_in_the_prompt_set() {
        let passages: Vec<(String, usize, String)> = (0..200).map(|i| (format!("conv{i}"), 1, format!("message number {i} here"))).collect();
        let train = instruct_prompts(&[], &passages, &[], Split::Train);
        let held = instruct_prompts(&[], &passages, &[], Split::Heldout);
        for kind in ["task:t:", "task:s:", "task:a:", "task:math:", "task:composed:", "task:code:", "task:passage:"] {
            assert!(train.iter().any(|(id, _)| id.starts_with(&format!("instruct:{kind}"))), "{kind}");
        }
        assert!(held.iter().any(|(id, _)| id.starts_with("instruct:task:")));
    }

    #[test]
    fn composed_requests_are_whole_and_varied() {
        let all: Vec<String> = (0..N_COMPOSED).map(composed_request).collect();
        for r in &all {
            assert!(!r.contains('{') && !r.contains("  ") && r.ends_with('.') && r.starts_with(char::is_uppercase), "{r}");
            let sentences: Vec<&str> = r.trim_end_matches('.').split(". ").collect();
            let once: std::collections::HashSet<&&str> = sentences.iter().collect();
            assert_eq!(once.len(), sentences.len(), "a sentence said twice: {r}");
        }
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert!(distinct.len() > all.len() * 99 / 100, "{} distinct of {}", distinct.len(), all.len());
        assert_eq!(composed_request(17), composed_request(17));
    }

    #[test]
    fn trivia_is_asked_backwards_from_the_gloss() {
        let q = |l: &str, g: &str| trivia_question(l, g, 0);
        assert_eq!(q("Segovia", "Spanish guitarist who made classical guitar a concert instrument (1893-1987)").unwrap(), "Who was the Spanish guitarist who made classical guitar a concert instrument?");
        assert_eq!(q("Cuba", "the largest island in the West Indies").unwrap(), "What is the largest island in the West Indies?");
        let d = q("divider", "a drafting instrument resembling a compass; \"he used a divider\"").unwrap();
        assert_eq!(d, "What do you call a drafting instrument resembling a compass?");
        // the answer in its own clue, a gloss too short or too long: no question
        assert_eq!(q("passage", "a path or passage through which something may pass"), None);
        assert_eq!(q("balderdash", "trivial nonsense"), None);
        assert_eq!(q("Olympia", "capital of the state of Washington"), None);
        assert_eq!(q("x", &"word ".repeat(TRIVIA_MAX_WORDS + 1)), None);
        for v in 0..15 {
            let t = trivia_question("volcano", "a fissure in the earth's crust through which molten lava erupts", v).unwrap();
            assert!(t.contains("a fissure in the earth's crust") && t.ends_with('?') && !t.contains('{'), "{t}");
        }
        let cuba = [("n1".to_string(), "Cuba".to_string(), "the largest island in the West Indies".to_string())];
        let all: Vec<_> = [Split::Train, Split::Heldout]
            .into_iter()
            .flat_map(|split| instruct_prompts(&[], &[], &cuba, split))
            .filter(|(id, _)| id.starts_with("instruct:trivia:"))
            .collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "instruct:trivia:n1");
    }

    #[test]
    fn maths_is_stable() {
        assert_eq!(math_request(3), math_request(3));
        assert_ne!(math_request(3), math_request(13));
    }
}
