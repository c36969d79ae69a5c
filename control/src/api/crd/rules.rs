//! `x-kubernetes-validations`: the CEL rules of a CRD schema node, evaluated with the `cel`
//! crate, `self` bound to the value at that node. Transition rules (those naming `oldSelf`) are
//! evaluated on updates only, `oldSelf` bound to the old object's value at the same place.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::Value;

use super::compiled::Compiled;
use super::schema::Violation;

/// A JSON value as CEL sees it: integers as `int`, maps keyed by strings.
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let entries: HashMap<String, cel::Value> = map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(entries)
        }
    }
}

thread_local! {
    static PROGRAMS: Compiled<cel::Program> = Compiled::default();
}

/// The compiled program of `source`, from this thread's cache when it was compiled before.
fn program(source: &str) -> Option<Rc<cel::Program>> {
    PROGRAMS.with(|cache| cache.get(source, cel::Program::compile))
}

fn rules(schema: &Value) -> impl Iterator<Item = &Value> {
    schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten()
}

fn is_transition(rule: &str) -> bool {
    rule.contains("oldSelf")
}

/// Compile errors of a schema node's rules, for the CRD's validation (`path` is the node's).
pub fn compile_errors(schema: &Value, path: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, r) in rules(schema).enumerate() {
        let field = format!("{path}.x-kubernetes-validations[{i}].rule");
        match r.get("rule").and_then(Value::as_str) {
            None | Some("") => out.push(Violation { field, message: "Required value".into() }),
            Some(rule) => {
                if let Err(e) = cel::Program::compile(rule) {
                    out.push(Violation {
                        field,
                        message: format!("Invalid value: {rule:?}: compilation failed: {}", one_line(&e.to_string())),
                    });
                }
            }
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Evaluates the rules of one schema node against `value` (found at `path`), adding a
/// violation per rule that does not hold, worded as kube-apiserver words it.
pub fn check(schema: &Value, value: &Value, old: Option<&Value>, path: &str, out: &mut Vec<Violation>) {
    let mut bound = None;
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("object");
    for r in rules(schema) {
        let Some(rule) = r.get("rule").and_then(Value::as_str) else { continue };
        if is_transition(rule) && old.is_none() {
            continue;
        }
        let Some(program) = program(rule) else { continue };
        let ctx = bound.get_or_insert_with(|| {
            let mut ctx = cel::Context::default();
            ctx.add_variable_from_value("self", to_cel(value));
            if let Some(old) = old {
                ctx.add_variable_from_value("oldSelf", to_cel(old));
            }
            ctx
        });
        let field = match r.get("fieldPath").and_then(Value::as_str).filter(|p| !p.is_empty()) {
            Some(rel) if path.is_empty() => rel.trim_start_matches('.').to_string(),
            Some(rel) => format!("{path}{rel}"),
            None => path.to_string(),
        };
        let message = match program.execute(ctx) {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => failure_message(r, rule, ctx),
            Ok(other) => format!("rule {rule:?} must evaluate to a bool, not {other:?}"),
            Err(e) => format!("rule {rule:?} failed: {e}"),
        };
        out.push(Violation { field, message: format!("Invalid value: {ty:?}: {message}") });
    }
}

/// `messageExpression` when it evaluates to a string, else `message`, else `failed rule: <rule>`.
fn failure_message(r: &Value, rule: &str, ctx: &cel::Context) -> String {
    if let Some(expr) = r.get("messageExpression").and_then(Value::as_str) {
        if let Some(program) = program(expr) {
            if let Ok(cel::Value::String(s)) = program.execute(ctx) {
                return s.to_string();
            }
        }
    }
    match r.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => format!("failed rule: {rule}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec_schema() -> Value {
        json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.replicas", "message": "replicas should be greater than or equal to minReplicas"},
            {"rule": "self.replicas <= self.maxReplicas"},
            {"rule": "!has(self.image) || self.image.startsWith('registry/')", "fieldPath": ".image",
             "messageExpression": "'image ' + self.image + ' is not from the registry'"},
            {"rule": "self.replicas == oldSelf.replicas"}
        ], "properties": {"replicas": {"type": "integer"}, "minReplicas": {"type": "integer"},
            "maxReplicas": {"type": "integer"}, "image": {"type": "string"}}})
    }

    #[test]
    fn rules_hold_or_say_why() {
        let mut out = Vec::new();
        let ok = json!({"replicas": 3, "minReplicas": 1, "maxReplicas": 5});
        check(&spec_schema(), &ok, None, "spec", &mut out);
        assert!(out.is_empty(), "{out:?}");
        check(&spec_schema(), &ok, Some(&ok), "spec", &mut out);
        assert!(out.is_empty(), "{out:?}");
        let more = json!({"replicas": 4, "minReplicas": 1, "maxReplicas": 5});
        check(&spec_schema(), &more, Some(&ok), "spec", &mut out);
        assert_eq!(out.len(), 1, "a transition rule on update: {out:?}");
        assert_eq!(out[0].message, "Invalid value: \"object\": failed rule: self.replicas == oldSelf.replicas");
        out.clear();
        let bad = json!({"replicas": 9, "minReplicas": 10, "maxReplicas": 5, "image": "x"});
        check(&spec_schema(), &bad, None, "spec", &mut out);
        let got: Vec<String> = out.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        assert_eq!(
            got,
            [
                "spec: Invalid value: \"object\": replicas should be greater than or equal to minReplicas",
                "spec: Invalid value: \"object\": failed rule: self.replicas <= self.maxReplicas",
                "spec.image: Invalid value: \"object\": image x is not from the registry",
            ]
        );
    }

    #[test]
    fn bad_rules_do_not_compile() {
        let schema = json!({"x-kubernetes-validations": [{"rule": "self.a >"}, {"rule": "self.a > 1"}]});
        let errs = compile_errors(&schema, "s");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "s.x-kubernetes-validations[0].rule");
        assert!(errs[0].message.contains("compilation failed"), "{errs:?}");
    }
}
