//! Bearer-token authentication. Health and version endpoints stay open, as in Kubernetes.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;

/// The tokens the server accepts.
#[derive(Clone, Default)]
pub struct Tokens(pub Arc<HashSet<String>>);

fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version" | "/version/")
}

/// Middleware: 401 `Status` unless the request carries a known bearer token.
pub async fn require_token(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if tokens.0.contains(token) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// A new random token (32 bytes, hex).
pub fn generate_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
