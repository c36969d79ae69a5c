//! ServiceAccount admission, as Kubernetes' plugin of that name does on pod create: the pod runs as
//! `default` unless it names a ServiceAccount, and unless automounting is turned off (on the pod, or
//! on its ServiceAccount) it gets the `kube-api-access-<suffix>` projected volume — a bound,
//! expiring token, the cluster CA (`kube-root-ca.crt`) and its namespace — mounted read-only at
//! [`MOUNT_PATH`] in every container and init container that has nothing there yet.

use serde_json::{json, Map, Value};

/// Where a pod's containers find their ServiceAccount credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The name prefix of the injected volume.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime a kubelet asks for a projected token (Kubernetes' 1 h + 7 s; refreshed at 80%).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The ConfigMap every namespace gets with the cluster CA.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// The ServiceAccount a pod runs as (`default` when it names none).
pub fn service_account_name(pod: &Value) -> &str {
    pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("default")
}

/// Fills in the ServiceAccount and, when automounting applies, the API access volume and mounts.
/// `sa_automount` is the ServiceAccount's own `automountServiceAccountToken`; `suffix` names the
/// volume. Pods that already have a `kube-api-access-` volume are left as they are.
pub fn admit(pod: &mut Value, sa_automount: Option<bool>, suffix: &str) {
    let name = service_account_name(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    let automount = spec.get("automountServiceAccountToken").and_then(Value::as_bool).or(sa_automount).unwrap_or(true);
    if !automount || has_api_access_volume(spec) {
        return;
    }
    let volume_name = format!("{VOLUME_PREFIX}{suffix}");
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Some(volumes) = volumes.as_array_mut() else { return };
    volumes.push(api_access_volume(&volume_name));
    for list in ["initContainers", "containers"] {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(c) = container.as_object_mut() {
                mount_unless_taken(c, &volume_name);
            }
        }
    }
}

fn has_api_access_volume(spec: &Map<String, Value>) -> bool {
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|v| v.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with(VOLUME_PREFIX)))
}

fn api_access_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [
                    {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                ]}}
            ]
        }
    })
}

fn mount_unless_taken(container: &mut Map<String, Value>, volume: &str) {
    let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
    let Some(mounts) = mounts.as_array_mut() else { return };
    let taken = mounts
        .iter()
        .any(|m| m.get("mountPath").and_then(Value::as_str).is_some_and(|p| p.trim_end_matches('/') == MOUNT_PATH));
    if !taken {
        mounts.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"spec": {
            "initContainers": [{"name": "init", "image": "i"}],
            "containers": [
                {"name": "a", "image": "a"},
                {"name": "b", "image": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}
            ],
            "volumes": [{"name": "own", "emptyDir": {}}]
        }})
    }

    #[test]
    fn defaults_the_account_and_mounts_the_api_access_volume() {
        let mut p = pod();
        admit(&mut p, None, "x2b4c");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");
        let volumes = p["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(volumes[1]["name"], "kube-api-access-x2b4c");
        let sources = volumes[1]["projected"]["sources"].as_array().expect("sources");
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        let mount = &p["spec"]["containers"][0]["volumeMounts"][0];
        assert_eq!(mount["mountPath"], MOUNT_PATH);
        assert_eq!(mount["readOnly"], true);
        assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"][0]["name"], "kube-api-access-x2b4c");
        // A container with its own volume at the path keeps it.
        let b = p["spec"]["containers"][1]["volumeMounts"].as_array().expect("mounts");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["name"], "own");
    }

    #[test]
    fn automount_off_on_the_pod_or_its_account_mounts_nothing() {
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = json!(false);
        admit(&mut p, Some(true), "aaaaa");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(1));

        let mut p = pod();
        p["spec"]["serviceAccountName"] = json!("ci");
        admit(&mut p, Some(false), "aaaaa");
        assert_eq!(p["spec"]["serviceAccount"], "ci");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(1));

        // The pod's own setting wins over its account's.
        let mut p = pod();
        p["spec"]["automountServiceAccountToken"] = json!(true);
        admit(&mut p, Some(false), "aaaaa");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn admitting_twice_adds_one_volume() {
        let mut p = pod();
        admit(&mut p, None, "aaaaa");
        admit(&mut p, None, "bbbbb");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(2));
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"].as_array().map(Vec::len), Some(1));
    }
}
