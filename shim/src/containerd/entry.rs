//! Finds a container's entry point: the file its first process arg names inside the rootfs, told apart by
//! its first bytes. A Wasm module or component (a regular image whose entrypoint is a `.wasm` file) is read
//! with its sha256 digest (the compile cache key); an ELF binary or a `#!` script is a Linux program that
//! runs through runc. Symlinks are followed as if the rootfs were `/`, so a lookup never leaves it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::bundle::Bundle;
use super::error::ShimError;

/// The first bytes of every Wasm binary (core module or component).
const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// The first bytes of every ELF binary.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// How many symlinks one lookup follows at most (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// What a container's first process arg names.
pub enum Entry {
    /// A Wasm module or component, run by the engine.
    Wasm(WasmEntry),
    /// An ELF binary or a `#!` script, run through runc.
    Linux {
        /// Where it is, inside the rootfs as the container names it.
        guest_path: String,
    },
}

/// A Wasm program read from the rootfs.
pub struct WasmEntry {
    /// Where it is, inside the rootfs as the guest names it (e.g. `/hello.wasm`).
    pub guest_path: String,
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

impl Entry {
    /// Finds the program `bundle.args[0]` names: an absolute path inside the rootfs, a relative one from
    /// the process cwd, or a bare name looked up in the cwd, then `PATH`, then `/`. Fails when there is
    /// none, or when the file found is neither Wasm, nor ELF, nor a `#!` script.
    pub fn find(bundle: &Bundle) -> Result<Self, ShimError> {
        let Some(arg0) = bundle.args.first().filter(|a| !a.is_empty()) else {
            return Err(ShimError::NoEntry("the process has no args".into()));
        };
        for guest_path in candidates(bundle, arg0) {
            let Some(host) = inside(&bundle.rootfs, &guest_path) else { continue };
            if !host.is_file() {
                continue;
            }
            let magic = magic(&host)?;
            if magic.starts_with(ELF_MAGIC) || magic.starts_with(b"#!") {
                return Ok(Entry::Linux { guest_path });
            }
            if !magic.starts_with(WASM_MAGIC) {
                return Err(ShimError::NoEntry(format!(
                    "{guest_path} is not a Wasm module or component (nor an ELF binary or a script)"
                )));
            }
            let bytes = std::fs::read(&host).map_err(|e| ShimError::io("reading", &host, e))?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            return Ok(Entry::Wasm(WasmEntry { guest_path, bytes, digest }));
        }
        Err(ShimError::NoEntry(format!("{arg0} not found in the container's rootfs")))
    }
}

impl WasmEntry {
    /// The guest's argv[0]: the file name of the program.
    pub fn argv0(&self) -> String {
        Path::new(&self.guest_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.guest_path.clone())
    }
}

/// The first (up to) four bytes of the file at `host`.
fn magic(host: &Path) -> Result<Vec<u8>, ShimError> {
    let file = std::fs::File::open(host).map_err(|e| ShimError::io("reading", host, e))?;
    let mut magic = Vec::with_capacity(4);
    file.take(4).read_to_end(&mut magic).map_err(|e| ShimError::io("reading", host, e))?;
    Ok(magic)
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

/// `guest_path` under `rootfs` with every symlink resolved as if `rootfs` were `/`: an absolute target
/// starts again at the rootfs and `..` stops at it, so the result never leaves the rootfs. `None` when a
/// part of the path does not exist or the links loop.
fn inside(rootfs: &Path, guest_path: &str) -> Option<PathBuf> {
    let mut pending: VecDeque<OsString> = parts(Path::new(guest_path));
    let mut resolved = rootfs.to_path_buf();
    let mut depth = 0usize;
    let mut followed = 0usize;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if depth > 0 {
                resolved.pop();
                depth -= 1;
            }
            continue;
        }
        let next = resolved.join(&part);
        let meta = std::fs::symlink_metadata(&next).ok()?;
        if !meta.file_type().is_symlink() {
            resolved = next;
            depth += 1;
            continue;
        }
        followed += 1;
        if followed > MAX_SYMLINKS {
            return None;
        }
        let target = std::fs::read_link(&next).ok()?;
        if target.is_absolute() {
            resolved = rootfs.to_path_buf();
            depth = 0;
        }
        for (i, p) in parts(&target).into_iter().enumerate() {
            pending.insert(i, p);
        }
    }
    Some(resolved)
}

