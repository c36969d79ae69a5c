//! CustomResourceDefinitions and the custom resources they serve.
//!
//! A CRD is a built-in resource (`apiextensions.k8s.io/v1`, checked by [`definition`]); the CRD
//! controller (`controllers/crd.rs`) turns each accepted CRD into [`ResourceInfo`]s (one per served
//! version, [`definition::resource_infos`]) and puts them in the [`Table`], which the router,
//! discovery, the namespace controller and the garbage collector read through
//! [`Table::served`]. Custom objects are JSON checked by their version's structural schema
//! ([`schema`]: defaulting, pruning, validation) instead of a typed struct, stored with the
//! storage version's `apiVersion` and shown in the requested version (`conversion: None`).

pub mod compiled;
pub mod definition;
pub mod printer;
pub mod rules;
pub mod schema;
pub mod selectable;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::names;
use super::object;
use super::registry::FieldValidation;
use super::resources::{ResourceInfo, Resources};

/// `subresources.scale` of a CRD version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// What a custom resource has beyond a built-in's [`ResourceInfo`].
#[derive(Debug)]
pub struct Custom {
    /// `<plural>.<group>`, the CRD that serves it.
    pub crd_name: String,
    /// The version objects are stored in.
    pub storage_version: String,
    pub singular: String,
    pub list_kind: String,
    pub categories: Vec<String>,
    /// The version's `openAPIV3Schema`.
    pub schema: Option<Value>,
    pub columns: Vec<printer::Column>,
    pub scale: Option<ScalePaths>,
    /// The version's `selectableFields` as field-selector names (`spec.color`).
    pub selectable_fields: Vec<String>,
    /// The CRD is being deleted: no new objects.
    pub terminating: bool,
}

impl Custom {
    /// Whether a field selector may use `field`: `metadata.name`, `metadata.namespace` and the
    /// version's `selectableFields`.
    pub fn selects(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace") || self.selectable_fields.iter().any(|f| f == field)
    }

    /// The value a field selector compares for `field` of `obj` (`None` compares as "").
    pub fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        match field {
            "metadata.name" | "metadata.namespace" => selectable::value(obj, field),
            _ if self.selects(field) => selectable::value(obj, field),
            _ => None,
        }
    }
}

/// The `normalize` of custom resources: never called (they have no typed struct; see
/// [`admit`]), and an error if it were.
pub fn no_typed_struct(_: Value) -> Result<(Value, Vec<String>), String> {
    Err("custom resources are checked by their schema".into())
}

