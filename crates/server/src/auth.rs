//! Bearer-token auth for `/v1/*` and `/api/*` when the server has an API key.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Lets the request through when no key is set or its `Authorization: Bearer KEY` matches.
pub(crate) async fn require_key(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.config().api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .unwrap_or("");
        if !same_key(given, key) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Constant-time comparison: every byte of the key is compared whatever the given token holds,
/// so the position of the first difference does not show in the time taken (the length of the
/// key may; it is not secret enough to matter).
pub(crate) fn same_key(given: &str, key: &str) -> bool {
    let (g, k) = (given.as_bytes(), key.as_bytes());
    let mut diff = (g.len() ^ k.len()) as u64;
    for (i, &kb) in k.iter().enumerate() {
        let gb = g.get(i).copied().unwrap_or(!kb);
        diff |= u64::from(std::hint::black_box(gb ^ kb));
    }
    std::hint::black_box(diff) == 0 && !k.is_empty()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_compare() {
        assert!(super::same_key("sekrit", "sekrit"));
        assert!(!super::same_key("sekrit ", "sekrit"));
        assert!(!super::same_key("", "sekrit"));
        assert!(!super::same_key("", ""), "an empty key never matches");
    }
}
