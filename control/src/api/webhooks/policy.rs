//! ValidatingAdmissionPolicies (`admissionregistration.k8s.io/v1`): CEL validations run in the
//! API server, applied where a ValidatingAdmissionPolicyBinding says, with its
//! `validationActions` (`Deny`, `Warn`; `Audit` is accepted and not written anywhere).
//!
//! Parsed once per change into the webhook [`Snapshot`](super::config::Snapshot); evaluated per
//! request by [`evaluate`], a pure function of the request, the policy, the binding and the
//! namespace's labels. Matching reuses the webhooks' rules and selectors ([`super::matching`]).

use serde_json::{json, Map, Value};

use super::config::{rule_from_json, selector_from_json, FailurePolicy, Rule};
use super::matching::{self, Attributes};
use crate::api::crd::rules::to_cel;
use crate::api::selector::LabelSelector;

/// A rule of `resourceRules`/`excludeResourceRules`, with its `resourceNames`.
#[derive(Clone, Debug, Default)]
pub struct NamedRule {
    pub rule: Rule,
    /// Only objects of these names (empty: any name).
    pub names: Vec<String>,
}

/// `matchConstraints` of a policy, `matchResources` of a binding.
#[derive(Clone, Debug)]
pub struct MatchResources {
    pub rules: Vec<NamedRule>,
    pub exclude: Vec<NamedRule>,
    pub namespace_selector: LabelSelector,
    pub object_selector: LabelSelector,
    /// `matchPolicy: Equivalent` (the default).
    pub equivalent: bool,
}

/// One `validations` entry.
#[derive(Clone, Debug, Default)]
pub struct Validation {
    pub expression: String,
    pub message: Option<String>,
    pub message_expression: Option<String>,
    /// `Unauthorized`, `Forbidden`, `Invalid` (the default) or `RequestEntityTooLarge`.
    pub reason: Option<String>,
}

/// A parsed ValidatingAdmissionPolicy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub failure_policy: FailurePolicy,
    pub match_constraints: MatchResources,
    pub match_conditions: Vec<(String, String)>,
    /// `(name, expression)` of `variables`, in order (later ones may use earlier ones).
    pub variables: Vec<(String, String)>,
    pub validations: Vec<Validation>,
    /// The policy names a `paramKind`: parameters are not supported (see the module doc of
    /// [`evaluate`]).
    pub has_params: bool,
}

/// A parsed ValidatingAdmissionPolicyBinding.
#[derive(Clone, Debug)]
pub struct Binding {
    pub name: String,
    pub policy: String,
    pub deny: bool,
    pub warn: bool,
    pub match_resources: Option<MatchResources>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

fn named_rules(v: Option<&Value>) -> Vec<NamedRule> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| NamedRule { rule: rule_from_json(r), names: strings(r.get("resourceNames")) })
        .collect()
}

fn match_resources(v: &Value) -> MatchResources {
    MatchResources {
        rules: named_rules(v.get("resourceRules")),
        exclude: named_rules(v.get("excludeResourceRules")),
        namespace_selector: selector_from_json(v.get("namespaceSelector")),
        object_selector: selector_from_json(v.get("objectSelector")),
        equivalent: v.get("matchPolicy").and_then(Value::as_str) != Some("Exact"),
    }
}

fn named_expressions(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("name")?.as_str()?.to_string(), c.get("expression")?.as_str()?.to_string())))
        .collect()
}

/// Parses a (validated, defaulted) ValidatingAdmissionPolicy.
pub fn parse_policy(obj: &Value) -> Option<Policy> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str)?.to_string();
    let spec = obj.get("spec")?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    let validations = spec
        .get("validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some(Validation {
                expression: text(v, "expression")?,
                message: text(v, "message"),
                message_expression: text(v, "messageExpression"),
                reason: text(v, "reason"),
            })
        })
        .collect();
    Some(Policy {
        name,
        failure_policy: match spec.get("failurePolicy").and_then(Value::as_str) {
            Some("Ignore") => FailurePolicy::Ignore,
            _ => FailurePolicy::Fail,
        },
        match_constraints: match_resources(spec.get("matchConstraints").unwrap_or(&Value::Null)),
        match_conditions: named_expressions(spec.get("matchConditions")),
        variables: named_expressions(spec.get("variables")),
        validations,
        has_params: spec.get("paramKind").is_some_and(|p| !p.is_null()),
    })
}

