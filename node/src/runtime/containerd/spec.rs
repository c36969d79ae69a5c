//! The OCI runtime spec of one Wasm container run by skiff's shim: the process (argv, env with `PWD`, cwd)
//! by the same rules as the in-process runtime, a root directory the kubelet prepares (no snapshotter),
//! volumes as bind mounts, the pod's network namespace, memory and CPU limits, and the annotations that
//! group a pod's containers into one shim.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::ContainerdError;
use crate::image::WasmImage;
use crate::runtime::wasm::{argv, guest_env, private_rootfs, working_dir};
use crate::runtime::Launch;

/// CRI's annotations the shim reads (see `skiff_shim::containerd::Bundle`).
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CPU period of the spec's quota (the kernel's default, 100 ms).
const CPU_PERIOD: u64 = 100_000;

/// The root a container's task runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The directory (absolute).
    pub path: PathBuf,
    pub read_only: bool,
    /// Where the Wasm program is, as the guest names it (the spec's first process arg).
    pub program: String,
}

/// Prepares the container's root directory under `launch.scratch_dir`: a regular image's writable copy of
/// its files (shared with exec probes, as in-process), or for a Wasm artifact a read-only directory holding
/// the module (a hard link into the image cache, a copy across file systems).
pub fn prepare_root(image: &WasmImage, launch: &Launch) -> Result<Root, ContainerdError> {
    if let Some(template) = &image.rootfs {
        let relative = image.wasm_path.strip_prefix(template).map_err(|_| {
            ContainerdError::Prepare(format!("{} is not inside the image's files", image.wasm_path.display()))
        })?;
        let path =
            private_rootfs(template, &launch.scratch_dir).map_err(|e| ContainerdError::Prepare(e.to_string()))?;
        return Ok(Root { path, read_only: false, program: format!("/{}", relative.display()) });
    }
    let argv0 = argv(image, launch, None).into_iter().next().unwrap_or_else(|| "main.wasm".into());
    let name = Path::new(&argv0).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(argv0);
    let dir = launch.scratch_dir.join("wasm-root");
    let io = |what: &str, path: &Path, e: std::io::Error| {
        ContainerdError::Prepare(format!("{what} {}: {e}", path.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    let module = dir.join(&name);
    match std::fs::remove_file(&module) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("replacing", &module, e)),
    }
    if std::fs::hard_link(&image.wasm_path, &module).is_err() {
        std::fs::copy(&image.wasm_path, &module).map_err(|e| io("copying the module to", &module, e))?;
    }
    Ok(Root { path: dir, read_only: true, program: format!("/{name}") })
}

/// The spec (JSON) of `launch` on `root`, joined to the network namespace at `netns`, grouped with the other
/// containers of pod `pod_uid`.
pub fn build(image: &WasmImage, launch: &Launch, root: &Root, netns: &Path, pod_uid: &str) -> Value {
    let mut args = argv(image, launch, None);
    if let Some(first) = args.first_mut() {
        first.clone_from(&root.program);
    }
    let env: Vec<String> = guest_env(image, launch).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cwd = working_dir(image, launch).filter(|d| d.starts_with('/')).unwrap_or_else(|| "/".into());
    let mounts: Vec<Value> = launch
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only { "ro" } else { "rw" };
            json!({
                "destination": m.container_path,
                "type": "bind",
                "source": m.host_path,
                "options": ["rbind", mode],
            })
        })
        .collect();
    let mut resources = json!({});
    if let Some(limit) = launch.memory_limit {
        resources["memory"] = json!({ "limit": limit.min(i64::MAX as u64) });
    }
    if let Some(millis) = launch.cpu_millis.filter(|m| *m > 0) {
        resources["cpu"] = json!({ "quota": u64::from(millis) * CPU_PERIOD / 1000, "period": CPU_PERIOD });
    }
    let mut annotations = json!({ SANDBOX_ID: pod_uid, CONTAINER_TYPE: "container" });
    if let Some(port) = launch.http_port {
        annotations[skiff_shim::containerd::HTTP_PORT] = json!(port.to_string());
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": env,
            "cwd": cwd,
        },
        "root": { "path": root.path, "readonly": root.read_only },
        "hostname": launch.name,
        "mounts": mounts,
        "linux": {
            "namespaces": [{ "type": "network", "path": netns }],
            "resources": resources,
        },
        "annotations": annotations,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use skiff_shim::containerd::{Bundle, NetNs};

    use super::*;
    use crate::logs::{LogWriter, Rotation};
    use crate::runtime::Mount;

    fn launch(dir: &Path, volume: &Path) -> Launch {
        Launch {
            name: "app".into(),
            image: "127.0.0.1:5000/hello:1".into(),
            command: None,
            args: Some(vec!["a b".into(), "c".into()]),
            env: vec![("A".into(), "from-pod".into())],
            working_dir: Some("/work".into()),
            mounts: vec![Mount { host_path: volume.to_path_buf(), container_path: "/data".into(), read_only: true }],
            memory_limit: Some(32 << 20),
            cpu_millis: Some(500),
            http_port: Some(9090),
            log: Arc::new(LogWriter::create(dir.join("log/0.log"), Rotation::default()).expect("log")),
            scratch_dir: dir.join("scratch"),
            linux: crate::runtime::LinuxExtras::default(),
        }
    }

    fn artifact(dir: &Path) -> WasmImage {
        let wasm = dir.join("blob");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").expect("write");
        WasmImage {
            reference: "127.0.0.1:5000/hello:1".into(),
            image_id: "x@sha256:1".into(),
            wasm_path: wasm,
            wasm_digest: "sha256:1".into(),
            rootfs: None,
            entrypoint: Vec::new(),
            env: vec![("A".into(), "from-image".into()), ("B".into(), "2".into())],
            working_dir: None,
            kind: crate::image::ImageKind::Wasm,
            cmd: Vec::new(),
            user: None,
            stop_signal: None,
            linux: None,
        }
    }

    #[test]
    fn the_shim_reads_what_the_kubelet_meant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = dir.path().join("vol");
        std::fs::create_dir(&volume).expect("mkdir");
        let image = artifact(dir.path());
        let launch = launch(dir.path(), &volume);
        let root = prepare_root(&image, &launch).expect("root");
        assert!(root.read_only);
        assert_eq!(root.program, "/blob");
        assert_eq!(std::fs::read(root.path.join("blob")).expect("module"), b"\0asm\x01\0\0\0");
        let spec = build(&image, &launch, &root, Path::new("/var/run/netns/p1"), "uid-1");
        let bundle_dir = dir.path().join("bundle");
        std::fs::create_dir(&bundle_dir).expect("mkdir");
        std::fs::write(bundle_dir.join("config.json"), serde_json::to_vec(&spec).expect("json")).expect("write");

        let b = Bundle::load(&bundle_dir).expect("the shim reads the spec");
        assert_eq!(b.rootfs, root.path);
        assert!(b.root_readonly);
        assert_eq!(b.args, vec!["/blob", "a b", "c"]);
        let env: std::collections::HashMap<_, _> = b.env.iter().cloned().collect();
        assert_eq!(env.get("A").map(String::as_str), Some("from-pod"));
        assert_eq!(env.get("B").map(String::as_str), Some("2"));
        assert_eq!(env.get("PWD").map(String::as_str), Some("/work"));
        assert_eq!(b.cwd, "/work");
        assert_eq!(b.mounts.len(), 1);
        assert_eq!((b.mounts[0].host.as_path(), b.mounts[0].guest.as_str()), (volume.as_path(), "/data"));
        assert!(b.mounts[0].read_only);
        assert_eq!(b.netns, NetNs::Join("/var/run/netns/p1".into()));
        assert_eq!((b.memory_limit, b.cpu_millis), (Some(32 << 20), Some(500)));
        assert_eq!(b.annotations.get(SANDBOX_ID).map(String::as_str), Some("uid-1"));
        assert!(!b.is_sandbox());
        assert_eq!(b.http_port(), 9090);

        // Preparing again (a restart) replaces the module.
        let again = prepare_root(&image, &launch).expect("root again");
        assert_eq!(again, root);
    }

    #[test]
    fn a_regular_image_runs_on_its_own_copy_of_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let template = dir.path().join("unpacked");
        std::fs::create_dir_all(template.join("app")).expect("mkdir");
        std::fs::write(template.join("app/x.wasm"), b"\0asm\x01\0\0\0").expect("write");
        let image = WasmImage {
            rootfs: Some(template.clone()),
            wasm_path: template.join("app/x.wasm"),
            entrypoint: vec!["/app/x.wasm".into(), "serve".into()],
            ..artifact(dir.path())
        };
        let launch = Launch {
            args: None,
            working_dir: None,
            memory_limit: None,
            cpu_millis: None,
            http_port: None,
            ..launch(dir.path(), &template)
        };
        let root = prepare_root(&image, &launch).expect("root");
        assert!(!root.read_only);
        assert_eq!(root.program, "/app/x.wasm");
        assert!(root.path.starts_with(dir.path().join("scratch")) && root.path.join("app/x.wasm").is_file());
        let spec = build(&image, &launch, &root, Path::new("/n"), "u");
        assert_eq!(spec["process"]["args"], json!(["/app/x.wasm", "serve"]));
        assert_eq!(spec["process"]["cwd"], "/");
        assert_eq!(spec["linux"]["resources"], json!({}));
        assert!(spec["annotations"].get(skiff_shim::containerd::HTTP_PORT).is_none());
    }
}
