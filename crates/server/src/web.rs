//! The static web page: files of `web_dir` served as they are, `index.html` at `/`.
//!
//! Only plain file names below the folder are served (no `..`, no hidden files); anything else,
//! and any path under `/v1` or `/api` that no route took, gets a JSON 404.

use std::path::{Component, Path};

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Files larger than this are not served (the page is a few files of kilobytes).
const MAX_FILE_BYTES: u64 = 8 << 20;

pub(crate) async fn static_file(State(st): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/v1") || path.starts_with("/api") {
        return ApiError::not_found(&path).into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return ApiError::method_not_allowed().into_response();
    }
    let Some(dir) = &st.config().web_dir else {
        return ApiError::not_found(&path).into_response();
    };
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() || rel.ends_with('/') { format!("{rel}index.html") } else { rel.to_string() };
    let safe = Path::new(&rel).components().all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.')));
    if !safe || rel.contains('\\') {
        return ApiError::not_found(&path).into_response();
    }
    let file = dir.join(&rel);
    match tokio::fs::metadata(&file).await {
        Ok(m) if m.is_file() && m.len() <= MAX_FILE_BYTES => {}
        _ => return ApiError::not_found(&path).into_response(),
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&rel)), (header::CACHE_CONTROL, "no-cache")], bytes).into_response(),
        Err(_) => ApiError::not_found(&path).into_response(),
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "webmanifest" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
