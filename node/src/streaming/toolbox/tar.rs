//! `tar` in the forms `kubectl cp` runs: `tar cf - PATH` (copy from the pod: the archive to stdout,
//! leading `/` removed from names as GNU tar does) and `tar [--no-same-permissions] [--no-same-owner]
//! -xmf - [-C DIR]` (copy into the pod: the archive from stdin). Every entry is resolved beneath the
//! volume that holds it: names with `..`, links leading out of their volume, hard links and devices
//! are refused; read-only volumes refuse writes. The archive is streamed, never held in memory.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tar::{EntryType, Header};

use super::fs::{self, Entry, FsError};
use super::{Io, World};
use crate::pods::safe_path::{self, Kind};

/// How deep a directory tree is archived (a bound on the recursion).
const MAX_DEPTH: usize = 64;
/// GNU tar's exit for a fatal error or earlier errors.
const FAILED: i32 = 2;

/// What the arguments ask for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    create: bool,
    extract: bool,
    file: Option<String>,
    dir: Option<String>,
    /// `--no-same-permissions`: the umask (022) applies to extracted modes.
    no_same_permissions: bool,
    paths: Vec<String>,
}

fn parse(args: &[&str]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.iter().copied().enumerate().peekable();
    while let Some((i, arg)) = it.next() {
        match arg {
            "--no-same-permissions" => out.no_same_permissions = true,
            "--no-same-owner"
            | "--same-owner"
            | "--same-permissions"
            | "--touch"
            | "--verbose"
            | "--preserve-permissions" => {}
            long if long.starts_with("--") => return Err(format!("unrecognized option '{long}'")),
            cluster if cluster.starts_with('-') || (i == 0 && !cluster.is_empty()) => {
                for c in cluster.trim_start_matches('-').chars() {
                    match c {
                        'c' => out.create = true,
                        'x' => out.extract = true,
                        'f' => {
                            out.file = Some(
                                it.next().map(|(_, f)| f.to_string()).ok_or("option requires an argument -- 'f'")?,
                            )
                        }
                        'C' => {
                            out.dir = Some(
                                it.next().map(|(_, d)| d.to_string()).ok_or("option requires an argument -- 'C'")?,
                            )
                        }
                        'm' | 'o' | 'p' | 'v' => {}
                        other => return Err(format!("invalid option -- '{other}' (only c, x, f, C, m, o, p, v here)")),
                    }
                }
            }
            path => out.paths.push(path.to_string()),
        }
    }
    if out.create == out.extract {
        return Err("You must specify one of the '-cx' options".into());
    }
    if out.file.as_deref().is_some_and(|f| f != "-") {
        return Err("only `f -` (stdin or stdout) is supported in a Wasm container".into());
    }
    Ok(out)
}

pub(super) fn run(world: &World, args: &[&str], io: &mut Io<'_>) -> i32 {
    let parsed = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            io.warn(&format!("tar: {e}"));
            return FAILED;
        }
    };
    if parsed.create {
        create(world, &parsed, io)
    } else {
        extract(world, &parsed, io)
    }
}

/// Writes the archive of `args.paths` to stdout.
fn create(world: &World, args: &Args, io: &mut Io<'_>) -> i32 {
    if args.paths.is_empty() {
        io.warn("tar: Cowardly refusing to create an empty archive");
        return FAILED;
    }
    let base = args.dir.clone().unwrap_or_else(|| world.view.cwd().to_string());
    let Io { stdout, stderr, cancel, .. } = io;
    let mut errors = false;
    let mut warned = false;
    let mut builder = tar::Builder::new(&mut **stdout);
    for path in &args.paths {
        let name = if path.starts_with('/') {
            if !warned {
                let _ = writeln!(stderr, "tar: Removing leading `/' from member names");
                warned = true;
            }
            path.trim_start_matches('/').to_string()
        } else {
            path.clone()
        };
        let full = fs::display(&fs::normalize(&base, path));
        let mut walk = Walk { world, builder: &mut builder, stderr: &mut **stderr, cancel, errors: false };
        walk.add(&full, name.trim_end_matches('/'), 0);
        errors |= walk.errors;
        if cancel.is_cancelled() {
            return FAILED;
        }
    }
    if let Err(e) = builder.finish() {
        let _ = writeln!(stderr, "tar: writing the archive: {e}");
        return FAILED;
    }
    if errors {
        let _ = writeln!(stderr, "tar: Exiting with failure status due to previous errors");
        return FAILED;
    }
    0
}

/// One archive being written.
struct Walk<'a, W: Write> {
    world: &'a World,
    builder: &'a mut tar::Builder<W>,
    stderr: &'a mut dyn Write,
    cancel: &'a tokio_util::sync::CancellationToken,
    errors: bool,
}

