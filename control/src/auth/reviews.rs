//! The authentication and authorization APIs: `TokenReview`, `SelfSubjectReview`
//! (`kubectl auth whoami`), `SubjectAccessReview`, `SelfSubjectAccessReview`,
//! `LocalSubjectAccessReview` (`kubectl auth can-i`), `SelfSubjectRulesReview`
//! (`kubectl auth can-i --list`), the ServiceAccount `token` subresource (TokenRequest,
//! `kubectl create token`) and the issuer discovery documents.

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::filter::AuthState;
use super::request_info::Attributes;
use super::service_account::{Claims, KubernetesClaims, ObjectRef, ISSUER};
use super::UserInfo;
use crate::api::error::{ApiError, ApiResult};
use crate::api::http::negotiate::{self, Negotiated};
use crate::api::http::respond::{self, json_response};

/// Routes of this module (merged into the API router; the auth filter runs first).
pub fn router(state: AuthState) -> Router {
    Router::new()
        .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
        .route("/apis/authentication.k8s.io/v1/selfsubjectreviews", post(self_subject_review))
        .route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", post(self_subject_access_review))
        .route("/apis/authorization.k8s.io/v1/subjectaccessreviews", post(subject_access_review))
        .route(
            "/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews",
            post(local_subject_access_review),
        )
        .route("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", post(self_subject_rules_review))
        .route("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", post(token_request))
        .route("/.well-known/openid-configuration", get(openid_configuration))
        .route("/openid/v1/jwks", get(jwks))
        .with_state(state)
}

async fn read(headers: &HeaderMap, body: Body) -> ApiResult<Value> {
    let bytes = crate::api::http::body::read(body).await?;
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    crate::api::http::body::decode(&bytes, content_type)
}

/// A review's answer (or error) in the media type the client negotiated: every review kind and
/// TokenRequest has a protobuf form.
fn respond(headers: &HeaderMap, result: ApiResult<Value>) -> Response {
    let negotiated = negotiate::negotiate(headers, true).unwrap_or(Negotiated::JSON);
    match result {
        Ok(v) => respond::send(negotiated, StatusCode::CREATED, &v, &[]),
        Err(e) => respond::error(negotiated.media, e),
    }
}

/// The review object echoed back with `status` set.
fn answer(mut review: Value, kind: &str, group_version: &str, status: Value) -> Value {
    if !review.is_object() {
        review = json!({});
    }
    review["kind"] = json!(kind);
    review["apiVersion"] = json!(group_version);
    if review.get("metadata").is_none_or(|m| !m.is_object()) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = status;
    review
}

async fn token_review(State(state): State<AuthState>, headers: HeaderMap, body: Body) -> Response {
    respond(
        &headers,
        async {
            let review = read(&headers, body).await?;
            let token = review.pointer("/spec/token").and_then(Value::as_str).unwrap_or_default().to_string();
            let audiences: Option<Vec<String>> = review
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .filter(|a: &Vec<String>| !a.is_empty());
            let status = match state.authn.token(&token, audiences.as_deref()).await {
                Ok((user, audiences)) => json!({"authenticated": true, "user": user.to_json(), "audiences": audiences}),
                Err(reason) => json!({"authenticated": false, "user": {}, "error": reason}),
            };
            Ok::<Value, ApiError>(answer(review, "TokenReview", "authentication.k8s.io/v1", status))
        }
        .await,
    )
}

async fn self_subject_review(Extension(user): Extension<UserInfo>, headers: HeaderMap) -> Response {
    let review = json!({"metadata": {}});
    respond(
        &headers,
        Ok::<Value, ApiError>(answer(
            review,
            "SelfSubjectReview",
            "authentication.k8s.io/v1",
            json!({"userInfo": user.to_json()}),
        )),
    )
}

