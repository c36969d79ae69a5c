//! The request filter every API request passes: authentication, impersonation, RBAC
//! authorization and, for RBAC writes, escalation prevention. Only an authorized request
//! reaches the router's handlers (and through them the registry).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::authn::{Authenticator, PeerIdentity};
use super::authorizer::Authorizer;
use super::node_authorizer::{self, Decision};
use super::request_info::{attributes, Attributes};
use super::{escalation, parse_service_account_user, service_account_groups, UserInfo, AUTHENTICATED, UNAUTHENTICATED};
use crate::api::error::ApiError;
use crate::api::registry::Registry;

/// What the filter and the review endpoints share.
#[derive(Clone)]
pub struct AuthState {
    pub authn: Arc<Authenticator>,
    pub authz: Arc<Authorizer>,
    pub registry: Arc<Registry>,
    /// The URL clients reach the server on (for the issuer discovery document).
    pub url: String,
}

/// Paths an anonymous request may reach (RBAC still decides): health and version, as a
/// kube-apiserver configured to allow anonymous requests only on health endpoints.
fn anonymous_allowed(path: &str) -> bool {
    matches!(path, "/cacerts" | "/healthz" | "/livez" | "/readyz" | "/version" | "/version/")
}

/// The filter (an axum middleware).
pub async fn authorize_request(State(state): State<AuthState>, mut request: Request, next: Next) -> Response {
    let audit = crate::audit::layer::of(&request);
    let peer = request.extensions().get::<PeerIdentity>().cloned();
    let user = match state.authn.authenticate(request.headers(), peer.as_ref()).await {
        Ok(Some(user)) => user,
        Ok(None) if anonymous_allowed(request.uri().path()) => UserInfo::anonymous(),
        Ok(None) | Err(_) => return ApiError::Unauthorized.into_response(),
    };
    if let Some(audit) = &audit {
        audit.authenticated(&user).await;
    }
    let user = match impersonate(&state, user, request.headers()).await {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    if let Some(audit) = audit.as_ref().filter(|_| request.headers().contains_key("impersonate-user")) {
        audit.impersonated(&user);
    }
    let method = request.method().clone();
    let attrs = attributes(user.clone(), method.as_str(), request.uri().path(), request.uri().query());
    let span =
        tracing::debug_span!("authorize", user = %attrs.user.name, verb = %attrs.verb, resource = %attrs.resource);
    // A node's create of its Node or Lease is decided on the name in the body (NodeRestriction).
    let mut created = None;
    if node_authorizer::needs_created_name(&attrs) {
        let (parts, body) = request.into_parts();
        let bytes = match crate::api::http::body::read(body).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        created = crate::api::http::body::decode(&bytes, content_type)
            .ok()
            .and_then(|v| v.pointer("/metadata/name").and_then(Value::as_str).map(String::from));
        request = Request::from_parts(parts, Body::from(bytes));
    }
    let decision = tracing::Instrument::instrument(state.authz.decide(&attrs, created.as_deref()), span).await;
    if let Some(audit) = &audit {
        // As kube-apiserver: `system:masters` is allowed by the privileged-group authorizer,
        // which gives no reason, and the Node authorizer gives none either; RBAC names the
        // binding that allowed, and gives no reason for a denial.
        let reason = match &decision {
            Decision::Deny(reason) => reason.clone(),
            Decision::Allow if !attrs.user.is_master() => state.authz.index().allowed_by(&attrs).unwrap_or_default(),
            _ => String::new(),
        };
        audit.authorized(decision == Decision::Allow, &reason);
    }
    if let Decision::Deny(reason) = decision {
        tracing::debug!(user = %attrs.user.name, verb = %attrs.verb, resource = %attrs.resource, %reason, "forbidden");
        let mut message = super::rbac::forbidden_message(&attrs);
        if !reason.is_empty() {
            message = format!("{message}: {reason}");
        }
        return ApiError::Forbidden(message).into_response();
    }
    if is_policy_write(&attrs) && !user.is_master() {
        let (parts, body) = request.into_parts();
        let bytes = match crate::api::http::body::read(body).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        if let Err(e) = check_escalation(&state, &attrs, &parts.headers, &bytes).await {
            return e.into_response();
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

fn is_policy_write(a: &Attributes) -> bool {
    a.resource_request
        && a.api_group == "rbac.authorization.k8s.io"
        && a.subresource.is_empty()
        && matches!(a.resource.as_str(), "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings")
        && matches!(a.verb.as_str(), "create" | "update" | "patch")
}

/// The object a Role/binding write would store, for the escalation check.
async fn check_escalation(
    state: &AuthState,
    a: &Attributes,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(), ApiError> {
    use crate::api::http::body::{decode, PatchKind};
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let sent = decode(bytes, content_type)?;
    let object = if a.verb == "patch" {
        let kind = PatchKind::from_content_type(content_type)?;
        let ri = state
            .registry
            .resources
            .by_plural(&a.api_group, &a.api_version, &a.resource)
            .ok_or(ApiError::NoSuchResource)?;
        let ns = (!a.namespace.is_empty()).then_some(a.namespace.as_str());
        match (kind, state.registry.get(ri, ns, &a.name).await) {
            (PatchKind::Apply, _) | (_, Err(_)) => sent,
            (kind, Ok(current)) => crate::api::http::handlers::apply_patch(ri, kind, &current, &sent)?,
        }
    } else {
        sent
    };
    let mut object: Value = object;
    if !object.is_object() {
        return Err(ApiError::BadRequest("the request body must be an object".into()));
    }
    if object.pointer("/metadata/name").is_none() && !a.name.is_empty() {
        if let Some(meta) = object.as_object_mut().map(|m| m.entry("metadata").or_insert_with(|| serde_json::json!({})))
        {
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("name".into(), Value::String(a.name.clone()));
            }
        }
    }
    let index = state.authz.index();
    escalation::check(&index, &a.user, &a.resource, &a.namespace, &object).map_err(ApiError::Forbidden)
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(String::from).collect()
}

/// Applies `Impersonate-*` headers: each impersonated attribute needs the `impersonate` verb.
async fn impersonate(state: &AuthState, user: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let name = headers.get("impersonate-user").and_then(|v| v.to_str().ok()).map(String::from);
    let groups = header_values(headers, "impersonate-group");
    let uid = headers.get("impersonate-uid").and_then(|v| v.to_str().ok()).map(String::from);
    let extra: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v): (&HeaderName, _)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((percent_decode(key), v.to_str().ok()?.to_string()))
        })
        .collect();
    let Some(name) = name else {
        if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
            return Err(ApiError::BadRequest(
                "requested impersonation of groups, uid or extra without impersonating a user".into(),
            ));
        }
        return Ok(user);
    };
    let check = |resource: &str, group: &str, namespace: &str, target: &str, sub: &str| Attributes {
        user: user.clone(),
        verb: "impersonate".into(),
        resource_request: true,
        api_group: group.into(),
        namespace: namespace.into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: target.into(),
        ..Attributes::default()
    };
    let mut checks = Vec::new();
    let mut new_groups = groups.clone();
    match parse_service_account_user(&name) {
        Some((ns, sa)) => {
            checks.push(check("serviceaccounts", "", ns, sa, ""));
            if groups.is_empty() {
                new_groups = service_account_groups(ns);
            }
        }
        None => checks.push(check("users", "", "", &name, "")),
    }
    for g in &groups {
        checks.push(check("groups", "", "", g, ""));
    }
    for (k, v) in &extra {
        checks.push(check("userextras", "authentication.k8s.io", "", v, k));
    }
    if let Some(uid) = &uid {
        checks.push(check("uids", "authentication.k8s.io", "", uid, ""));
    }
    for attrs in &checks {
        if !state.authz.authorize(attrs).await {
            return Err(ApiError::Forbidden(super::rbac::forbidden_message(attrs)));
        }
    }
    let fixed = if name == "system:anonymous" { UNAUTHENTICATED } else { AUTHENTICATED };
    if !new_groups.iter().any(|g| g == fixed) {
        new_groups.push(fixed.into());
    }
    let mut extras = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (k, v) in extra {
        extras.entry(k).or_default().push(v);
    }
    Ok(UserInfo { name, uid: uid.unwrap_or_default(), groups: new_groups, extra: extras })
}

/// An `Impersonate-Extra-<key>` header's key, `%XX`-escaped as HTTP header names must be.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The user the filter authenticated (review handlers read it from the request).
pub fn user_of(request_user: Option<&UserInfo>) -> UserInfo {
    request_user.cloned().unwrap_or_else(UserInfo::anonymous)
}

#[cfg(test)]
mod tests {
    #[test]
    fn impersonated_extra_keys_are_unescaped() {
        assert_eq!(super::percent_decode("scopes.example.com%2Fteam"), "scopes.example.com/team");
        assert_eq!(super::percent_decode("plain+key"), "plain+key", "a header key keeps its +");
        assert_eq!(super::percent_decode("bad%zz"), "bad%zz");
    }
}