impl<W: Write> Walk<'_, W> {
    fn fail(&mut self, path: &str, e: impl std::fmt::Display) {
        let _ = writeln!(self.stderr, "tar: {path}: {e}");
        self.errors = true;
    }

    /// Adds the container path `full` as `name` (a directory with everything below it).
    fn add(&mut self, full: &str, name: &str, depth: usize) {
        if self.cancel.is_cancelled() {
            return;
        }
        if depth > MAX_DEPTH {
            return self.fail(full, "directory tree too deep");
        }
        let (fd, kind) = match self.world.view.open(full) {
            Ok(Entry::Real { fd, kind, .. }) => (fd, kind),
            Ok(Entry::Virtual(children)) => {
                self.dir_header(name, 0o755, 0);
                for child in children {
                    self.add(&format!("{}/{child}", full.trim_end_matches('/')), &join(name, &child), depth + 1);
                }
                return;
            }
            Err(e) => return self.fail(full, format!("Cannot stat: {e}")),
        };
        let meta = match fs::reopen(&fd).and_then(|f| f.metadata().map_err(FsError::from)) {
            Ok(m) => m,
            Err(e) => return self.fail(full, format!("Cannot open: {e}")),
        };
        use std::os::unix::fs::MetadataExt;
        if kind == Kind::File {
            return self.file(full, name, &fd, &meta);
        }
        if !name.is_empty() {
            self.dir_header(name, meta.mode(), meta.mtime());
        }
        let entries = match std::fs::read_dir(safe_path::fd_path(&fd)) {
            Ok(e) => e,
            Err(e) => return self.fail(full, format!("Cannot open: {e}")),
        };
        let mut names: Vec<String> =
            entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for child in names {
            let child_full = format!("{}/{child}", full.trim_end_matches('/'));
            let child_name = join(name, &child);
            match fs::lstat_at(&fd, &child) {
                Ok(st) if fs::is(st.st_mode, nix::libc::S_IFLNK) => self.link(&fd, &child, &child_name, &child_full),
                Ok(st) if fs::is(st.st_mode, nix::libc::S_IFDIR) => self.add(&child_full, &child_name, depth + 1),
                Ok(st) if fs::is(st.st_mode, nix::libc::S_IFREG) => {
                    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                    match nix::fcntl::openat(fd.as_fd(), child.as_str(), flags, Mode::empty()) {
                        Ok(file_fd) => {
                            let file = std::fs::File::from(file_fd);
                            match file.metadata() {
                                Ok(m) => self.append_file(&child_full, &child_name, file, &m),
                                Err(e) => self.fail(&child_full, e),
                            }
                        }
                        Err(e) => self.fail(&child_full, FsError::from(e)),
                    }
                }
                Ok(_) => {
                    let _ = writeln!(self.stderr, "tar: {child_full}: socket or device ignored");
                }
                Err(e) => self.fail(&child_full, e),
            }
        }
    }

    fn dir_header(&mut self, name: &str, mode: u32, mtime: i64) {
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Directory);
        header.set_mode(mode & 0o7777);
        header.set_mtime(u64::try_from(mtime).unwrap_or(0));
        header.set_size(0);
        if let Err(e) = self.builder.append_data(&mut header, format!("{name}/"), std::io::empty()) {
            self.fail(name, e);
        }
    }

    fn file(&mut self, full: &str, name: &str, fd: &OwnedFd, meta: &std::fs::Metadata) {
        match fs::reopen(fd) {
            Ok(file) => self.append_file(full, name, file, meta),
            Err(e) => self.fail(full, format!("Cannot open: {e}")),
        }
    }

    fn append_file(&mut self, full: &str, name: &str, file: std::fs::File, meta: &std::fs::Metadata) {
        use std::os::unix::fs::MetadataExt;
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(meta.len());
        // The size was read first: a file that grows is cut at it, one that shrinks is padded with
        // zeros, as GNU tar does ("file changed as we read it").
        let data = file.take(meta.len()).chain(std::io::repeat(0)).take(meta.len());
        if let Err(e) = self.builder.append_data(&mut header, name, data) {
            self.fail(full, e);
        }
    }

    fn link(&mut self, dir: &OwnedFd, child: &str, name: &str, full: &str) {
        let target = match nix::fcntl::readlinkat(dir.as_fd(), child) {
            Ok(t) => t,
            Err(e) => return self.fail(full, FsError::from(e)),
        };
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        if let Err(e) = self.builder.append_link(&mut header, name, Path::new(&target)) {
            self.fail(full, e);
        }
    }
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}/{child}")
    }
}