/// Parses a (validated) ValidatingAdmissionPolicyBinding.
pub fn parse_binding(obj: &Value) -> Option<Binding> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str)?.to_string();
    let spec = obj.get("spec")?;
    let actions = strings(spec.get("validationActions"));
    Some(Binding {
        name,
        policy: spec.get("policyName").and_then(Value::as_str)?.to_string(),
        deny: actions.iter().any(|a| a == "Deny"),
        warn: actions.iter().any(|a| a == "Warn"),
        match_resources: spec.get("matchResources").filter(|m| !m.is_null()).map(match_resources),
    })
}

fn named_rule_matches(r: &NamedRule, a: &Attributes<'_>, version: &str) -> bool {
    matching::rule_matches(&r.rule, a, version) && (r.names.is_empty() || r.names.iter().any(|n| n == a.name))
}

/// Whether the request is in `m`'s scope: a rule matches (in the request's version or, when
/// Equivalent, another served one; no rules, as a binding may leave them, match what the policy
/// matches), no exclude rule does, and both selectors hold.
pub fn in_scope(m: &MatchResources, a: &Attributes<'_>, namespace_labels: Option<&Map<String, Value>>) -> bool {
    let versions = std::iter::once(a.version).chain(a.other_versions.iter().copied().filter(|_| m.equivalent));
    let mut matched = m.rules.is_empty();
    for v in versions {
        if m.exclude.iter().any(|r| named_rule_matches(r, a, v)) {
            return false;
        }
        matched = matched || m.rules.iter().any(|r| named_rule_matches(r, a, v));
    }
    matched
        && matching::namespace_matches(&m.namespace_selector, a, namespace_labels)
        && matching::object_matches(&m.object_selector, a)
}

/// What one binding of a policy decided for a request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Out of scope, a match condition was false, or every validation held.
    Admit,
    /// A validation failed (or failed to evaluate under `failurePolicy: Fail`): a denial when the
    /// binding denies, a warning when it warns.
    Violation { code: u16, reason: String, message: String },
}

