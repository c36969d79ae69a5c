//! Kubernetes strategic merge patch (`application/strategic-merge-patch+json`).
//!
//! Follows `k8s.io/apimachinery/pkg/util/strategicpatch`:
//!
//! * maps merge recursively and a `null` value deletes the key;
//! * lists with a merge key merge element-wise by that key (matching elements are merged, new ones
//!   appended); primitive lists with the `merge` strategy are unioned; every other list is
//!   replaced whole;
//! * directives: `$patch: replace | delete | merge` (on a map, or as an element of a merge list),
//!   `$retainKeys`, `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.
//!
//! No directive survives into the result. Which lists merge, and by which key, comes from
//! [`merge_key`], a table of the built-in types that server-side apply reuses.
//!
//! Two deliberate differences from upstream: `$patch: delete` on a nested map removes the field
//! (upstream leaves an empty map), and `$setElementOrder` puts the elements it does not name after
//! the named ones, in their existing relative order.

use serde_json::{Map, Value};

/// Deepest nesting of maps and lists a patch (or the object it applies to) may have. It matches
/// `serde_json`'s own parse limit, so any document that parsed fits.
pub const MAX_DEPTH: usize = 128;

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// How the elements of a list field are matched up when merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeKey {
    /// A list of objects merged element-wise by the value of this field.
    Key(&'static str),
    /// A list of scalars merged as a set (union, existing order first).
    PrimitiveSet,
}

