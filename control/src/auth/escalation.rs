//! Escalation prevention: a user may create or update a Role, ClusterRole or binding only if
//! they already hold every permission it grants, or have the `escalate` (roles) or `bind`
//! (bindings) verb on it, as Kubernetes' RBAC storage checks.

use serde_json::Value;

use super::rbac::{Index, Rule};
use super::request_info::Attributes;
use super::UserInfo;

const GROUP: &str = "rbac.authorization.k8s.io";

/// One atomic permission of a rule: a verb on one group/resource/name, or on one URL.
struct Atom<'a> {
    verb: &'a str,
    group: Option<&'a str>,
    resource: &'a str,
    name: &'a str,
    url: Option<&'a str>,
}

fn resource_covers(owner: &str, requested: &str) -> bool {
    if owner == "*" || owner == requested {
        return true;
    }
    match (owner.strip_prefix("*/"), requested.split_once('/')) {
        (Some(sub), Some((_, req_sub))) => sub == req_sub,
        _ => false,
    }
}

fn covers(owner: &Rule, atom: &Atom<'_>) -> bool {
    if !owner.verbs.iter().any(|v| v == "*" || v == atom.verb) {
        return false;
    }
    if let Some(url) = atom.url {
        return owner
            .non_resource_urls
            .iter()
            .any(|u| u == "*" || u == url || u.strip_suffix('*').is_some_and(|prefix| url.starts_with(prefix)));
    }
    let group = atom.group.unwrap_or_default();
    owner.api_groups.iter().any(|g| g == "*" || g == group)
        && owner.resources.iter().any(|r| resource_covers(r, atom.resource))
        && (owner.resource_names.is_empty()
            || (!atom.name.is_empty() && owner.resource_names.iter().any(|n| n == atom.name)))
}

fn atoms(rule: &Rule) -> Vec<Atom<'_>> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            out.push(Atom { verb, group: None, resource: "", name: "", url: Some(url.as_str()) });
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                if rule.resource_names.is_empty() {
                    out.push(Atom { verb, group: Some(group.as_str()), resource, name: "", url: None });
                }
                for name in &rule.resource_names {
                    out.push(Atom { verb, group: Some(group.as_str()), resource, name, url: None });
                }
            }
        }
    }
    out
}

/// The rules in `wanted` not covered by `owned` (each reduced to the uncovered parts' rule).
pub fn uncovered<'a>(owned: &[&Rule], wanted: &'a [Rule]) -> Vec<&'a Rule> {
    wanted.iter().filter(|rule| atoms(rule).iter().any(|atom| !owned.iter().any(|o| covers(o, atom)))).collect()
}

fn quoted(items: &[String]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ")
}

/// A rule as Kubernetes' `CompactString` prints it.
fn compact(rule: &Rule) -> String {
    let mut parts = Vec::new();
    for (label, v) in [
        ("APIGroups", &rule.api_groups),
        ("Resources", &rule.resources),
        ("ResourceNames", &rule.resource_names),
        ("NonResourceURLs", &rule.non_resource_urls),
        ("Verbs", &rule.verbs),
    ] {
        if !v.is_empty() {
            parts.push(format!("{label}:[{}]", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

fn can(index: &Index, user: &UserInfo, verb: &str, resource: &str, namespace: &str, name: &str) -> bool {
    let a = Attributes {
        user: user.clone(),
        verb: verb.into(),
        resource_request: true,
        api_group: GROUP.into(),
        namespace: namespace.into(),
        resource: resource.into(),
        name: name.into(),
        ..Attributes::default()
    };
    super::rbac::authorize(index, &a)
}

/// Checks a Role/ClusterRole/RoleBinding/ClusterRoleBinding write by `user`; `Err` is the
/// Forbidden message.
pub fn check(index: &Index, user: &UserInfo, resource: &str, namespace: &str, obj: &Value) -> Result<(), String> {
    if user.is_master() {
        return Ok(());
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let (wanted, rule_ns): (Vec<Rule>, &str) = match resource {
        "roles" | "clusterroles" => {
            if can(index, user, "escalate", resource, namespace, name) {
                return Ok(());
            }
            if resource == "clusterroles" && obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                return Err(format!(
                    "{resource}.{GROUP} \"{name}\" is forbidden: must have cluster-admin privileges to use the aggregationRule"
                ));
            }
            let rules = obj.get("rules").and_then(Value::as_array).map(|a| a.iter().map(Rule::from_json).collect());
            (rules.unwrap_or_default(), namespace)
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default();
            let role = obj.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
            let role_resource = if kind == "ClusterRole" { "clusterroles" } else { "roles" };
            if can(index, user, "bind", role_resource, namespace, role) {
                return Ok(());
            }
            let Some(rules) = index.role_rules(kind, namespace, role) else {
                // Kubernetes refuses a binding to a role it cannot resolve unless `bind` allows it.
                return Err(format!("{resource}.{GROUP} \"{name}\" is forbidden: {kind}.{GROUP} \"{role}\" not found"));
            };
            ((*rules).clone(), namespace)
        }
        _ => return Ok(()),
    };
    let owned: Vec<&Rule> = index.rules_for(user, rule_ns).collect();
    let missing = uncovered(&owned, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing.iter().copied().map(compact).collect();
    Err(format!(
        "{resource}.{GROUP} \"{name}\" is forbidden: user \"{}\" (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        quoted(&user.groups),
        lines.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::PolicyObjects;
    use serde_json::json;

    #[test]
    fn cannot_grant_more_than_held() {
        let objs = PolicyObjects {
            objects: [
                (
                    "/registry/rbac.authorization.k8s.io/roles/a/editor".to_string(),
                    json!({"rules": [
                        {"verbs": ["get", "list", "create", "update"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"]},
                        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}]}),
                ),
                (
                    "/registry/rbac.authorization.k8s.io/rolebindings/a/bob".to_string(),
                    json!({"roleRef": {"kind": "Role", "name": "editor"}, "subjects": [{"kind": "User", "name": "bob"}]}),
                ),
            ]
            .into_iter()
            .collect(),
        };
        let index = Index::build(&objs);
        let bob = UserInfo { name: "bob".into(), groups: vec!["system:authenticated".into()], ..UserInfo::default() };
        let ok = json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}]});
        assert!(check(&index, &bob, "roles", "a", &ok).is_ok());
        let more = json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]});
        let err = check(&index, &bob, "roles", "a", &more).expect_err("escalation");
        assert_eq!(
            err,
            "roles.rbac.authorization.k8s.io \"r\" is forbidden: user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"
        );
        assert!(check(&index, &bob, "roles", "other", &ok).is_err(), "held only in namespace a");
        let star =
            json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}]});
        assert!(check(&index, &bob, "roles", "a", &star).is_err());
        let binding = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "editor"}, "subjects": []});
        assert!(check(&index, &bob, "rolebindings", "a", &binding).is_ok(), "holds everything editor grants");
        let admin = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}});
        assert!(check(&index, &bob, "rolebindings", "a", &admin).is_err());
    }
}
