//! Kubernetes' protobuf envelope, decoded for the kinds kubectl's typed clients write.
//!
//! kubectl's imperative commands (`create namespace`, `create configmap`, `create secret`) send
//! `application/vnd.kubernetes.protobuf` bodies and do not fall back to JSON. The envelope is the
//! magic `k8s\0` and a `runtime.Unknown` message (`typeMeta`, `raw`); `raw` is the typed object.
//! Only the small schemas of Namespace, ConfigMap and Secret (with ObjectMeta) are decoded here;
//! other kinds get 415 and a hint to use `kubectl apply`.

use serde_json::{json, Map, Value};

use crate::api::error::{ApiError, ApiResult};

const MAGIC: &[u8] = b"k8s\0";

/// One protobuf field: number and payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Splits a message into its fields; `None` on malformed input.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((number, Field::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push((number, Field::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos = pos.checked_add(8).filter(|e| *e <= buf.len())?,
            5 => pos = pos.checked_add(4).filter(|e| *e <= buf.len())?,
            _ => return None,
        }
    }
    Some(out)
}

fn text(bytes: &[u8]) -> Option<Value> {
    std::str::from_utf8(bytes).ok().map(|s| json!(s))
}

fn base64(bytes: &[u8]) -> Value {
    use base64::Engine;
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A `map<string, V>` entry (key = 1, value = 2).
fn map_entry(bytes: &[u8], value_as_base64: bool) -> Option<(String, Value)> {
    let mut key = String::new();
    let mut value = json!("");
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => key = std::str::from_utf8(b).ok()?.to_string(),
            (2, Field::Bytes(b)) => value = if value_as_base64 { base64(b) } else { text(b)? },
            _ => {}
        }
    }
    Some((key, value))
}

fn insert_map_entry(map: &mut Map<String, Value>, field: &str, bytes: &[u8], base64: bool) -> Option<()> {
    let (k, v) = map_entry(bytes, base64)?;
    let entry = map.entry(field).or_insert_with(|| json!({}));
    entry.as_object_mut()?.insert(k, v);
    Some(())
}

fn object_meta(bytes: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => _ = meta.insert("name".into(), text(b)?),
            (2, Field::Bytes(b)) => _ = meta.insert("generateName".into(), text(b)?),
            (3, Field::Bytes(b)) => _ = meta.insert("namespace".into(), text(b)?),
            (6, Field::Bytes(b)) => _ = meta.insert("resourceVersion".into(), text(b)?),
            (11, Field::Bytes(b)) => insert_map_entry(&mut meta, "labels", b, false)?,
            (12, Field::Bytes(b)) => insert_map_entry(&mut meta, "annotations", b, false)?,
            (14, Field::Bytes(b)) => {
                let list = meta.entry("finalizers").or_insert_with(|| json!([]));
                list.as_array_mut()?.push(text(b)?);
            }
            _ => {}
        }
    }
    Some(Value::Object(meta))
}

fn push(obj: &mut Map<String, Value>, field: &str, value: Value) -> Option<()> {
    obj.entry(field).or_insert_with(|| json!([])).as_array_mut()?.push(value);
    Some(())
}

/// A message of string fields (`repeated` ones listed in `lists`), by field number.
fn strings_message(bytes: &[u8], names: &[(u64, &str)], lists: &[u64]) -> Option<Value> {
    let mut out = Map::new();
    for (n, f) in fields(bytes)? {
        let (Some((_, name)), Field::Bytes(b)) = (names.iter().find(|(m, _)| *m == n), f) else { continue };
        if lists.contains(&n) {
            push(&mut out, name, text(b)?)?;
        } else {
            out.insert((*name).into(), text(b)?);
        }
    }
    Some(Value::Object(out))
}

/// `rbac.v1.PolicyRule`.
fn policy_rule(b: &[u8]) -> Option<Value> {
    let names = [(1, "verbs"), (2, "apiGroups"), (3, "resources"), (4, "resourceNames"), (5, "nonResourceURLs")];
    strings_message(b, &names, &[1, 2, 3, 4, 5])
}

/// `meta.v1.LabelSelector` (matchLabels only: what kubectl's imperative commands send).
fn label_selector(b: &[u8]) -> Option<Value> {
    let mut out = Map::new();
    for (n, f) in fields(b)? {
        if let (1, Field::Bytes(entry)) = (n, f) {
            insert_map_entry(&mut out, "matchLabels", entry, false)?;
        }
    }
    Some(Value::Object(out))
}

/// The `spec` of the authentication and authorization review kinds and TokenRequest.
fn review_spec(kind: &str, b: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    let resource =
        [(1, "namespace"), (2, "verb"), (3, "group"), (4, "version"), (5, "resource"), (6, "subresource"), (7, "name")];
    for (n, f) in fields(b)? {
        match (kind, n, f) {
            ("TokenRequest", 1, Field::Bytes(v)) => push(&mut spec, "audiences", text(v)?)?,
            ("TokenRequest", 3, Field::Bytes(v)) => {
                let names = [(1, "kind"), (2, "apiVersion"), (3, "name"), (4, "uid")];
                _ = spec.insert("boundObjectRef".into(), strings_message(v, &names, &[])?)
            }
            ("TokenRequest", 4, Field::Varint(v)) => _ = spec.insert("expirationSeconds".into(), json!(v as i64)),
            ("TokenReview", 1, Field::Bytes(v)) => _ = spec.insert("token".into(), text(v)?),
            ("TokenReview", 2, Field::Bytes(v)) => push(&mut spec, "audiences", text(v)?)?,
            ("SelfSubjectRulesReview", 1, Field::Bytes(v)) => _ = spec.insert("namespace".into(), text(v)?),
            (_, 1, Field::Bytes(v)) if kind.ends_with("AccessReview") => {
                _ = spec.insert("resourceAttributes".into(), strings_message(v, &resource, &[])?)
            }
            (_, 2, Field::Bytes(v)) if kind.ends_with("AccessReview") => {
                _ = spec.insert("nonResourceAttributes".into(), strings_message(v, &[(1, "path"), (2, "verb")], &[])?)
            }
            ("SubjectAccessReview" | "LocalSubjectAccessReview", 3, Field::Bytes(v)) => {
                _ = spec.insert("user".into(), text(v)?)
            }
            ("SubjectAccessReview" | "LocalSubjectAccessReview", 4, Field::Bytes(v)) => {
                push(&mut spec, "groups", text(v)?)?
            }
            ("SubjectAccessReview" | "LocalSubjectAccessReview", 6, Field::Bytes(v)) => {
                _ = spec.insert("uid".into(), text(v)?)
            }
            _ => {}
        }
    }
    Some(Value::Object(spec))
}

