//! The DefaultStorageClass admission: a PersistentVolumeClaim created without
//! `spec.storageClassName` gets the class marked `storageclass.kubernetes.io/is-default-class:
//! "true"` (the newest, when several are), as kube-apiserver's plugin of that name does. A claim
//! that names a class, even `""`, keeps it.

use serde_json::{json, Value};

use super::error::ApiResult;
use super::object;
use super::registry::{ListQuery, Registry};

/// Marks the cluster's default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// Whether `class` is marked default.
pub fn is_default(class: &Value) -> bool {
    class.pointer("/metadata/annotations").and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).and_then(Value::as_str)
        == Some("true")
}

/// The default among `classes`: the newest marked one, by creation time then name.
pub fn default_class(classes: &[Value]) -> Option<&str> {
    classes
        .iter()
        .filter(|c| is_default(c))
        .max_by(|a, b| {
            let created = |c: &Value| object::str_at(c, &["metadata", "creationTimestamp"]).unwrap_or("").to_string();
            created(a).cmp(&created(b)).then_with(|| object::name(b).cmp(object::name(a)))
        })
        .map(object::name)
}

impl Registry {
    /// Gives a new claim without a class the default StorageClass, if there is one.
    pub(super) async fn admit_storage_class(&self, claim: &mut Value) -> ApiResult<()> {
        if claim.pointer("/spec/storageClassName").is_some_and(|c| !c.is_null()) {
            return Ok(());
        }
        let ri = self.resource("storage.k8s.io", "StorageClass")?;
        let classes = self.list(ri, &ListQuery::default()).await?;
        if let (Some(class), Some(spec)) =
            (default_class(&classes.items), claim.get_mut("spec").and_then(Value::as_object_mut))
        {
            spec.insert("storageClassName".into(), json!(class));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: bool, created: &str) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created}});
        if default {
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
        }
        c
    }

    #[test]
    fn the_newest_default_class_wins() {
        assert_eq!(default_class(&[class("a", false, "2026-01-01T00:00:00Z")]), None);
        let classes = [
            class("old", true, "2026-01-01T00:00:00Z"),
            class("plain", false, "2026-03-01T00:00:00Z"),
            class("new", true, "2026-02-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes), Some("new"));
    }
}
