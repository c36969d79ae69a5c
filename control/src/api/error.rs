//! The one place where failures become Kubernetes `Status` responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::store::StoreError;

/// Why a request failed, in Kubernetes' terms. Mapped to a `metav1.Status` exactly once, in
/// [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    Invalid { kind: String, name: String, message: String, causes: Vec<(String, String)> },
    #[error("{resource} \"{name}\" not found")]
    NotFound { group: String, resource: String, name: String },
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    /// Something that exists but cannot be served (yet), such as logs before a node runs the pod.
    #[error("{0}")]
    Unavailable(String),
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { group: String, resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {reason}")]
    Conflict { group: String, resource: String, name: String, reason: String },
    /// A server-side apply conflict: the message lists the fields.
    #[error("{0}")]
    ApplyConflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("the body of the request was too large: limit is {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: i64, oldest: i64 },
    #[error("{0}")]
    Timeout(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// A backend (a kubelet, the metrics of a node) cannot be reached now.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// Past the bound on requests in flight; the client should retry after `retry_after` seconds.
    #[error("Too many requests, please try again later.")]
    TooManyRequests { retry_after: u32 },
    /// Refused for now with its own message and causes (`(type, message)`), such as an eviction
    /// a disruption budget forbids; `retry_after` 0 sends no `Retry-After`.
    #[error("{message}")]
    TooManyRequestsBecause { message: String, retry_after: u32, causes: Vec<(String, String)> },
    /// An admission webhook's denial: its code (400 or more), reason and message.
    #[error("{message}")]
    Denied { code: u16, reason: String, message: String },
}

impl ApiError {
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::NotFound { group: group.into(), resource: resource.into(), name: name.into() }
    }

    pub fn invalid(kind: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let detail = causes.iter().map(|(field, msg)| format!("{field}: {msg}")).collect::<Vec<_>>();
        let message = match detail.len() {
            1 => format!("{kind} \"{name}\" is invalid: {}", detail[0]),
            _ => format!("{kind} \"{name}\" is invalid: [{}]", detail.join(", ")),
        };
        Self::Invalid { kind: kind.into(), name: name.into(), message, causes }
    }

    pub fn code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound { .. } | Self::NoSuchResource | Self::Unavailable(_) => StatusCode::NOT_FOUND,
            Self::AlreadyExists { .. } | Self::Conflict { .. } | Self::ApplyConflict(_) => StatusCode::CONFLICT,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Gone { .. } => StatusCode::GONE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests { .. } | Self::TooManyRequestsBecause { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Denied { code, .. } => StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequest",
            Self::Invalid { .. } => "Invalid",
            Self::NotFound { .. } | Self::NoSuchResource | Self::Unavailable(_) => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } | Self::ApplyConflict(_) => "Conflict",
            Self::Forbidden(_) => "Forbidden",
            Self::Unauthorized => "Unauthorized",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::TooLarge { .. } => "RequestEntityTooLarge",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::Gone { .. } => "Expired",
            Self::Timeout(_) => "Timeout",
            Self::Internal(_) => "InternalError",
            Self::ServiceUnavailable(_) => "ServiceUnavailable",
            Self::TooManyRequests { .. } | Self::TooManyRequestsBecause { .. } => "TooManyRequests",
            Self::Denied { .. } => "",
        }
    }

    /// The `metav1.Status` object for this error.
    pub fn status(&self) -> Value {
        let mut details = serde_json::Map::new();
        match self {
            Self::NotFound { group, resource, name }
            | Self::AlreadyExists { group, resource, name }
            | Self::Conflict { group, resource, name, .. } => {
                details.insert("name".into(), json!(name));
                if !group.is_empty() {
                    details.insert("group".into(), json!(group));
                }
                details.insert("kind".into(), json!(resource));
            }
            Self::Invalid { kind, name, causes, .. } => {
                details.insert("name".into(), json!(name));
                details.insert("kind".into(), json!(kind));
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|(field, msg)| json!({"reason": "FieldValueInvalid", "message": msg, "field": field}))
                    .collect();
                details.insert("causes".into(), json!(causes));
            }
            Self::TooManyRequests { retry_after } => {
                details.insert("retryAfterSeconds".into(), json!(retry_after));
            }
            Self::TooManyRequestsBecause { retry_after, causes, .. } => {
                if *retry_after > 0 {
                    details.insert("retryAfterSeconds".into(), json!(retry_after));
                }
                let causes: Vec<Value> =
                    causes.iter().map(|(reason, message)| json!({"reason": reason, "message": message})).collect();
                details.insert("causes".into(), json!(causes));
            }
            _ => {}
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if let Self::Denied { reason, .. } = self {
            // The webhook's own reason, left out when it gave none (as kube-apiserver).
            match (reason.is_empty(), status.as_object_mut()) {
                (true, Some(map)) => drop(map.remove("reason")),
                _ => status["reason"] = json!(reason),
            }
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (self.code(), [(http::header::CONTENT_TYPE, "application/json")], self.status().to_string())
            .into_response();
        match self {
            Self::TooManyRequests { retry_after } | Self::TooManyRequestsBecause { retry_after, .. }
                if retry_after > 0 =>
            {
                response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(retry_after));
            }
            _ => {}
        }
        response
    }
}

/// Maps a store failure for one object to its API error.
pub fn from_store(err: StoreError, group: &str, resource: &str, name: &str) -> ApiError {
    match err {
        StoreError::AlreadyExists(_) => {
            ApiError::AlreadyExists { group: group.into(), resource: resource.into(), name: name.into() }
        }
        StoreError::NotFound(_) => ApiError::not_found(group, resource, name),
        StoreError::Conflict { .. } => ApiError::Conflict {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
            reason: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        },
        StoreError::Compacted { requested, compacted } => ApiError::Gone { requested, oldest: compacted },
        StoreError::FutureRevision { requested, current } => {
            ApiError::Timeout(format!("Too large resource version: {requested}, current: {current}"))
        }
        StoreError::Backend(msg) => ApiError::Internal(msg),
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        from_store(err, "", "", "")
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
