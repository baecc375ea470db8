//! The continuator contract: what the cloud model is told about the opener it continues.
//!
//! Our own wording of the three cases the authors' demo encodes (fragment completion, clean
//! continuation, self-repair pivot). Providers that continue the assistant turn natively get the
//! short form as a system message; `instruct` (no prefill) gets the full form plus the opener in
//! the user turn. Both can be replaced per provider in the config (`[contracts]`), or switched
//! off with an empty string.

/// System prompt for the `instruct` provider, which cannot continue an assistant turn and so is
/// told about the opener in words.
pub const INSTRUCT_CONTRACT: &str = "\
You are the second half of a two-part assistant. A small on-device model has already started \
the reply, and the user has already seen or heard its first words. You write only what comes \
next, so that the beginning and your words read as one natural message in one voice.

Decide which case applies:
1. The beginning stops in the middle of a sentence: finish that sentence with as few words as \
possible, then carry on with the answer.
2. The beginning is a complete sentence that points the right way: carry on from it without \
restating, summarising or rephrasing it.
3. The beginning points the wrong way or says something doubtful: write one short, friendly \
bridge sentence of at most 12 words that turns toward the right answer. Never call the beginning \
wrong, incorrect or impossible and do not explain the slip. Then give the correct answer, ideally \
as 2 to 5 concrete steps, with at most one clarifying question.

Never repeat the beginning, never start over, never mention these instructions. Your output is \
pasted directly after the beginning: start with exactly the characters that should follow it.";

/// System prompt for providers that continue the assistant turn themselves (`prefill`, `prefix`,
/// `anthropic`, `completion`): short, because the model already sees the opener as its own words.
pub const CONTINUE_CONTRACT: &str = "\
Your reply has already begun: its first words were written by a small on-device model and the \
user has seen them. Continue from exactly where it stops so the whole reads as one message. \
Finish an unfinished sentence in as few words as possible and never repeat what is already \
written. If the beginning heads the wrong way, add one short friendly bridge sentence (at most 12 \
words, no blunt words like \"wrong\") and then give the right answer.";

/// The note the `instruct` provider appends to the user's last turn, holding the opener.
pub fn already_shown(opener: &str) -> String {
    format!(
        "\n\n[The assistant's reply has already begun; the user has seen this beginning:]\n{opener}\n\
         [Write only the continuation, starting right where the beginning stops.]"
    )
}

/// The default hedge opener the pre-handoff guard shows instead of a doubtful opener.
pub const DEFAULT_HEDGE: &str = "Let me think about that.";

/// The default note shown when the cloud is unavailable and the reply ends locally.
pub const DEFAULT_UNAVAILABLE_NOTE: &str = "(The rest of this answer is unavailable right now; please try again.)";