/// Interns a name for a custom [`ResourceInfo`], whose names are `&'static str` like the
/// built-ins': each distinct name is allocated once for the life of the process (so memory
/// is bounded by the distinct names ever served, not by CRD writes).
pub fn intern(s: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES.get_or_init(Default::default).lock();
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// Interns a list of interned names (short names), the same way as [`intern`].
pub fn intern_slice(items: &[&'static str]) -> &'static [&'static str] {
    static LISTS: OnceLock<Mutex<HashSet<&'static [&'static str]>>> = OnceLock::new();
    let mut set = LISTS.get_or_init(Default::default).lock();
    if let Some(found) = set.get(items) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(items.to_vec().into_boxed_slice());
    set.insert(leaked);
    leaked
}

/// The served resources: the built-ins and, per CRD, its custom resources. Replaced whole on
/// every change, so a request works with one consistent snapshot.
pub struct Table {
    builtin: Vec<ResourceInfo>,
    inner: RwLock<Inner>,
}

struct Inner {
    by_crd: BTreeMap<String, Vec<ResourceInfo>>,
    served: Arc<Resources>,
}

impl Table {
    /// A table serving the built-in resources only.
    pub fn new(builtin: &Resources) -> Self {
        let builtin: Vec<ResourceInfo> = builtin.iter().cloned().collect();
        let served = Arc::new(Resources::from_list(builtin.clone()));
        Self { builtin, inner: RwLock::new(Inner { by_crd: BTreeMap::new(), served }) }
    }

    /// Everything served now.
    pub fn served(&self) -> Arc<Resources> {
        Arc::clone(&self.inner.read().served)
    }

    /// The resources of one CRD as served now (empty when it serves none).
    pub fn of_crd(&self, crd_name: &str) -> Vec<ResourceInfo> {
        self.inner.read().by_crd.get(crd_name).cloned().unwrap_or_default()
    }

    /// The CRDs served now and their resources.
    pub fn crds(&self) -> BTreeMap<String, Vec<ResourceInfo>> {
        self.inner.read().by_crd.clone()
    }

    /// Serves `resources` for `crd_name` (none: stops serving it).
    pub fn set(&self, crd_name: &str, resources: Vec<ResourceInfo>) {
        let mut inner = self.inner.write();
        if resources.is_empty() {
            inner.by_crd.remove(crd_name);
        } else {
            inner.by_crd.insert(crd_name.to_string(), resources);
        }
        let mut list = self.builtin.clone();
        list.extend(inner.by_crd.values().flatten().cloned());
        inner.served = Arc::new(Resources::from_list(list));
    }
}

/// Whether the storage key `key` is the CRD that serves `ri`.
pub fn serves(key: &str, ri: &ResourceInfo) -> bool {
    ri.custom.as_ref().is_some_and(|c| {
        key.strip_prefix("/registry/apiextensions.k8s.io/customresourcedefinitions/") == Some(c.crd_name.as_str())
    })
}

/// Shows a stored custom object in the version `ri` serves (`conversion: None`: only
/// `apiVersion` changes).
pub fn to_version(ri: &ResourceInfo, obj: &mut Value) {
    if ri.custom.is_some() {
        if let Some(map) = obj.as_object_mut() {
            map.insert("apiVersion".into(), json!(ri.api_version()));
        }
    }
}

/// The stored form of a custom object: the storage version's `apiVersion`.
pub fn to_storage(ri: &ResourceInfo, obj: &mut Value) {
    if let (Some(custom), Some(map)) = (&ri.custom, obj.as_object_mut()) {
        map.insert("apiVersion".into(), json!(format!("{}/{}", ri.group, custom.storage_version)));
    }
}

/// Admission of a custom object: defaulting, pruning (unknown fields reported per
/// `fieldValidation`), metadata rules, then the schema's validation -> 422 with every cause.
/// `old` is the object an update replaces (for CEL transition rules).
pub fn admit(
    ri: &ResourceInfo,
    custom: &Custom,
    mut obj: Value,
    old: Option<&Value>,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<Value> {
    let name = object::name(&obj).to_string();
    let Some(schema) = &custom.schema else { return Ok(obj) };
    if !obj.is_object() {
        return Err(ApiError::BadRequest("the request body must be a JSON or YAML object".into()));
    }
    let unknown = schema::prune(schema, &mut obj, true);
    let mut unknown_meta = Vec::new();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let extra: Vec<String> =
            meta.keys().filter(|k| !schema::OBJECT_META_FIELDS.contains(&k.as_str())).cloned().collect();
        for key in extra {
            meta.remove(&key);
            unknown_meta.push(format!("metadata.{key}"));
        }
    }
    let all_unknown: Vec<String> = unknown.into_iter().chain(unknown_meta).collect();
    if !all_unknown.is_empty() {
        let listed: Vec<String> = all_unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        match validation {
            FieldValidation::Strict => {
                return Err(ApiError::BadRequest(format!("strict decoding error: {}", listed.join(", "))))
            }
            FieldValidation::Warn => warnings.extend(listed),
            FieldValidation::Ignore => {}
        }
    }
    schema::default(schema, &mut obj);
    let mut causes: Vec<(String, String)> = Vec::new();
    if let Err(msg) = names::check_dns1123_subdomain(&name) {
        if !name.is_empty() {
            causes.push(("metadata.name".into(), format!("Invalid value: {name:?}: {msg}")));
        }
    }
    if name.is_empty() {
        causes.push(("metadata.name".into(), "Required value: name or generateName is required".into()));
    }
    for v in schema::validate_update(schema, &obj, old) {
        causes.push((v.field, v.message));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(ri.kind, &name, causes));
    }
    Ok(obj)
}

/// Reads `path` (`.spec.replicas`) of an object.
pub fn at_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    printer::lookup(obj, path)
}

/// Sets `path` (`.spec.replicas`, object keys only) of an object, creating maps on the way.
pub fn set_path(obj: &mut Value, path: &str, value: Value) {
    let keys: Vec<&str> = path.trim_start_matches('.').split('.').filter(|k| !k.is_empty()).collect();
    let Some((last, parents)) = keys.split_last() else { return };
    let mut cur = obj;
    for key in parents {
        if !cur.get(*key).is_some_and(Value::is_object) {
            if let Some(map) = cur.as_object_mut() {
                map.insert((*key).to_string(), json!({}));
            }
        }
        let Some(next) = cur.get_mut(*key) else { return };
        cur = next;
    }
    if let Some(map) = cur.as_object_mut() {
        map.insert((*last).to_string(), value);
    }
}

