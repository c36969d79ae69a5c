//! Defaults and validation of ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding
//! objects, with kube-apiserver's field paths; every CEL expression must compile.

use serde_json::{json, Value};

use super::validation::{check_enum, check_expression, check_match_conditions, check_rules, unsupported};
use crate::api::admission::Cause;

pub const POLICY: &str = "ValidatingAdmissionPolicy";
pub const BINDING: &str = "ValidatingAdmissionPolicyBinding";

/// Fills in `matchResources`' defaults (`matchPolicy`, selectors, rule scope).
fn default_match(m: &mut Value) {
    let Some(m) = m.as_object_mut() else { return };
    m.entry("matchPolicy").or_insert_with(|| json!("Equivalent"));
    m.entry("namespaceSelector").or_insert_with(|| json!({}));
    m.entry("objectSelector").or_insert_with(|| json!({}));
    for list in ["resourceRules", "excludeResourceRules"] {
        for rule in m.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(rule) = rule.as_object_mut() {
                rule.entry("scope").or_insert_with(|| json!("*"));
            }
        }
    }
}

/// Fills in what kube-apiserver defaults on a policy or a binding.
pub fn default(kind: &str, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if kind == POLICY {
        spec.entry("failurePolicy").or_insert_with(|| json!("Fail"));
        if let Some(m) = spec.get_mut("matchConstraints") {
            default_match(m);
        }
    } else if let Some(m) = spec.get_mut("matchResources").filter(|m| !m.is_null()) {
        default_match(m);
    }
}

fn check_match(m: &Value, path: &str, rules_required: bool, out: &mut Vec<Cause>) {
    let rules = m.get("resourceRules");
    if rules_required && rules.and_then(Value::as_array).is_none_or(Vec::is_empty) {
        out.push((format!("{path}.resourceRules"), "Required value".into()));
    }
    check_rules(rules, &format!("{path}.resourceRules"), out);
    check_rules(m.get("excludeResourceRules"), &format!("{path}.excludeResourceRules"), out);
    check_enum(m, "matchPolicy", path, &["Equivalent", "Exact"], false, out);
    for sel in ["namespaceSelector", "objectSelector"] {
        if let Some(s) = m.get(sel).filter(|s| !s.is_null()) {
            if let Err(e) = crate::api::selector::from_label_selector(s) {
                out.push((format!("{path}.{sel}"), format!("Invalid value: {e}")));
            }
        }
    }
}

fn validate_policy(spec: &Value, out: &mut Vec<Cause>) {
    match spec.get("matchConstraints").filter(|m| !m.is_null()) {
        None => out.push(("spec.matchConstraints".into(), "Required value".into())),
        Some(m) => check_match(m, "spec.matchConstraints", true, out),
    }
    check_enum(spec, "failurePolicy", "spec", &["Fail", "Ignore"], false, out);
    check_match_conditions(spec.get("matchConditions"), "spec.matchConditions", out);
    for (i, v) in spec.get("variables").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let path = format!("spec.variables[{i}]");
        if v.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            out.push((format!("{path}.name"), "Required value: name is not specified".into()));
        }
        check_expression(v, &path, true, out);
    }
    let validations = spec.get("validations").and_then(Value::as_array).cloned().unwrap_or_default();
    let audits = spec.get("auditAnnotations").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if validations.is_empty() && !audits {
        out.push((
            "spec.validations".into(),
            "Required value: validations or auditAnnotations must contain at least one item".into(),
        ));
    }
    for (i, v) in validations.iter().enumerate() {
        let path = format!("spec.validations[{i}]");
        check_expression(v, &path, true, out);
        if let Some(expr) = v.get("messageExpression").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            check_expression(&json!({"expression": expr}), &format!("{path}.messageExpression"), false, out);
        }
        if let Some(reason) = v.get("reason").and_then(Value::as_str) {
            let supported = ["Forbidden", "Invalid", "RequestEntityTooLarge", "Unauthorized"];
            if !supported.contains(&reason) {
                out.push((format!("{path}.reason"), unsupported(reason, &supported)));
            }
        }
    }
}

fn validate_binding(spec: &Value, out: &mut Vec<Cause>) {
    if spec.get("policyName").and_then(Value::as_str).is_none_or(str::is_empty) {
        out.push(("spec.policyName".into(), "Required value".into()));
    }
    let actions: Vec<&str> = spec
        .get("validationActions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if actions.is_empty() {
        out.push((
            "spec.validationActions".into(),
            "Required value: at least one validation action is required".into(),
        ));
    }
    let mut seen = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        let path = format!("spec.validationActions[{i}]");
        if !["Audit", "Deny", "Warn"].contains(a) {
            out.push((path, unsupported(a, &["Audit", "Deny", "Warn"])));
        } else if seen.contains(a) {
            out.push((path, format!("Duplicate value: \"{a}\"")));
        }
        seen.push(a);
    }
    if actions.contains(&"Deny") && actions.contains(&"Warn") {
        out.push((
            "spec.validationActions".into(),
            "Invalid value: must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)".into(),
        ));
    }
    if let Some(m) = spec.get("matchResources").filter(|m| !m.is_null()) {
        check_match(m, "spec.matchResources", false, out);
    }
}

/// Every problem of a policy or a binding, as `(field, message)`.
pub fn validate(kind: &str, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    if kind == POLICY {
        validate_policy(&spec, &mut out);
    } else {
        validate_binding(&spec, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_policy_is_defaulted_and_passes() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["deployments"]}]},
            "validations": [{"expression": "object.spec.replicas <= 5", "messageExpression": "'too many'"}]}});
        default(POLICY, &mut p);
        assert_eq!(p["spec"]["failurePolicy"], "Fail");
        assert_eq!(p["spec"]["matchConstraints"]["matchPolicy"], "Equivalent");
        assert_eq!(p["spec"]["matchConstraints"]["resourceRules"][0]["scope"], "*");
        assert!(validate(POLICY, &p).is_empty(), "{:?}", validate(POLICY, &p));
    }

    #[test]
    fn bad_policies_and_bindings_name_their_fields() {
        let p = json!({"spec": {"failurePolicy": "Maybe",
            "validations": [{"expression": "object.spec.replicas <="}, {"expression": "true", "reason": "Teapot"}]}});
        let fields: Vec<String> = validate(POLICY, &p).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "spec.matchConstraints",
                "spec.failurePolicy",
                "spec.validations[0].expression",
                "spec.validations[1].reason"
            ]
        );
        let causes = validate(POLICY, &p);
        assert!(causes[2].1.contains("compilation failed"), "{causes:?}");

        let b = json!({"spec": {"validationActions": ["Deny", "Warn", "Deny", "Shout"]}});
        let causes = validate(BINDING, &b);
        let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.policyName", "spec.validationActions[2]", "spec.validationActions[3]", "spec.validationActions"]
        );
        assert!(validate(BINDING, &json!({"spec": {"policyName": "p", "validationActions": []}}))
            .iter()
            .any(|(f, m)| f == "spec.validationActions" && m.starts_with("Required value")));
    }
}
