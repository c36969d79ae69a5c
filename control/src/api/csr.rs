//! The `approval` subresource of CertificateSigningRequests (`kubectl certificate approve|deny`):
//! a write there changes `status.conditions` and nothing else, and kube-apiserver's rules hold on
//! every update: `Approved` and `Denied` exclude each other, are `True` only, and once set are
//! never removed. (The requester is recorded at create, `http/handlers.rs`.)

use serde_json::{json, Value};

use super::admission::Cause;

/// The subresource's name.
pub const SUBRESOURCE: &str = "approval";

/// Whether `(group, kind)` is the CSR kind.
pub fn is_csr(group: &str, kind: &str) -> bool {
    group == "certificates.k8s.io" && kind == "CertificateSigningRequest"
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn has(conditions: &[Value], ty: &str) -> bool {
    conditions.iter().any(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// The object an approval write leaves: `current` with `desired`'s conditions.
pub fn only_conditions(current: &Value, desired: &Value) -> Value {
    let mut next = current.clone();
    if !next.get("status").is_some_and(Value::is_object) {
        next["status"] = json!({});
    }
    next["status"]["conditions"] = Value::Array(conditions(desired));
    next
}

/// kube's checks of the conditions an approval (or status) write leaves.
pub fn validate(current: &Value, next: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let now = conditions(next);
    let before = conditions(current);
    if has(&now, "Approved") && has(&now, "Denied") {
        causes.push((
            "status.conditions".into(),
            "Invalid value: \"Approved\": Approved and Denied conditions are mutually exclusive".into(),
        ));
    }
    for (i, c) in now.iter().enumerate() {
        let ty = c.get("type").and_then(Value::as_str).unwrap_or("");
        let status = c.get("status").and_then(Value::as_str).unwrap_or("");
        if matches!(ty, "Approved" | "Denied") && status != "True" {
            causes.push((
                format!("status.conditions[{i}].status"),
                format!("Unsupported value: \"{status}\": supported values: \"True\""),
            ));
        }
    }
    for ty in ["Approved", "Denied"] {
        if has(&before, ty) && !has(&now, ty) {
            causes.push((
                "status.conditions".into(),
                format!("Forbidden: updates may not remove a condition of type \"{ty}\""),
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_changes_conditions_only_and_keeps_kubes_rules() {
        let current = json!({"spec": {"signerName": "kubernetes.io/kube-apiserver-client"}, "status": {}});
        let desired = json!({"spec": {"signerName": "other"}, "status": {"conditions": [
            {"type": "Approved", "status": "True", "reason": "KubectlApprove"}]}});
        let next = only_conditions(&current, &desired);
        assert_eq!(next["spec"]["signerName"], "kubernetes.io/kube-apiserver-client");
        assert_eq!(next["status"]["conditions"][0]["type"], "Approved");
        assert!(validate(&current, &next).is_empty());
        let both = json!({"status": {"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]}});
        assert_eq!(validate(&current, &both).len(), 1);
        let removed = json!({"status": {"conditions": []}});
        assert!(validate(&next, &removed)[0].1.contains("may not remove"));
        let not_true = json!({"status": {"conditions": [{"type": "Denied", "status": "False"}]}});
        assert_eq!(validate(&current, &not_true)[0].0, "status.conditions[0].status");
    }
}
