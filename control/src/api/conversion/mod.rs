//! Versions of one resource that share storage: a built-in resource served in a version other
//! than the one it is stored in (autoscaling/v1 HorizontalPodAutoscalers, stored as v2), and the
//! versions of a custom resource (`conversion: None`: only `apiVersion` changes).
//!
//! Invariant: the store holds the storage version only; every object read through another
//! version is converted on the way out ([`to_version`]) and on the way in ([`to_storage`]), and
//! both are no-ops on an object already in the target version.

pub mod hpa;

use serde_json::Value;

use super::resources::{Normalize, ResourceInfo};

/// How a built-in resource served in a non-storage version is converted.
#[derive(Debug)]
pub struct Conversion {
    /// The version objects are stored in.
    pub storage_version: &'static str,
    /// The storage version's typed decode (admission defaults and validates in that version).
    pub storage_normalize: Normalize,
    /// Served version -> storage version (`apiVersion` included).
    pub to_storage: fn(Value) -> Value,
    /// Storage version -> served version (`apiVersion` included).
    pub from_storage: fn(Value) -> Value,
}

fn api_version_of(obj: &Value) -> &str {
    obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

/// An object of a built-in kind served in several versions, from version `from` to `to` (for an
/// admission webhook matched through an equivalent version); any other object unchanged but for
/// what the caller rewrites (`apiVersion`).
pub fn between(group: &str, kind: &str, from: &str, to: &str, obj: Value) -> Value {
    match (group, kind, from, to) {
        ("autoscaling", "HorizontalPodAutoscaler", "v1", "v2") => hpa::v1_to_v2(obj),
        ("autoscaling", "HorizontalPodAutoscaler", "v2", "v1") => hpa::v2_to_v1(obj),
        _ => obj,
    }
}

/// A stored object as `ri` serves it.
pub fn to_version(ri: &ResourceInfo, obj: &mut Value) {
    match ri.conversion {
        Some(c) if api_version_of(obj) != ri.api_version() => *obj = (c.from_storage)(std::mem::take(obj)),
        Some(_) => {}
        None => super::crd::to_version(ri, obj),
    }
}

/// An object `ri` serves, in its storage version.
pub fn to_storage(ri: &ResourceInfo, obj: &mut Value) {
    match ri.conversion {
        Some(c) if api_version_of(obj) == ri.api_version() => *obj = (c.to_storage)(std::mem::take(obj)),
        Some(_) => {}
        None => super::crd::to_storage(ri, obj),
    }
}
