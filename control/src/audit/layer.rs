//! The HTTP side of auditing: [`audit`] (the outermost layer) gives every request its audit ID
//! and, with auditing on, a [`RequestAudit`] in its extensions that the authentication filter
//! completes and that writes the request's events; [`request_body`] (inside the filter) keeps
//! the request body when the policy level asks for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;

use super::event::{micro_time, strip_managed_fields, user_json, Event, ObjectRef, ResponseStatus, DECISION, REASON};
use super::policy::{Decision, Level, Stage};
use super::Auditor;
use crate::auth::request_info::{attributes, Attributes};
use crate::auth::UserInfo;

/// The response header carrying the request's audit ID (and the request header a client may
/// set it with).
pub const AUDIT_ID_HEADER: &str = "audit-id";
/// Longest user agent kept (kube-apiserver's limit).
const MAX_USER_AGENT: usize = 1024;
/// Largest response body read for its status or `responseObject`.
const MAX_CAPTURE: u64 = crate::api::http::body::MAX_BODY as u64;

/// What is known of one request while it is handled.
pub struct RequestAudit {
    auditor: Arc<Auditor>,
    id: String,
    received: jiff::Timestamp,
    uri: String,
    /// The request's attributes (the user is filled in on authentication).
    attrs: Attributes,
    source_ips: Vec<String>,
    user_agent: String,
    long_running: bool,
    state: Mutex<AuditState>,
}

#[derive(Default)]
struct AuditState {
    user: Option<UserInfo>,
    impersonated: Option<UserInfo>,
    decision: Option<Decision>,
    annotations: BTreeMap<String, String>,
    object_ref: Option<ObjectRef>,
    request_object: Option<Value>,
}

/// Requests kube-apiserver treats as long-running: watches and streams.
fn long_running(a: &Attributes) -> bool {
    a.verb == "watch"
        || a.verb == "proxy"
        || (a.resource_request && matches!(a.subresource.as_str(), "attach" | "exec" | "proxy" | "log" | "portforward"))
}

/// `X-Forwarded-For` entries, `X-Real-Ip`, then the peer's address (kube-apiserver's order).
fn source_ips(headers: &HeaderMap, peer: Option<SocketAddr>) -> Vec<String> {
    let mut ips: Vec<String> = Vec::new();
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or_default();
    ips.extend(forwarded.split(',').map(str::trim).filter(|s| s.parse::<std::net::IpAddr>().is_ok()).map(String::from));
    if let Some(real) = headers.get("x-real-ip").and_then(|v| v.to_str().ok()).map(str::trim) {
        if real.parse::<std::net::IpAddr>().is_ok() && !ips.iter().any(|ip| ip == real) {
            ips.push(real.to_string());
        }
    }
    if let Some(peer) = peer.map(|p| p.ip().to_canonical().to_string()) {
        if ips.last() != Some(&peer) {
            ips.push(peer);
        }
    }
    ips
}

fn user_agent(headers: &HeaderMap) -> String {
    let ua = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    match ua.char_indices().nth(MAX_USER_AGENT) {
        Some((at, _)) => format!("{}...TRUNCATED", &ua[..at]),
        None => ua.to_string(),
    }
}

/// The client's `Audit-ID` if it is a reasonable one, else a new UUID.
fn audit_id(headers: &HeaderMap) -> String {
    headers
        .get(AUDIT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), String::from)
}

