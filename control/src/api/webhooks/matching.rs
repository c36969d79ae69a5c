//! Which webhooks a request reaches: rules (operations, groups, versions, resources with `*`,
//! `*/*`, `pods/status`, scope), `namespaceSelector`, `objectSelector` and `matchConditions`, as
//! kube-apiserver's webhook matchers decide. Pure functions of the request and the hook.

use serde_json::{json, Map, Value};

use super::config::{Hook, Rule};
use crate::api::selector::LabelSelector;
use crate::auth::UserInfo;

/// The admission operation of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// As AdmissionReview and rules spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }

    /// The kind of the options object the request carried.
    pub fn options_kind(self) -> &'static str {
        match self {
            Self::Create => "CreateOptions",
            Self::Update => "UpdateOptions",
            Self::Delete => "DeleteOptions",
            Self::Connect => "",
        }
    }
}

/// What admission knows of one request.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    pub operation: Operation,
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    /// The resource (plural) and subresource (`""` for the main resource).
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespaced: bool,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
    pub user: Option<&'a UserInfo>,
    /// The other versions the same group and resource are served in (for `matchPolicy: Equivalent`).
    pub other_versions: &'a [&'a str],
}

fn listed(items: &[String], value: &str) -> bool {
    items.iter().any(|i| i == "*" || i == value)
}

/// Whether `rule` covers the request with the request's own version or, for an Equivalent
/// match, another served version of the same resource (returned as the version to send).
pub(super) fn rule_matches(rule: &Rule, a: &Attributes<'_>, version: &str) -> bool {
    if !listed(&rule.operations, a.operation.as_str())
        || !listed(&rule.api_groups, a.group)
        || !listed(&rule.api_versions, version)
    {
        return false;
    }
    let scoped = match rule.scope.as_str() {
        "Cluster" => !a.namespaced,
        "Namespaced" => a.namespaced,
        _ => true,
    };
    scoped
        && rule.resources.iter().any(|r| {
            let (res, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
            (res == "*" || res == a.resource) && (sub == "*" || sub == a.subresource)
        })
}

/// The version a hook is sent the object in when its rules match the request, `None` when
/// they do not.
pub fn matching_version<'a>(hook: &Hook, a: &Attributes<'a>) -> Option<&'a str> {
    if hook.rules.iter().any(|r| rule_matches(r, a, a.version)) {
        return Some(a.version);
    }
    if hook.equivalent {
        for v in a.other_versions {
            if hook.rules.iter().any(|r| rule_matches(r, a, v)) {
                return Some(v);
            }
        }
    }
    None
}

/// `namespaceSelector`: the namespace's labels (a Namespace's own for a namespace request);
/// cluster-scoped objects always match.
pub fn namespace_matches(
    selector: &LabelSelector,
    a: &Attributes<'_>,
    namespace_labels: Option<&Map<String, Value>>,
) -> bool {
    if selector.is_empty() {
        return true;
    }
    let is_namespace = a.group.is_empty() && a.resource == "namespaces";
    if is_namespace {
        let labels = |o: Option<&Value>| o.map(crate::api::object::labels).unwrap_or_default();
        return selector.matches(&labels(a.object.or(a.old_object)));
    }
    if !a.namespaced {
        return true;
    }
    let empty = Map::new();
    selector.matches(namespace_labels.unwrap_or(&empty))
}

/// `objectSelector`: the new or the old object's labels.
pub fn object_matches(selector: &LabelSelector, a: &Attributes<'_>) -> bool {
    if selector.is_empty() {
        return true;
    }
    [a.object, a.old_object].into_iter().flatten().any(|o| selector.matches(&crate::api::object::labels(o)))
}

/// Why `matchConditions` could not decide.
#[derive(Debug, thiserror::Error)]
#[error("failed to evaluate match condition {name:?}: {reason}")]
pub struct ConditionError {
    pub name: String,
    pub reason: String,
}

