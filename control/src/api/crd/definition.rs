//! CustomResourceDefinition rules: defaulting and validation of the CRD object itself (names,
//! group, scope, versions, structural schemas), as kube-apiserver checks them, and the
//! [`ResourceInfo`]s a CRD serves.

use std::sync::Arc;

use serde_json::{json, Value};

use super::printer::Column;
use super::{intern, intern_slice, Custom, ScalePaths};
use crate::api::names;
use crate::api::object;
use crate::api::resources::{ResourceInfo, Resources};

/// The finalizer that holds a CRD until its objects are deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Whether a resource is the CRD resource itself.
pub fn is_crd(ri: &ResourceInfo) -> bool {
    ri.group == "apiextensions.k8s.io" && ri.kind == "CustomResourceDefinition"
}

/// What a create adds: the cleanup finalizer, and no status from the client.
pub fn prepare_create(crd: &mut Value) {
    let meta = object::meta_mut(crd);
    let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(list) = finalizers.as_array_mut() {
        if !list.iter().any(|f| f == CLEANUP_FINALIZER) {
            list.push(json!(CLEANUP_FINALIZER));
        }
    }
    if let Some(map) = crd.as_object_mut() {
        map.insert(
            "status".into(),
            json!({"acceptedNames": {"kind": "", "plural": ""}, "conditions": [], "storedVersions": []}),
        );
    }
}

/// kube-apiserver's defaults: `listKind`, `singular`, `conversion`.
pub fn default(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        if !kind.is_empty() {
            names.entry("listKind").or_insert_with(|| json!(format!("{kind}List")));
            names.entry("singular").or_insert_with(|| json!(kind.to_lowercase()));
        }
    }
    spec.entry("conversion").or_insert_with(|| json!({"strategy": "None"}));
}

fn dns1035(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string()
    })
}

fn is_kind(value: &str) -> bool {
    value.starts_with(|c: char| c.is_ascii_alphabetic()) && value.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Every violated rule of a CRD (after defaulting), as `(field, message)` causes.
pub fn validate(crd: &Value, builtin: &Resources) -> Vec<(String, String)> {
    let mut causes: Vec<(String, String)> = Vec::new();
    let mut cause = |f: &str, m: String| causes.push((f.to_string(), m));
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let s = |path: &str| object::str_at(&spec, &path.split('.').collect::<Vec<_>>()).unwrap_or("").to_string();
    let group = s("group");
    let plural = s("names.plural");
    let name = object::name(crd);
    if name != format!("{plural}.{group}") {
        cause("metadata.name", format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"));
    }
    if group.is_empty() {
        cause("spec.group", "Required value".into());
    } else if names::check_dns1123_subdomain(&group).is_err() {
        cause("spec.group", format!("Invalid value: {group:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
    } else if !group.contains('.') {
        cause("spec.group", format!("Invalid value: {group:?}: should be a domain with at least one dot"));
    }
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    for (field, required) in [("plural", true), ("singular", false)] {
        let value = names.get(field).and_then(Value::as_str).unwrap_or("");
        if value.is_empty() {
            if required {
                cause(&format!("spec.names.{field}"), "Required value".into());
            }
        } else if let Some(msg) = dns1035(value) {
            cause(&format!("spec.names.{field}"), format!("Invalid value: {value:?}: {msg}"));
        }
    }
    for field in ["kind", "listKind"] {
        let value = names.get(field).and_then(Value::as_str).unwrap_or("");
        if value.is_empty() {
            cause(&format!("spec.names.{field}"), "Required value".into());
        } else if !is_kind(value) {
            cause(&format!("spec.names.{field}"), format!("Invalid value: {value:?}: may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?"));
        }
    }
    if !names.get("kind").and_then(Value::as_str).unwrap_or("").is_empty() && names.get("kind") == names.get("listKind")
    {
        cause("spec.names.listKind", "Invalid value: \"\": kind and listKind may not be the same or empty".into());
    }
    for (i, short) in names.get("shortNames").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let value = short.as_str().unwrap_or("");
        if let Some(msg) = dns1035(value) {
            cause(&format!("spec.names.shortNames[{i}]"), format!("Invalid value: {value:?}: {msg}"));
        }
    }
    match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced" | "Cluster") => {}
        None | Some("") => cause("spec.scope", "Required value".into()),
        Some(other) => {
            cause("spec.scope", format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""))
        }
    }
    if !group.is_empty() && builtin.iter().any(|r| r.group == group && r.plural == plural) {
        cause(
            "spec.names.plural",
            format!("Invalid value: {plural:?}: is served by the API server itself in group {group:?}"),
        );
    }
    let versions = spec.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        cause("spec.versions", "Required value: must have exactly one version marked as storage version".into());
    } else {
        let storage = versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
        if storage != 1 {
            cause(
                "spec.versions",
                format!("Invalid value: {storage}: must have exactly one version marked as storage version"),
            );
        }
        if !versions.iter().any(|v| v.get("served").and_then(Value::as_bool) == Some(true)) {
            cause("spec.versions", "Invalid value: \"served\": must serve at least one version".into());
        }
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        let vname = v.get("name").and_then(Value::as_str).unwrap_or("");
        if vname.is_empty() {
            cause(&format!("{at}.name"), "Required value".into());
        } else if let Some(msg) = dns1035(vname) {
            cause(&format!("{at}.name"), format!("Invalid value: {vname:?}: {msg}"));
        } else if seen.contains(&vname) {
            cause(&format!("{at}.name"), format!("Duplicate value: {vname:?}"));
        }
        seen.push(vname);
        match v.pointer("/schema/openAPIV3Schema") {
            None => cause(&format!("{at}.schema.openAPIV3Schema"), "Required value: schemas are required".into()),
            Some(schema) => {
                for e in super::schema::structural_errors(schema, &format!("{at}.schema.openAPIV3Schema")) {
                    cause(&e.field, e.message);
                }
            }
        }
        for (field, message) in super::selectable::validate(v, &at) {
            cause(&field, message);
        }
        if let Some(scale) = v.pointer("/subresources/scale") {
            for field in ["specReplicasPath", "statusReplicasPath"] {
                let path = scale.get(field).and_then(Value::as_str).unwrap_or("");
                if path.is_empty() {
                    cause(&format!("{at}.subresources.scale.{field}"), "Required value".into());
                } else if !path.starts_with('.') || path.len() < 2 {
                    cause(
                        &format!("{at}.subresources.scale.{field}"),
                        format!("Invalid value: {path:?}: should be a json path under .spec"),
                    );
                }
            }
        }
        for (j, col) in v.get("additionalPrinterColumns").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let cat = format!("{at}.additionalPrinterColumns[{j}]");
            if col.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                cause(&format!("{cat}.name"), "Required value".into());
            }
            match col.get("type").and_then(Value::as_str) {
                Some("integer" | "number" | "string" | "boolean" | "date") => {}
                Some(other) => cause(&format!("{cat}.type"), format!("Unsupported value: {other:?}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"")),
                None => cause(&format!("{cat}.type"), "Required value".into()),
            }
            match col.get("jsonPath").and_then(Value::as_str) {
                Some(p) if p.starts_with('.') => {}
                Some(p) => cause(
                    &format!("{cat}.jsonPath"),
                    format!("Invalid value: {p:?}: must be a simple json path starting with ."),
                ),
                None => cause(&format!("{cat}.jsonPath"), "Required value".into()),
            }
        }
    }
    causes
}

