//! [`ObjectKey`]: the namespace and name of an object, the unit a controller reconciles.

use std::fmt;

use serde_json::Value;

use crate::api::object;

/// An object's namespace (none for cluster-scoped kinds) and name. Orders by namespace first,
/// so a namespace's objects are one range of a `BTreeMap`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of a namespaced object.
    pub fn namespaced(namespace: &str, name: &str) -> Self {
        Self { namespace: Some(namespace.to_string()), name: name.to_string() }
    }

    /// The key of `obj` from its metadata.
    pub fn of(obj: &Value) -> Self {
        Self { namespace: object::namespace(obj).map(String::from), name: object::name(obj).to_string() }
    }

    /// The namespace as the registry takes it.
    pub fn ns(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}
