//! Adapts a Linux container's `config.json` before runc reads it. CRI makes an app container join its pod
//! sandbox's network, IPC, UTS and PID namespaces through `/proc/<sandbox pid>/ns/*`; this shim's sandbox
//! has no process of its own, so that pid is the shim's and those are the host's namespaces. The network
//! one becomes the sandbox's own network namespace (its spec's path, CRI's pinned netns); IPC and UTS the
//! pod's namespace holder's (see [`super::holder`]: shared by all Linux containers of the pod, with the
//! pod's hostname), or new namespaces when the pod has no running holder; PID always a new namespace (a
//! holder cannot share its own). A container in a new UTS namespace gets the sandbox's hostname when its
//! spec names none. The spec is edited as JSON, so fields this shim does not know survive untouched. It
//! also tells whether the spec names a systemd cgroup (`slice:prefix:name`, as CRI writes with
//! `SystemdCgroup`), which runc must know.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::error::ShimError;
use super::holder::Holder;

/// The namespace types a CRI app container joins from its sandbox by `/proc` path.
const SANDBOX_SHARED: &[&str] = &["ipc", "uts", "pid"];
/// Those of them a pod's namespace holder has.
const HELD: &[&str] = &["ipc", "uts"];

/// What a pod's Linux containers take from its sandbox's spec.
#[derive(Debug, Clone, Default)]
pub struct Pod {
    pub hostname: Option<String>,
    /// The sandbox's network namespace (a path to join).
    pub netns: Option<PathBuf>,
    /// The process holding the pod's IPC and UTS namespaces, once its first Linux container was created.
    pub holder: Option<Arc<Holder>>,
}

impl PartialEq for Pod {
    fn eq(&self, other: &Self) -> bool {
        let holder = |pod: &Pod| pod.holder.as_ref().map(Arc::as_ptr);
        self.hostname == other.hostname && self.netns == other.netns && holder(self) == holder(other)
    }
}

impl Pod {
    /// What the (sandbox) spec in `bundle` gives its pod.
    pub fn of_sandbox(bundle: &Path) -> Self {
        let text = std::fs::read(bundle.join("config.json")).unwrap_or_default();
        let spec: Value = serde_json::from_slice(&text).unwrap_or_default();
        let hostname = spec.get("hostname").and_then(Value::as_str).filter(|h| !h.is_empty()).map(str::to_string);
        let namespaces = spec.pointer("/linux/namespaces").and_then(Value::as_array);
        let netns = namespaces
            .into_iter()
            .flatten()
            .find(|ns| ns.get("type").and_then(Value::as_str) == Some("network"))
            .and_then(|ns| ns.get("path").and_then(Value::as_str))
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Pod { hostname, netns, holder: None }
    }
}

/// What runc needs to know about an adapted spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapted {
    /// The cgroups path is systemd's `slice:prefix:name` (`runc --systemd-cgroup`).
    pub systemd_cgroup: bool,
}