/// Reads an archive from stdin into `args.dir` (or the working directory).
fn extract(world: &World, args: &Args, io: &mut Io<'_>) -> i32 {
    let base = fs::display(&fs::normalize(world.view.cwd(), args.dir.as_deref().unwrap_or(".")));
    let Io { stdin, stderr, cancel, .. } = io;
    let mut archive = tar::Archive::new(&mut **stdin);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            let _ = writeln!(stderr, "tar: This does not look like a tar archive ({e})");
            return FAILED;
        }
    };
    let mut errors = false;
    let mut warned = false;
    let mut fail = |stderr: &mut dyn Write, what: &str, e: &dyn std::fmt::Display| {
        let _ = writeln!(stderr, "tar: {what}: {e}");
        errors = true;
    };
    for entry in entries {
        if cancel.is_cancelled() {
            return FAILED;
        }
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let _ = writeln!(stderr, "tar: This does not look like a tar archive ({e})");
                let _ = writeln!(stderr, "tar: Exiting with failure status due to previous errors");
                return FAILED;
            }
        };
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if raw.starts_with('/') && !warned {
            let _ = writeln!(stderr, "tar: Removing leading `/' from member names");
            warned = true;
        }
        if raw.split('/').any(|c| c == "..") {
            fail(&mut **stderr, &raw, &"Member name contains '..'");
            continue;
        }
        let target = fs::display(&fs::normalize(&base, raw.trim_start_matches('/')));
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mode = if args.no_same_permissions { mode & !0o022 } else { mode };
        let written = match entry.header().entry_type() {
            EntryType::Directory => make_dir(world, &target),
            EntryType::Regular | EntryType::Continuous => write_file(world, &target, mode, &mut entry, cancel),
            EntryType::Symlink => match entry.link_name_bytes() {
                Some(link) => make_link(world, &target, &String::from_utf8_lossy(&link)),
                None => Err(FsError::Io("symbolic link without a target".into())),
            },
            EntryType::Link => Err(FsError::Io("hard links are not supported in a Wasm container".into())),
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => Ok(()),
            other => Err(FsError::Io(format!("entry type {:?} is not supported in a Wasm container", other.as_byte()))),
        };
        if let Err(e) = written {
            fail(&mut **stderr, &raw, &format!("Cannot open: {e}"));
        }
    }
    if errors {
        let _ = writeln!(stderr, "tar: Exiting with failure status due to previous errors");
        return FAILED;
    }
    0
}

fn make_dir(world: &World, target: &str) -> Result<(), FsError> {
    let at = world.view.writable(target)?;
    let (_, kind) = safe_path::open_beneath(&at.dir.host_path, &at.rel, true)?;
    if kind != Kind::Directory {
        return Err(FsError::Exists);
    }
    Ok(())
}

fn write_file(
    world: &World,
    target: &str,
    mode: u32,
    data: &mut dyn Read,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), FsError> {
    let (dir, name) = world.view.parent_of(target, true)?;
    replace_non_dir(&dir, &name)?;
    let mut file = fs::create_file(&dir, &name, mode)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cancel.is_cancelled() {
            return Err(FsError::Io("cancelled".into()));
        }
        let n = data.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(buf.get(..n).unwrap_or_default())?;
    }
    nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode))?;
    Ok(())
}

/// Removes a file or link in the way of a new entry (GNU tar's default); a directory stays.
fn replace_non_dir(dir: &OwnedFd, name: &str) -> Result<(), FsError> {
    match fs::lstat_at(dir, name) {
        Ok(st) if !fs::is(st.st_mode, nix::libc::S_IFDIR) => {
            Ok(nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?)
        }
        _ => Ok(()),
    }
}

/// Makes the link `target -> link` if what it points to stays in the same volume.
fn make_link(world: &World, target: &str, link: &str) -> Result<(), FsError> {
    let parent = fs::display(&fs::normalize(target, ".."));
    let pointed = fs::display(&fs::normalize(&parent, link));
    let here = world.view.writable(target)?.dir.host_path.clone();
    let stays = world.view.locate(&pointed).is_some_and(|at| at.dir.host_path == here);
    if !stays || link.starts_with('/') {
        return Err(FsError::Escapes);
    }
    let (dir, name) = world.view.parent_of(target, true)?;
    replace_non_dir(&dir, &name)?;
    Ok(nix::unistd::symlinkat(link, dir.as_fd(), name.as_str())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_cp_forms_parse() {
        let from = parse(&["cf", "-", "/data/f"]).unwrap_or_default();
        assert!(from.create && from.paths == ["/data/f"] && from.file.as_deref() == Some("-"));
        let to = parse(&["--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", "/data"]).unwrap_or_default();
        assert!(to.extract && to.no_same_permissions && to.dir.as_deref() == Some("/data"));
        let plain = parse(&["-xmf", "-"]).unwrap_or_default();
        assert!(plain.extract && plain.dir.is_none());
        assert!(parse(&["czf", "-", "x"]).is_err());
        assert!(parse(&["xf", "/etc/archive"]).is_err());
        assert!(parse(&["-f", "-"]).is_err());
    }
}