/// The attributes a `SubjectAccessReviewSpec` asks about, for `user`.
fn review_attributes(spec: &Value, user: UserInfo, namespace_override: Option<&str>) -> ApiResult<Attributes> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes {
            user,
            verb: s(r, "verb"),
            resource_request: true,
            api_group: s(r, "group"),
            api_version: s(r, "version"),
            namespace: namespace_override.map(String::from).unwrap_or_else(|| s(r, "namespace")),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            name: s(r, "name"),
            path: String::new(),
            // kube 1.31+: `fieldSelector.rawSelector` (the parsed `requirements` form is not read).
            field_selector: r.get("fieldSelector").map(|f| s(f, "rawSelector")).unwrap_or_default(),
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes { user, verb: s(n, "verb"), path: s(n, "path"), ..Attributes::default() });
    }
    Err(ApiError::invalid(
        "SubjectAccessReview",
        "",
        vec![(
            "spec.resourceAttributes".into(),
            "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
        )],
    ))
}

async fn decide(state: &AuthState, attrs: &Attributes) -> Value {
    if state.authz.authorize(attrs).await {
        json!({"allowed": true})
    } else {
        json!({"allowed": false})
    }
}

async fn self_subject_access_review(
    State(state): State<AuthState>,
    Extension(user): Extension<UserInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        &headers,
        async {
            let review = read(&headers, body).await?;
            let attrs = review_attributes(review.get("spec").unwrap_or(&Value::Null), user, None)?;
            let status = decide(&state, &attrs).await;
            Ok::<Value, ApiError>(answer(review, "SelfSubjectAccessReview", "authorization.k8s.io/v1", status))
        }
        .await,
    )
}

async fn subject_access_review(State(state): State<AuthState>, headers: HeaderMap, body: Body) -> Response {
    access_review_of_a_subject(&state, headers, body, None).await
}

async fn local_subject_access_review(
    State(state): State<AuthState>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    access_review_of_a_subject(&state, headers, body, Some(&namespace)).await
}

/// A (Local)SubjectAccessReview: may `spec.user` do this (in `namespace`, for the local kind)?
async fn access_review_of_a_subject(
    state: &AuthState,
    headers: HeaderMap,
    body: Body,
    namespace: Option<&str>,
) -> Response {
    let kind = if namespace.is_some() { "LocalSubjectAccessReview" } else { "SubjectAccessReview" };
    respond(
        &headers,
        async {
            let review = read(&headers, body).await?;
            let spec = review.get("spec").cloned().unwrap_or(Value::Null);
            let subject = UserInfo::from_spec(&spec, "user");
            let attrs = review_attributes(&spec, subject, namespace)?;
            let status = decide(state, &attrs).await;
            Ok::<Value, ApiError>(answer(review, kind, "authorization.k8s.io/v1", status))
        }
        .await,
    )
}

async fn self_subject_rules_review(
    State(state): State<AuthState>,
    Extension(user): Extension<UserInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        &headers,
        async {
            let review = read(&headers, body).await?;
            let namespace = review.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
            let index = state.authz.index();
            let mut resource_rules = Vec::new();
            let mut non_resource_rules = Vec::new();
            for rule in index.rules_for(&user, &namespace) {
                if !rule.non_resource_urls.is_empty() {
                    non_resource_rules.push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
                }
                if !rule.resources.is_empty() {
                    let mut r = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups, "resources": rule.resources});
                    if !rule.resource_names.is_empty() {
                        r["resourceNames"] = json!(rule.resource_names);
                    }
                    resource_rules.push(r);
                }
            }
            let status =
                json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
            Ok::<Value, ApiError>(answer(review, "SelfSubjectRulesReview", "authorization.k8s.io/v1", status))
        }
        .await,
    )
}

const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;

async fn token_request(
    State(state): State<AuthState>,
    Path((namespace, name)): Path<(String, String)>,
    Extension(user): Extension<UserInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(&headers, issue_token(&state, &user, &namespace, &name, &headers, body).await)
}

