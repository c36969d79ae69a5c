//! The `pods/ephemeralcontainers` subresource's rules, as kube-apiserver has them
//! (`podEphemeralContainersStrategy` and `ValidatePodEphemeralContainersUpdate`): only
//! `spec.ephemeralContainers` changes through it (anything else in the body is dropped), existing
//! ephemeral containers are neither changed nor removed, names are unique across every container of
//! the pod, a `targetContainerName` names a container of the pod, and the fields that make a
//! container part of the workload (ports, probes, lifecycle, resources, ...) are refused. The main
//! `pods` update refuses any change to `spec.ephemeralContainers`.

use std::collections::HashSet;

use serde_json::Value;

use super::names;

/// A field path and its message, as [`super::error::ApiError::invalid`] takes them.
pub type Cause = (String, String);

/// The subresource's name.
pub const SUBRESOURCE: &str = "ephemeralcontainers";

/// Fields of an ephemeral container that may not be set ("cannot be set for an Ephemeral
/// Container"), in kube's field order.
const FORBIDDEN_FIELDS: &[&str] = &[
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];

/// kube's message for a `pods` update that changes what it may not.
pub const POD_UPDATE_FORBIDDEN: &str = "Forbidden: pod updates may not change fields other than \
`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` \
(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it \
was previously negative)";

/// The pod `current` with only its `spec.ephemeralContainers` taken from `desired`: what a write to
/// the subresource may change (kube's `dropNonEphemeralContainerUpdates`).
pub fn only_ephemeral(current: &Value, desired: &Value) -> Value {
    let mut next = current.clone();
    let wanted = desired.pointer("/spec/ephemeralContainers").filter(|v| !v.is_null()).cloned();
    if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
        match wanted {
            Some(list) => spec.insert("ephemeralContainers".into(), list),
            None => spec.remove("ephemeralContainers"),
        };
    }
    next
}

fn list<'a>(pod: &'a Value, field: &str) -> &'a [Value] {
    pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn name_of(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

/// Whether a field counts as set (Go's non-zero value: `{}` and `null` are not).
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(map) => !map.is_empty(),
        _ => true,
    }
}

/// The checks of an update of pod `current` into `next` through `subresource` (`None`: the pod
/// itself). Empty when the update is allowed.
pub fn validate_update(current: &Value, next: &Value, subresource: Option<&str>) -> Vec<Cause> {
    let (old, new) = (list(current, "ephemeralContainers"), list(next, "ephemeralContainers"));
    if subresource != Some(SUBRESOURCE) {
        return if old == new { Vec::new() } else { vec![("spec".into(), POD_UPDATE_FORBIDDEN.into())] };
    }
    let mirror = current.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some();
    if mirror {
        return vec![(String::new(), "Forbidden: static pods do not support ephemeral containers".into())];
    }
    let mut causes = validate_containers(next);
    for o in old {
        let name = name_of(o);
        match new.iter().find(|n| name_of(n) == name) {
            None => causes.push((
                "spec.ephemeralContainers".into(),
                format!("Forbidden: existing ephemeral containers \"{name}\" may not be removed"),
            )),
            Some(n) if n != o => causes.push((
                format!("spec.ephemeralContainers[{name}]"),
                format!("Forbidden: existing ephemeral containers \"{name}\" may not be changed"),
            )),
            Some(_) => {}
        }
    }
    causes
}

/// kube's `validateEphemeralContainers` over the pod's `spec.ephemeralContainers`.
pub fn validate_containers(pod: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let others: HashSet<&str> =
        list(pod, "containers").iter().chain(list(pod, "initContainers")).map(name_of).collect();
    let volumes: HashSet<&str> = list(pod, "volumes").iter().map(name_of).collect();
    let mut all = others.clone();
    for (i, c) in list(pod, "ephemeralContainers").iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{i}]");
        let name = name_of(c);
        if name.is_empty() {
            causes.push((format!("{path}.name"), "Required value".into()));
        } else if let Err(msg) = names::check_dns1123_label(name) {
            causes.push((format!("{path}.name"), format!("Invalid value: \"{name}\": {msg}")));
        }
        if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
            causes.push((format!("{path}.image"), "Required value".into()));
        }
        for (j, m) in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let volume = name_of(m);
            if volume.is_empty() {
                causes.push((format!("{path}.volumeMounts[{j}].name"), "Required value".into()));
            } else if !volumes.contains(volume) {
                causes.push((format!("{path}.volumeMounts[{j}].name"), format!("Not found: \"{volume}\"")));
            }
            if m.get("mountPath").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push((format!("{path}.volumeMounts[{j}].mountPath"), "Required value".into()));
            }
        }
        if !name.is_empty() && !all.insert(name) {
            causes.push((format!("{path}.name"), format!("Duplicate value: \"{name}\"")));
        }
        if let Some(target) = c.get("targetContainerName").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            if !others.contains(target) {
                causes.push((format!("{path}.targetContainerName"), format!("Not found: \"{target}\"")));
            }
        }
        for field in FORBIDDEN_FIELDS {
            if c.get(*field).is_some_and(is_set) {
                causes.push((format!("{path}.{field}"), "Forbidden: cannot be set for an Ephemeral Container".into()));
            }
        }
        for (j, m) in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            for field in ["subPath", "subPathExpr"] {
                if m.get(field).and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                    causes.push((
                        format!("{path}.volumeMounts[{j}].{field}"),
                        "Forbidden: cannot be set for an Ephemeral Container".into(),
                    ));
                }
            }
        }
    }
    causes
}

