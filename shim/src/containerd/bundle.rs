//! Reads an OCI bundle's `config.json` into what a Wasm run needs: argv, env, cwd, the rootfs, bind mounts
//! as preopened directories, the network namespace to join, and the memory and CPU limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::ShimError;
use skiff_engine::Preopen;

/// CRI's annotation telling a pod's sandbox (pause) container from its app containers.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the pod sandbox a container belongs to (groups a pod into one shim).
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// Annotation (or process env variable) naming the port a `wasi:http` component is served on.
pub const HTTP_PORT: &str = "skiff.io/http-port";
/// The process env variable alternative to [`HTTP_PORT`].
pub const HTTP_PORT_ENV: &str = "SKIFF_HTTP_PORT";
/// Port a `wasi:http` component is served on when the bundle names none.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// The network a guest's sockets live in: the host's when the spec has no network namespace
/// (`ctr run --net-host`), a new one for a namespace without a path (as runc makes), else the one
/// at the path (a pod's, `ctr run --with-ns network:PATH`).
pub use skiff_engine::netns::NetNs;

/// What the shim runs for one container, read from its bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub path: PathBuf,
    /// The container's root filesystem (absolute).
    pub rootfs: PathBuf,
    pub root_readonly: bool,
    /// The process args; the first names the Wasm file.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// Bind mounts of directories, preopened at their destination.
    pub mounts: Vec<Preopen>,
    pub netns: NetNs,
    pub memory_limit: Option<usize>,
    pub cpu_millis: Option<u32>,
    pub annotations: HashMap<String, String>,
}

impl Bundle {
    /// Reads `path/config.json`.
    pub fn load(path: &Path) -> Result<Self, ShimError> {
        let config = path.join("config.json");
        let spec = Spec::load(&config)
            .map_err(|e| ShimError::Bundle { bundle: path.to_path_buf(), reason: format!("config.json: {e}") })?;
        Self::from_spec(path, &spec)
    }

    /// The run plan of `spec`, a bundle at `path`.
    pub fn from_spec(path: &Path, spec: &Spec) -> Result<Self, ShimError> {
        let bad = |reason: String| ShimError::Bundle { bundle: path.to_path_buf(), reason };
        let process = spec.process().as_ref();
        let args = process.and_then(|p| p.args().clone()).unwrap_or_default();
        let env = skiff_engine::env_pairs(process.and_then(|p| p.env().clone()).unwrap_or_default());
        let cwd = process.map(|p| p.cwd().to_string_lossy().into_owned()).filter(|c| !c.is_empty());
        let root = spec.root().as_ref().ok_or_else(|| bad("no root".into()))?;
        let rootfs = if root.path().is_absolute() { root.path().clone() } else { path.join(root.path()) };
        let linux = spec.linux().as_ref();
        let netns = match linux
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        {
            None => NetNs::Host,
            Some(ns) => match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => NetNs::Join(p.clone()),
                _ => NetNs::New,
            },
        };
        let resources = linux.and_then(|l| l.resources().as_ref());
        let memory_limit = resources
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let cpu_millis = resources.and_then(|r| r.cpu().as_ref()).and_then(|cpu| match (cpu.quota(), cpu.period()) {
            (Some(quota), Some(period)) if quota > 0 && period > 0 => {
                u32::try_from((quota as u64).saturating_mul(1000) / period).ok().map(|m| m.max(1))
            }
            _ => None,
        });
        Ok(Bundle {
            path: path.to_path_buf(),
            rootfs,
            root_readonly: root.readonly().unwrap_or(false),
            args,
            env,
            cwd: cwd.unwrap_or_else(|| "/".into()),
            mounts: bind_mounts(spec),
            netns,
            memory_limit,
            cpu_millis,
            annotations: spec.annotations().clone().unwrap_or_default(),
        })
    }

    /// Whether this is a CRI pod sandbox (pause) container: it runs nothing, it only holds the pod.
    pub fn is_sandbox(&self) -> bool {
        self.annotations.get(CONTAINER_TYPE).is_some_and(|t| t == "sandbox")
    }

    /// The guest's directories: the rootfs at `/`, then the bind mounts. A mount at a path an
    /// earlier one (or the rootfs) has shadows it, as a later mount does in Linux; the program was
    /// already found in the rootfs itself.
    pub fn preopens(&self) -> Vec<Preopen> {
        let root = Preopen { host: self.rootfs.clone(), guest: "/".into(), read_only: self.root_readonly };
        let mut preopens: Vec<Preopen> = Vec::new();
        for preopen in std::iter::once(root).chain(self.mounts.iter().cloned()) {
            let guest = preopen.guest.trim_end_matches('/');
            preopens.retain(|p| p.guest.trim_end_matches('/') != guest);
            preopens.push(preopen);
        }
        preopens
    }

    /// The port a `wasi:http` component is served on: the annotation, else the env variable, else 8080.
    pub fn http_port(&self) -> u16 {
        let from_env = self.env.iter().find(|(k, _)| k == HTTP_PORT_ENV).map(|(_, v)| v);
        self.annotations.get(HTTP_PORT).or(from_env).and_then(|p| p.trim().parse().ok()).unwrap_or(DEFAULT_HTTP_PORT)
    }
}