/// Kinds decoded here besides Namespace, ConfigMap and Secret: ServiceAccount, RBAC objects,
/// TokenRequest and the review kinds (what `kubectl create serviceaccount|role|rolebinding|
/// token` and `kubectl auth` send).
const AUTH_KINDS: &[&str] = &[
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "TokenRequest",
    "TokenReview",
    "SelfSubjectReview",
    "SelfSubjectAccessReview",
    "SubjectAccessReview",
    "LocalSubjectAccessReview",
    "SelfSubjectRulesReview",
];

fn decode_kind(kind: &str, raw: &[u8]) -> Option<Value> {
    let mut obj = Map::new();
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(b)) => _ = obj.insert("metadata".into(), object_meta(b)?),
            ("ConfigMap", 2, Field::Bytes(b)) => insert_map_entry(&mut obj, "data", b, false)?,
            ("ConfigMap", 3, Field::Bytes(b)) => insert_map_entry(&mut obj, "binaryData", b, true)?,
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                _ = obj.insert("immutable".into(), json!(v != 0))
            }
            ("Secret", 2, Field::Bytes(b)) => insert_map_entry(&mut obj, "data", b, true)?,
            ("Secret", 3, Field::Bytes(b)) => _ = obj.insert("type".into(), text(b)?),
            ("Secret", 4, Field::Bytes(b)) => insert_map_entry(&mut obj, "stringData", b, false)?,
            ("ServiceAccount", 4, Field::Varint(v)) => {
                _ = obj.insert("automountServiceAccountToken".into(), json!(v != 0))
            }
            ("Role" | "ClusterRole", 2, Field::Bytes(b)) => push(&mut obj, "rules", policy_rule(b)?)?,
            ("ClusterRole", 3, Field::Bytes(b)) => {
                let mut selectors = Vec::new();
                for (m, g) in fields(b)? {
                    if let (1, Field::Bytes(sel)) = (m, g) {
                        selectors.push(label_selector(sel)?);
                    }
                }
                _ = obj.insert("aggregationRule".into(), json!({"clusterRoleSelectors": selectors}))
            }
            ("RoleBinding" | "ClusterRoleBinding", 2, Field::Bytes(b)) => {
                let names = [(1, "kind"), (2, "apiGroup"), (3, "name"), (4, "namespace")];
                push(&mut obj, "subjects", strings_message(b, &names, &[])?)?
            }
            ("RoleBinding" | "ClusterRoleBinding", 3, Field::Bytes(b)) => {
                let names = [(1, "apiGroup"), (2, "kind"), (3, "name")];
                _ = obj.insert("roleRef".into(), strings_message(b, &names, &[])?)
            }
            (k, 2, Field::Bytes(b)) if AUTH_KINDS[5..].contains(&k) => {
                _ = obj.insert("spec".into(), review_spec(k, b)?)
            }
            _ => {}
        }
    }
    Some(Value::Object(obj))
}

/// Decodes a protobuf request body into the JSON form of its object.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let malformed = || ApiError::BadRequest("the protobuf request body is malformed".into());
    let unknown = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(unknown).ok_or_else(malformed)? {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (m, g) in fields(type_meta).ok_or_else(malformed)? {
                    match (m, g) {
                        (1, Field::Bytes(b)) => api_version = String::from_utf8_lossy(b).into_owned(),
                        (2, Field::Bytes(b)) => kind = String::from_utf8_lossy(b).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    if !matches!(kind.as_str(), "Namespace" | "ConfigMap" | "Secret") && !AUTH_KINDS.contains(&kind.as_str()) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "skiff accepts protobuf bodies only for Namespace, ConfigMap and Secret, not {kind}: send JSON or YAML (for example `kubectl create ... -o yaml --dry-run=client | kubectl apply -f -`)"
        )));
    }
    let mut obj = decode_kind(&kind, raw).ok_or_else(malformed)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_configmap() {
        let meta = [field(1, b"web"), field(11, &[field(1, b"app"), field(2, b"shop")].concat())].concat();
        let raw = [field(1, &meta), field(2, &[field(1, b"k"), field(2, b"v")].concat())].concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let obj = decode(&body).expect("decodes");
        assert_eq!(obj["metadata"]["name"], "web");
        assert_eq!(obj["metadata"]["labels"]["app"], "shop");
        assert_eq!(obj["data"]["k"], "v");
        assert_eq!(obj["kind"], "ConfigMap");
        assert!(decode(b"k8s\0\xff").is_err());
        assert!(decode(b"garbage").is_err());
    }
}
