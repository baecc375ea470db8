//! Token ids of `Tokenizer::from_gguf` on the SmolLM2 GGUF against llama.cpp's own server
//! (`scripts/llama_server.py`, the `xllamacpp` wheel), asked over plain HTTP/1.1.
//! Skips loudly when the model or the venv is missing.

mod common;

use common::LlamaServer;

use ulm_runtime::load::gguf::Gguf;
use ulm_runtime::tokenizer::Tokenizer;

/// The strings compared id for id (with `parse_special` true).
const CASES: &[&str] = &[
    "12345 67",
    "Hello world",
    "  two leading spaces and  double  spaces",
    "tabs\tand\t\ttabs\t",
    "new\nlines\n\n\nmany\r\nCRLF\n",
    "trailing spaces   ",
    "   ",
    "\n",
    "emoji 😀👍🏽 and 🇫🇷 and 👨‍👩‍👧",
    "CJK 日本語の文章と中文句子，한국어",
    "accents: café naïve Ångström façade Œuvre",
    "code: fn main() { println!(\"{}\", x + 1); } // 3.14159",
    "def f(x):\n    return x**2  # square\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are helpful.<|im_end|><|endoftext|>",
    "don't I'll we've they're I'M",
    "année 2024: ١٢٣ ½ ² ⅷ",
    "non\u{a0}breaking\u{3000}ideographic\u{2009}thin space",
    "<filename>main.rs<file_sep><gh_stars>100",
    "ALL CAPS, MiXeD cAsE, and UPPER-lower",
    "a",
    "",
    "$100.00 + 5% = ¥ 10,000 €",
    "URL: https://example.com/path?q=1&b=two#frag",
];

/// Random strings compared on top of `CASES`.
const RANDOM: usize = 1000;

/// The tokenizer endpoints of llama.cpp's server.
trait Tokenize {
    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<u32>;
    fn detokenize(&self, ids: &[u32]) -> String;
}

impl Tokenize for LlamaServer {
    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let body = serde_json::json!({"content": text, "add_special": false, "parse_special": parse_special});
        let v: serde_json::Value = serde_json::from_str(&self.post("/tokenize", &body.to_string())).unwrap();
        v["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
    }

    fn detokenize(&self, ids: &[u32]) -> String {
        let body = serde_json::json!({"tokens": ids});
        let v: serde_json::Value = serde_json::from_str(&self.post("/detokenize", &body.to_string())).unwrap();
        v["content"].as_str().unwrap().to_string()
    }
}

/// Random strings from a mix that stresses the pre-tokenizer: digits, runs of whitespace,
/// apostrophes, punctuation, accents, CJK, emoji with modifiers, special-token texts.
fn random_text(rng: &mut common::Rng) -> String {
    const PIECES: &[&str] = &[
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "a", "the", " the", "The", "Hello", "world", "'s", "'ll", "'", "\"",
        "0", "7", "42", "2024", "3.14", ",", ".", "!?", "...", "-", "_", "(", ")", "{", "}", "é", "ü", "ß", "Ω",
        "日本", "中文", "한", "😀", "👍🏽", "🇫🇷", "\u{200d}", "½", "١", "<|im_start|>", "<|im_end|>", "<", "|", ">", "#",
        "fn", "=>", "\u{a0}", "\u{3000}", "x", "Z", "q", "ing", "tion",
        // Characters SmolLM2's byte alphabet cannot spell (both sides drop them).
        "\u{4}", "\u{1d}", "\u{a3157}", "\u{10fffd}",
    ];
    let n = 1 + rng.below(12);
    let mut s = String::new();
    for _ in 0..n {
        if rng.below(8) == 0 {
            // Any scalar value.
            s.extend(char::from_u32(rng.below(0x11_0000) as u32));
        } else {
            s.push_str(PIECES[rng.below(PIECES.len())]);
        }
    }
    s
}

#[test]
fn gguf_token_ids_equal_llama_cpp() {
    let Some(model) = common::smollm2() else { return };
    let tok = Tokenizer::from_gguf(&Gguf::open(&model).unwrap()).unwrap();
    let Some(server) = LlamaServer::start(&model) else { return };

    let mut compared = 0;
    for &text in CASES {
        let theirs = server.tokenize(text, true);
        let ours = tok.encode(text, true).unwrap();
        assert_eq!(ours, theirs, "parse_special=true ids differ for {text:?}");
        eprintln!("{text:?} -> {ours:?}");
        let theirs = server.tokenize(text, false);
        let ours = tok.encode(text, false).unwrap();
        assert_eq!(ours, theirs, "parse_special=false ids differ for {text:?}");
        compared += 2;
    }
    // llama.cpp's detokenizer agrees with ours on the ids.
    for &text in CASES {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), server.detokenize(&ids), "decode differs for {text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    // And on random mixtures.
    let mut rng = common::Rng(20260514);
    for _ in 0..RANDOM {
        let text = random_text(&mut rng);
        for parse_special in [true, false] {
            assert_eq!(tok.encode(&text, parse_special).unwrap(), server.tokenize(&text, parse_special), "ids differ for {text:?} (parse_special={parse_special})");
            compared += 1;
        }
    }
    eprintln!("{compared} encodings equal to llama.cpp's ({} fixed strings, {RANDOM} random)", CASES.len());
}
