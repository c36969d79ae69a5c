//! Defaults and validation of ValidatingWebhookConfiguration and MutatingWebhookConfiguration
//! objects, with kube-apiserver's field paths and messages.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::policy_validation::{BINDING, POLICY};
use crate::api::admission::Cause;

/// The API group of the configurations (webhooks never see its objects).
pub const GROUP: &str = "admissionregistration.k8s.io";

/// Whether `kind` in `group` is one of the admission configurations: the two webhook
/// configurations, a ValidatingAdmissionPolicy or its binding.
pub fn is_configuration(group: &str, kind: &str) -> bool {
    group == GROUP
        && matches!(kind, "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" | POLICY | BINDING)
}

/// Fills in what kube-apiserver defaults.
pub fn default(kind: &str, obj: &mut Value) {
    if matches!(kind, POLICY | BINDING) {
        return super::policy_validation::default(kind, obj);
    }
    let mutating = kind == "MutatingWebhookConfiguration";
    let Some(hooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) else { return };
    for w in hooks.iter_mut().filter_map(Value::as_object_mut) {
        w.entry("failurePolicy").or_insert_with(|| json!("Fail"));
        w.entry("matchPolicy").or_insert_with(|| json!("Equivalent"));
        w.entry("namespaceSelector").or_insert_with(|| json!({}));
        w.entry("objectSelector").or_insert_with(|| json!({}));
        w.entry("timeoutSeconds").or_insert_with(|| json!(10));
        if mutating {
            w.entry("reinvocationPolicy").or_insert_with(|| json!("Never"));
        }
        if let Some(svc) = w.get_mut("clientConfig").and_then(|c| c.get_mut("service")).and_then(Value::as_object_mut) {
            svc.entry("port").or_insert_with(|| json!(443));
        }
        for rule in w.get_mut("rules").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(rule) = rule.as_object_mut() {
                rule.entry("scope").or_insert_with(|| json!("*"));
            }
        }
    }
}

pub(super) fn unsupported(value: &str, supported: &[&str]) -> String {
    let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    format!("Unsupported value: \"{value}\": supported values: {}", list.join(", "))
}

pub(super) fn check_enum(w: &Value, field: &str, path: &str, supported: &[&str], required: bool, out: &mut Vec<Cause>) {
    // The typed decoding turns a missing required string into "".
    let value = w.get(field).and_then(Value::as_str).filter(|v| !(required && v.is_empty()));
    match value {
        None if required => out
            .push((format!("{path}.{field}"), format!("Required value: must specify one of {}", supported.join(", ")))),
        None => {}
        Some(v) if !supported.contains(&v) => out.push((format!("{path}.{field}"), unsupported(v, supported))),
        Some(_) => {}
    }
}