/// kube's `ValidatePodCreate` refusal: a pod is created without ephemeral containers.
pub fn validate_create(pod: &Value) -> Vec<Cause> {
    if list(pod, "ephemeralContainers").is_empty() {
        Vec::new()
    } else {
        vec![("spec.ephemeralContainers".into(), "Forbidden: cannot be set on create".into())]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "containers": [{"name": "api", "image": "app.wasm"}],
            "initContainers": [{"name": "setup", "image": "busybox"}],
            "volumes": [{"name": "shared", "emptyDir": {}}],
            "ephemeralContainers": ephemeral,
        }})
    }

    fn dbg(extra: Value) -> Value {
        let mut c = json!({"name": "dbg", "image": "busybox", "terminationMessagePolicy": "File"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn only_ephemeral_containers_change_through_the_subresource() {
        let current = pod(json!([]));
        let mut desired = pod(json!([dbg(json!({}))]));
        desired["spec"]["containers"][0]["image"] = json!("other.wasm");
        desired["metadata"]["labels"] = json!({"a": "b"});
        let next = only_ephemeral(&current, &desired);
        assert_eq!(next["spec"]["containers"], current["spec"]["containers"]);
        assert!(next["metadata"].get("labels").is_none());
        assert_eq!(next["spec"]["ephemeralContainers"][0]["name"], "dbg");
        let cleared = only_ephemeral(&next, &json!({"spec": {}}));
        assert!(cleared["spec"].get("ephemeralContainers").is_none());
    }

    #[test]
    fn adding_is_allowed_changing_and_removing_are_not() {
        let one = pod(json!([dbg(json!({}))]));
        let two = pod(json!([dbg(json!({})), {"name": "dbg2", "image": "busybox"}]));
        assert!(validate_update(&one, &two, Some(SUBRESOURCE)).is_empty());
        let changed = pod(json!([dbg(json!({"image": "alpine"}))]));
        assert_eq!(
            validate_update(&one, &changed, Some(SUBRESOURCE)),
            vec![(
                "spec.ephemeralContainers[dbg]".to_string(),
                "Forbidden: existing ephemeral containers \"dbg\" may not be changed".to_string()
            )]
        );
        let removed = pod(json!([]));
        assert_eq!(
            validate_update(&one, &removed, Some(SUBRESOURCE))[0].1,
            "Forbidden: existing ephemeral containers \"dbg\" may not be removed"
        );
    }

    #[test]
    fn the_pod_update_refuses_ephemeral_changes() {
        let none = pod(json!([]));
        let one = pod(json!([dbg(json!({}))]));
        assert_eq!(validate_update(&none, &one, None), vec![("spec".to_string(), POD_UPDATE_FORBIDDEN.to_string())]);
        assert!(validate_update(&one, &one, None).is_empty());
        assert!(validate_update(&none, &none, Some("status")).is_empty());
    }

    #[test]
    fn workload_fields_names_targets_and_images_are_checked() {
        let bad = pod(json!([
            dbg(json!({"ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}},
                       "livenessProbe": {"exec": {"command": ["true"]}}, "lifecycle": {"preStop": {}},
                       "targetContainerName": "nope",
                       "volumeMounts": [{"name": "shared", "mountPath": "/s", "subPath": "x"},
                                        {"name": "missing", "mountPath": "/m"}]})),
            {"name": "api", "image": ""},
            {"name": "Bad_Name", "image": "busybox"},
        ]));
        let causes = validate_containers(&bad);
        let has = |field: &str, msg: &str| causes.iter().any(|(f, m)| f == field && m == msg);
        let forbidden = "Forbidden: cannot be set for an Ephemeral Container";
        assert!(has("spec.ephemeralContainers[0].ports", forbidden), "{causes:?}");
        assert!(has("spec.ephemeralContainers[0].resources", forbidden));
        assert!(has("spec.ephemeralContainers[0].livenessProbe", forbidden));
        assert!(has("spec.ephemeralContainers[0].lifecycle", forbidden));
        assert!(has("spec.ephemeralContainers[0].volumeMounts[0].subPath", forbidden));
        assert!(has("spec.ephemeralContainers[0].volumeMounts[1].name", "Not found: \"missing\""));
        assert!(has("spec.ephemeralContainers[0].targetContainerName", "Not found: \"nope\""));
        assert!(has("spec.ephemeralContainers[1].name", "Duplicate value: \"api\""));
        assert!(has("spec.ephemeralContainers[1].image", "Required value"));
        assert!(causes.iter().any(|(f, m)| f == "spec.ephemeralContainers[2].name" && m.starts_with("Invalid value")));
        let good = pod(json!([dbg(json!({"targetContainerName": "api", "resources": {},
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}))]));
        assert!(validate_containers(&good).is_empty(), "{:?}", validate_containers(&good));
    }

    #[test]
    fn duplicates_among_ephemeral_containers_and_static_pods() {
        let twice = pod(json!([dbg(json!({})), dbg(json!({}))]));
        assert!(validate_containers(&twice)
            .contains(&("spec.ephemeralContainers[1].name".to_string(), "Duplicate value: \"dbg\"".to_string())));
        let mut mirror = pod(json!([]));
        mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "x"});
        let next = pod(json!([dbg(json!({}))]));
        assert_eq!(
            validate_update(&mirror, &next, Some(SUBRESOURCE))[0].1,
            "Forbidden: static pods do not support ephemeral containers"
        );
        assert!(validate_create(&next)[0].1.contains("cannot be set on create"));
        assert!(validate_create(&mirror).is_empty());
    }
}