/// The names and `..`s of `path`, in order (`/` and `.` dropped).
fn parts(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
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

    fn wasm(found: Result<Entry, ShimError>) -> WasmEntry {
        match found {
            Ok(Entry::Wasm(e)) => e,
            Ok(Entry::Linux { guest_path }) => panic!("{guest_path} found as a Linux program"),
            Err(e) => panic!("{e}"),
        }
    }

    fn linux(found: Result<Entry, ShimError>) -> String {
        match found {
            Ok(Entry::Linux { guest_path }) => guest_path,
            Ok(Entry::Wasm(e)) => panic!("{} found as Wasm", e.guest_path),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn finds_absolute_relative_and_path_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("app/bin")).expect("mkdir");
        std::fs::write(root.join("hello.wasm"), b"\0asm\x01\0\0\0").expect("write");
        std::fs::write(root.join("app/bin/tool.wasm"), b"\0asm\x01\0\0\0x").expect("write");

        let e = wasm(Entry::find(&bundle(root, &["/hello.wasm"], "/", None)));
        assert_eq!((e.guest_path.as_str(), e.argv0().as_str()), ("/hello.wasm", "hello.wasm"));
        assert!(e.digest.starts_with("sha256:") && e.digest.len() == 71, "{}", e.digest);

        let e = wasm(Entry::find(&bundle(root, &["bin/tool.wasm"], "/app", None)));
        assert_eq!(e.guest_path, "/app/bin/tool.wasm");
        let e = wasm(Entry::find(&bundle(root, &["tool.wasm"], "/", Some("/usr/bin:/app/bin"))));
        assert_eq!(e.guest_path, "/app/bin/tool.wasm");
        let e = wasm(Entry::find(&bundle(root, &["hello.wasm"], "/nowhere", None)));
        assert_eq!(e.guest_path, "/hello.wasm");
    }

    #[test]
    fn tells_elf_binaries_and_scripts_from_wasm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        std::fs::write(root.join("bin/busybox"), b"\x7fELF\x02\x01\x01").expect("write");
        std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").expect("write");
        // Absolute and relative links resolve inside the rootfs, not on the host.
        std::os::unix::fs::symlink("/bin/busybox", root.join("bin/sh")).expect("symlink");
        std::os::unix::fs::symlink("busybox", root.join("bin/echo")).expect("symlink");
        std::os::unix::fs::symlink("../bin/../bin/sh", root.join("bin/up")).expect("symlink");

        assert_eq!(linux(Entry::find(&bundle(root, &["sh", "-c", "x"], "/", Some("/usr/bin:/bin")))), "/bin/sh");
        assert_eq!(linux(Entry::find(&bundle(root, &["/bin/echo"], "/", None))), "/bin/echo");
        assert_eq!(linux(Entry::find(&bundle(root, &["/bin/up"], "/", None))), "/bin/up");
        assert_eq!(linux(Entry::find(&bundle(root, &["./run.sh"], "/", None))), "/./run.sh");
    }

    #[test]
    fn rejects_missing_unknown_escaping_and_looping_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("notes.txt"), b"hello").expect("write");
        std::fs::write(dir.path().join("outside.wasm"), b"\0asm\x01\0\0\0").expect("write");
        std::os::unix::fs::symlink(dir.path().join("outside.wasm"), root.join("link.wasm")).expect("symlink");
        std::os::unix::fs::symlink("loop-b", root.join("loop-a")).expect("symlink");
        std::os::unix::fs::symlink("loop-a", root.join("loop-b")).expect("symlink");

        let no_args = Entry::find(&bundle(&root, &[], "/", None)).err().expect("no args");
        assert!(no_args.to_string().contains("no args"), "{no_args}");
        let text = Entry::find(&bundle(&root, &["/notes.txt"], "/", None)).err().expect("text");
        assert!(text.to_string().contains("not a Wasm"), "{text}");
        let missing = Entry::find(&bundle(&root, &["/nope.wasm"], "/", None)).err().expect("missing");
        assert!(missing.to_string().contains("not found"), "{missing}");
        assert!(Entry::find(&bundle(&root, &["/../outside.wasm"], "/", None)).is_err());
        assert!(Entry::find(&bundle(&root, &["/link.wasm"], "/", None)).is_err());
        assert!(Entry::find(&bundle(&root, &["/loop-a"], "/", None)).is_err());
    }
}
