//! A cluster whose node runs Linux containers: a private containerd (runc only), a loopback
//! registry holding an offline-built busybox as `library/busybox:latest`, and `docker.io` mirrored
//! to that registry through the node's `--registry-config`, so manifests keep `image: busybox`.

use super::containerd::Containerd;
use super::node::Registry;
use super::Cluster;

/// The parts, dropped in declaration order: the cluster (its agent removes its containers) before
/// containerd.
pub struct LinuxCluster {
    pub cluster: Cluster,
    pub containerd: Containerd,
    pub registry: Registry,
    pub work: tempfile::TempDir,
}

impl LinuxCluster {
    /// Starts everything; `tag` names this test's containerd (its pid is appended).
    pub fn start_linux(tag: &str) -> Self {
        Self::start_linux_with(tag, Vec::new())
    }

    /// As [`LinuxCluster::start_linux`], with more node flags.
    pub fn start_linux_with(tag: &str, extra: Vec<String>) -> Self {
        let containerd = Containerd::start_runc_only(&format!("{tag}{}", std::process::id()));
        let registry = Registry::start();
        let work = tempfile::tempdir().expect("tempdir");
        let mirrors = busybox_mirror(&registry, work.path());
        let mut args = vec![
            "--containerd-address".into(),
            containerd.socket().display().to_string(),
            "--containerd-namespace".into(),
            containerd.namespace.clone(),
            "--registry-config".into(),
            mirrors.display().to_string(),
        ];
        args.extend(extra);
        let cluster = Cluster::with_node_args(args);
        LinuxCluster { cluster, containerd, registry, work }
    }
}

/// Pushes the offline-built busybox into `registry` as `library/busybox:latest` and writes, under
/// `work`, a `registries.yaml` mirroring `docker.io` to it; returns that file's path (the node's
/// `--registry-config`).
pub fn busybox_mirror(registry: &Registry, work: &std::path::Path) -> std::path::PathBuf {
    let layout = skiff_testkit::image::build_busybox_layout(&work.join("busybox")).expect("busybox image");
    skiff_testkit::image::push_to_registry(&layout, &registry.addr, "library/busybox:latest").expect("push");
    let mirrors = work.join("registries.yaml");
    std::fs::write(&mirrors, format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", registry.addr))
        .expect("registries.yaml");
    mirrors
}
