//! The one place where failures become Kubernetes `Status` responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::store::StoreError;

/// Why a request failed, in Kubernetes' terms. Mapped to a `metav1.Status` exactly once, in
/// [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    Invalid { kind: String, name: String, message: String, causes: Vec<(String, String)> },
    #[error("{} \"{name}\" not found", qualified(.group, .resource))]
    NotFound { group: String, resource: String, name: String },
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    /// Something that exists but cannot be served (yet), such as logs before a node runs the pod.
    #[error("{0}")]
    Unavailable(String),
    #[error("{} \"{name}\" already exists", qualified(.group, .resource))]
    AlreadyExists { group: String, resource: String, name: String },
    #[error("Operation cannot be fulfilled on {} \"{name}\": {reason}", qualified(.group, .resource))]
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
    /// No media type of the `Accept` header can encode the answer (protobuf for a custom resource).
    #[error("{0}")]
    NotAcceptable(String),
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
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
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
            Self::NotAcceptable(_) => "NotAcceptable",
            Self::Gone { .. } => "Expired",
            Self::Timeout(_) => "Timeout",
            Self::Internal(_) => "InternalError",
            Self::ServiceUnavailable(_) => "ServiceUnavailable",
            Self::TooManyRequests { .. } | Self::TooManyRequestsBecause { .. } => "TooManyRequests",
            Self::Denied { .. } => "",
        }
    }

    /// The `metav1.Status` object for this error, as a JSON value (for tests and checks; keys
    /// lose their order).
    pub fn status(&self) -> Value {
        serde_json::to_value(self.status_fields()).unwrap_or_default()
    }

    /// The `metav1.Status` body as kube-apiserver writes it: fields in Go's declaration order
    /// (`kind`, `apiVersion`, `metadata`, `status`, `message`, `reason`, `details`, `code`) and a
    /// trailing newline (clients compare these bytes).
    pub fn status_body(&self) -> String {
        let mut body = self.status_json();
        body.push('\n');
        body
    }

    /// The `metav1.Status` in Go's field order, without the trailing newline (a watch `ERROR`
    /// event's object).
    pub fn status_json(&self) -> String {
        // A struct of strings and numbers always encodes.
        serde_json::to_string(&self.status_fields()).unwrap_or_default()
    }

    fn status_fields(&self) -> StatusBody<'_> {
        let mut details = StatusDetails::default();
        match self {
            Self::NotFound { group, resource, name }
            | Self::AlreadyExists { group, resource, name }
            | Self::Conflict { group, resource, name, .. } => {
                details.name = name;
                details.group = group;
                details.kind = resource;
            }
            Self::Invalid { kind, name, causes, .. } => {
                details.name = name;
                details.kind = kind;
                details.causes = causes
                    .iter()
                    .map(|(field, msg)| StatusCause { reason: "FieldValueInvalid", message: msg, field })
                    .collect();
            }
            Self::TooManyRequests { retry_after } => details.retry_after_seconds = *retry_after,
            Self::TooManyRequestsBecause { retry_after, causes, .. } => {
                details.retry_after_seconds = *retry_after;
                details.causes =
                    causes.iter().map(|(reason, message)| StatusCause { reason, message, field: "" }).collect();
            }
            _ => {}
        }
        let reason = match self {
            // The webhook's own reason, left out when it gave none (as kube-apiserver).
            Self::Denied { reason, .. } => reason.as_str(),
            _ => self.reason(),
        };
        StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: self.to_string(),
            reason,
            details: (!details.is_empty()).then_some(details),
            code: self.code().as_u16(),
        }
    }
}

/// `metav1.Status`, its fields in the order Go declares them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails<'a>>,
    code: u16,
}

/// An empty `metadata: {}`.
#[derive(Serialize)]
struct Empty {}

/// `metav1.StatusDetails` (Go's order; empty fields left out as `omitempty` does).
#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusDetails<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    group: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<StatusCause<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    retry_after_seconds: u32,
}

impl StatusDetails<'_> {
    fn is_empty(&self) -> bool {
        self.name.is_empty()
            && self.group.is_empty()
            && self.kind.is_empty()
            && self.causes.is_empty()
            && self.retry_after_seconds == 0
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `metav1.StatusCause`: its `type` is written as `reason`.
#[derive(Serialize)]
struct StatusCause<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    field: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response =
            (self.code(), [(http::header::CONTENT_TYPE, "application/json")], self.status_body()).into_response();
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

/// An error chain on one line, as Go prints a wrapped error.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A resource as kube-apiserver names it in messages: `deployments.apps`, `pods` (the core group
/// has no suffix), `crontabs.stable.example.com`.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() || resource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_are_written_in_kube_apiservers_field_order() {
        let missing = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(
            missing.status_body(),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"deployments.apps \"web\" not found","reason":"NotFound","#,
                r#""details":{"name":"web","group":"apps","kind":"deployments"},"code":404}"#,
                "\n"
            )
        );
        let core = ApiError::not_found("", "pods", "p");
        assert_eq!(
            core.status_body(),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"pods \"p\" not found","reason":"NotFound","details":{"name":"p","kind":"pods"},"code":404}"#,
                "\n"
            )
        );
        let invalid = ApiError::invalid("Service", "s", vec![("spec.ports".into(), "Required value".into())]);
        assert_eq!(
            invalid.status_body(),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"Service \"s\" is invalid: spec.ports: Required value","reason":"Invalid","#,
                r#""details":{"name":"s","kind":"Service","causes":[{"reason":"FieldValueInvalid","#,
                r#""message":"Required value","field":"spec.ports"}]},"code":422}"#,
                "\n"
            )
        );
        // The bytes the official Python client's e2e test compares.
        let exists = ApiError::AlreadyExists {
            group: "apiregistration.k8s.io".into(),
            resource: "apiservices".into(),
            name: "v1alpha1.wardle.k8s.io".into(),
        };
        assert_eq!(
            exists.status_body(),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"apiservices.apiregistration.k8s.io \"v1alpha1.wardle.k8s.io\" already exists","#,
                r#""reason":"AlreadyExists","details":{"name":"v1alpha1.wardle.k8s.io","#,
                r#""group":"apiregistration.k8s.io","kind":"apiservices"},"code":409}"#,
                "\n"
            )
        );
        let busy = ApiError::TooManyRequests { retry_after: 1 };
        assert!(busy.status_body().ends_with("\"details\":{\"retryAfterSeconds\":1},\"code\":429}\n"));
    }

    #[test]
    fn a_webhook_denial_without_a_reason_has_none() {
        let denied = ApiError::Denied { code: 403, reason: String::new(), message: "no".into() };
        assert_eq!(
            denied.status_body(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"no\",\"code\":403}\n"
        );
        assert_eq!(denied.status()["code"], 403);
        assert!(denied.status().get("details").is_none());
    }
}