/// The spec's bind mounts whose source is a directory, as preopens (read-only with `ro`). Files (e.g. CRI's
/// /etc/hosts) and kernel filesystems (proc, sysfs, ...) have no WASI equivalent and are skipped.
fn bind_mounts(spec: &Spec) -> Vec<Preopen> {
    let mut preopens = Vec::new();
    for mount in spec.mounts().as_deref().unwrap_or_default() {
        let options = mount.options().as_deref().unwrap_or_default();
        let is_bind = mount.typ().as_deref() == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
        let Some(source) = mount.source().as_ref().filter(|_| is_bind) else { continue };
        if !source.is_dir() {
            tracing::debug!(source = %source.display(), "skipping a bind mount that is not a directory");
            continue;
        }
        preopens.push(Preopen {
            host: source.clone(),
            guest: mount.destination().to_string_lossy().into_owned(),
            read_only: options.iter().any(|o| o == "ro"),
        });
    }
    preopens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).expect("a valid spec")
    }

    #[test]
    fn reads_process_mounts_namespaces_and_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").expect("write");
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {"args": ["/hello.wasm", "a b"], "env": ["A=1", "B=x=y", "C"], "cwd": "/work",
                        "user": {"uid": 0, "gid": 0}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro"]},
                {"destination": "/rw", "source": data, "options": ["bind"]},
                {"destination": "/etc/hosts", "type": "bind", "source": file, "options": ["rbind"]}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/p1"}],
                "resources": {"memory": {"limit": 33554432}, "cpu": {"quota": 50000, "period": 100000}}
            },
            "annotations": {"io.kubernetes.cri.container-type": "sandbox", "skiff.io/http-port": "9090"}
        }));
        let b = Bundle::from_spec(Path::new("/b"), &s).expect("bundle");
        assert_eq!(b.rootfs, PathBuf::from("/b/rootfs"));
        assert!(b.root_readonly);
        assert_eq!(b.args, vec!["/hello.wasm", "a b"]);
        assert_eq!(b.env, vec![("A".into(), "1".into()), ("B".into(), "x=y".into()), ("C".into(), String::new())]);
        assert_eq!(b.cwd, "/work");
        assert_eq!(b.mounts.len(), 2);
        assert_eq!((b.mounts[0].guest.as_str(), b.mounts[0].read_only), ("/data", true));
        assert_eq!((b.mounts[1].guest.as_str(), b.mounts[1].read_only), ("/rw", false));
        assert_eq!(b.netns, NetNs::Join("/var/run/netns/p1".into()));
        assert_eq!(b.memory_limit, Some(32 << 20));
        assert_eq!(b.cpu_millis, Some(500));
        assert!(b.is_sandbox());
        assert_eq!(b.http_port(), 9090);
        let preopens: Vec<String> = b.preopens().into_iter().map(|p| p.guest).collect();
        assert_eq!(preopens, ["/", "/data", "/rw"]);
    }

    #[test]
    fn a_mount_shadows_what_is_at_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/t.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "mounts": [{"destination": "/", "type": "bind", "source": dir.path(), "options": ["rbind"]}]
        }));
        let b = Bundle::from_spec(Path::new("/b"), &s).expect("bundle");
        let preopens = b.preopens();
        assert_eq!(preopens.len(), 1, "{preopens:?}");
        assert_eq!((preopens[0].host.as_path(), preopens[0].guest.as_str()), (dir.path(), "/"));
    }

    #[test]
    fn defaults_without_linux_section() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "/abs/rootfs"},
            "process": {"args": ["x.wasm"], "env": ["SKIFF_HTTP_PORT=7070"], "cwd": "", "user": {"uid": 0, "gid": 0}}
        }));
        let b = Bundle::from_spec(Path::new("/b"), &s).expect("bundle");
        assert_eq!(b.rootfs, PathBuf::from("/abs/rootfs"));
        assert_eq!(b.netns, NetNs::Host);
        assert_eq!((b.memory_limit, b.cpu_millis), (None, None));
        assert_eq!(b.cwd, "/");
        assert!(!b.is_sandbox());
        assert_eq!(b.http_port(), 7070);
    }

    #[test]
    fn a_network_namespace_without_path_is_new() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "network"}]}
        }));
        assert_eq!(Bundle::from_spec(Path::new("/b"), &s).expect("bundle").netns, NetNs::New);
    }

    #[test]
    fn a_missing_config_is_a_bundle_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Bundle::load(dir.path()).expect_err("no config.json");
        assert!(matches!(err, ShimError::Bundle { .. }), "{err}");
    }
}