impl RequestAudit {
    fn new(auditor: Arc<Auditor>, id: String, request: &Request) -> Self {
        let uri = request.uri();
        let attrs = attributes(UserInfo::default(), request.method().as_str(), uri.path(), uri.query());
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Self {
            auditor,
            id,
            received: jiff::Timestamp::now(),
            uri: uri.path_and_query().map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string()),
            long_running: long_running(&attrs),
            source_ips: source_ips(request.headers(), peer),
            user_agent: user_agent(request.headers()),
            state: Mutex::new(AuditState { object_ref: ObjectRef::of(&attrs), ..AuditState::default() }),
            attrs,
        }
    }

    /// The request's authenticated user (before impersonation): the policy is evaluated and
    /// the `RequestReceived` event written.
    pub async fn authenticated(&self, user: &UserInfo) {
        let attrs = Attributes { user: user.clone(), ..self.attrs.clone() };
        let decision = self.auditor.policy.evaluate(&attrs, true);
        let logs = decision.logs(Stage::RequestReceived);
        {
            let mut state = self.state.lock();
            state.user = Some(user.clone());
            state.decision = Some(decision);
        }
        if logs {
            let event = self.event(Stage::RequestReceived, None, None);
            self.auditor.sink.send(&event).await;
        }
    }

    /// The user the request acts as (`Impersonate-User`).
    pub fn impersonated(&self, user: &UserInfo) {
        self.state.lock().impersonated = Some(user.clone());
    }

    /// The authorization decision and the authorizer's reason.
    pub fn authorized(&self, allowed: bool, reason: &str) {
        let mut state = self.state.lock();
        state.annotations.insert(DECISION.into(), if allowed { "allow" } else { "forbid" }.into());
        state.annotations.insert(REASON.into(), reason.into());
    }

    /// The policy level (`None` until the user is known).
    pub fn level(&self) -> Level {
        self.state.lock().decision.as_ref().map_or(Level::None, |d| d.level)
    }

    /// Records the request body: the object's name and namespace for the object reference
    /// (a create names its object in the body) and, at `Request` and above, the object itself.
    fn request_body(&self, content_type: Option<&str>, bytes: &[u8]) {
        let level = self.level();
        let is_json = content_type.is_none_or(|c| c.contains("json"));
        let object = if level < Level::Request && is_json {
            // Only the name: no full parse of a JSON body at Metadata.
            serde_json::from_slice::<Head>(bytes).ok().map(|h| serde_json::json!({"metadata": h.metadata}))
        } else {
            // kubectl's protobuf and YAML bodies, and the whole object at Request.
            crate::api::http::body::decode(bytes, content_type).ok()
        };
        let mut state = self.state.lock();
        let omit_managed = state.decision.as_ref().is_some_and(|d| d.omit_managed_fields);
        if let (Some(r), Some(obj)) = (state.object_ref.as_mut(), object.as_ref()) {
            let meta = |k: &str| obj.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).map(String::from);
            if r.name.is_empty() {
                r.name = meta("name").unwrap_or_default();
            }
            if r.namespace.is_empty() {
                r.namespace = meta("namespace").unwrap_or_default();
            }
        }
        if level >= Level::Request {
            state.request_object = object.map(|mut o| {
                if omit_managed {
                    strip_managed_fields(&mut o);
                }
                o
            });
        }
    }

    fn event(&self, stage: Stage, status: Option<ResponseStatus>, response_object: Option<Value>) -> Event {
        let state = self.state.lock();
        let decision = state.decision.clone().unwrap_or_default();
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: decision.level,
            audit_id: self.id.clone(),
            stage,
            request_uri: self.uri.clone(),
            verb: self.attrs.verb.clone(),
            user: user_json(state.user.as_ref()),
            impersonated_user: state.impersonated.as_ref().map(UserInfo::to_json),
            source_ips: self.source_ips.clone(),
            user_agent: self.user_agent.clone(),
            object_ref: state.object_ref.clone(),
            response_status: status,
            request_object: state.request_object.clone(),
            response_object,
            request_received_timestamp: micro_time(self.received),
            stage_timestamp: micro_time(jiff::Timestamp::now()),
            annotations: state.annotations.clone(),
        }
    }

    /// The decision, evaluated now for a request that never got authenticated.
    async fn decision(&self) -> Decision {
        let known = self.state.lock().decision.clone();
        if let Some(d) = known {
            return d;
        }
        let decision = self.auditor.policy.evaluate(&self.attrs, false);
        self.state.lock().decision = Some(decision.clone());
        if decision.logs(Stage::RequestReceived) {
            let event = self.event(Stage::RequestReceived, None, None);
            self.auditor.sink.send(&event).await;
        }
        decision
    }

    /// Writes the response's events: `ResponseComplete` now, or for a long-running request
    /// `ResponseStarted` now and `ResponseComplete` when its body ends.
    async fn finish(self: Arc<Self>, response: Response) -> Response {
        let decision = self.decision().await;
        if decision.level == Level::None {
            return response;
        }
        let code = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let want_object = decision.level == Level::RequestResponse && !self.long_running;
        let small = body.size_hint().upper().is_some_and(|n| n <= MAX_CAPTURE);
        let mut captured = None;
        let body = if (code >= 400 || want_object) && small {
            match axum::body::to_bytes(body, MAX_CAPTURE as usize).await {
                Ok(bytes) => {
                    let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                    captured = decode_response(content_type, &bytes);
                    Body::from(bytes)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a response body for the audit log");
                    Body::empty()
                }
            }
        } else {
            body
        };
        let status = ResponseStatus::new(code, captured.as_ref());
        let response_object = captured.filter(|_| want_object).map(|mut o| {
            if decision.omit_managed_fields {
                strip_managed_fields(&mut o);
            }
            o
        });
        if !self.long_running {
            if decision.logs(Stage::ResponseComplete) {
                let event = self.event(Stage::ResponseComplete, Some(status), response_object);
                self.auditor.sink.send(&event).await;
            }
            return Response::from_parts(parts, body);
        }
        if decision.logs(Stage::ResponseStarted) {
            let event = self.event(Stage::ResponseStarted, Some(status.clone()), None);
            self.auditor.sink.send(&event).await;
        }
        let guard = Completion { audit: decision.logs(Stage::ResponseComplete).then_some(self), status: Some(status) };
        let stream = body.into_data_stream().map(move |chunk| {
            let _keep = &guard;
            chunk
        });
        Response::from_parts(parts, Body::from_stream(stream))
    }

    async fn panicked(&self) {
        if self.decision().await.logs(Stage::Panic) {
            let status = ResponseStatus {
                code: 500,
                status: "Failure".into(),
                reason: "InternalError".into(),
                message: "APIServer panic'd".into(),
                ..ResponseStatus::default()
            };
            let event = self.event(Stage::Panic, Some(status), None);
            self.auditor.sink.send(&event).await;
        }
    }
}

