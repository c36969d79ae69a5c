//! The audit policy (`audit.k8s.io/v1 Policy`): which requests are logged and at which level.
//! Rules are evaluated in order and the first match wins, as kube-apiserver's policy checker
//! does; a request no rule matches is not logged (level `None`).

use serde::{Deserialize, Serialize};

use crate::auth::request_info::Attributes;

/// How much of a request is logged (ordered: `None` < `Metadata` < `Request` < `RequestResponse`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Not logged.
    #[default]
    None,
    /// User, verb, object reference, response status, timestamps; no bodies.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, the request body and the response body.
    RequestResponse,
}

/// The point in a request's life an event is written at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// As soon as the request is authenticated, before it is handled.
    RequestReceived,
    /// When a long-running request (watch, log stream, exec) sent its response headers.
    ResponseStarted,
    /// When the response is complete.
    ResponseComplete,
    /// When the handler panicked.
    Panic,
}

/// `GroupResources` of a rule: resources of one API group, optionally by name.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupResources {
    /// The API group (`""` is the core group).
    #[serde(default)]
    pub group: String,
    /// Resources (`pods`, `pods/log`, `pods/*`, `*/status`, `*`); empty means all in the group.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Object names; empty means any.
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// One rule of a policy. Every non-empty list must match for the rule to apply.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    /// The level of the requests this rule matches.
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    /// Namespaces (`""` matches cluster-scoped resources).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Non-resource URL paths; a trailing `*` matches a prefix.
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

/// An `audit.k8s.io/v1 Policy`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Stages no event is written at, for every rule.
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    /// Drop `metadata.managedFields` from logged request and response bodies.
    #[serde(default)]
    pub omit_managed_fields: bool,
}

/// What the policy decided for one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub level: Level,
    pub omit_stages: Vec<Stage>,
    pub omit_managed_fields: bool,
}

