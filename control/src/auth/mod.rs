//! Who is asking and what they may do: authentication (admin token, client certificates,
//! ServiceAccount JWTs), RBAC authorization over an index of bindings, Kubernetes' bootstrap
//! policy, impersonation, and the review APIs (`TokenReview`, `SelfSubjectReview`,
//! `SubjectAccessReview`, `SelfSubjectAccessReview`, `SelfSubjectRulesReview`).
//!
//! Invariant: every request is authenticated and authorized in [`filter::authorize_request`]
//! before it reaches a handler or the registry.

pub mod authn;
pub mod authorizer;
pub mod bootstrap_policy;
pub mod bootstrap_token;
pub mod client_cert;
pub mod escalation;
pub mod filter;
pub mod node_authorizer;
pub mod node_graph;
pub mod node_restriction;
pub mod rbac;
pub mod request_info;
pub mod reviews;
pub mod service_account;

use std::collections::BTreeMap;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The group that bypasses authorization.
pub const MASTERS: &str = "system:masters";

/// An authenticated identity (`user.Info` in Kubernetes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user.
    pub fn anonymous() -> Self {
        Self { name: "system:anonymous".into(), groups: vec![UNAUTHENTICATED.into()], ..Self::default() }
    }

    /// Whether the user is in `system:masters` (authorization is skipped).
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// The user as `authentication.k8s.io/v1 UserInfo` JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = serde_json::json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }

    /// Parses `authentication.k8s.io/v1 UserInfo`-shaped fields (`user`/`username`, `groups`,
    /// `uid`, `extra`) from a review spec.
    pub fn from_spec(spec: &serde_json::Value, name_field: &str) -> Self {
        let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
            v.and_then(serde_json::Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let extra = spec
            .get("extra")
            .and_then(serde_json::Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(Some(v)))).collect())
            .unwrap_or_default();
        Self {
            name: spec.get(name_field).and_then(serde_json::Value::as_str).unwrap_or_default().to_string(),
            uid: spec.get("uid").and_then(serde_json::Value::as_str).unwrap_or_default().to_string(),
            groups: strings(spec.get("groups")),
            extra,
        }
    }
}

/// The ServiceAccount user name of `namespace/name`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Splits `system:serviceaccount:<ns>:<name>` into `(ns, name)`.
pub fn parse_service_account_user(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// The groups Kubernetes gives a ServiceAccount user.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}"), AUTHENTICATED.into()]
}