/// Writes a long-running request's `ResponseComplete` when its response body is dropped (the
/// stream ended or the client went away).
struct Completion {
    audit: Option<Arc<RequestAudit>>,
    status: Option<ResponseStatus>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(audit) = self.audit.take() {
            let event = audit.event(Stage::ResponseComplete, self.status.take(), None);
            audit.auditor.sink.send_now(&event);
        }
    }
}

/// A body's `metadata` only (for the object reference of a create at `Metadata` level).
#[derive(serde::Deserialize)]
struct Head {
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(Default, serde::Deserialize, serde::Serialize)]
struct HeadMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

fn decode_response(content_type: Option<&str>, bytes: &[u8]) -> Option<Value> {
    match content_type {
        Some(c) if c.starts_with("application/vnd.kubernetes.protobuf") => {
            crate::api::http::protobuf::decode(bytes).ok()
        }
        Some(c) if c.contains("json") => serde_json::from_slice(bytes).ok(),
        _ => None,
    }
}

fn set_id(response: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert(AUDIT_ID_HEADER, v);
    }
}

/// The outermost layer: the `Audit-Id` header on every response and, with auditing on, the
/// request's events. A panicking handler is logged at stage `Panic`, then the panic continues.
pub async fn audit(State(auditor): State<Option<Arc<Auditor>>>, mut request: Request, next: Next) -> Response {
    let id = audit_id(request.headers());
    let Some(auditor) = auditor else {
        let mut response = next.run(request).await;
        set_id(&mut response, &id);
        return response;
    };
    let ctx = Arc::new(RequestAudit::new(auditor, id.clone(), &request));
    let span = tracing::debug_span!("audit", audit_id = %id);
    request.extensions_mut().insert(Arc::clone(&ctx));
    let handled = tracing::Instrument::instrument(std::panic::AssertUnwindSafe(next.run(request)).catch_unwind(), span);
    let response = match handled.await {
        Ok(response) => response,
        Err(panic) => {
            ctx.panicked().await;
            std::panic::resume_unwind(panic)
        }
    };
    let mut response = ctx.finish(response).await;
    set_id(&mut response, &id);
    response
}