async fn issue_token(
    state: &AuthState,
    user: &UserInfo,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Value> {
    let request = read(headers, body).await?;
    let invalid = |field: &str, msg: String| ApiError::invalid("TokenRequest", name, vec![(field.into(), msg)]);
    let spec = request.get("spec").filter(|s| s.is_object()).cloned().unwrap_or(json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid("spec.expirationSeconds", format!("Invalid value: {v}: must be an integer")))?,
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > MAX_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| state.authn.issuer.api_audiences.clone());
    let registry = &state.registry;
    let sa = registry.get(registry.resource("", "ServiceAccount")?, Some(namespace), name).await?;
    let uid_of = |o: &Value| o.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut claims_k8s = KubernetesClaims {
        namespace: namespace.to_string(),
        serviceaccount: ObjectRef { name: name.to_string(), uid: uid_of(&sa) },
        ..KubernetesClaims::default()
    };
    let node = super::node_restriction::node_user(user);
    // NodeRestriction: a kubelet asks tokens only for a pod of its own, named with its uid.
    let node_forbidden =
        |reason: &str| ApiError::Forbidden(format!("serviceaccounts \"{name}\" is forbidden: {reason}"));
    if node.is_some() {
        let bound = spec.get("boundObjectRef");
        if bound.and_then(|b| b.get("kind")).and_then(Value::as_str) != Some("Pod") {
            return Err(node_forbidden("node requested token not bound to a pod"));
        }
        if bound.and_then(|b| b.get("uid")).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(node_forbidden("node requested token with a pod binding without a uid"));
        }
    }
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or_default();
        let bound_name = bound.get("name").and_then(Value::as_str).unwrap_or_default();
        if !matches!(kind, "Pod" | "Secret") {
            return Err(invalid(
                "spec.boundObjectRef.kind",
                format!("Unsupported value: {kind:?}: supported values: \"Pod\", \"Secret\""),
            ));
        }
        let obj = registry.get(registry.resource("", kind)?, Some(namespace), bound_name).await?;
        if let Some(node) = node {
            if crate::api::object::str_at(&obj, &["spec", "nodeName"]) != Some(node) {
                return Err(node_forbidden("node requested token bound to a pod scheduled on a different node"));
            }
        }
        let uid = uid_of(&obj);
        if let Some(want) = bound.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
            if want != uid {
                return Err(ApiError::Conflict {
                    group: String::new(),
                    resource: kind.to_ascii_lowercase() + "s",
                    name: bound_name.into(),
                    reason: format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
                });
            }
        }
        let r = ObjectRef { name: bound_name.into(), uid };
        if kind == "Pod" {
            claims_k8s.pod = Some(r);
        } else {
            claims_k8s.secret = Some(r);
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let exp = now.checked_add(expiration).ok_or_else(|| invalid("spec.expirationSeconds", "too large".into()))?;
    let claims = Claims {
        iss: ISSUER.into(),
        sub: super::service_account_user(namespace, name),
        aud: audiences.clone(),
        exp,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: claims_k8s,
    };
    let token = state.authn.issuer.sign(&claims).map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
    let expires = jiff::Timestamp::from_second(exp).map(|t| t.to_string()).unwrap_or_default();
    let mut spec_out = spec.clone();
    spec_out["audiences"] = json!(audiences);
    spec_out["expirationSeconds"] = json!(expiration);
    if spec_out.get("boundObjectRef").is_none() {
        spec_out["boundObjectRef"] = Value::Null;
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": crate::api::object::now_rfc3339()},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

async fn openid_configuration(State(state): State<AuthState>) -> Response {
    json_response(StatusCode::OK, &state.authn.issuer.discovery(&state.url), &[])
}

async fn jwks(State(state): State<AuthState>) -> Response {
    let mut response = json_response(StatusCode::OK, &state.authn.issuer.jwks(), &[]);
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/jwk-set+json"));
    response
}
