//! RBAC: rule matching, an index from subjects to the rules bound to them, and the authorizer
//! deciding on it. The index is rebuilt from the Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding objects whenever one changes (fed by the watch cache, see
//! [`crate::auth::filter`]); a decision is a few hash lookups and rule scans for the user's own
//! bindings, never a store read.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::request_info::Attributes;
use super::UserInfo;
use crate::api::selector::{from_label_selector, LabelSelector};

/// One `PolicyRule`, owned and ready to match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

impl Rule {
    /// Parses one `rbac.authorization.k8s.io/v1 PolicyRule`.
    pub fn from_json(v: &Value) -> Self {
        Self {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    /// The rule as `PolicyRule` JSON (empty lists left out).
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("verbs", &self.verbs),
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() || k == "verbs" {
                m.insert(k.into(), serde_json::json!(v));
            }
        }
        Value::Object(m)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if subresource.is_empty() {
                return r == resource;
            }
            let (res, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
            (res == resource || res == "*") && sub == subresource
        })
    }

    fn name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || (!name.is_empty() && self.resource_names.iter().any(|n| n == name))
    }

    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls
            .iter()
            .any(|u| u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)))
    }

    /// Whether the rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verb_matches(&a.verb) {
            return false;
        }
        if a.resource_request {
            self.group_matches(&a.api_group)
                && self.resource_matches(&a.resource, &a.subresource)
                && self.name_matches(&a.name)
        } else {
            self.url_matches(&a.path)
        }
    }
}

/// Rules of one role, shared by every binding to it.
pub type RuleSet = Arc<Vec<Rule>>;

/// One binding's rules for one subject, with what the audit log names as the reason of an
/// allow (`ClusterRoleBinding "b" of ClusterRole "r" to User "u"`).
#[derive(Clone, Debug)]
struct Grant {
    rules: RuleSet,
    source: Arc<str>,
}

/// Who a binding grants to: the rules and where they apply.
#[derive(Clone, Debug, Default)]
struct Grants {
    /// From ClusterRoleBindings: everywhere.
    cluster: Vec<Grant>,
    /// From RoleBindings: in one namespace.
    namespaced: HashMap<String, Vec<Grant>>,
}

/// A Role or ClusterRole as the index keeps it.
#[derive(Clone, Debug)]
struct RoleEntry {
    labels: serde_json::Map<String, Value>,
    rules: Vec<Rule>,
    /// `aggregationRule.clusterRoleSelectors`, for ClusterRoles that aggregate.
    aggregation: Option<Vec<LabelSelector>>,
}

/// The RBAC objects the index is built from, by store key.
#[derive(Default, Clone)]
pub struct PolicyObjects {
    pub objects: HashMap<String, Value>,
}

const ROLES: &str = "/registry/rbac.authorization.k8s.io/roles/";
const CLUSTER_ROLES: &str = "/registry/rbac.authorization.k8s.io/clusterroles/";
const ROLE_BINDINGS: &str = "/registry/rbac.authorization.k8s.io/rolebindings/";
const CLUSTER_ROLE_BINDINGS: &str = "/registry/rbac.authorization.k8s.io/clusterrolebindings/";

/// Whether a store key holds an RBAC object.
pub fn is_policy_key(key: &str) -> bool {
    key.starts_with("/registry/rbac.authorization.k8s.io/")
}

fn labels_of(obj: &Value) -> serde_json::Map<String, Value> {
    obj.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default()
}

fn role_entry(obj: &Value) -> RoleEntry {
    let rules = obj.get("rules").and_then(Value::as_array).map(|a| a.iter().map(Rule::from_json).collect());
    let aggregation = obj
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .map(|sels| sels.iter().filter_map(|s| from_label_selector(s).ok()).collect::<Vec<_>>());
    RoleEntry { labels: labels_of(obj), rules: rules.unwrap_or_default(), aggregation }
}

