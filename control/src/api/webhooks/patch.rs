//! Applying a mutating webhook's JSON Patch to the object under admission.

use serde_json::Value;

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("JSON patch failed: {0}")]
    Apply(#[from] json_patch::PatchError),
    #[error("the patched object is not an object")]
    NotAnObject,
    #[error("a patch may not change {0}")]
    Identity(&'static str),
}

/// `obj` with `patch` applied; identity fields (`apiVersion`, `kind`, name, namespace) must stay.
pub fn apply(obj: &Value, patch: &json_patch::Patch) -> Result<Value, PatchError> {
    let mut next = obj.clone();
    json_patch::patch(&mut next, patch)?;
    if !next.is_object() {
        return Err(PatchError::NotAnObject);
    }
    for (field, pointer) in [
        ("apiVersion", "/apiVersion"),
        ("kind", "/kind"),
        ("metadata.name", "/metadata/name"),
        ("metadata.namespace", "/metadata/namespace"),
    ] {
        if obj.pointer(pointer) != next.pointer(pointer) {
            return Err(PatchError::Identity(field));
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(v: Value) -> json_patch::Patch {
        serde_json::from_value(v).expect("patch")
    }

    #[test]
    fn patches_apply_in_order() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let next = apply(
            &cm,
            &ops(json!([
                {"op": "add", "path": "/metadata/labels", "value": {}},
                {"op": "add", "path": "/metadata/labels/mutated", "value": "yes"},
                {"op": "replace", "path": "/data/k", "value": "w"}
            ])),
        )
        .expect("applies");
        assert_eq!(next["metadata"]["labels"]["mutated"], "yes");
        assert_eq!(next["data"]["k"], "w");
        assert_eq!(cm["data"]["k"], "v", "the input is left alone");
    }

    #[test]
    fn bad_patches_are_refused() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let err =
            apply(&cm, &ops(json!([{"op": "replace", "path": "/data/missing", "value": 1}]))).expect_err("no path");
        assert!(matches!(err, PatchError::Apply(_)), "{err}");
        let err =
            apply(&cm, &ops(json!([{"op": "replace", "path": "/metadata/name", "value": "b"}]))).expect_err("rename");
        assert_eq!(err.to_string(), "a patch may not change metadata.name");
        let err = apply(&cm, &ops(json!([{"op": "replace", "path": "", "value": 3}]))).expect_err("not an object");
        assert!(matches!(err, PatchError::NotAnObject), "{err}");
    }
}
