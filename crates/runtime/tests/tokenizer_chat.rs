//! Chat templates: the model's own (tokenizer_config.json, GGUF), the ChatML default, plain
//! ChatML, and continuing a partial assistant message.

mod common;

use common::*;
use ulm_runtime::load::gguf::Gguf;
use ulm_runtime::tokenizer::{render_chatml, render_chatml_continue, ChatMessage, Tokenizer, DEFAULT_TEMPLATE};

fn json_tok(config: Option<serde_json::Value>) -> Tokenizer {
    Tokenizer::from_json_bytes("tiny.json", tiny_tokenizer_json().as_bytes(), config.as_ref()).unwrap()
}

fn tiny_with_config() -> Tokenizer {
    json_tok(Some(serde_json::from_str(&tiny_tokenizer_config_json()).unwrap()))
}

fn q() -> Vec<ChatMessage> {
    vec![ChatMessage::user("What is the capital of France?")]
}

#[test]
fn tokenizer_config_template_renders_with_its_default_system() {
    let tok = tiny_with_config();
    assert!(tok.has_model_template());
    assert_eq!(
        tok.render_chat(&q(), true).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = [ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
    assert_eq!(
        tok.render_chat(&with_system, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn gguf_template_is_respected_as_is() {
    let g = Gguf::from_bytes("tiny.gguf", &tiny_gguf().to_bytes()).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let text = tok.render_chat(&q(), true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(tok.render_chat(&q(), false).unwrap(), text.trim_end_matches("<|im_start|>assistant\n"));
    // Plain ChatML for callers that want no system prompt.
    assert_eq!(render_chatml(&q(), true), "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n");
    let ids = tok.encode(&text, true).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 2);
}

#[test]
fn smollm2_template_from_the_real_file() {
    let Some(path) = smollm2() else { return };
    let tok = Tokenizer::from_gguf(&Gguf::open(&path).unwrap()).unwrap();
    assert_eq!(tok.chat_template(), SMOL_TEMPLATE);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert!(tok.is_end_of_turn(2) && tok.is_end_of_turn(0));
    let text = tok.render_chat_continue(&[ChatMessage::user("Capital of France?"), ChatMessage::assistant("The capital")]).unwrap();
    assert!(text.ends_with("<|im_start|>assistant\nThe capital"), "{text:?}");
    assert!(text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
}

#[test]
fn default_template_only_when_absent() {
    let tok = json_tok(None);
    assert!(!tok.has_model_template());
    assert_eq!(tok.chat_template(), DEFAULT_TEMPLATE);
    assert_eq!(
        tok.render_chat(&q(), true).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let sys = [ChatMessage::system("S"), ChatMessage::user("U"), ChatMessage::assistant("A")];
    assert_eq!(tok.render_chat(&sys, false).unwrap(), render_chatml(&sys, false));
    assert_eq!(tok.render_chat(&[], true).unwrap(), "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn continuing_a_reply_drops_only_the_end_of_turn() {
    let msgs = [ChatMessage::user("Hi"), ChatMessage::assistant("Hello! I am")];
    for tok in [tiny_with_config(), json_tok(None)] {
        let text = tok.render_chat_continue(&msgs).unwrap();
        assert!(text.ends_with("<|im_start|>assistant\nHello! I am"), "{text:?}");
        assert!(!text.ends_with("<|im_end|>\n"));
        // Empty openers continue too.
        let text = tok.render_chat_continue(&[ChatMessage::user("Hi"), ChatMessage::assistant("")]).unwrap();
        assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
    }
    assert_eq!(render_chatml_continue(&msgs).unwrap(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! I am");
    // The content goes back verbatim, even if it contains the marker's neighbours.
    let odd = [ChatMessage::user("x"), ChatMessage::assistant("a <|im_end|> b ")];
    assert!(render_chatml_continue(&odd).unwrap().ends_with("assistant\na <|im_end|> b "));
    let e = render_chatml_continue(&q()).unwrap_err().to_string();
    assert_eq!(e, "continuing a reply needs an assistant message last");
    // A template that drops assistant messages cannot be continued.
    let tok = json_tok(Some(serde_json::json!({
        "chat_template": "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}"
    })));
    let e = tok.render_chat_continue(&msgs).unwrap_err().to_string();
    assert_eq!(e, "chat template: the template drops the final assistant message, so it cannot be continued");
}

#[test]
fn hf_template_features_work() {
    // trim_blocks/lstrip_blocks (as jinja2 in transformers: the indent before text stays),
    // python string methods, raise_exception, dict methods.
    let template = "{%- for m in messages %}\n  {%- if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}\n  [{{ m['role'].upper() }}] {{ m['content'].strip() }}|{{ m.get('missing', 'dflt') }}\n{% endfor %}\n{{- bos_token + eos_token -}}";
    let tok = json_tok(Some(serde_json::json!({"chat_template": template, "bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}})));
    assert_eq!(tok.render_chat(&[ChatMessage::user("  hi  ")], false).unwrap(), "  [USER] hi|dflt\n<|im_start|><|im_end|>");
    let e = tok.render_chat(&[ChatMessage::system("x")], false).unwrap_err().to_string();
    assert!(e.starts_with("chat template: invalid operation: Only user and assistant roles are supported!"), "{e}");
    // Named template lists pick `default`.
    let tok = json_tok(Some(serde_json::json!({"chat_template": [
        {"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT"}]})));
    assert_eq!(tok.render_chat(&q(), true).unwrap(), "DEFAULT");
    // Syntax errors are reported when loading.
    let e = Tokenizer::from_json_bytes("t.json", tiny_tokenizer_json().as_bytes(), Some(&serde_json::json!({"chat_template": "{% for %}"}))).unwrap_err();
    let e = e.to_string();
    assert!(e.starts_with("chat template: syntax error") && e.ends_with("(in the template of t.json)"), "{e}");
}