/// Inside the authentication filter: buffers the request body when the policy level needs it
/// (the object at `Request` and above; a create's object name at `Metadata`). Streams
/// (exec, attach, port-forward, proxy) are never buffered.
pub async fn request_body(request: Request, next: Next) -> Response {
    let Some(ctx) = request.extensions().get::<Arc<RequestAudit>>().cloned() else {
        return next.run(request).await;
    };
    let level = ctx.level();
    let method = request.method().as_str();
    let with_body = matches!(method, "POST" | "PUT" | "PATCH");
    let wanted = (level >= Level::Request && with_body)
        || (level == Level::Metadata && method == "POST" && ctx.attrs.resource_request && ctx.attrs.name.is_empty());
    if !wanted || ctx.long_running {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match crate::api::http::body::read(body).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !bytes.is_empty() {
        ctx.request_body(content_type, &bytes);
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// The request's audit state, if auditing is on (for the authentication filter).
pub fn of(request: &Request) -> Option<Arc<RequestAudit>> {
    request.extensions().get::<Arc<RequestAudit>>().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_in_kube_order() {
        let mut h = HeaderMap::new();
        let peer: SocketAddr = "[::ffff:10.0.0.9]:4000".parse().expect("addr");
        assert_eq!(source_ips(&h, Some(peer)), vec!["10.0.0.9"]);
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, bogus, 5.6.7.8"));
        h.insert("x-real-ip", HeaderValue::from_static("5.6.7.8"));
        assert_eq!(source_ips(&h, Some(peer)), vec!["1.2.3.4", "5.6.7.8", "10.0.0.9"]);
    }

    #[test]
    fn audit_ids_and_user_agents() {
        let mut h = HeaderMap::new();
        assert_eq!(uuid::Uuid::parse_str(&audit_id(&h)).expect("a UUID").get_version_num(), 4);
        h.insert(AUDIT_ID_HEADER, HeaderValue::from_static("trace-42"));
        assert_eq!(audit_id(&h), "trace-42", "a client's ID is kept");
        h.insert(AUDIT_ID_HEADER, HeaderValue::from_static("has space"));
        assert_ne!(audit_id(&h), "has space");
        h.insert(http::header::USER_AGENT, HeaderValue::from_str(&"a".repeat(2000)).expect("ua"));
        assert_eq!(user_agent(&h).len(), MAX_USER_AGENT + "...TRUNCATED".len());
    }

    #[test]
    fn long_running_as_kube_apiserver() {
        let a = |m: &str, p: &str, q: Option<&str>| long_running(&attributes(UserInfo::default(), m, p, q));
        assert!(a("GET", "/api/v1/namespaces/a/pods", Some("watch=true")));
        assert!(a("GET", "/api/v1/namespaces/a/pods/p/log", None));
        assert!(a("GET", "/api/v1/namespaces/a/pods/p/exec", None));
        assert!(!a("GET", "/api/v1/namespaces/a/pods/p", None));
        assert!(!a("POST", "/api/v1/namespaces/a/pods", None));
    }
}