impl Decision {
    /// Whether an event is written at `stage`.
    pub fn logs(&self, stage: Stage) -> bool {
        self.level > Level::None && !self.omit_stages.contains(&stage)
    }
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading audit policy file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("audit policy {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The policy used when `--audit-log-path` is given without `--audit-policy-file`.
pub const DEFAULT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
# One event per request, when it completes (watches also when they start).
omitStages: [RequestReceived]
rules:
# Probes and version checks are noise.
- level: None
  nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version", "/version/"]
# Kubelet heartbeats (Lease renewals, node status) are noise.
- level: None
  userGroups: ["system:nodes"]
  verbs: ["get", "update", "patch"]
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
  - group: ""
    resources: ["nodes", "nodes/status"]
# Everything else: who did what to which object, never a body (Secrets, tokens, ConfigMaps).
- level: Metadata
"#;

impl Policy {
    /// The built-in [`DEFAULT_POLICY`].
    pub fn default_policy() -> Self {
        // The constant is tested to parse; an empty policy would log nothing rather than fail.
        Self::parse(DEFAULT_POLICY, "<default>").unwrap_or_default()
    }

    /// Reads and validates a policy file (YAML or JSON).
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: display.clone(), source })?;
        Self::parse(&text, &display)
    }

    /// Parses and validates a policy document (YAML or JSON); `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid { path: path.to_string(), message };
        let policy: Policy = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        policy.validate().map_err(invalid)?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), String> {
        if self.api_version != "audit.k8s.io/v1" {
            return Err(format!("apiVersion must be audit.k8s.io/v1, not {:?}", self.api_version));
        }
        if self.kind != "Policy" {
            return Err(format!("kind must be Policy, not {:?}", self.kind));
        }
        if self.rules.is_empty() {
            return Err("the policy has no rules".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |m: &str| format!("rules[{i}]: {m}");
            if !rule.non_resource_urls.is_empty() && (!rule.resources.is_empty() || !rule.namespaces.is_empty()) {
                return Err(at("rules cannot apply to both regular resources and non-resource URLs"));
            }
            for url in &rule.non_resource_urls {
                let star = url.find('*');
                if !(url.starts_with('/') || url == "*") || star.is_some_and(|p| p + 1 != url.len()) {
                    return Err(at(&format!("nonResourceURLs {url:?}: must start with '/' and may only end with '*'")));
                }
            }
            for gr in &rule.resources {
                if gr.group.contains('/') {
                    return Err(at(&format!("group {:?} must not contain '/'", gr.group)));
                }
                for r in &gr.resources {
                    if r.is_empty() || r.split('/').count() > 2 {
                        return Err(at(&format!("resource {r:?} must be `res`, `res/sub`, `res/*`, `*/sub` or `*`")));
                    }
                    if !gr.resource_names.is_empty() && r.contains('*') {
                        return Err(at(&format!("resource {r:?}: resourceNames cannot be used with a wildcard")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The level and stages for a request with `attrs` (the authenticated user, before
    /// impersonation); `user_known` is false for a request that failed authentication.
    pub fn evaluate(&self, attrs: &Attributes, user_known: bool) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| rule_matches(r, attrs, user_known)) else {
            return Decision { level: Level::None, omit_stages: self.omit_stages.clone(), omit_managed_fields: false };
        };
        let mut omit_stages = self.omit_stages.clone();
        omit_stages.extend(rule.omit_stages.iter().filter(|s| !self.omit_stages.contains(s)));
        Decision {
            level: rule.level,
            omit_stages,
            omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
        }
    }
}

fn has(list: &[String], s: &str) -> bool {
    list.iter().any(|x| x == s)
}

/// Whether `rule` applies to a request (kube-apiserver's `ruleMatches`).
pub fn rule_matches(rule: &PolicyRule, attrs: &Attributes, user_known: bool) -> bool {
    if !rule.users.is_empty() && (!user_known || !has(&rule.users, &attrs.user.name)) {
        return false;
    }
    if !rule.user_groups.is_empty() && (!user_known || !attrs.user.groups.iter().any(|g| has(&rule.user_groups, g))) {
        return false;
    }
    if !rule.verbs.is_empty() && !has(&rule.verbs, &attrs.verb) {
        return false;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        return matches_resource(rule, attrs);
    }
    if !rule.non_resource_urls.is_empty() {
        return !attrs.resource_request && rule.non_resource_urls.iter().any(|spec| path_matches(&attrs.path, spec));
    }
    true
}

fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*" || spec == path || spec.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
}

fn matches_resource(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !attrs.resource_request {
        return false;
    }
    if !rule.namespaces.is_empty() && !has(&rule.namespaces, &attrs.namespace) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    let (resource, sub) = (attrs.resource.as_str(), attrs.subresource.as_str());
    let combined = if sub.is_empty() { resource.to_string() } else { format!("{resource}/{sub}") };
    rule.resources.iter().filter(|gr| gr.group == attrs.api_group).any(|gr| {
        if gr.resources.is_empty() {
            return true;
        }
        if !gr.resource_names.is_empty() && !has(&gr.resource_names, &attrs.name) {
            return false;
        }
        gr.resources.iter().any(|res| {
            res == "*"
                || *res == combined
                || (!sub.is_empty() && res.strip_prefix("*/") == Some(sub))
                || res.strip_suffix("/*") == Some(resource)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::request_info::attributes;
    use crate::auth::UserInfo;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), ..UserInfo::default() }
    }

    fn attrs(u: &UserInfo, method: &str, path: &str) -> Attributes {
        let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        attributes(u.clone(), method, path, query)
    }

    fn level(policy: &Policy, u: &UserInfo, method: &str, path: &str) -> Level {
        policy.evaluate(&attrs(u, method, path), true).level
    }

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: RequestResponse
  users: ["alice"]
  resources: [{group: "", resources: ["pods/log"]}]
- level: Request
  verbs: ["create", "update"]
  resources: [{group: "", resources: ["configmaps"], resourceNames: ["settings"]}]
- level: Metadata
  resources: [{group: "", resources: ["secrets", "pods/*"]}]
  omitStages: [ResponseStarted]
- level: Request
  resources: [{group: "apps", resources: ["*/scale"]}]
- level: None
  namespaces: ["kube-system"]
- level: Request
  userGroups: ["team-a"]
- level: Metadata
  omitManagedFields: true
"#;

    #[test]
    fn first_matching_rule_wins() {
        let p = Policy::parse(POLICY, "t").expect("valid");
        let alice = user("alice", &["system:authenticated"]);
        let bob = user("bob", &["team-a", "system:authenticated"]);
        assert_eq!(level(&p, &alice, "GET", "/healthz"), Level::None);
        assert_eq!(level(&p, &alice, "GET", "/healthz/etcd"), Level::None, "trailing * is a prefix");
        assert_eq!(level(&p, &alice, "GET", "/version/x"), Level::Metadata, "no * means exact");
        assert_eq!(level(&p, &alice, "GET", "/api/v1/namespaces/a/pods/web/log"), Level::RequestResponse);
        assert_eq!(level(&p, &bob, "GET", "/api/v1/namespaces/a/pods/web/log"), Level::Metadata, "pods/* for bob");
        assert_eq!(level(&p, &alice, "GET", "/api/v1/namespaces/a/pods/web"), Level::Metadata, "pods/* not pods");
        assert_eq!(level(&p, &alice, "PUT", "/api/v1/namespaces/a/configmaps/settings"), Level::Request);
        assert_eq!(level(&p, &alice, "PUT", "/api/v1/namespaces/a/configmaps/other"), Level::Metadata);
        assert_eq!(level(&p, &alice, "GET", "/api/v1/namespaces/a/configmaps/settings"), Level::Metadata, "verb");
        assert_eq!(level(&p, &bob, "GET", "/api/v1/namespaces/a/secrets/s"), Level::Metadata, "before team-a");
        assert_eq!(level(&p, &alice, "PUT", "/apis/apps/v1/namespaces/a/deployments/w/scale"), Level::Request);
        assert_eq!(level(&p, &alice, "PUT", "/apis/apps/v1/namespaces/a/deployments/w"), Level::Metadata);
        assert_eq!(level(&p, &alice, "GET", "/api/v1/namespaces/kube-system/services"), Level::None);
        assert_eq!(level(&p, &bob, "GET", "/api/v1/namespaces/b/services"), Level::Request);
        assert_eq!(level(&p, &bob, "GET", "/apis"), Level::Request, "userGroups alone match non-resource URLs");
        let d = p.evaluate(&attrs(&alice, "GET", "/api/v1/namespaces/a/secrets/s"), true);
        assert_eq!(d.omit_stages, vec![Stage::RequestReceived, Stage::ResponseStarted], "policy and rule stages");
        assert!(!d.logs(Stage::ResponseStarted) && d.logs(Stage::ResponseComplete));
        assert!(p.evaluate(&attrs(&alice, "GET", "/api/v1/nodes"), true).omit_managed_fields);
    }

    #[test]
    fn unauthenticated_requests_match_no_user_rule() {
        let p = Policy::parse(POLICY, "t").expect("valid");
        let a = attrs(&user("bob", &["team-a"]), "GET", "/api/v1/namespaces/b/services");
        assert_eq!(p.evaluate(&a, false).level, Level::Metadata, "the userGroups rule needs a user");
    }

    #[test]
    fn resource_rules_do_not_match_non_resource_urls_and_vice_versa() {
        let rule = PolicyRule {
            level: Level::Request,
            resources: vec![GroupResources { resources: vec!["*".into()], ..Default::default() }],
            ..Default::default()
        };
        let u = user("u", &[]);
        assert!(rule_matches(&rule, &attrs(&u, "GET", "/api/v1/pods"), true));
        assert!(!rule_matches(&rule, &attrs(&u, "GET", "/apis/apps/v1/deployments"), true), "group differs");
        assert!(!rule_matches(&rule, &attrs(&u, "GET", "/healthz"), true));
        let urls = PolicyRule { level: Level::Request, non_resource_urls: vec!["*".into()], ..Default::default() };
        assert!(rule_matches(&urls, &attrs(&u, "GET", "/metrics"), true));
        assert!(!rule_matches(&urls, &attrs(&u, "GET", "/api/v1/pods"), true));
        let cluster = PolicyRule { level: Level::Request, namespaces: vec![String::new()], ..Default::default() };
        assert!(rule_matches(&cluster, &attrs(&u, "GET", "/api/v1/nodes"), true), "\"\" is cluster scope");
        assert!(!rule_matches(&cluster, &attrs(&u, "GET", "/api/v1/namespaces/a/pods"), true));
    }

    #[test]
    fn default_policy_parses_and_skips_noise() {
        let p = Policy::default_policy();
        assert_eq!(p.rules.len(), 3);
        let admin = user("admin", &["system:masters"]);
        assert_eq!(level(&p, &admin, "GET", "/readyz?verbose"), Level::None);
        assert_eq!(level(&p, &admin, "GET", "/api/v1/namespaces/a/secrets/s"), Level::Metadata);
        assert_eq!(level(&p, &admin, "POST", "/api/v1/namespaces/a/serviceaccounts/ci/token"), Level::Metadata);
        let node = user("system:node:n1", &["system:nodes", "system:authenticated"]);
        assert_eq!(
            level(&p, &node, "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"),
            Level::None
        );
        assert_eq!(level(&p, &node, "PATCH", "/api/v1/nodes/n1/status"), Level::None);
        assert_eq!(level(&p, &node, "PATCH", "/api/v1/namespaces/a/pods/p/status"), Level::Metadata);
        assert_eq!(level(&p, &node, "DELETE", "/api/v1/nodes/n1"), Level::Metadata);
    }

    #[test]
    fn bad_policies_are_refused_with_a_reason() {
        let bad = |text: &str| Policy::parse(text, "p.yaml").expect_err(text).to_string();
        assert!(bad("kind: Policy\nrules: [{level: None}]").contains("apiVersion"));
        assert!(bad("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []").contains("no rules"));
        assert!(bad("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]").contains("p.yaml"));
        assert!(bad("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, resource: [x]}]")
            .contains("unknown field"));
        assert!(bad("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [/a*b]}]")
            .contains("nonResourceURLs"));
        assert!(bad(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [/a], namespaces: [x]}]"
        )
        .contains("both"));
        assert!(bad("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, omitStages: [Later]}]")
            .contains("p.yaml"));
        let json = r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","rules":[{"level":"Metadata"}]}"#;
        assert_eq!(Policy::parse(json, "p.json").expect("JSON is accepted").rules.len(), 1);
    }
}