/// The group, names and scope of a CRD, and who its objects are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
}

/// The names a CRD asks for.
pub fn names(crd: &Value) -> Names {
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let list = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default()
    };
    Names {
        group: s("/spec/group"),
        plural: s("/spec/names/plural"),
        singular: s("/spec/names/singular"),
        kind: s("/spec/names/kind"),
        list_kind: s("/spec/names/listKind"),
        short_names: list("/spec/names/shortNames"),
        categories: list("/spec/names/categories"),
    }
}

/// The names of `mine` that another CRD of the same group already has, as
/// `(reason, message)` of the `NamesAccepted=False` condition.
pub fn name_conflict(mine: &Names, other: &Names) -> Option<(&'static str, String)> {
    if mine.group != other.group {
        return None;
    }
    let theirs: Vec<&str> = [other.plural.as_str(), other.singular.as_str()]
        .into_iter()
        .chain(other.short_names.iter().map(String::as_str))
        .collect();
    if theirs.contains(&mine.plural.as_str()) {
        return Some(("PluralConflict", format!("{:?} is already in use", mine.plural)));
    }
    if !mine.singular.is_empty() && theirs.contains(&mine.singular.as_str()) {
        return Some(("SingularConflict", format!("{:?} is already in use", mine.singular)));
    }
    if let Some(short) = mine.short_names.iter().find(|s| theirs.contains(&s.as_str())) {
        return Some(("ShortNamesConflict", format!("{short:?} is already in use")));
    }
    if mine.kind == other.kind || mine.kind == other.list_kind {
        return Some(("KindConflict", format!("{:?} is already in use", mine.kind)));
    }
    if mine.list_kind == other.kind || mine.list_kind == other.list_kind {
        return Some(("ListKindConflict", format!("{:?} is already in use", mine.list_kind)));
    }
    None
}