/// Rewrites `bundle/config.json` for runc (see the file's doc); leaves the file alone when nothing changes.
pub fn adapt(bundle: &Path, shim_pid: u32, pod: &Pod) -> Result<Adapted, ShimError> {
    let path = bundle.join("config.json");
    let bad = |reason: String| ShimError::Bundle { bundle: bundle.to_path_buf(), reason };
    let text = std::fs::read(&path).map_err(|e| ShimError::io("reading", &path, e))?;
    let mut spec: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("config.json: {e}")))?;
    let holder = pod.holder.as_ref().and_then(|holder| holder.pid());
    if pod.holder.is_some() && holder.is_none() {
        tracing::warn!("the pod's namespace holder is gone: new IPC and UTS namespaces");
    }
    if rewrite(&mut spec, shim_pid, pod, holder) {
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

/// Applies the edits to `spec` (IPC and UTS from `holder`'s pid, if any); whether anything changed.
fn rewrite(spec: &mut Value, shim_pid: u32, pod: &Pod, holder: Option<u32>) -> bool {
    let shim_ns = format!("/proc/{shim_pid}/ns/");
    let mut changed = false;
    let mut private_uts = false;
    let namespaces = spec.pointer_mut("/linux/namespaces").and_then(Value::as_array_mut);
    for ns in namespaces.into_iter().flatten() {
        let Some(ns) = ns.as_object_mut() else { continue };
        let typ = ns.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let path = ns.get("path").and_then(Value::as_str).unwrap_or_default();
        if typ == "network" && path.starts_with(&shim_ns) {
            match &pod.netns {
                Some(netns) => {
                    tracing::debug!(path, netns = %netns.display(), "the sandbox's network namespace");
                    ns.insert("path".into(), Value::String(netns.to_string_lossy().into_owned()));
                    changed = true;
                }
                None => tracing::warn!(path, "no sandbox network namespace known: the shim's network is joined"),
            }
        } else if SANDBOX_SHARED.contains(&typ.as_str()) && path.starts_with(&shim_ns) {
            match holder.filter(|_| HELD.contains(&typ.as_str())) {
                Some(holder) => {
                    let held = format!("/proc/{holder}/ns/{typ}");
                    tracing::debug!(namespace = %typ, path, held, "the pod's namespace instead of the shim's own");
                    ns.insert("path".into(), Value::String(held));
                }
                None => {
                    tracing::debug!(namespace = %typ, path, "a new namespace instead of the shim's own");
                    ns.remove("path");
                }
            }
            changed = true;
        }
        if typ == "uts" && ns.get("path").and_then(Value::as_str).is_none_or(str::is_empty) {
            private_uts = true;
        }
    }
    let has_hostname = spec.get("hostname").and_then(Value::as_str).is_some_and(|h| !h.is_empty());
    if let (Some(hostname), false, true) = (&pod.hostname, has_hostname, private_uts) {
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("hostname".into(), Value::String(hostname.clone()));
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
                {"type": "network", "path": "/proc/42/ns/net"}
            ]}
        });
        let pod = Pod { hostname: Some("pod-a".into()), netns: Some("/var/run/netns/cni-1".into()), holder: None };
        assert!(rewrite(&mut spec, 42, &pod, None));
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
        assert!(!rewrite(&mut spec, 42, &pod, None), "a second pass changes nothing");
    }

    #[test]
    fn ipc_and_uts_become_the_holders_and_pid_a_new_one() {
        let mut spec = json!({
            "linux": {"namespaces": [
                {"type": "pid", "path": "/proc/42/ns/pid"},
                {"type": "ipc", "path": "/proc/42/ns/ipc"},
                {"type": "uts", "path": "/proc/42/ns/uts"},
                {"type": "network", "path": "/proc/42/ns/net"}
            ]}
        });
        let pod = Pod { hostname: Some("pod-a".into()), netns: Some("/var/run/netns/cni-1".into()), holder: None };
        assert!(rewrite(&mut spec, 42, &pod, Some(77)));
        assert_eq!(
            namespaces(&spec),
            vec![
                ("pid".into(), None),
                ("ipc".into(), Some("/proc/77/ns/ipc".into())),
                ("uts".into(), Some("/proc/77/ns/uts".into())),
                ("network".into(), Some("/var/run/netns/cni-1".into()))
            ]
        );
        assert!(spec.get("hostname").is_none(), "the holder's UTS namespace has the hostname already");
    }

    #[test]
    fn other_paths_an_own_hostname_and_a_shared_uts_stay() {
        let pod = Pod { hostname: Some("pod-a".into()), netns: Some("/var/run/netns/cni-1".into()), holder: None };
        let mut spec = json!({
            "hostname": "mine",
            "linux": {"namespaces": [
                {"type": "ipc", "path": "/proc/7/ns/ipc"},
                {"type": "uts"},
                {"type": "network", "path": "/var/run/netns/other"}
            ]}
        });
        assert!(!rewrite(&mut spec, 42, &pod, Some(77)));
        assert_eq!(spec["hostname"], "mine");
        assert_eq!(spec["linux"]["namespaces"][2]["path"], "/var/run/netns/other");
        let mut host_uts = json!({"linux": {"namespaces": [{"type": "uts", "path": "/proc/7/ns/uts"}]}});
        assert!(!rewrite(&mut host_uts, 42, &pod, None), "no hostname without a private UTS namespace");
        assert!(host_uts.get("hostname").is_none());
    }

    #[test]
    fn adapts_the_bundle_file_and_reads_sandboxes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = json!({"hostname": "sb", "linux": {"namespaces": [{"type": "network", "path": "/run/netns/p"}]}});
        std::fs::write(dir.path().join("config.json"), sandbox.to_string()).expect("write");
        let pod = Pod::of_sandbox(dir.path());
        assert_eq!(pod, Pod { hostname: Some("sb".into()), netns: Some("/run/netns/p".into()), holder: None });
        assert_eq!(Pod::of_sandbox(&dir.path().join("missing")), Pod::default());

        let spec = json!({"linux": {"namespaces": [{"type": "uts", "path": "/proc/9/ns/uts"}]}});
        std::fs::write(dir.path().join("config.json"), spec.to_string()).expect("write");
        assert_eq!(adapt(dir.path(), 9, &Pod::default()).expect("adapt"), Adapted { systemd_cgroup: false });
        let written: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).expect("read")).expect("json");
        assert_eq!(namespaces(&written), vec![("uts".into(), None)]);
        assert!(adapt(&dir.path().join("missing"), 9, &Pod::default()).is_err());
    }

    #[test]
    fn tells_systemd_cgroup_paths() {
        let systemd = json!({"linux": {"cgroupsPath": "kubepods-besteffort-podx.slice:cri-containerd:abc"}});
        assert!(systemd_cgroup(&systemd));
        assert!(!systemd_cgroup(&json!({"linux": {"cgroupsPath": "/kubepods/besteffort/podx/abc"}})));
        assert!(!systemd_cgroup(&json!({"linux": {}})));
    }
}
