//! Adapts a Linux container's `config.json` before runc reads it. CRI makes an app container join its pod
//! sandbox's IPC, UTS and PID namespaces through `/proc/<sandbox pid>/ns/*`; this shim's sandbox has no
//! process of its own, so that pid is the shim's and those are the host's namespaces. Such paths become new
//! namespaces (no path), and the container gets the sandbox's hostname when its spec names none. The spec
//! is edited as JSON, so fields this shim does not know survive untouched. It also tells whether the spec
//! names a systemd cgroup (`slice:prefix:name`, as CRI writes with `SystemdCgroup`), which runc must know.

use std::path::Path;

use serde_json::Value;

use super::error::ShimError;

/// The namespace types a CRI app container joins from its sandbox by `/proc` path.
const SANDBOX_SHARED: &[&str] = &["ipc", "uts", "pid"];

/// What runc needs to know about an adapted spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapted {
    /// The cgroups path is systemd's `slice:prefix:name` (`runc --systemd-cgroup`).
    pub systemd_cgroup: bool,
}

/// Rewrites `bundle/config.json` for runc (see the file's doc); leaves the file alone when nothing changes.
pub fn adapt(bundle: &Path, shim_pid: u32, sandbox_hostname: Option<&str>) -> Result<Adapted, ShimError> {
    let path = bundle.join("config.json");
    let bad = |reason: String| ShimError::Bundle { bundle: bundle.to_path_buf(), reason };
    let text = std::fs::read(&path).map_err(|e| ShimError::io("reading", &path, e))?;
    let mut spec: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("config.json: {e}")))?;
    if rewrite(&mut spec, shim_pid, sandbox_hostname) {
        let text = serde_json::to_vec(&spec).map_err(|e| bad(format!("config.json: {e}")))?;
        std::fs::write(&path, text).map_err(|e| ShimError::io("writing", &path, e))?;
    }
    Ok(Adapted { systemd_cgroup: systemd_cgroup(&spec) })
}

/// Whether the spec's cgroups path has systemd's `slice:prefix:name` form.
fn systemd_cgroup(spec: &Value) -> bool {
    let path = spec.pointer("/linux/cgroupsPath").and_then(Value::as_str).unwrap_or_default();
    !path.starts_with('/') && path.split(':').count() == 3
}

/// The hostname a (sandbox) bundle's spec gives its container, if any.
pub fn hostname(bundle: &Path) -> Option<String> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: Value = serde_json::from_slice(&text).ok()?;
    spec.get("hostname").and_then(Value::as_str).filter(|h| !h.is_empty()).map(str::to_string)
}

/// Applies the edits to `spec`; whether anything changed.
fn rewrite(spec: &mut Value, shim_pid: u32, sandbox_hostname: Option<&str>) -> bool {
    let shim_ns = format!("/proc/{shim_pid}/ns/");
    let mut changed = false;
    let mut private_uts = false;
    let namespaces = spec.pointer_mut("/linux/namespaces").and_then(Value::as_array_mut);
    for ns in namespaces.into_iter().flatten() {
        let Some(ns) = ns.as_object_mut() else { continue };
        let typ = ns.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let path = ns.get("path").and_then(Value::as_str).unwrap_or_default();
        if SANDBOX_SHARED.contains(&typ.as_str()) && path.starts_with(&shim_ns) {
            tracing::debug!(namespace = %typ, path, "a new namespace instead of the shim's own");
            ns.remove("path");
            changed = true;
        }
        if typ == "uts" && ns.get("path").and_then(Value::as_str).is_none_or(str::is_empty) {
            private_uts = true;
        }
    }
    let has_hostname = spec.get("hostname").and_then(Value::as_str).is_some_and(|h| !h.is_empty());
    if let (Some(hostname), false, true) = (sandbox_hostname, has_hostname, private_uts) {
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("hostname".into(), Value::String(hostname.into()));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn namespaces(spec: &Value) -> Vec<(String, Option<String>)> {
        spec["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .map(|ns| (ns["type"].as_str().unwrap_or_default().into(), ns["path"].as_str().map(str::to_string)))
            .collect()
    }

    #[test]
    fn the_shims_namespaces_become_new_ones_and_the_pod_hostname_is_set() {
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/sh"], "futureField": 1},
            "linux": {"namespaces": [
                {"type": "pid", "path": "/proc/42/ns/pid"},
                {"type": "ipc", "path": "/proc/42/ns/ipc"},
                {"type": "uts", "path": "/proc/42/ns/uts"},
                {"type": "mount"},
                {"type": "network", "path": "/var/run/netns/cni-1"}
            ]}
        });
        assert!(rewrite(&mut spec, 42, Some("pod-a")));
        assert_eq!(
            namespaces(&spec),
            vec![
                ("pid".into(), None),
                ("ipc".into(), None),
                ("uts".into(), None),
                ("mount".into(), None),
                ("network".into(), Some("/var/run/netns/cni-1".into()))
            ]
        );
        assert_eq!(spec["hostname"], "pod-a");
        assert_eq!(spec["process"]["futureField"], 1, "unknown fields survive");
        assert!(!rewrite(&mut spec, 42, Some("pod-a")), "a second pass changes nothing");
    }

    #[test]
    fn other_paths_an_own_hostname_and_a_shared_uts_stay() {
        let mut spec = json!({
            "hostname": "mine",
            "linux": {"namespaces": [{"type": "ipc", "path": "/proc/7/ns/ipc"}, {"type": "uts"}]}
        });
        assert!(!rewrite(&mut spec, 42, Some("pod-a")));
        assert_eq!(spec["hostname"], "mine");
        let mut host_uts = json!({"linux": {"namespaces": [{"type": "uts", "path": "/proc/7/ns/uts"}]}});
        assert!(!rewrite(&mut host_uts, 42, Some("pod-a")), "no hostname without a private UTS namespace");
        assert!(host_uts.get("hostname").is_none());
    }

    #[test]
    fn adapts_the_bundle_file_and_reads_hostnames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = json!({"hostname": "sb", "linux": {"namespaces": [{"type": "uts", "path": "/proc/9/ns/uts"}]}});
        std::fs::write(dir.path().join("config.json"), spec.to_string()).expect("write");
        assert_eq!(hostname(dir.path()).as_deref(), Some("sb"));
        assert_eq!(adapt(dir.path(), 9, None).expect("adapt"), Adapted { systemd_cgroup: false });
        let written: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).expect("read")).expect("json");
        assert_eq!(namespaces(&written), vec![("uts".into(), None)]);
        assert!(adapt(&dir.path().join("missing"), 9, None).is_err());
    }

    #[test]
    fn tells_systemd_cgroup_paths() {
        let systemd = json!({"linux": {"cgroupsPath": "kubepods-besteffort-podx.slice:cri-containerd:abc"}});
        assert!(systemd_cgroup(&systemd));
        assert!(!systemd_cgroup(&json!({"linux": {"cgroupsPath": "/kubepods/besteffort/podx/abc"}})));
        assert!(!systemd_cgroup(&json!({"linux": {}})));
    }
}
