//! Finds a container's Wasm entry point: the file its first process arg names inside the rootfs (a regular
//! image whose entrypoint is a `.wasm` file), read with its sha256 digest (the compile cache key).

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::bundle::Bundle;
use super::error::ShimError;

/// The first bytes of every Wasm binary (core module or component).
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// A Wasm program read from the rootfs.
pub struct Entry {
    /// Where it is, inside the rootfs as the guest names it (e.g. `/hello.wasm`).
    pub guest_path: String,
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

impl Entry {
    /// Reads the program `bundle.args[0]` names: an absolute path inside the rootfs, a relative one from
    /// the process cwd, or a bare name looked up in the cwd, then `PATH`, then `/`.
    pub fn find(bundle: &Bundle) -> Result<Self, ShimError> {
        let Some(arg0) = bundle.args.first().filter(|a| !a.is_empty()) else {
            return Err(ShimError::NoEntry("the process has no args".into()));
        };
        for guest_path in candidates(bundle, arg0) {
            let Some(host) = inside(&bundle.rootfs, &guest_path) else { continue };
            if !host.is_file() {
                continue;
            }
            let bytes = std::fs::read(&host).map_err(|e| ShimError::io("reading", &host, e))?;
            if !bytes.starts_with(WASM_MAGIC) {
                return Err(ShimError::NoEntry(format!("{guest_path} is not a Wasm module or component")));
            }
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            return Ok(Entry { guest_path, bytes, digest });
        }
        Err(ShimError::NoEntry(format!("{arg0} not found in the container's rootfs")))
    }

    /// The guest's argv[0]: the file name of the program.
    pub fn argv0(&self) -> String {
        Path::new(&self.guest_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.guest_path.clone())
    }
}

/// Guest paths `arg0` may name, in lookup order.
fn candidates(bundle: &Bundle, arg0: &str) -> Vec<String> {
    let join = |dir: &str| format!("{}/{arg0}", dir.trim_end_matches('/'));
    if arg0.starts_with('/') {
        return vec![arg0.to_string()];
    }
    if arg0.contains('/') {
        return vec![join(&bundle.cwd)];
    }
    let mut paths = vec![join(&bundle.cwd)];
    let path_var = bundle.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or_default();
    paths.extend(path_var.split(':').filter(|d| d.starts_with('/')).map(join));
    paths.push(join("/"));
    paths
}

/// `guest_path` under `rootfs`, if it stays inside it (no `..` and no symlink out of it).
fn inside(rootfs: &Path, guest_path: &str) -> Option<PathBuf> {
    let relative = Path::new(guest_path.trim_start_matches('/'));
    if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return None;
    }
    let host = rootfs.join(relative).canonicalize().ok()?;
    let root = rootfs.canonicalize().ok()?;
    host.starts_with(&root).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::bundle::NetNs;

    fn bundle(rootfs: &Path, args: &[&str], cwd: &str, path: Option<&str>) -> Bundle {
        Bundle {
            path: rootfs.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            root_readonly: false,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: path.map(|p| vec![("PATH".to_string(), p.to_string())]).unwrap_or_default(),
            cwd: cwd.into(),
            mounts: vec![],
            netns: NetNs::Host,
            memory_limit: None,
            cpu_millis: None,
            annotations: Default::default(),
        }
    }

    #[test]
    fn finds_absolute_relative_and_path_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("app/bin")).expect("mkdir");
        std::fs::write(root.join("hello.wasm"), b"\0asm\x01\0\0\0").expect("write");
        std::fs::write(root.join("app/bin/tool.wasm"), b"\0asm\x01\0\0\0x").expect("write");

        let e = Entry::find(&bundle(root, &["/hello.wasm"], "/", None)).expect("absolute");
        assert_eq!((e.guest_path.as_str(), e.argv0().as_str()), ("/hello.wasm", "hello.wasm"));
        assert!(e.digest.starts_with("sha256:") && e.digest.len() == 71, "{}", e.digest);

        let e = Entry::find(&bundle(root, &["bin/tool.wasm"], "/app", None)).expect("relative");
        assert_eq!(e.guest_path, "/app/bin/tool.wasm");
        let e = Entry::find(&bundle(root, &["tool.wasm"], "/", Some("/usr/bin:/app/bin"))).expect("PATH");
        assert_eq!(e.guest_path, "/app/bin/tool.wasm");
        let e = Entry::find(&bundle(root, &["hello.wasm"], "/nowhere", None)).expect("root");
        assert_eq!(e.guest_path, "/hello.wasm");
    }

    #[test]
    fn rejects_missing_non_wasm_and_escaping_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("pause"), b"\x7fELF").expect("write");
        std::fs::write(dir.path().join("outside.wasm"), b"\0asm\x01\0\0\0").expect("write");
        std::os::unix::fs::symlink(dir.path().join("outside.wasm"), root.join("link.wasm")).expect("symlink");

        let no_args = Entry::find(&bundle(&root, &[], "/", None)).err().expect("no args");
        assert!(no_args.to_string().contains("no args"), "{no_args}");
        let elf = Entry::find(&bundle(&root, &["/pause"], "/", None)).err().expect("elf");
        assert!(elf.to_string().contains("not a Wasm"), "{elf}");
        let missing = Entry::find(&bundle(&root, &["/nope.wasm"], "/", None)).err().expect("missing");
        assert!(missing.to_string().contains("not found"), "{missing}");
        assert!(Entry::find(&bundle(&root, &["/../outside.wasm"], "/", None)).is_err());
        assert!(Entry::find(&bundle(&root, &["/link.wasm"], "/", None)).is_err());
    }
}
