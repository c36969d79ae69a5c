//! A Wasm container's view of the filesystem for the toolbox: its directories (volume mounts and its
//! copy of the image's files), a container path mapped to the directory that holds it and resolved
//! beneath it by the kernel ([`crate::pods::safe_path`]), so no path or link leaves a volume.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::pods::safe_path::{self, Kind, SafePathError};

/// One directory the container sees: `container_path` is `host_path` on the node.
#[derive(Clone, Debug)]
pub struct Dir {
    pub container_path: String,
    pub host_path: PathBuf,
    pub read_only: bool,
}

/// Why a path cannot be used; shown as `<cmd>: <path>: <this>` like coreutils.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("No such file or directory")]
    NotFound,
    #[error("Not a directory")]
    NotADirectory,
    #[error("Is a directory")]
    IsADirectory,
    #[error("File exists")]
    Exists,
    #[error("Directory not empty")]
    NotEmpty,
    #[error("Read-only file system")]
    ReadOnly,
    #[error("Permission denied (the path leads out of its volume)")]
    Escapes,
    #[error("Device or resource busy (a volume's mount point)")]
    MountPoint,
    #[error("{0}")]
    Io(String),
}

impl From<Errno> for FsError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::ENOENT => FsError::NotFound,
            Errno::ENOTDIR => FsError::NotADirectory,
            Errno::EISDIR => FsError::IsADirectory,
            Errno::EEXIST => FsError::Exists,
            Errno::ENOTEMPTY => FsError::NotEmpty,
            Errno::EROFS => FsError::ReadOnly,
            Errno::EXDEV | Errno::ELOOP => FsError::Escapes,
            other => FsError::Io(other.desc().to_string()),
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => Errno::from_raw(code).into(),
            None if e.kind() == std::io::ErrorKind::NotFound => FsError::NotFound,
            None => FsError::Io(e.to_string()),
        }
    }
}

impl From<SafePathError> for FsError {
    fn from(e: SafePathError) -> Self {
        match e {
            SafePathError::Escapes { .. } => FsError::Escapes,
            SafePathError::Io { source, .. } => source.into(),
        }
    }
}

/// A container path found in one of the container's directories.
pub struct Located<'a> {
    pub dir: &'a Dir,
    /// The path below the directory ("" for the directory itself).
    pub rel: String,
}

/// What a path names.
pub enum Entry {
    /// Something inside a directory: an `O_PATH` descriptor (links followed, beneath the volume).
    Real { fd: OwnedFd, kind: Kind, read_only: bool },
    /// A directory no volume holds but on the way to one (e.g. `/` above `/data`): its children.
    Virtual(Vec<String>),
}

/// The container's directories and its working directory.
#[derive(Clone, Debug, Default)]
pub struct View {
    dirs: Vec<Dir>,
    cwd: String,
}

/// `path` (relative to `cwd` unless absolute) as normal components; `..` goes up lexically (never above `/`).
pub fn normalize(cwd: &str, path: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let joined = if path.starts_with('/') { path.to_string() } else { format!("{cwd}/{path}") };
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p.to_string()),
        }
    }
    parts
}

/// The container path of normalized components.
pub fn display(parts: &[String]) -> String {
    format!("/{}", parts.join("/"))
}

impl View {
    /// A view of `dirs` with the working directory `cwd` (`/` when `None`).
    pub fn new(mut dirs: Vec<Dir>, cwd: Option<&str>) -> Self {
        // The deepest mount wins: `/data/logs` over `/data` over `/`.
        dirs.sort_by_key(|d| std::cmp::Reverse(normalize("/", &d.container_path).len()));
        Self { dirs, cwd: display(&normalize("/", cwd.unwrap_or("/"))) }
    }

    /// The working directory.
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// Which directory holds `path`, and the path below it.
    pub fn locate(&self, path: &str) -> Option<Located<'_>> {
        let parts = normalize(&self.cwd, path);
        self.dirs.iter().find_map(|dir| {
            let mount = normalize("/", &dir.container_path);
            let below = parts.strip_prefix(mount.as_slice())?;
            Some(Located { dir, rel: below.join("/") })
        })
    }

    /// The mount points strictly below `path` one level down (for a path no volume holds).
    fn children(&self, path: &str) -> Vec<String> {
        let parts = normalize(&self.cwd, path);
        let mut names: Vec<String> = self
            .dirs
            .iter()
            .filter_map(|d| {
                let mount = normalize("/", &d.container_path);
                let below = mount.strip_prefix(parts.as_slice())?;
                below.first().cloned()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Opens `path` (links followed, never out of its volume).
    pub fn open(&self, path: &str) -> Result<Entry, FsError> {
        match self.locate(path) {
            Some(at) => {
                let (fd, kind) = safe_path::open_beneath(&at.dir.host_path, &at.rel, false)?;
                Ok(Entry::Real { fd, kind, read_only: at.dir.read_only })
            }
            None => {
                let children = self.children(path);
                // `/` always exists, even in a container with no files of its own.
                if children.is_empty() && !normalize(&self.cwd, path).is_empty() {
                    Err(FsError::NotFound)
                } else {
                    Ok(Entry::Virtual(children))
                }
            }
        }
    }

    /// The writable directory holding `path` and the path below it, for a change to `path`.
    pub fn writable(&self, path: &str) -> Result<Located<'_>, FsError> {
        let Some(at) = self.locate(path) else {
            return Err(if self.children(path).is_empty() { FsError::NotFound } else { FsError::ReadOnly });
        };
        if at.dir.read_only {
            return Err(FsError::ReadOnly);
        }
        Ok(at)
    }

    /// The parent directory of `path` (an `O_PATH` descriptor beneath its volume, made with
    /// `create_parents`) and the last name, for creating or removing `path` itself.
    pub fn parent_of(&self, path: &str, create_parents: bool) -> Result<(OwnedFd, String), FsError> {
        let at = self.writable(path)?;
        let mut parts: Vec<&str> = at.rel.split('/').filter(|p| !p.is_empty()).collect();
        let Some(name) = parts.pop() else { return Err(FsError::MountPoint) };
        let (fd, kind) = safe_path::open_beneath(&at.dir.host_path, &parts.join("/"), create_parents)?;
        if kind != Kind::Directory {
            return Err(FsError::NotADirectory);
        }
        Ok((fd, name.to_string()))
    }
}

/// Reopens an `O_PATH` descriptor for reading (a file's bytes or a directory's entries).
pub fn reopen(fd: &OwnedFd) -> Result<std::fs::File, FsError> {
    Ok(std::fs::File::open(safe_path::fd_path(fd))?)
}

/// Creates (or truncates) the regular file `name` in `dir`; a link in its place is refused.
pub fn create_file(dir: &OwnedFd, name: &str, mode: u32) -> Result<std::fs::File, FsError> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(mode & 0o777))?;
    Ok(std::fs::File::from(fd))
}

/// The type bits of `name` in `dir`, links not followed.
pub fn lstat_at(dir: &OwnedFd, name: &str) -> Result<nix::sys::stat::FileStat, FsError> {
    Ok(nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?)
}

/// Whether a mode is a directory, a regular file or a link.
pub fn is(mode: u32, kind: u32) -> bool {
    mode & nix::libc::S_IFMT == kind
}