/// `request` as CEL match conditions see it.
pub(super) fn request_value(a: &Attributes<'_>) -> Value {
    json!({
        "kind": {"group": a.group, "version": a.version, "kind": a.kind},
        "resource": {"group": a.group, "version": a.version, "resource": a.resource},
        "subResource": a.subresource,
        "name": a.name,
        "namespace": a.namespace.unwrap_or(""),
        "operation": a.operation.as_str(),
        "userInfo": user_info(a.user),
        "dryRun": a.dry_run,
    })
}

/// `userInfo` of an AdmissionReview.
pub fn user_info(user: Option<&UserInfo>) -> Value {
    match user {
        Some(u) => {
            let mut v = json!({"username": u.name, "groups": u.groups});
            if !u.uid.is_empty() {
                v["uid"] = json!(u.uid);
            }
            if !u.extra.is_empty() {
                v["extra"] = json!(u.extra);
            }
            v
        }
        None => json!({}),
    }
}

/// The CEL variables every admission expression sees: `object`, `oldObject`, `request`.
pub(super) fn cel_context(a: &Attributes<'_>) -> cel::Context<'static, 'static> {
    use crate::api::crd::rules::to_cel;
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("object", to_cel(a.object.unwrap_or(&Value::Null)));
    ctx.add_variable_from_value("oldObject", to_cel(a.old_object.unwrap_or(&Value::Null)));
    ctx.add_variable_from_value("request", to_cel(&request_value(a)));
    ctx
}

