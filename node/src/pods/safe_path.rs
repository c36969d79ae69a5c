//! Paths a client names inside a volume (`subPath`, `subPathExpr`, configMap/secret/downwardAPI item
//! `path`s) resolved by the kernel without ever leaving the volume, symbolic links included
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`). A container can plant a link in a volume
//! it shares (`escape -> /etc`, `../../..`, absolute targets); the lexical check alone let another
//! container's `subPath` mount follow it out (CVE-2017-1002101). Links that stay inside are followed.
//!
//! The result is a descriptor, not a path: a path would be re-resolved later and a container could
//! swap a component for a link in between. Callers bind-mount `/proc/self/fd/N` ([`fd_path`]) or
//! hand the descriptor on, so what is mounted is what was checked.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Why a path inside a volume cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SafePathError {
    /// The path is absolute, has `..`, or a link on the way points outside the volume.
    #[error("path {rel} is not within the volume {root} (links included)")]
    Escapes { root: PathBuf, rel: String },
    /// Opening or creating a component failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What a resolved path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
}

/// The resolution flags: stay beneath the directory, no `/proc` magic links.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// The normal components of `rel`; `None` when it is absolute or has `..` (refused before any IO).
fn components(rel: &str) -> Option<Vec<&std::ffi::OsStr>> {
    let p = Path::new(rel);
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn escapes(root: &Path, rel: &str) -> SafePathError {
    SafePathError::Escapes { root: root.to_path_buf(), rel: rel.to_string() }
}

/// Opens `root` itself (a directory the kubelet made; it may be a link the node set up, e.g. hostPath).
fn open_root(root: &Path) -> Result<OwnedFd, SafePathError> {
    nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| SafePathError::Io { path: root.to_path_buf(), source: e.into() })
}

/// Opens `rel` beneath the directory `dir` (an `O_PATH` descriptor); EXDEV and ELOOP mean a link left it.
fn open_at(dir: &OwnedFd, rel: &Path, flags: OFlag, root: &Path, shown: &str) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(beneath());
    let mut tries = 0;
    loop {
        match openat2(dir.as_fd(), rel, how) {
            // A rename elsewhere in the tree during the walk: the kernel asks to try again.
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            Err(Errno::EXDEV) | Err(Errno::ELOOP) | Err(Errno::EAGAIN) => {
                tracing::warn!(root = %root.display(), path = shown, "a path inside a volume leads out of it");
                return Err(Errno::EXDEV);
            }
            other => return other,
        }
    }
}

/// Opens `rel` under `root` as an `O_PATH` descriptor without leaving `root`; with `create`, missing
/// components are made as directories (mode 0755, as the kubelet makes a missing `subPath`).
pub fn open_beneath(root: &Path, rel: &str, create: bool) -> Result<(OwnedFd, Kind), SafePathError> {
    let parts = components(rel).ok_or_else(|| escapes(root, rel))?;
    let root_fd = open_root(root)?;
    let mut sofar = PathBuf::from(".");
    let mut fd = open_at(&root_fd, &sofar, OFlag::O_PATH | OFlag::O_DIRECTORY, root, rel)
        .map_err(|e| SafePathError::Io { path: root.to_path_buf(), source: e.into() })?;
    let last = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let parent = std::mem::replace(&mut sofar, PathBuf::new());
        sofar = parent.join(part);
        // Every step resolves the whole prefix from the root again, so a link inside the volume
        // pointing elsewhere inside it is fine, and one pointing out is refused wherever it sits.
        let opened = match open_at(&root_fd, &sofar, OFlag::O_PATH, root, rel) {
            Err(Errno::ENOENT) if create => {
                match nix::sys::stat::mkdirat(fd.as_fd(), part, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(SafePathError::Io { path: root.join(&sofar), source: e.into() }),
                }
                open_at(&root_fd, &sofar, OFlag::O_PATH, root, rel)
            }
            other => other,
        };
        fd = match opened {
            Ok(fd) => fd,
            Err(Errno::EXDEV) => return Err(escapes(root, rel)),
            Err(e) => return Err(SafePathError::Io { path: root.join(&sofar), source: e.into() }),
        };
        if i + 1 < last && kind(&fd, root, &sofar)? != Kind::Directory {
            return Err(SafePathError::Io {
                path: root.join(&sofar),
                source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
            });
        }
    }
    let k = kind(&fd, root, &sofar)?;
    Ok((fd, k))
}

fn kind(fd: &OwnedFd, root: &Path, rel: &Path) -> Result<Kind, SafePathError> {
    let st =
        nix::sys::stat::fstat(fd.as_fd()).map_err(|e| SafePathError::Io { path: root.join(rel), source: e.into() })?;
    Ok(if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR { Kind::Directory } else { Kind::File })
}

/// The magic path naming an open descriptor of this process; mounting it mounts exactly what the
/// descriptor refers to, whatever happened to the names since.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `rel` resolved under `root` to the real path the kernel found (no link left in it), checked to be
/// under the real path of `root`. For callers that need a path at once; mounts use [`open_beneath`].
pub fn resolve_beneath(root: &Path, rel: &str, create: bool) -> Result<PathBuf, SafePathError> {
    let (fd, _) = open_beneath(root, rel, create)?;
    let real = std::fs::read_link(fd_path(&fd)).map_err(|source| SafePathError::Io { path: root.join(rel), source })?;
    let real_root = std::fs::canonicalize(root).map_err(|source| SafePathError::Io { path: root.into(), source })?;
    if !real.starts_with(&real_root) {
        return Err(escapes(root, rel));
    }
    Ok(real)
}

/// Creates (or truncates) the regular file `rel` under `root` with `mode`, its directories made beneath
/// `root`; a link anywhere on the way out of `root`, or as the file itself, is refused.
pub fn write_beneath(root: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<(), SafePathError> {
    use std::io::Write;
    let parts = components(rel).ok_or_else(|| escapes(root, rel))?;
    let Some((name, dirs)) = parts.split_last() else { return Err(escapes(root, rel)) };
    let parent: PathBuf = dirs.iter().collect();
    let parent_str = parent.to_string_lossy();
    let root_fd = open_root(root)?;
    let dir = if dirs.is_empty() { root_fd } else { open_beneath(root, &parent_str, true)?.0 };
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW;
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode & 0o777))
        .resolve(beneath() | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let path = root.join(rel);
    let fd = match openat2(dir.as_fd(), *name, how) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) | Err(Errno::EXDEV) => return Err(escapes(root, rel)),
        Err(e) => return Err(SafePathError::Io { path, source: e.into() }),
    };
    let mut file = std::fs::File::from(fd);
    let io = |source| SafePathError::Io { path: root.join(rel), source };
    file.write_all(bytes).map_err(io)?;
    // The mode is exact (the umask does not apply), as the kubelet's atomic writer sets it.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn volume() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("inner/deep")).expect("mkdir");
        std::fs::write(vol.join("inner/file"), b"x").expect("write");
        std::fs::create_dir_all(dir.path().join("outside")).expect("mkdir");
        (dir, vol)
    }

    fn refused(r: Result<PathBuf, SafePathError>) -> bool {
        matches!(r, Err(SafePathError::Escapes { .. }))
    }

    #[test]
    fn plain_paths_resolve_inside_and_are_created() {
        let (_d, vol) = volume();
        let real = std::fs::canonicalize(&vol).expect("canon");
        assert_eq!(resolve_beneath(&vol, "inner/deep", false).expect("inner"), real.join("inner/deep"));
        assert_eq!(resolve_beneath(&vol, "./inner/file", false).expect("file"), real.join("inner/file"));
        assert_eq!(resolve_beneath(&vol, "new/sub", true).expect("created"), real.join("new/sub"));
        assert!(vol.join("new/sub").is_dir());
        assert!(matches!(open_beneath(&vol, "inner/file", false), Ok((_, Kind::File))));
        assert!(matches!(resolve_beneath(&vol, "missing", false), Err(SafePathError::Io { .. })));
    }

    #[test]
    fn lexical_escapes_are_refused() {
        let (_d, vol) = volume();
        for rel in ["../outside", "/etc", "inner/../../outside", "a/../../b"] {
            assert!(refused(resolve_beneath(&vol, rel, true)), "{rel}");
        }
    }

    #[test]
    fn links_out_of_the_volume_are_refused() {
        let (d, vol) = volume();
        symlink("/etc", vol.join("escape")).expect("abs link");
        symlink("../../..", vol.join("inner/up")).expect("relative chain");
        symlink(d.path().join("outside"), vol.join("abs-out")).expect("abs out");
        symlink("/proc/self/root", vol.join("magic")).expect("magic");
        symlink("inner/up", vol.join("chain")).expect("link to link");
        for rel in ["escape", "escape/passwd", "inner/up", "inner/up/etc", "abs-out", "magic", "chain", "chain/x"] {
            assert!(refused(resolve_beneath(&vol, rel, true)), "{rel}");
        }
        // Nothing was created outside through a link.
        assert!(!Path::new("/etc/x").exists());
        assert!(!d.path().join("outside/x").exists());
    }

    #[test]
    fn links_that_stay_inside_are_followed() {
        let (_d, vol) = volume();
        symlink("inner/deep", vol.join("alias")).expect("link");
        // `back` sits in inner/deep: ".." names inner.
        symlink("..", vol.join("inner/deep/back")).expect("link");
        let real = std::fs::canonicalize(&vol).expect("canon");
        assert_eq!(resolve_beneath(&vol, "alias", false).expect("alias"), real.join("inner/deep"));
        assert_eq!(resolve_beneath(&vol, "alias/back/file", false).expect("back"), real.join("inner/file"));
    }

    #[test]
    fn files_are_written_beneath_and_never_through_links() {
        let (d, vol) = volume();
        write_beneath(&vol, "a/b/key", b"v", 0o600).expect("write");
        assert_eq!(std::fs::read(vol.join("a/b/key")).expect("read"), b"v");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(vol.join("a/b/key")).expect("meta").permissions().mode() & 0o777, 0o600);
        symlink(d.path().join("outside"), vol.join("out")).expect("link");
        symlink(d.path().join("outside/target"), vol.join("file-link")).expect("link");
        assert!(write_beneath(&vol, "out/key", b"v", 0o644).is_err());
        assert!(write_beneath(&vol, "file-link", b"v", 0o644).is_err());
        assert!(write_beneath(&vol, "../key", b"v", 0o644).is_err());
        assert!(!d.path().join("outside/key").exists());
        assert!(!d.path().join("outside/target").exists());
    }
}
