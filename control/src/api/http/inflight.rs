//! A bound on requests in flight, kube-apiserver's `--max-requests-inflight` and
//! `--max-mutating-requests-inflight`: past the bound a request is answered at once with 429
//! `TooManyRequests` and `Retry-After`, instead of queueing without limit. Long-running requests
//! (watches; `log`, `exec`, `attach`, `portforward` and `proxy` subresources) are not counted,
//! as in kube-apiserver: they would starve everything else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::ApiError;

/// kube-apiserver's default `--max-requests-inflight`.
pub const MAX_READONLY: usize = 400;
/// kube-apiserver's default `--max-mutating-requests-inflight`.
pub const MAX_MUTATING: usize = 200;
/// Seconds a refused client is asked to wait (kube-apiserver answers 1).
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The two pools of request slots.
pub struct Inflight {
    readonly: Arc<Semaphore>,
    mutating: Arc<Semaphore>,
}

impl Default for Inflight {
    fn default() -> Self {
        Self::new(MAX_READONLY, MAX_MUTATING)
    }
}

impl Inflight {
    /// Pools of `readonly` and `mutating` slots.
    pub fn new(readonly: usize, mutating: usize) -> Self {
        Self { readonly: Arc::new(Semaphore::new(readonly)), mutating: Arc::new(Semaphore::new(mutating)) }
    }

    /// A slot for a request, `None` for a long-running one (not counted), or 429 when its pool
    /// is full.
    pub fn admit(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        if is_long_running(method, path, query) {
            return Ok(None);
        }
        let pool = match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => &self.readonly,
            _ => &self.mutating,
        };
        Arc::clone(pool)
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| ApiError::TooManyRequests { retry_after: RETRY_AFTER_SECONDS })
    }
}

/// kube-apiserver's long-running check: the `watch` verb, and the streaming subresources.
fn is_long_running(method: &Method, path: &str, query: Option<&str>) -> bool {
    let watch = query.unwrap_or("").split('&').any(|p| matches!(p, "watch=true" | "watch=1" | "watch=True"));
    if *method == Method::GET && (watch || path.contains("/watch/")) {
        return true;
    }
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    (path.starts_with("/api/") || path.starts_with("/apis/"))
        && matches!(last, "log" | "exec" | "attach" | "portforward" | "proxy")
}

/// The middleware: holds a slot while the handler runs.
pub async fn limit(State(limits): State<Arc<Inflight>>, req: Request, next: Next) -> Response {
    let permit = match limits.admit(req.method(), req.uri().path(), req.uri().query()) {
        Ok(permit) => permit,
        Err(e) => {
            tracing::debug!(method = %req.method(), path = req.uri().path(), "too many requests in flight");
            return e.into_response();
        }
    };
    let response = next.run(req).await;
    drop(permit);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_pools_refuse_and_long_running_requests_are_not_counted() {
        let limits = Inflight::new(1, 1);
        let read = limits.admit(&Method::GET, "/api/v1/pods", None).expect("first read");
        let err = limits.admit(&Method::GET, "/api/v1/pods", None).expect_err("second read");
        assert!(matches!(err, ApiError::TooManyRequests { retry_after: 1 }));
        assert_eq!(err.code().as_u16(), 429);
        assert_eq!(err.status()["reason"], "TooManyRequests");
        assert_eq!(err.status()["details"]["retryAfterSeconds"], 1);
        // Writes have their own pool.
        let write = limits.admit(&Method::POST, "/api/v1/namespaces/d/pods", None).expect("a write");
        assert!(limits.admit(&Method::DELETE, "/api/v1/namespaces/d/pods/x", None).is_err());
        // Watches and streams pass without a slot.
        assert!(limits.admit(&Method::GET, "/api/v1/pods", Some("watch=true")).expect("watch").is_none());
        assert!(limits
            .admit(&Method::GET, "/api/v1/namespaces/d/pods/x/log", Some("follow=true"))
            .expect("log")
            .is_none());
        assert!(limits.admit(&Method::POST, "/api/v1/namespaces/d/pods/x/exec", None).expect("exec").is_none());
        // A slot is free again once its request ends.
        drop((read, write));
        assert!(limits.admit(&Method::GET, "/api/v1/pods", None).expect("free").is_some());
        assert!(limits.admit(&Method::PATCH, "/api/v1/namespaces/d/pods/x", None).expect("free").is_some());
    }
}