/// The rules of every ClusterRole, aggregation resolved (one level, as the aggregation
/// controller converges to for acyclic aggregation).
pub fn resolve_cluster_roles(roles: &HashMap<String, Value>) -> HashMap<String, Vec<Rule>> {
    let entries: HashMap<&str, RoleEntry> = roles.iter().map(|(name, obj)| (name.as_str(), role_entry(obj))).collect();
    let mut out = HashMap::with_capacity(entries.len());
    for (name, entry) in &entries {
        let Some(selectors) = &entry.aggregation else {
            out.insert((*name).to_string(), entry.rules.clone());
            continue;
        };
        let mut rules: Vec<Rule> = Vec::new();
        let mut names: Vec<&&str> = entries.keys().collect();
        names.sort();
        for other in names {
            if *other == *name {
                continue;
            }
            let e = &entries[*other];
            if selectors.iter().any(|s| s.matches(&e.labels)) {
                for r in &e.rules {
                    if !rules.contains(r) {
                        rules.push(r.clone());
                    }
                }
            }
        }
        out.insert((*name).to_string(), rules);
    }
    out
}

/// An immutable index from subjects to their grants.
#[derive(Default)]
pub struct Index {
    users: HashMap<String, Grants>,
    groups: HashMap<String, Grants>,
    roles: HashMap<(String, String), RuleSet>,
    cluster_roles: HashMap<String, RuleSet>,
}

/// The subjects of a binding: whether a user (else a group), the index key, and how kube's
/// audit reason names it (`User "u"`, `Group "g"`, `ServiceAccount "name/namespace"`).
fn subject_keys(binding: &Value) -> Vec<(bool, String, String)> {
    let ns_of_binding = binding.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .map(|subjects| {
            subjects
                .iter()
                .filter_map(|s| {
                    let name = s.get("name").and_then(Value::as_str)?;
                    match s.get("kind").and_then(Value::as_str)? {
                        "User" => Some((true, name.to_string(), format!("User {name:?}"))),
                        "Group" => Some((false, name.to_string(), format!("Group {name:?}"))),
                        "ServiceAccount" => {
                            let ns = s.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty());
                            let ns = ns.unwrap_or(ns_of_binding);
                            let shown = format!("ServiceAccount \"{name}/{ns}\"");
                            Some((true, super::service_account_user(ns, name), shown))
                        }
                        _ => None,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Index {
    /// Builds the index from RBAC objects keyed by store key.
    pub fn build(objects: &PolicyObjects) -> Self {
        let mut cluster_role_objs = HashMap::new();
        let mut roles: HashMap<(String, String), RuleSet> = HashMap::new();
        for (key, obj) in &objects.objects {
            if let Some(name) = key.strip_prefix(CLUSTER_ROLES) {
                cluster_role_objs.insert(name.to_string(), obj.clone());
            } else if let Some(rest) = key.strip_prefix(ROLES) {
                if let Some((ns, name)) = rest.split_once('/') {
                    roles.insert((ns.to_string(), name.to_string()), Arc::new(role_entry(obj).rules));
                }
            }
        }
        let cluster_roles: HashMap<String, RuleSet> =
            resolve_cluster_roles(&cluster_role_objs).into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        let mut index = Index::default();
        for (key, binding) in &objects.objects {
            let namespace = if key.starts_with(CLUSTER_ROLE_BINDINGS) {
                None
            } else if let Some(rest) = key.strip_prefix(ROLE_BINDINGS) {
                match rest.split_once('/') {
                    Some((ns, _)) => Some(ns.to_string()),
                    None => continue,
                }
            } else {
                continue;
            };
            let role_kind = binding.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default();
            let role_name = binding.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
            let rules = match (role_kind, &namespace) {
                ("ClusterRole", _) => cluster_roles.get(role_name).cloned(),
                ("Role", Some(ns)) => roles.get(&(ns.clone(), role_name.to_string())).cloned(),
                _ => None,
            };
            let Some(rules) = rules else { continue };
            let binding_name = binding.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let binding_shown = match &namespace {
                None => format!("ClusterRoleBinding {binding_name:?}"),
                Some(ns) => format!("RoleBinding \"{binding_name}/{ns}\""),
            };
            for (is_user, subject, shown) in subject_keys(binding) {
                let source: Arc<str> = Arc::from(format!("{binding_shown} of {role_kind} {role_name:?} to {shown}"));
                let grant = Grant { rules: Arc::clone(&rules), source };
                let map = if is_user { &mut index.users } else { &mut index.groups };
                let grants = map.entry(subject).or_default();
                match &namespace {
                    None => grants.cluster.push(grant),
                    Some(ns) => grants.namespaced.entry(ns.clone()).or_default().push(grant),
                }
            }
        }
        index.roles = roles;
        index.cluster_roles = cluster_roles;
        index
    }

    /// The rules of a Role (`namespace` given) or ClusterRole, aggregation resolved.
    pub fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<RuleSet> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).cloned(),
            "Role" => self.roles.get(&(namespace.to_string(), name.to_string())).cloned(),
            _ => None,
        }
    }

    fn grants_of<'a>(&'a self, user: &'a UserInfo) -> impl Iterator<Item = &'a Grants> + 'a {
        self.users
            .get(user.name.as_str())
            .into_iter()
            .chain(user.groups.iter().filter_map(|g| self.groups.get(g.as_str())))
    }

    /// Every grant that applies to `user` in `namespace` (cluster-wide ones included).
    fn grants_for<'a>(&'a self, user: &'a UserInfo, namespace: &'a str) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants_of(user).flat_map(move |g| {
            let ns = if namespace.is_empty() { None } else { g.namespaced.get(namespace) };
            g.cluster.iter().chain(ns.into_iter().flatten())
        })
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones included).
    pub fn rules_for<'a>(&'a self, user: &'a UserInfo, namespace: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.grants_for(user, namespace).flat_map(|g| g.rules.iter())
    }

    /// Why RBAC allows the request, as kube-apiserver's audit annotation words it
    /// (`RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to Group "g"`); `None` when
    /// it does not.
    pub fn allowed_by(&self, a: &Attributes) -> Option<String> {
        let namespace = if a.resource_request { a.namespace.as_str() } else { "" };
        self.grants_for(&a.user, namespace)
            .find(|g| g.rules.iter().any(|r| r.allows(a)))
            .map(|g| format!("RBAC: allowed by {}", g.source))
    }

    /// The RBAC decision (without the `system:masters` bypass).
    pub fn allows(&self, a: &Attributes) -> bool {
        let namespace = if a.resource_request { a.namespace.as_str() } else { "" };
        self.rules_for(&a.user, namespace).any(|r| r.allows(a))
    }
}