/// Whether every `matchConditions` expression (`(name, expression)`) holds in `ctx`
/// (`Ok(false)` as soon as one is false).
pub fn conditions_hold_in(conditions: &[(String, String)], ctx: &cel::Context<'_, '_>) -> Result<bool, ConditionError> {
    let mut error = None;
    for (name, expr) in conditions {
        let err = |reason: String| ConditionError { name: name.clone(), reason };
        let outcome = cel::Program::compile(expr)
            .map_err(|e| err(e.to_string()))
            .and_then(|p| p.execute(ctx).map_err(|e| err(e.to_string())));
        match outcome {
            // A false condition skips the webhook even when another condition errs.
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(cel::Value::Bool(true)) => {}
            Ok(other) => {
                error.get_or_insert(err(format!("must evaluate to bool, not {other:?}")));
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// Whether every `matchConditions` expression of a webhook holds for the request.
pub fn conditions_hold(hook: &Hook, a: &Attributes<'_>) -> Result<bool, ConditionError> {
    if hook.match_conditions.is_empty() {
        return Ok(true);
    }
    conditions_hold_in(&hook.match_conditions, &cel_context(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::webhooks::config::parse_hook;

    fn hook(extra: Value) -> Hook {
        let mut w = json!({
            "name": "x.example.com", "clientConfig": {"url": "https://127.0.0.1:1/"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"]
        });
        if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
            w.extend(extra.clone());
        }
        parse_hook(&w).expect("parses")
    }

    fn pod_create<'a>(object: &'a Value) -> Attributes<'a> {
        Attributes {
            operation: Operation::Create,
            group: "",
            version: "v1",
            kind: "Pod",
            resource: "pods",
            subresource: "",
            namespaced: true,
            namespace: Some("default"),
            name: "p",
            object: Some(object),
            old_object: None,
            dry_run: false,
            user: None,
            other_versions: &[],
        }
    }

    #[test]
    fn rules_match_operations_groups_versions_and_resources() {
        let pod = json!({"metadata": {"name": "p"}});
        let a = pod_create(&pod);
        assert_eq!(matching_version(&hook(json!({})), &a), Some("v1"));
        let update = Attributes { operation: Operation::Update, ..a.clone() };
        assert_eq!(matching_version(&hook(json!({})), &update), None, "operation not listed");
        let status = Attributes { subresource: "status", ..a.clone() };
        assert_eq!(matching_version(&hook(json!({})), &status), None, "pods does not cover pods/status");
        let rules = |resources: Value| {
            hook(
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": resources}]}),
            )
        };
        assert!(matching_version(&rules(json!(["pods/status"])), &status).is_some());
        assert!(matching_version(&rules(json!(["pods/status"])), &a).is_none());
        assert!(matching_version(&rules(json!(["*/*"])), &status).is_some());
        assert!(matching_version(&rules(json!(["*"])), &status).is_none(), "* is main resources only");
        assert!(matching_version(&rules(json!(["*"])), &a).is_some());
        assert!(matching_version(&rules(json!(["pods/*"])), &status).is_some());
        assert!(matching_version(&rules(json!(["*/status"])), &status).is_some());
        assert!(matching_version(&rules(json!(["deployments"])), &a).is_none());
        let scoped = |scope: &str| {
            hook(json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
                "resources": ["*"], "scope": scope}]}))
        };
        assert!(matching_version(&scoped("Namespaced"), &a).is_some());
        assert!(matching_version(&scoped("Cluster"), &a).is_none());
        let node = Attributes { namespaced: false, namespace: None, resource: "nodes", ..a.clone() };
        assert!(matching_version(&scoped("Cluster"), &node).is_some());
    }

    #[test]
    fn equivalent_versions_match_unless_exact() {
        let obj = json!({});
        let a = Attributes {
            group: "stable.example.com",
            version: "v2",
            resource: "crontabs",
            other_versions: &["v1"],
            ..pod_create(&obj)
        };
        let rules = json!([{"operations": ["CREATE"], "apiGroups": ["stable.example.com"], "apiVersions": ["v1"],
            "resources": ["crontabs"]}]);
        assert_eq!(matching_version(&hook(json!({"rules": rules})), &a), Some("v1"));
        assert_eq!(matching_version(&hook(json!({"rules": rules, "matchPolicy": "Exact"})), &a), None);
    }

    #[test]
    fn selectors_use_namespace_and_object_labels() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        let a = pod_create(&pod);
        let ns_sel = hook(json!({"namespaceSelector": {"matchLabels": {"hooked": "yes"}}}));
        let labels: Map<String, Value> = serde_json::from_value(json!({"hooked": "yes"})).expect("map");
        assert!(namespace_matches(&ns_sel.namespace_selector, &a, Some(&labels)));
        assert!(!namespace_matches(&ns_sel.namespace_selector, &a, Some(&Map::new())));
        assert!(!namespace_matches(&ns_sel.namespace_selector, &a, None));
        let excluded = hook(json!({"namespaceSelector": {"matchExpressions": [
            {"key": "hooked", "operator": "NotIn", "values": ["yes"]}]}}));
        assert!(!namespace_matches(&excluded.namespace_selector, &a, Some(&labels)));
        assert!(namespace_matches(&excluded.namespace_selector, &a, None));

        assert!(object_matches(&hook(json!({"objectSelector": {"matchLabels": {"app": "web"}}})).object_selector, &a));
        assert!(!object_matches(&hook(json!({"objectSelector": {"matchLabels": {"app": "db"}}})).object_selector, &a));
        assert!(object_matches(&hook(json!({"objectSelector": {}})).object_selector, &a));
        let old = json!({"metadata": {"labels": {"app": "db"}}});
        let update = Attributes { operation: Operation::Update, old_object: Some(&old), ..a.clone() };
        assert!(object_matches(
            &hook(json!({"objectSelector": {"matchLabels": {"app": "db"}}})).object_selector,
            &update
        ));
    }

    #[test]
    fn match_conditions_are_cel() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        let a = pod_create(&pod);
        let cond = |exprs: &[&str]| {
            let list: Vec<Value> =
                exprs.iter().enumerate().map(|(i, e)| json!({"name": format!("c{i}"), "expression": e})).collect();
            hook(json!({"matchConditions": list}))
        };
        assert!(conditions_hold(&cond(&["object.metadata.labels.app == 'web'"]), &a).expect("evaluates"));
        assert!(!conditions_hold(&cond(&["request.operation == 'UPDATE'"]), &a).expect("evaluates"));
        assert!(conditions_hold(&cond(&["oldObject == null", "request.namespace == 'default'"]), &a).expect("ok"));
        let err = conditions_hold(&cond(&["object.nope.deeper == 1"]), &a).expect_err("no such key");
        assert_eq!(err.name, "c0");
        // A false condition wins over an erring one.
        assert!(!conditions_hold(&cond(&["object.nope.deeper == 1", "false"]), &a).expect("false"));
    }
}
