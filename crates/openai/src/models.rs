//! `GET /v1/models`.

use serde::{Deserialize, Serialize};

/// One model a server offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name to put in `model`.
    pub id: String,
    /// Always `"model"`.
    #[serde(default = "model_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Who publishes it.
    #[serde(default)]
    pub owned_by: String,
}

fn model_object() -> String {
    "model".into()
}

fn list_object() -> String {
    "list".into()
}

impl ModelInfo {
    /// A model entry.
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        ModelInfo { id: id.into(), object: model_object(), created, owned_by: owned_by.into() }
    }
}

/// The `/v1/models` reply.
///
/// ```
/// use ulm_openai::models::{ModelInfo, ModelList};
/// let list = ModelList::new(vec![ModelInfo::new("ulm-8m", 0, "ulm")]);
/// assert_eq!(serde_json::to_value(&list).unwrap()["data"][0]["object"], "model");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `"list"`.
    #[serde(default = "list_object")]
    pub object: String,
    /// The models.
    #[serde(default)]
    pub data: Vec<ModelInfo>,
}

impl ModelList {
    /// A list of `models`.
    pub fn new(models: Vec<ModelInfo>) -> Self {
        ModelList { object: list_object(), data: models }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_and_llama_cpp_lists() {
        let openai: ModelList = serde_json::from_str(
            r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}]}"#,
        )
        .unwrap();
        assert_eq!(openai.data[0].id, "gpt-4o");
        // llama.cpp adds `meta` and `models`; both are ignored.
        let llama: ModelList = serde_json::from_str(
            r#"{"models":[{"name":"x"}],"object":"list","data":[{"id":"x.gguf","object":"model","created":1,"owned_by":"llamacpp","meta":{"n_params":1}}]}"#,
        )
        .unwrap();
        assert_eq!(llama.data[0].owned_by, "llamacpp");
        let back: ModelList = serde_json::from_value(serde_json::to_value(&openai).unwrap()).unwrap();
        assert_eq!(back, openai);
    }
}
