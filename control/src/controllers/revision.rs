//! Revisions of a DaemonSet's or StatefulSet's pod template: the `controller-revision-hash`
//! label value (a hash of the template, in Kubernetes' "safe" alphabet) and the
//! ControllerRevision object that records it.

use serde_json::{json, Value};

use crate::api::object;

/// The label pods carry with their template's revision hash.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The template's hash, as a Deployment's `pod-template-hash` is made (FNV-1a of the canonical
/// JSON in Kubernetes' safe alphabet), without a collision count.
pub fn template_hash(template: &Value) -> String {
    super::deployment::hash::pod_template_hash(template, None)
}

/// The ControllerRevision recording `owner`'s template at `revision`: named
/// `<owner>-<hash>`, controlled by the owner, labelled like its pods.
pub fn controller_revision(owner: &Value, api_version: &str, kind: &str, hash: &str, revision: i64) -> Value {
    let mut labels =
        owner.pointer("/spec/template/metadata/labels").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    labels[HASH_LABEL] = json!(hash);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": format!("{}-{hash}", object::name(owner)),
            "namespace": object::namespace(owner).unwrap_or("default"),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": api_version, "kind": kind, "name": object::name(owner),
                "uid": object::str_at(owner, &["metadata", "uid"]).unwrap_or(""),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "data": {"spec": {"template": owner.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}))}},
        "revision": revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_templates_hash_equally() {
        let a = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let b = json!({"spec": {"containers": [{"image": "x", "name": "c"}]}, "metadata": {"labels": {"b": "2", "a": "1"}}});
        let c = json!({"spec": {"containers": [{"name": "c", "image": "y"}]}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&c));
        let h = template_hash(&a);
        assert!(h.bytes().all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)), "{h}");
        let owner = json!({"metadata": {"name": "db", "namespace": "ns", "uid": "u"}, "spec": {"template": a}});
        let cr = controller_revision(&owner, "apps/v1", "StatefulSet", &h, 2);
        assert_eq!(cr["metadata"]["name"], format!("db-{h}"));
        assert_eq!(cr["revision"], 2);
        assert_eq!(cr["metadata"]["labels"][HASH_LABEL], h);
    }
}