/// The resources a CRD serves: one per served version, all stored under the storage version.
pub fn resource_infos(crd: &Value) -> Vec<ResourceInfo> {
    let n = names(crd);
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    let Some(storage) = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
    else {
        return Vec::new();
    };
    let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) == Some("Namespaced");
    let terminating = object::deletion_timestamp(crd).is_some();
    let short: Vec<&'static str> = n.short_names.iter().map(|s| intern(s)).collect();
    let short_names = intern_slice(&short);
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| {
            let version = v.get("name").and_then(Value::as_str)?;
            let status = v.pointer("/subresources/status").is_some();
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: s
                    .get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas")
                    .to_string(),
                status_replicas: s
                    .get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas")
                    .to_string(),
                label_selector: s.get("labelSelectorPath").and_then(Value::as_str).map(String::from),
            });
            let subresources: &'static [&'static str] = match (status, scale.is_some()) {
                (true, true) => &["status", "scale"],
                (true, false) => &["status"],
                (false, true) => &["scale"],
                (false, false) => &[],
            };
            let columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| cols.iter().filter_map(Column::from_json).collect())
                .unwrap_or_default();
            let custom = Custom {
                crd_name: object::name(crd).to_string(),
                storage_version: storage.to_string(),
                singular: n.singular.clone(),
                list_kind: n.list_kind.clone(),
                categories: n.categories.clone(),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                columns,
                scale,
                selectable_fields: super::selectable::fields(v),
                terminating,
            };
            Some(ResourceInfo {
                group: intern(&n.group),
                version: intern(version),
                kind: intern(&n.kind),
                plural: intern(&n.plural),
                short_names,
                namespaced,
                subresources,
                in_category_all: n.categories.iter().any(|c| c == "all"),
                normalize: super::no_typed_struct,
                schema: None,
                custom: Some(Arc::new(custom)),
                conversion: None,
                returns_deleted_object: false,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn crontab_crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {
                "group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}},
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}},
                    {"name": "v1beta1", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}}
                ]
            }
        })
    }

    #[test]
    fn a_good_crd_passes_and_serves_each_version() {
        let mut crd = crontab_crd();
        default(&mut crd);
        assert_eq!(crd["spec"]["names"]["listKind"], json!("CronTabList"));
        assert_eq!(crd["spec"]["names"]["singular"], json!("crontab"));
        assert!(validate(&crd, &Resources::default()).is_empty(), "{:?}", validate(&crd, &Resources::default()));
        let infos = resource_infos(&crd);
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].key(Some("a"), "b"), "/registry/stable.example.com/crontabs/a/b");
        assert_eq!(infos[1].prefix(), infos[0].prefix());
        assert_eq!(infos[0].subresources, &["status", "scale"]);
        assert_eq!(infos[1].subresources, &[] as &[&str]);
        assert_eq!(infos[1].custom.as_ref().map(|c| c.storage_version.as_str()), Some("v1"));
        assert_eq!(infos[0].short_names, &["ct"]);
    }

    #[test]
    fn bad_crds_list_every_cause() {
        let mut crd = crontab_crd();
        crd["metadata"]["name"] = json!("wrong");
        crd["spec"]["group"] = json!("nodot");
        crd["spec"]["scope"] = json!("Galaxy");
        crd["spec"]["names"]["plural"] = json!("Cron_Tabs");
        crd["spec"]["versions"][1]["storage"] = json!(true);
        crd["spec"]["versions"][1]["schema"] = Value::Null;
        default(&mut crd);
        let causes = validate(&crd, &Resources::default());
        let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
        for want in [
            "metadata.name",
            "spec.group",
            "spec.names.plural",
            "spec.scope",
            "spec.versions",
            "spec.versions[1].schema.openAPIV3Schema",
        ] {
            assert!(fields.contains(&want), "{want} missing from {causes:#?}");
        }
        let mut clash = crontab_crd();
        clash["metadata"]["name"] = json!("deployments.apps");
        clash["spec"]["group"] = json!("apps");
        clash["spec"]["names"]["plural"] = json!("deployments");
        default(&mut clash);
        assert!(validate(&clash, &Resources::default()).iter().any(|(f, _)| f == "spec.names.plural"));
    }

    #[test]
    fn names_conflict_within_a_group() {
        let mut a = crontab_crd();
        default(&mut a);
        let mine = names(&a);
        let mut other = mine.clone();
        other.plural = "others".into();
        other.singular = "other".into();
        other.kind = "Other".into();
        other.list_kind = "OtherList".into();
        assert!(name_conflict(&mine, &other).is_some_and(|(r, _)| r == "ShortNamesConflict"));
        other.short_names.clear();
        assert!(name_conflict(&mine, &other).is_none());
        other.group = "elsewhere.io".into();
        other.plural = "crontabs".into();
        assert!(name_conflict(&mine, &other).is_none());
    }
}