/// Why a strategic merge patch could not be applied. The messages are meant for the `message` of
/// a Kubernetes `Status`.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not a JSON object.
    #[error("strategic merge patch must be a JSON object, got {0}")]
    PatchNotAnObject(&'static str),
    /// The object being patched is not a JSON object.
    #[error("object to patch must be a JSON object, got {0}")]
    OriginalNotAnObject(&'static str),
    /// `$patch` with a value other than `replace`, `delete` or `merge`.
    #[error("unknown $patch directive {value} at {path}: expected \"replace\", \"delete\" or \"merge\"")]
    UnknownPatchDirective {
        /// Field path of the map or list holding the directive.
        path: String,
        /// The offending value, as JSON.
        value: String,
    },
    /// An element of a merge list lacks the list's merge key.
    #[error("element of list {path} is missing its merge key \"{key}\"")]
    MissingMergeKey {
        /// Field path of the list.
        path: String,
        /// The merge key the element should carry.
        key: &'static str,
    },
    /// A merge list keyed by a field has an element that is not an object.
    #[error("list {path} merges by key \"{key}\", so its elements must be objects")]
    ElementNotAnObject {
        /// Field path of the list.
        path: String,
        /// The list's merge key.
        key: &'static str,
    },
    /// A list merged as a set of scalars has an object or list element.
    #[error("list {path} is a set of scalars and cannot hold objects or lists")]
    NotAScalar {
        /// Field path of the list.
        path: String,
    },
    /// A directive whose argument has the wrong shape.
    #[error("invalid {directive} at {path}: {reason}")]
    InvalidDirective {
        /// The directive key as written in the patch.
        directive: String,
        /// Field path of the map holding the directive.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The patch sets a field that its own `$retainKeys` list would drop.
    #[error("field \"{field}\" at {path} is set by the patch but missing from $retainKeys")]
    NotInRetainKeys {
        /// Field path of the map holding `$retainKeys`.
        path: String,
        /// The field missing from the list.
        field: String,
    },
    /// The document nests more than [`MAX_DEPTH`] levels.
    #[error("document nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Applies the strategic merge `patch` to `original`, an object of the given `kind` (such as
/// `"Deployment"`), and returns the patched object. Neither input is modified.
///
/// A `null` original is treated as an empty object. A top-level `$patch: delete` yields `{}`.
pub fn strategic_merge(kind: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let patch = patch.as_object().ok_or(PatchError::PatchNotAnObject(type_name(patch)))?;
    let base = match original {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => return Err(PatchError::OriginalNotAnObject(type_name(other))),
    };
    let merged = Merger { kind }.merge_map(base, patch, &[], 0)?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// Returns how the list at `path` (field names from the object root, list elements not counted)
/// of an object of `kind` merges, or `None` when it is replaced whole.
///
/// Covers `ObjectMeta` (also inside pod, job and volume-claim templates), the pod spec wherever a
/// workload embeds it, Service ports, status conditions of the built-in kinds, and a few
/// kind-specific lists (Node addresses, ServiceAccount secrets, admission webhooks).
pub fn merge_key(kind: &str, path: &[&str]) -> Option<MergeKey> {
    object_meta_key(path)
        .or_else(|| pod_spec_root(kind).and_then(|root| pod_spec_key(path.strip_prefix(root)?)))
        .or_else(|| kind_specific_key(kind, path))
}

/// Merge lists of `ObjectMeta`, found at the root and inside embedded templates.
fn object_meta_key(path: &[&str]) -> Option<MergeKey> {
    let (field, rest) = path.split_last()?;
    let (metadata, owner) = rest.split_last()?;
    let embeds_meta = match owner.last() {
        None => true,
        Some(parent) => matches!(*parent, "template" | "jobTemplate" | "volumeClaimTemplates"),
    };
    if *metadata != "metadata" || !embeds_meta {
        return None;
    }
    match *field {
        "finalizers" => Some(MergeKey::PrimitiveSet),
        "ownerReferences" => Some(MergeKey::Key("uid")),
        _ => None,
    }
}

/// Where the pod spec sits inside an object of `kind`, for kinds that embed one.
fn pod_spec_root(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "PodTemplate" => Some(&["template", "spec"]),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" => {
            Some(&["spec", "template", "spec"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// Whether `field` of a pod spec is a list of containers.
fn is_container_list(field: &str) -> bool {
    matches!(field, "containers" | "initContainers" | "ephemeralContainers")
}

/// Merge lists of a pod spec; `rest` is the path below the pod spec.
fn pod_spec_key(rest: &[&str]) -> Option<MergeKey> {
    use MergeKey::Key;
    match rest {
        [list] if is_container_list(list) => Some(Key("name")),
        ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => Some(Key("name")),
        ["hostAliases"] => Some(Key("ip")),
        ["topologySpreadConstraints"] => Some(Key("topologyKey")),
        [list, field] if is_container_list(list) => match *field {
            "ports" => Some(Key("containerPort")),
            "env" => Some(Key("name")),
            "volumeMounts" => Some(Key("mountPath")),
            "volumeDevices" => Some(Key("devicePath")),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the built-in `kind` has `status.conditions` keyed by `type`.
fn has_typed_conditions(kind: &str) -> bool {
    matches!(
        kind,
        "Pod"
            | "Node"
            | "Namespace"
            | "Service"
            | "PersistentVolumeClaim"
            | "ReplicationController"
            | "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "HorizontalPodAutoscaler"
            | "PodDisruptionBudget"
            | "CustomResourceDefinition"
            | "APIService"
            | "CertificateSigningRequest"
    )
}

/// Merge lists that only exist on one kind, plus status conditions.
fn kind_specific_key(kind: &str, path: &[&str]) -> Option<MergeKey> {
    use MergeKey::{Key, PrimitiveSet};
    match (kind, path) {
        (_, ["status", "conditions"]) if has_typed_conditions(kind) => Some(Key("type")),
        ("Pod", ["status", "podIPs" | "hostIPs"]) => Some(Key("ip")),
        ("Pod", ["status", "resourceClaimStatuses"]) => Some(Key("name")),
        ("Node", ["status", "addresses"]) => Some(Key("type")),
        ("Node", ["spec", "podCIDRs"]) => Some(PrimitiveSet),
        ("Service", ["spec", "ports"]) => Some(Key("port")),
        ("ServiceAccount", ["secrets"]) => Some(Key("name")),
        ("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration", ["webhooks"]) => Some(Key("name")),
        _ => None,
    }
}

/// The JSON type of `value`, for error messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Renders a field path as `.spec.template`, or `.` for the root.
pub(crate) fn render_path(path: &[&str]) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    path.iter().map(|field| format!(".{field}")).collect()
}

/// `path` with `field` appended.
fn child_path<'p>(path: &[&'p str], field: &'p str) -> Vec<&'p str> {
    let mut child = Vec::with_capacity(path.len() + 1);
    child.extend_from_slice(path);
    child.push(field);
    child
}

/// Fails once recursion goes past [`MAX_DEPTH`].
fn check_depth(depth: usize) -> Result<(), PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError::TooDeep);
    }
    Ok(())
}

/// The value of a `$patch` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchDirective {
    Replace,
    Delete,
    Merge,
}

impl PatchDirective {
    /// Parses the value of `$patch` found in the map or list at `path`.
    fn parse(value: &Value, path: &[&str]) -> Result<Self, PatchError> {
        match value.as_str() {
            Some("replace") => Ok(Self::Replace),
            Some("delete") => Ok(Self::Delete),
            Some("merge") => Ok(Self::Merge),
            _ => Err(PatchError::UnknownPatchDirective { path: render_path(path), value: value.to_string() }),
        }
    }
}

/// What a key of a patch map stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchKey<'p> {
    /// `$patch`.
    Patch,
    /// `$retainKeys`.
    RetainKeys,
    /// `$setElementOrder/<field>`.
    SetElementOrder(&'p str),
    /// `$deleteFromPrimitiveList/<field>`.
    DeleteFromPrimitiveList(&'p str),
    /// An ordinary field (including `$`-keys that are not directives).
    Field(&'p str),
}

impl<'p> PatchKey<'p> {
    /// Classifies `key`, a key of the patch map at `path`.
    fn classify(key: &'p str, path: &[&str]) -> Result<Self, PatchError> {
        match key {
            PATCH_DIRECTIVE => return Ok(Self::Patch),
            RETAIN_KEYS => return Ok(Self::RetainKeys),
            _ => {}
        }
        for (prefix, make) in [
            (SET_ELEMENT_ORDER, Self::SetElementOrder as fn(&'p str) -> Self),
            (DELETE_FROM_PRIMITIVE_LIST, Self::DeleteFromPrimitiveList),
        ] {
            if let Some(rest) = key.strip_prefix(prefix) {
                return match rest.strip_prefix('/') {
                    Some(field) if !field.is_empty() => Ok(make(field)),
                    _ => Err(PatchError::InvalidDirective {
                        directive: key.to_owned(),
                        path: render_path(path),
                        reason: "expected the form <directive>/<field>",
                    }),
                };
            }
        }
        Ok(Self::Field(key))
    }
}

/// Applies one patch to one object of a known kind.
struct Merger<'k> {
    kind: &'k str,
}

impl Merger<'_> {
    /// Merges the patch map at `path` into `original`; `None` means the map is deleted.
    fn merge_map<'p>(
        &self,
        original: Map<String, Value>,
        patch: &'p Map<String, Value>,
        path: &[&'p str],
        depth: usize,
    ) -> Result<Option<Map<String, Value>>, PatchError> {
        check_depth(depth)?;
        let directive = match patch.get(PATCH_DIRECTIVE) {
            Some(value) => PatchDirective::parse(value, path)?,
            None => PatchDirective::Merge,
        };
        match directive {
            PatchDirective::Delete => Ok(None),
            PatchDirective::Replace => self.merge_fields(Map::new(), patch, path, depth).map(Some),
            PatchDirective::Merge => self.merge_fields(original, patch, path, depth).map(Some),
        }
    }

    /// Merges every key of `patch` except `$patch` into `result`, honouring the map-level
    /// directives.
    fn merge_fields<'p>(
        &self,
        mut result: Map<String, Value>,
        patch: &'p Map<String, Value>,
        path: &[&'p str],
        depth: usize,
    ) -> Result<Map<String, Value>, PatchError> {
        let keys = patch
            .iter()
            .map(|(key, value)| Ok((PatchKey::classify(key, path)?, value)))
            .collect::<Result<Vec<_>, PatchError>>()?;
        if let Some(retain) = patch.get(RETAIN_KEYS) {
            retain_keys(&mut result, &keys, retain, path)?;
        }
        for (key, value) in &keys {
            if let PatchKey::DeleteFromPrimitiveList(field) = key {
                delete_from_primitive_list(&mut result, field, value, path)?;
            }
        }
        for (key, value) in &keys {
            if let PatchKey::Field(field) = key {
                self.merge_field(&mut result, field, value, path, depth)?;
            }
        }
        for (key, value) in &keys {
            if let PatchKey::SetElementOrder(field) = key {
                self.set_element_order(&mut result, field, value, path)?;
            }
        }
        Ok(result)
    }

    /// Merges the patch value of one field into `result`.
    fn merge_field<'p>(
        &self,
        result: &mut Map<String, Value>,
        field: &'p str,
        patch: &'p Value,
        path: &[&'p str],
        depth: usize,
    ) -> Result<(), PatchError> {
        if patch.is_null() {
            result.remove(field);
            return Ok(());
        }
        let path = child_path(path, field);
        let original = result.get_mut(field).map(std::mem::take);
        match self.merge_value(original, patch, &path, depth + 1)? {
            Some(merged) => {
                result.insert(field.to_owned(), merged);
            }
            None => {
                result.remove(field);
            }
        }
        Ok(())
    }

    /// Merges a non-null patch value into the original value (if any) of the field at `path`.
    fn merge_value<'p>(
        &self,
        original: Option<Value>,
        patch: &'p Value,
        path: &[&'p str],
        depth: usize,
    ) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Object(patch) => {
                let base = match original {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                Ok(self.merge_map(base, patch, path, depth)?.map(Value::Object))
            }
            Value::Array(patch) => {
                let base = match original {
                    Some(Value::Array(list)) => Some(list),
                    _ => None,
                };
                Ok(Some(Value::Array(self.merge_list(base, patch, path, depth)?)))
            }
            scalar => Ok(Some(scalar.clone())),
        }
    }

    /// Merges the patch list at `path` into the original list, by the field's strategy.
    fn merge_list<'p>(
        &self,
        original: Option<Vec<Value>>,
        patch: &'p [Value],
        path: &[&'p str],
        depth: usize,
    ) -> Result<Vec<Value>, PatchError> {
        check_depth(depth)?;
        match merge_key(self.kind, path) {
            Some(MergeKey::Key(key)) => self.merge_keyed_list(original.unwrap_or_default(), patch, key, path, depth),
            Some(MergeKey::PrimitiveSet) => merge_primitive_set(original.unwrap_or_default(), patch, path),
            None => self.replace_list(patch, path, depth),
        }
    }

    /// Merges a list of objects element-wise by `key`, handling `$patch` elements.
    fn merge_keyed_list<'p>(
        &self,
        original: Vec<Value>,
        patch: &'p [Value],
        key: &'static str,
        path: &[&'p str],
        depth: usize,
    ) -> Result<Vec<Value>, PatchError> {
        let mut base = original;
        let mut replace = false;
        let mut items = Vec::with_capacity(patch.len());
        for element in patch {
            let element =
                element.as_object().ok_or_else(|| PatchError::ElementNotAnObject { path: render_path(path), key })?;
            let directive = match element.get(PATCH_DIRECTIVE) {
                Some(value) => PatchDirective::parse(value, path)?,
                None => {
                    items.push((merge_key_value(element, key, path)?, element));
                    continue;
                }
            };
            match directive {
                PatchDirective::Delete => {
                    let doomed = merge_key_value(element, key, path)?;
                    base.retain(|existing| existing.get(key) != Some(doomed));
                }
                PatchDirective::Replace => replace = true,
                PatchDirective::Merge => {
                    if let Some(value) = element.get(key) {
                        items.push((value, element));
                    }
                }
            }
        }
        if replace {
            base.clear();
        }
        for (value, element) in items {
            self.merge_list_element(&mut base, key, value, element, path, depth)?;
        }
        Ok(base)
    }

    /// Merges one patch element into the element of `list` with the same key, or appends it.
    fn merge_list_element<'p>(
        &self,
        list: &mut Vec<Value>,
        key: &str,
        value: &Value,
        element: &'p Map<String, Value>,
        path: &[&'p str],
        depth: usize,
    ) -> Result<(), PatchError> {
        match list.iter().position(|existing| existing.get(key) == Some(value)) {
            Some(index) => {
                let existing = match list.get_mut(index).map(std::mem::take) {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                match self.merge_map(existing, element, path, depth + 1)? {
                    Some(merged) => list[index] = Value::Object(merged),
                    None => {
                        list.remove(index);
                    }
                }
            }
            None => {
                if let Some(merged) = self.merge_map(Map::new(), element, path, depth + 1)? {
                    list.push(Value::Object(merged));
                }
            }
        }
        Ok(())
    }

    /// The value of a list replaced whole: the patch list with its directives processed.
    fn replace_list<'p>(&self, patch: &'p [Value], path: &[&'p str], depth: usize) -> Result<Vec<Value>, PatchError> {
        check_depth(depth)?;
        let mut result = Vec::with_capacity(patch.len());
        for element in patch {
            match element {
                Value::Object(map) if map.len() == 1 && map.contains_key(PATCH_DIRECTIVE) => {
                    PatchDirective::parse(&map[PATCH_DIRECTIVE], path)?;
                }
                Value::Object(map) => {
                    if let Some(merged) = self.merge_map(Map::new(), map, path, depth + 1)? {
                        result.push(Value::Object(merged));
                    }
                }
                Value::Array(list) => result.push(Value::Array(self.replace_list(list, path, depth + 1)?)),
                scalar => result.push(scalar.clone()),
            }
        }
        Ok(result)
    }

    /// Applies `$setElementOrder/<field>`: the named elements first, in the given order, then
    /// the rest in their existing order.
    fn set_element_order<'p>(
        &self,
        result: &mut Map<String, Value>,
        field: &'p str,
        order: &Value,
        path: &[&'p str],
    ) -> Result<(), PatchError> {
        let order = order.as_array().ok_or_else(|| PatchError::InvalidDirective {
            directive: format!("{SET_ELEMENT_ORDER}/{field}"),
            path: render_path(path),
            reason: "expected a list",
        })?;
        let list_path = child_path(path, field);
        let key = match merge_key(self.kind, &list_path) {
            Some(MergeKey::Key(key)) => Some(key),
            _ => None,
        };
        let wanted =
            order.iter().map(|entry| order_identity(entry, key, &list_path)).collect::<Result<Vec<_>, PatchError>>()?;
        let Some(Value::Array(list)) = result.get_mut(field) else {
            return Ok(());
        };
        let rank = |element: &Value| {
            let identity = match key {
                Some(key) => element.get(key),
                None => Some(element),
            };
            identity.and_then(|identity| wanted.iter().position(|w| *w == identity)).unwrap_or(usize::MAX)
        };
        let mut ranked: Vec<(usize, Value)> = list.drain(..).map(|element| (rank(&element), element)).collect();
        ranked.sort_by_key(|(rank, _)| *rank);
        list.extend(ranked.into_iter().map(|(_, element)| element));
        Ok(())
    }
}

/// The merge-key value of a `$setElementOrder` entry, or the entry itself for scalar lists.
fn order_identity<'v>(entry: &'v Value, key: Option<&'static str>, path: &[&str]) -> Result<&'v Value, PatchError> {
    let Some(key) = key else {
        return Ok(entry);
    };
    let map = entry.as_object().ok_or_else(|| PatchError::ElementNotAnObject { path: render_path(path), key })?;
    merge_key_value(map, key, path)
}

/// The value of `key` in a merge-list element, or an error naming the list.
fn merge_key_value<'v>(
    element: &'v Map<String, Value>,
    key: &'static str,
    path: &[&str],
) -> Result<&'v Value, PatchError> {
    element.get(key).ok_or_else(|| PatchError::MissingMergeKey { path: render_path(path), key })
}

/// Unions the patch scalars into `original`, keeping the original order and appending new ones.
fn merge_primitive_set(mut original: Vec<Value>, patch: &[Value], path: &[&str]) -> Result<Vec<Value>, PatchError> {
    for value in patch {
        if value.is_object() || value.is_array() {
            return Err(PatchError::NotAScalar { path: render_path(path) });
        }
        if !value.is_null() && !original.contains(value) {
            original.push(value.clone());
        }
    }
    Ok(original)
}

/// Applies `$deleteFromPrimitiveList/<field>`: removes the listed values from `result[field]`.
fn delete_from_primitive_list(
    result: &mut Map<String, Value>,
    field: &str,
    doomed: &Value,
    path: &[&str],
) -> Result<(), PatchError> {
    let doomed = doomed.as_array().ok_or_else(|| PatchError::InvalidDirective {
        directive: format!("{DELETE_FROM_PRIMITIVE_LIST}/{field}"),
        path: render_path(path),
        reason: "expected a list",
    })?;
    if let Some(Value::Array(list)) = result.get_mut(field) {
        list.retain(|value| !doomed.contains(value));
    }
    Ok(())
}

/// Applies `$retainKeys`: checks the patch only sets listed keys, then drops every unlisted key
/// from `result` before the merge.
fn retain_keys(
    result: &mut Map<String, Value>,
    patch_keys: &[(PatchKey<'_>, &Value)],
    retain: &Value,
    path: &[&str],
) -> Result<(), PatchError> {
    let invalid =
        |reason| PatchError::InvalidDirective { directive: RETAIN_KEYS.to_owned(), path: render_path(path), reason };
    let retained = retain
        .as_array()
        .ok_or_else(|| invalid("expected a list of field names"))?
        .iter()
        .map(|key| key.as_str().ok_or_else(|| invalid("expected a list of field names")))
        .collect::<Result<Vec<&str>, PatchError>>()?;
    for (key, value) in patch_keys {
        if let PatchKey::Field(field) = key {
            if !value.is_null() && !retained.contains(field) {
                return Err(PatchError::NotInRetainKeys { path: render_path(path), field: (*field).to_owned() });
            }
        }
    }
    result.retain(|key, _| retained.contains(&key.as_str()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "nginx:1.25",
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "ports": [{"containerPort": 80}],
                                "args": ["--x"]
                            },
                            {"name": "sidecar", "image": "busybox"}
                        ],
                        "tolerations": [{"key": "k", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    fn containers(value: &Value) -> &Vec<Value> {
        value["spec"]["template"]["spec"]["containers"].as_array().expect("containers")
    }

    fn contains_directive(value: &Value) -> bool {
        match value {
            Value::Object(map) => map.iter().any(|(key, value)| key.starts_with('$') || contains_directive(value)),
            Value::Array(list) => list.iter().any(contains_directive),
            _ => false,
        }
    }

    #[test]
    fn kubectl_second_apply_changes_image() {
        // What `kubectl apply` sends after editing the image of the first container.
        let patch = json!({
            "metadata": {"annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{...}"
            }},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"image": "nginx:1.27", "name": "web"}]
            }}}
        });
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        let containers = containers(&out);
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["name"], "web");
        assert_eq!(containers[0]["image"], "nginx:1.27");
        assert_eq!(containers[0]["env"].as_array().map(Vec::len), Some(2));
        assert_eq!(containers[1]["name"], "sidecar");
        assert_eq!(out["spec"]["replicas"], 2);
        assert!(out["metadata"]["annotations"].get("kubectl.kubernetes.io/last-applied-configuration").is_some());
        assert!(!contains_directive(&out));
    }

    #[test]
    fn set_element_order_reorders_and_keeps_unnamed_after() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}],
            "containers": [{"name": "extra", "image": "x"}]
        }}}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        let names: Vec<_> = containers(&out).iter().map(|c| c["name"].clone()).collect();
        assert_eq!(names, vec![json!("sidecar"), json!("web"), json!("extra")]);
    }

    #[test]
    fn env_merges_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "web",
            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}, {"name": "A", "$patch": "delete"}]
        }]}}}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(containers(&out)[0]["env"], json!([{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]));
    }

    #[test]
    fn patch_delete_removes_container() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"}
        ]}}}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(containers(&out).len(), 1);
        assert_eq!(containers(&out)[0]["name"], "web");
    }

    #[test]
    fn patch_replace_in_list_replaces_whole_list() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"},
            {"name": "only", "image": "x"}
        ]}}}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(containers(&out), &vec![json!({"name": "only", "image": "x"})]);
    }

    #[test]
    fn patch_replace_and_delete_on_maps() {
        let patch = json!({"spec": {
            "strategy": {"$patch": "replace", "type": "Recreate"},
            "template": {"metadata": {"$patch": "delete"}}
        }});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert!(out["spec"]["template"].get("metadata").is_none());
    }

    #[test]
    fn retain_keys_drops_unlisted_strategy_fields() {
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"],
            "type": "Recreate"
        }}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn retain_keys_rejects_unlisted_patch_field() {
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"],
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 2}
        }}});
        let err = strategic_merge("Deployment", &deployment(), &patch).expect_err("invalid");
        assert!(matches!(err, PatchError::NotInRetainKeys { .. }), "{err}");
    }

    #[test]
    fn null_deletes_keys() {
        let patch = json!({
            "metadata": {"finalizers": null, "labels": {"gone": null}},
            "spec": {"strategy": {"rollingUpdate": null}}
        });
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert!(out["metadata"].get("finalizers").is_none());
        assert_eq!(out["metadata"]["labels"], json!({}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "RollingUpdate"}));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let service = json!({"kind": "Service", "spec": {"ports": [
            {"port": 80, "targetPort": 8080, "name": "http"},
            {"port": 443, "targetPort": 8443, "name": "https"}
        ]}});
        let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}, {"port": 9090}]}});
        let out = strategic_merge("Service", &service, &patch).expect("patch applies");
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"port": 80, "targetPort": 8080, "name": "http"},
                {"port": 443, "targetPort": 9443, "name": "https"},
                {"port": 9090}
            ])
        );
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 81}]}
        ]}}}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(containers(&out)[0]["ports"], json!([{"containerPort": 80, "name": "http"}, {"containerPort": 81}]));
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let patch = json!({"metadata": {"finalizers": ["b", "a"]}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));

        let patch = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "finalizers": ["c"]
        }});
        let out = strategic_merge("Deployment", &out, &patch).expect("patch applies");
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {
            "tolerations": [{"key": "other", "operator": "Equal", "value": "v"}],
            "containers": [{"name": "web", "args": ["--y"]}]
        }}}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "other", "operator": "Equal", "value": "v"}])
        );
        assert_eq!(containers(&out)[0]["args"], json!(["--y"]));
    }

    #[test]
    fn cronjob_and_pod_paths() {
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "1"}]
        }}}}}});
        let patch = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "b", "image": "2"}]
        }}}}}});
        let out = strategic_merge("CronJob", &cron, &patch).expect("patch applies");
        let list = &out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"];
        assert_eq!(list.as_array().map(Vec::len), Some(2));

        assert_eq!(merge_key("Pod", &["spec", "volumes"]), Some(MergeKey::Key("name")));
        assert_eq!(merge_key("Pod", &["spec", "initContainers", "volumeMounts"]), Some(MergeKey::Key("mountPath")));
        assert_eq!(merge_key("Pod", &["spec", "tolerations"]), None);
        assert_eq!(merge_key("Pod", &["spec", "containers", "envFrom"]), None);
        assert_eq!(merge_key("Service", &["spec", "containers"]), None);
        assert_eq!(merge_key("Widget", &["metadata", "finalizers"]), Some(MergeKey::PrimitiveSet));
        assert_eq!(merge_key("Deployment", &["status", "conditions"]), Some(MergeKey::Key("type")));
    }

    #[test]
    fn new_fields_have_directives_stripped() {
        let patch = json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "v", "emptyDir": {"$patch": "replace", "medium": "Memory"}, "x": null}]
        }}}});
        let out = strategic_merge("Deployment", &deployment(), &patch).expect("patch applies");
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "v", "emptyDir": {"medium": "Memory"}}])
        );
        assert!(!contains_directive(&out));
    }

    #[test]
    fn errors() {
        let original = deployment();
        assert!(matches!(strategic_merge("Deployment", &original, &json!([1])), Err(PatchError::PatchNotAnObject(_))));
        let bad = json!({"spec": {"$patch": "explode"}});
        let err = strategic_merge("Deployment", &original, &bad).expect_err("bad directive");
        assert!(err.to_string().contains("explode"), "{err}");
        let missing = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = strategic_merge("Deployment", &original, &missing).expect_err("no key");
        assert_eq!(err.to_string(), "element of list .spec.template.spec.containers is missing its merge key \"name\"");
        let scalar = json!({"spec": {"template": {"spec": {"containers": ["x"]}}}});
        assert!(strategic_merge("Deployment", &original, &scalar).is_err());
        let order = json!({"spec": {"$setElementOrder/": []}});
        assert!(strategic_merge("Deployment", &original, &order).is_err());
    }

    #[test]
    fn deep_input_is_an_error_not_a_crash() {
        let mut patch = json!(1);
        for _ in 0..(MAX_DEPTH * 2) {
            patch = json!({"a": [patch]});
        }
        let err = strategic_merge("Pod", &json!({}), &patch).expect_err("too deep");
        assert!(matches!(err, PatchError::TooDeep));
    }
}