/// The HTTP code of a validation's `reason`.
fn code_of(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

/// Evaluates `policy` through `binding` for the request (Kubernetes' CEL admission): scope,
/// `matchConditions`, `variables` (as `variables.<name>`, in order), then every validation with
/// `object`, `oldObject`, `request` and `namespaceObject` (the namespace's name and labels). The
/// first failed validation decides. An evaluation error is a violation under `failurePolicy:
/// Fail` and ignored under `Ignore`; so is a policy with `paramKind` (parameters are not
/// supported).
pub fn evaluate(
    policy: &Policy,
    binding: &Binding,
    a: &Attributes<'_>,
    namespace_labels: Option<&Map<String, Value>>,
) -> Decision {
    if !in_scope(&policy.match_constraints, a, namespace_labels)
        || binding.match_resources.as_ref().is_some_and(|m| !in_scope(m, a, namespace_labels))
    {
        return Decision::Admit;
    }
    let denied = |message: String| {
        format!("ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}", policy.name, binding.name)
    };
    let failed = |message: String| match policy.failure_policy {
        FailurePolicy::Ignore => {
            tracing::warn!(policy = policy.name, binding = binding.name, message, "admission policy failed; ignored");
            Decision::Admit
        }
        FailurePolicy::Fail => Decision::Violation { code: 422, reason: "Invalid".into(), message: denied(message) },
    };
    if policy.has_params {
        return failed("policy parameters (paramKind) are not supported by this server".into());
    }
    let mut ctx = matching::cel_context(a);
    let namespace_object = match (a.namespace, namespace_labels) {
        (Some(ns), labels) => json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": labels.cloned().unwrap_or_default()}}),
        (None, _) => Value::Null,
    };
    ctx.add_variable_from_value("namespaceObject", to_cel(&namespace_object));
    ctx.add_variable_from_value("params", cel::Value::Null);
    match matching::conditions_hold_in(&policy.match_conditions, &ctx) {
        Ok(true) => {}
        Ok(false) => return Decision::Admit,
        Err(e) => return failed(e.to_string()),
    }
    let mut variables: std::collections::HashMap<String, cel::Value> = std::collections::HashMap::new();
    for (name, expr) in &policy.variables {
        ctx.add_variable_from_value("variables", cel::Value::from(variables.clone()));
        match run(expr, &ctx) {
            Ok(value) => {
                variables.insert(name.clone(), value);
            }
            Err(e) => return failed(format!("variable '{name}' resulted in error: {e}")),
        }
    }
    ctx.add_variable_from_value("variables", cel::Value::from(variables));
    for v in &policy.validations {
        match run(&v.expression, &ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let message = v
                    .message_expression
                    .as_deref()
                    .and_then(|m| match run(m, &ctx) {
                        Ok(cel::Value::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
                        _ => None,
                    })
                    .or_else(|| v.message.clone())
                    .unwrap_or_else(|| format!("failed expression: {}", v.expression));
                let reason = v.reason.clone().unwrap_or_else(|| "Invalid".into());
                return Decision::Violation { code: code_of(&reason), reason, message: denied(message) };
            }
            Ok(other) => {
                return failed(format!(
                    "expression '{}' resulted in error: must evaluate to bool, not {other:?}",
                    v.expression
                ))
            }
            Err(e) => return failed(format!("expression '{}' resulted in error: {e}", v.expression)),
        }
    }
    Decision::Admit
}

/// Compiles and runs one expression.
fn run(expr: &str, ctx: &cel::Context<'_, '_>) -> Result<cel::Value, String> {
    let program = cel::Program::compile(expr).map_err(|e| e.to_string())?;
    program.execute(ctx).map_err(|e| e.to_string())
}

/// The warning a `Warn` binding adds for a violation (kube-apiserver's wording).
pub fn warning(policy: &str, binding: &str, message: &str) -> String {
    let prefix = format!("ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: ");
    let message = message.strip_prefix(&prefix).unwrap_or(message);
    format!("Validation failed for ValidatingAdmissionPolicy '{policy}' with binding '{binding}': {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::webhooks::matching::Operation;

    fn policy(spec: Value) -> Policy {
        parse_policy(&json!({"metadata": {"name": "replicas.example.com"}, "spec": spec})).expect("parses")
    }

    fn binding(spec: Value) -> Binding {
        parse_binding(&json!({"metadata": {"name": "replicas-binding"}, "spec": spec})).expect("parses")
    }

    fn deployments_policy(extra: Value) -> Policy {
        let mut spec = json!({
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "validations": [{"expression": "object.spec.replicas <= 5"}],
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        policy(spec)
    }

    fn deploy_create(obj: &Value) -> Attributes<'_> {
        Attributes {
            operation: Operation::Create,
            group: "apps",
            version: "v1",
            kind: "Deployment",
            resource: "deployments",
            subresource: "",
            namespaced: true,
            namespace: Some("prod"),
            name: "web",
            object: Some(obj),
            old_object: None,
            dry_run: false,
            user: None,
            other_versions: &[],
        }
    }

    fn deny() -> Binding {
        binding(json!({"policyName": "replicas.example.com", "validationActions": ["Deny"]}))
    }

    #[test]
    fn a_failed_validation_is_a_violation_in_kubes_words() {
        let p = deployments_policy(json!({}));
        let big = json!({"metadata": {"name": "web"}, "spec": {"replicas": 9}});
        let small = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2}});
        assert_eq!(evaluate(&p, &deny(), &deploy_create(&small), None), Decision::Admit);
        let Decision::Violation { code, reason, message } = evaluate(&p, &deny(), &deploy_create(&big), None) else {
            panic!("violation expected")
        };
        assert_eq!((code, reason.as_str()), (422, "Invalid"));
        assert_eq!(
            message,
            "ValidatingAdmissionPolicy 'replicas.example.com' with binding 'replicas-binding' denied request: \
             failed expression: object.spec.replicas <= 5"
        );
        assert_eq!(
            warning("replicas.example.com", "replicas-binding", &message),
            "Validation failed for ValidatingAdmissionPolicy 'replicas.example.com' with binding 'replicas-binding': \
             failed expression: object.spec.replicas <= 5"
        );
    }

    #[test]
    fn messages_reasons_variables_and_namespace_labels() {
        let p = deployments_policy(json!({
            "variables": [{"name": "limit", "expression": "'env' in namespaceObject.metadata.labels && namespaceObject.metadata.labels.env == 'prod' ? 3 : 10"},
                          {"name": "over", "expression": "object.spec.replicas > variables.limit"}],
            "validations": [{"expression": "!variables.over", "reason": "Forbidden",
                             "messageExpression": "'at most ' + string(variables.limit) + ' replicas'"}],
        }));
        let four = json!({"metadata": {"name": "web"}, "spec": {"replicas": 4}});
        let prod: Map<String, Value> = serde_json::from_value(json!({"env": "prod"})).expect("map");
        let Decision::Violation { code, message, .. } = evaluate(&p, &deny(), &deploy_create(&four), Some(&prod))
        else {
            panic!("violation expected")
        };
        assert_eq!(code, 403);
        assert!(message.ends_with("denied request: at most 3 replicas"), "{message}");
        assert_eq!(evaluate(&p, &deny(), &deploy_create(&four), Some(&Map::new())), Decision::Admit);
    }

    #[test]
    fn scope_rules_exclusions_names_and_bindings() {
        let big = json!({"metadata": {"name": "web", "labels": {"tier": "db"}}, "spec": {"replicas": 9}});
        let a = deploy_create(&big);
        let pods = Attributes { group: "", resource: "pods", kind: "Pod", ..a.clone() };
        let p = deployments_policy(json!({}));
        assert_eq!(evaluate(&p, &deny(), &pods, None), Decision::Admit, "another resource");
        let excluded = deployments_policy(json!({"matchConstraints": {
            "resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}],
            "excludeResourceRules": [{"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["*"],
                "resources": ["deployments"], "resourceNames": ["web"]}]}}));
        assert_eq!(evaluate(&excluded, &deny(), &a, None), Decision::Admit, "excluded by name");
        let other = Attributes { name: "api", ..a.clone() };
        assert!(matches!(evaluate(&excluded, &deny(), &other, None), Decision::Violation { .. }));
        let narrowed = binding(json!({"policyName": "replicas.example.com", "validationActions": ["Warn"],
            "matchResources": {"objectSelector": {"matchLabels": {"tier": "web"}},
                "resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}]}}));
        assert!(narrowed.warn && !narrowed.deny);
        assert_eq!(evaluate(&p, &narrowed, &a, None), Decision::Admit, "the binding's selector does not match");
    }

    #[test]
    fn errors_follow_the_failure_policy() {
        let broken = json!({"validations": [{"expression": "object.spec.nope > 1"}]});
        let obj = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let fail = deployments_policy(broken.clone());
        let Decision::Violation { message, .. } = evaluate(&fail, &deny(), &deploy_create(&obj), None) else {
            panic!("Fail denies")
        };
        assert!(message.contains("expression 'object.spec.nope > 1' resulted in error"), "{message}");
        let mut ignore = broken;
        ignore["failurePolicy"] = json!("Ignore");
        assert_eq!(evaluate(&deployments_policy(ignore), &deny(), &deploy_create(&obj), None), Decision::Admit);
        let skipped =
            deployments_policy(json!({"matchConditions": [{"name": "big", "expression": "object.spec.replicas > 5"}],
            "validations": [{"expression": "false"}]}));
        assert_eq!(evaluate(&skipped, &deny(), &deploy_create(&obj), None), Decision::Admit, "condition false");
    }
}