/// Kubernetes' authorizer: `system:masters` first, then RBAC.
pub fn authorize(index: &Index, a: &Attributes) -> bool {
    a.user.is_master() || index.allows(a)
}

/// The Forbidden message Kubernetes writes for a denied request.
pub fn forbidden_message(a: &Attributes) -> String {
    let user = &a.user.name;
    if !a.resource_request {
        return format!("forbidden: User \"{user}\" cannot {} path \"{}\"", a.verb, a.path);
    }
    let resource =
        if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
    let qualified = if a.api_group.is_empty() { a.resource.clone() } else { format!("{}.{}", a.resource, a.api_group) };
    let subject = if a.name.is_empty() { qualified } else { format!("{qualified} \"{}\"", a.name) };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{subject} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        a.verb, a.api_group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo { name: name.into(), groups: groups.iter().map(|s| (*s).to_string()).collect(), ..UserInfo::default() }
    }

    fn req(u: &UserInfo, verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            user: u.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            namespace: ns.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    fn objects(items: Vec<(&str, Value)>) -> PolicyObjects {
        PolicyObjects { objects: items.into_iter().map(|(k, v)| (k.to_string(), v)).collect() }
    }

    #[test]
    fn rule_matching() {
        let r = Rule::from_json(&json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "pods/log"]}));
        let u = user("u", &[]);
        assert!(r.allows(&req(&u, "get", "", "pods", "", "a", "x")));
        assert!(r.allows(&req(&u, "get", "", "pods", "log", "a", "x")));
        assert!(!r.allows(&req(&u, "get", "", "pods", "exec", "a", "x")));
        assert!(!r.allows(&req(&u, "list", "", "pods", "", "a", "")));
        assert!(!r.allows(&req(&u, "get", "apps", "pods", "", "a", "x")));
        let names = Rule::from_json(
            &json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"], "resourceNames": ["w"]}),
        );
        assert!(names.allows(&req(&u, "update", "apps", "deployments", "scale", "a", "w")));
        assert!(!names.allows(&req(&u, "update", "apps", "deployments", "scale", "a", "v")));
        assert!(!names.allows(&req(&u, "update", "apps", "deployments", "", "a", "w")));
        assert!(!names.allows(&req(&u, "list", "apps", "deployments", "scale", "a", "")));
        let urls = Rule::from_json(&json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        let mut a = Attributes { user: u, verb: "get".into(), path: "/apis/apps/v1".into(), ..Attributes::default() };
        assert!(urls.allows(&a));
        a.path = "/healthz".into();
        assert!(urls.allows(&a));
        a.path = "/metrics".into();
        assert!(!urls.allows(&a));
    }

    #[test]
    fn an_allow_names_the_binding_role_and_subject_as_kube_does() {
        let objs = objects(vec![
            (
                "/registry/rbac.authorization.k8s.io/roles/team-a/pod-reader",
                json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/rolebindings/team-a/ci-reads",
                json!({"metadata": {"name": "ci-reads", "namespace": "team-a"},
                       "roleRef": {"kind": "Role", "name": "pod-reader"},
                       "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "team-a"}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/viewer",
                json!({"rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["nodes"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/everyone-views",
                json!({"metadata": {"name": "everyone-views"}, "roleRef": {"kind": "ClusterRole", "name": "viewer"},
                       "subjects": [{"kind": "Group", "name": "system:authenticated"}]}),
            ),
        ]);
        let index = Index::build(&objs);
        let ci = user("system:serviceaccount:team-a:ci", &["system:authenticated"]);
        assert_eq!(
            index.allowed_by(&req(&ci, "get", "", "pods", "", "team-a", "x")).as_deref(),
            Some("RBAC: allowed by RoleBinding \"ci-reads/team-a\" of Role \"pod-reader\" to ServiceAccount \"ci/team-a\"")
        );
        assert_eq!(
            index.allowed_by(&req(&ci, "list", "", "nodes", "", "", "")).as_deref(),
            Some("RBAC: allowed by ClusterRoleBinding \"everyone-views\" of ClusterRole \"viewer\" to Group \"system:authenticated\"")
        );
        assert_eq!(index.allowed_by(&req(&ci, "delete", "", "pods", "", "team-a", "x")), None);
    }

    #[test]
    fn bindings_grant_in_their_scope_and_masters_bypass() {
        let objs = objects(vec![
            (
                "/registry/rbac.authorization.k8s.io/roles/team-a/pod-reader",
                json!({"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/rolebindings/team-a/ci-reads",
                json!({"metadata": {"namespace": "team-a"}, "roleRef": {"kind": "Role", "name": "pod-reader"},
                       "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": "team-a"}]}),
            ),
        ]);
        let index = Index::build(&objs);
        let ci = user("system:serviceaccount:team-a:ci", &["system:serviceaccounts"]);
        assert!(authorize(&index, &req(&ci, "get", "", "pods", "", "team-a", "x")));
        assert!(!authorize(&index, &req(&ci, "get", "", "pods", "", "team-b", "x")));
        assert!(!authorize(&index, &req(&ci, "get", "", "pods", "", "", "")));
        assert!(!authorize(&index, &req(&ci, "delete", "", "pods", "", "team-a", "x")));
        let admin = user("admin", &["system:masters"]);
        assert!(authorize(&index, &req(&admin, "delete", "", "pods", "", "team-a", "x")));
        let denied = req(&ci, "delete", "", "pods", "", "team-a", "x");
        assert_eq!(
            forbidden_message(&denied),
            "pods \"x\" is forbidden: User \"system:serviceaccount:team-a:ci\" cannot delete resource \"pods\" in API group \"\" in the namespace \"team-a\""
        );
    }

    #[test]
    fn aggregation_and_index_updates() {
        let mut objs = objects(vec![
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/view",
                json!({"aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/viewers",
                json!({"roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "Group", "name": "viewers"}]}),
            ),
        ]);
        let bob = user("bob", &["viewers"]);
        let get_cm = req(&bob, "get", "", "configmaps", "", "x", "c");
        assert!(!Index::build(&objs).allows(&get_cm));
        objs.objects.insert(
            "/registry/rbac.authorization.k8s.io/clusterroles/cm-view".into(),
            json!({"metadata": {"labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]}),
        );
        assert!(Index::build(&objs).allows(&get_cm));
        objs.objects.remove("/registry/rbac.authorization.k8s.io/clusterrolebindings/viewers");
        assert!(!Index::build(&objs).allows(&get_cm));
    }
}