fn check_name(name: &str, path: &str, out: &mut Vec<Cause>) {
    let field = format!("{path}.name");
    if name.is_empty() {
        out.push((field, "Required value".into()));
        return;
    }
    if crate::api::names::check_dns1123_subdomain(name).is_err() {
        out.push((field, format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")));
    } else if name.split('.').count() < 3 {
        out.push((
            field,
            format!("Invalid value: \"{name}\": should be a domain with at least three segments separated by dots"),
        ));
    }
}

fn check_client(w: &Value, path: &str, out: &mut Vec<Cause>) {
    let path = format!("{path}.clientConfig");
    let client = w.get("clientConfig").cloned().unwrap_or(Value::Null);
    match (client.get("url").and_then(Value::as_str), client.get("service").filter(|s| !s.is_null())) {
        (Some(_), Some(_)) | (None, None) => {
            out.push((path.clone(), "Required value: exactly one of url or service is required".into()));
        }
        (Some(url), None) => {
            if !url.starts_with("https://") {
                out.push((
                    format!("{path}.url"),
                    format!("Invalid value: \"{url}\": 'https' is the only allowed URL scheme"),
                ));
            } else if url.contains('#') || url.contains('?') {
                out.push((
                    format!("{path}.url"),
                    format!("Invalid value: \"{url}\": fragments and query parameters are not permitted"),
                ));
            }
        }
        (None, Some(svc)) => {
            let sp = format!("{path}.service");
            for field in ["name", "namespace"] {
                if svc.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                    out.push((
                        format!("{sp}.{field}"),
                        "Required value: service name is required".replace("name", field),
                    ));
                }
            }
            if let Some(port) = svc.get("port").and_then(Value::as_i64) {
                if !(1..=65535).contains(&port) {
                    out.push((
                        format!("{sp}.port"),
                        format!("Invalid value: {port}: port is not valid: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
            if let Some(p) = svc.get("path").and_then(Value::as_str) {
                if !p.starts_with('/') {
                    out.push((format!("{sp}.path"), format!("Invalid value: \"{p}\": must start with a '/'")));
                }
            }
        }
    }
    if let Some(ca) = client.get("caBundle").and_then(Value::as_str) {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD.decode(ca).is_err() {
            out.push((format!("{path}.caBundle"), "Invalid value: \"...\": illegal base64 data".into()));
        }
    }
}

/// Checks a list of `RuleWithOperations` (a webhook's `rules`, a policy's `resourceRules`) at
/// `path` (`webhooks[0].rules`).
pub(super) fn check_rules(rules: Option<&Value>, path: &str, out: &mut Vec<Cause>) {
    for (i, rule) in rules.and_then(Value::as_array).into_iter().flatten().enumerate() {
        let rp = format!("{path}[{i}]");
        for field in ["operations", "apiGroups", "apiVersions", "resources"] {
            let items = rule.get(field).and_then(Value::as_array).cloned().unwrap_or_default();
            if items.is_empty() {
                out.push((format!("{rp}.{field}"), "Required value".into()));
            }
            if field == "operations" {
                for op in &items {
                    let op = op.as_str().unwrap_or("");
                    if !matches!(op, "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") {
                        out.push((
                            format!("{rp}.operations"),
                            unsupported(op, &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]),
                        ));
                    }
                }
            }
            if field == "resources" {
                for r in items.iter().filter_map(Value::as_str) {
                    if r.is_empty() {
                        out.push((format!("{rp}.resources"), "Required value: resource name cannot be empty".into()));
                    }
                }
            }
        }
        check_enum(rule, "scope", &rp, &["*", "Cluster", "Namespaced"], false, out);
    }
}

/// Every problem of a configuration, as `(field, message)`.
pub fn validate(kind: &str, obj: &Value) -> Vec<Cause> {
    if matches!(kind, POLICY | BINDING) {
        return super::policy_validation::validate(kind, obj);
    }
    let mutating = kind == "MutatingWebhookConfiguration";
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, w) in obj.get("webhooks").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let path = format!("webhooks[{i}]");
        let name = w.get("name").and_then(Value::as_str).unwrap_or("");
        check_name(name, &path, &mut out);
        if !name.is_empty() && !names.insert(name.to_string()) {
            out.push((format!("{path}.name"), format!("Duplicate value: \"{name}\"")));
        }
        check_client(w, &path, &mut out);
        check_rules(w.get("rules"), &format!("{path}.rules"), &mut out);
        check_enum(w, "sideEffects", &path, &["None", "NoneOnDryRun"], true, &mut out);
        check_enum(w, "failurePolicy", &path, &["Fail", "Ignore"], false, &mut out);
        check_enum(w, "matchPolicy", &path, &["Exact", "Equivalent"], false, &mut out);
        if mutating {
            check_enum(w, "reinvocationPolicy", &path, &["IfNeeded", "Never"], false, &mut out);
        }
        let versions: Vec<&str> = w
            .get("admissionReviewVersions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if versions.is_empty() {
            out.push((
                format!("{path}.admissionReviewVersions"),
                "Required value: must specify one of v1, v1beta1".into(),
            ));
        } else if !versions.contains(&"v1") {
            let quoted: Vec<String> = versions.iter().map(|v| format!("\"{v}\"")).collect();
            out.push((
                format!("{path}.admissionReviewVersions"),
                format!("Invalid value: []string{{{}}}: must include at least one of v1", quoted.join(", ")),
            ));
        }
        if let Some(t) = w.get("timeoutSeconds").and_then(Value::as_i64) {
            if !(1..=30).contains(&t) {
                out.push((
                    format!("{path}.timeoutSeconds"),
                    format!("Invalid value: {t}: the timeout value must be between 1 and 30 seconds"),
                ));
            }
        }
        for sel in ["namespaceSelector", "objectSelector"] {
            if let Some(s) = w.get(sel).filter(|s| !s.is_null()) {
                if let Err(e) = crate::api::selector::from_label_selector(s) {
                    out.push((format!("{path}.{sel}"), format!("Invalid value: {e}")));
                }
            }
        }
        check_match_conditions(w.get("matchConditions"), &format!("{path}.matchConditions"), &mut out);
    }
    out
}

/// The compiler's message for a CEL expression that does not compile, on one line.
pub(super) fn compile_error(expr: &str) -> Option<String> {
    cel::Program::compile(expr).err().map(|e| e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Checks `matchConditions` at `path`: unique names, expressions that compile.
pub(super) fn check_match_conditions(list: Option<&Value>, path: &str, out: &mut Vec<Cause>) {
    let mut condition_names = HashSet::new();
    for (j, c) in list.and_then(Value::as_array).into_iter().flatten().enumerate() {
        let cp = format!("{path}[{j}]");
        let cname = c.get("name").and_then(Value::as_str).unwrap_or("");
        if cname.is_empty() {
            out.push((format!("{cp}.name"), "Required value".into()));
        } else if !condition_names.insert(cname.to_string()) {
            out.push((format!("{cp}.name"), format!("Duplicate value: \"{cname}\"")));
        }
        check_expression(c, &cp, true, out);
    }
}

/// Checks the CEL `expression` of `item` at `path` (required when `required`).
pub(super) fn check_expression(item: &Value, path: &str, required: bool, out: &mut Vec<Cause>) {
    match item.get("expression").and_then(Value::as_str).filter(|e| !e.is_empty()) {
        None if required => out.push((format!("{path}.expression"), "Required value".into())),
        None => {}
        Some(expr) => {
            if let Some(msg) = compile_error(expr) {
                out.push((
                    format!("{path}.expression"),
                    format!("Invalid value: \"{expr}\": compilation failed: {msg}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(webhooks: Value) -> Value {
        let mut obj = json!({"metadata": {"name": "c"}, "webhooks": webhooks});
        default("ValidatingWebhookConfiguration", &mut obj);
        obj
    }

    fn good() -> Value {
        json!({"name": "deny.example.com", "clientConfig": {"url": "https://127.0.0.1:8443/deny"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"]})
    }

    #[test]
    fn defaults_are_filled_in() {
        let obj = config(json!([good()]));
        let w = &obj["webhooks"][0];
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["rules"][0]["scope"], "*");
        assert!(validate("ValidatingWebhookConfiguration", &obj).is_empty());
    }

    #[test]
    fn bad_configurations_name_their_fields() {
        let mut bad = good();
        bad["name"] = json!("bad.example.com");
        bad["sideEffects"] = Value::Null;
        bad["admissionReviewVersions"] = json!(["v1beta1"]);
        bad["timeoutSeconds"] = json!(31);
        bad["clientConfig"] = json!({"url": "http://127.0.0.1/"});
        bad["rules"][0]["operations"] = json!(["PATCH"]);
        let obj = config(json!([bad, good(), good()]));
        let causes = validate("ValidatingWebhookConfiguration", &obj);
        let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "webhooks[0].clientConfig.url",
                "webhooks[0].rules[0].operations",
                "webhooks[0].sideEffects",
                "webhooks[0].admissionReviewVersions",
                "webhooks[0].timeoutSeconds",
                "webhooks[2].name",
            ],
            "{causes:?}"
        );
        assert_eq!(causes[2].1, "Required value: must specify one of None, NoneOnDryRun");
        assert_eq!(causes[4].1, "Invalid value: 31: the timeout value must be between 1 and 30 seconds");
        assert_eq!(causes[5].1, "Duplicate value: \"deny.example.com\"");
    }
}