/// The `autoscaling/v1 Scale` of a custom object, from the CRD's scale paths.
pub fn to_scale(scale: &ScalePaths, obj: &Value) -> Value {
    let meta = object::meta(obj);
    let selector =
        scale.label_selector.as_deref().and_then(|p| at_path(obj, p)).and_then(Value::as_str).unwrap_or("").to_string();
    let mut view = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": at_path(obj, &scale.spec_replicas).cloned().unwrap_or(json!(0))},
        "status": {"replicas": at_path(obj, &scale.status_replicas).cloned().unwrap_or(json!(0))},
    });
    // `selector` is `omitempty` in Go's Scale: no selector, no key.
    if !selector.is_empty() {
        view["status"]["selector"] = json!(selector);
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crontabs() -> Vec<ResourceInfo> {
        let mut crd = json!({
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {"group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                        "properties": {"replicas": {"type": "integer", "default": 1}}}}}}},
                    {"name": "v2", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        });
        definition::default(&mut crd);
        definition::resource_infos(&crd)
    }

    #[test]
    fn the_table_serves_and_forgets_custom_resources() {
        let table = Table::new(&Resources::default());
        let builtin = table.served().iter().count();
        table.set("crontabs.stable.example.com", crontabs());
        let served = table.served();
        assert!(served.by_plural("stable.example.com", "v2", "crontabs").is_some());
        assert!(served.by_plural("", "v1", "pods").is_some());
        assert_eq!(served.iter().count(), builtin + 2);
        table.set("crontabs.stable.example.com", Vec::new());
        assert!(table.served().by_plural("stable.example.com", "v1", "crontabs").is_none());
        assert!(std::ptr::eq(intern("crontabs"), intern(&String::from("crontabs"))));
    }

    #[test]
    fn admission_prunes_defaults_and_validates() {
        let infos = crontabs();
        let ri = &infos[0];
        let custom = ri.custom.as_ref().expect("custom");
        let obj = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
            "metadata": {"name": "a", "bogus": 1}, "spec": {"x": 1}});
        let mut warnings = Vec::new();
        let admitted = admit(ri, custom, obj.clone(), None, FieldValidation::Warn, &mut warnings).expect("admitted");
        assert_eq!(admitted["spec"], json!({"replicas": 1}));
        assert_eq!(warnings, vec!["unknown field \"spec.x\"", "unknown field \"metadata.bogus\""]);
        let strict = admit(ri, custom, obj, None, FieldValidation::Strict, &mut Vec::new()).expect_err("strict");
        assert!(strict.to_string().contains("strict decoding error: unknown field \"spec.x\""), "{strict}");
        let bad = json!({"metadata": {"name": "Bad_Name"}, "spec": {"replicas": "two"}});
        let err = admit(ri, custom, bad, None, FieldValidation::Warn, &mut Vec::new()).expect_err("invalid");
        let ApiError::Invalid { causes, .. } = err else { panic!("not invalid") };
        assert_eq!(causes.len(), 2, "{causes:?}");
        let mut stored = json!({"apiVersion": "stable.example.com/v2"});
        to_storage(&infos[1], &mut stored);
        assert_eq!(stored["apiVersion"], json!("stable.example.com/v1"));
        to_version(&infos[1], &mut stored);
        assert_eq!(stored["apiVersion"], json!("stable.example.com/v2"));
    }

    #[test]
    fn scale_paths() {
        let paths = ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".status.selector".into()),
        };
        let mut obj = json!({"metadata": {"name": "a"}, "status": {"replicas": 2, "selector": "app=a"}});
        set_path(&mut obj, ".spec.replicas", json!(5));
        let scale = to_scale(&paths, &obj);
        assert_eq!(scale["spec"]["replicas"], json!(5));
        assert_eq!(scale["status"], json!({"replicas": 2, "selector": "app=a"}));
        // No selector path (or nothing at it): no `selector` key, as Go's omitempty writes it.
        let bare = ScalePaths { label_selector: None, ..paths };
        assert_eq!(to_scale(&bare, &obj)["status"], json!({"replicas": 2}));
    }
}
