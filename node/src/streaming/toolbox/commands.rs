//! The toolbox's simple commands: `ls`, `cat`, `env`, `echo`, `pwd`, `mkdir`, `rm`, `true`, `false`,
//! `sleep`, `test`. Messages follow coreutils (`cat: /x: No such file or directory`).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use nix::unistd::UnlinkatFlags;

use super::fs::{self, Entry, FsError};
use super::{Io, World, NOT_FOUND};
use crate::pods::safe_path::Kind;

/// How deep `rm -r` goes before it gives up (a bound on the recursion, not a filesystem limit).
const MAX_DEPTH: usize = 64;
/// The longest `sleep` (a day), so a typo cannot pin a thread for years.
const MAX_SLEEP: f64 = 86_400.0;

pub(super) fn run(world: &World, name: &str, args: &[&str], io: &mut Io<'_>) -> i32 {
    match name {
        "true" => 0,
        "false" => 1,
        "echo" => echo(args, io),
        "pwd" => {
            let _ = writeln!(io.stdout, "{}", world.view.cwd());
            0
        }
        "env" => env(world, args, io),
        "ls" => ls(world, args, io),
        "cat" => cat(world, args, io),
        "mkdir" => mkdir(world, args, io),
        "rm" => rm(world, args, io),
        "sleep" => sleep(args, io),
        "test" => test(world, args),
        other => {
            io.warn(&format!("sh: {other}: not found"));
            NOT_FOUND
        }
    }
}

/// Splits `-la`-style flags (letters from `known`) from operands; `--` ends the flags.
fn flags<'a>(cmd: &str, args: &[&'a str], known: &str, io: &mut Io<'_>) -> Option<(String, Vec<&'a str>)> {
    let mut set = String::new();
    let mut rest = Vec::new();
    let mut operands_only = false;
    for arg in args {
        if operands_only || !arg.starts_with('-') || *arg == "-" {
            rest.push(*arg);
        } else if *arg == "--" {
            operands_only = true;
        } else {
            for c in arg.chars().skip(1) {
                if !known.contains(c) {
                    io.warn(&format!("{cmd}: invalid option -- '{c}'"));
                    return None;
                }
                set.push(c);
            }
        }
    }
    Some((set, rest))
}

fn echo(args: &[&str], io: &mut Io<'_>) -> i32 {
    let (newline, words) = match args.split_first() {
        Some((&"-n", rest)) => (false, rest),
        _ => (true, args),
    };
    let _ = write!(io.stdout, "{}{}", words.join(" "), if newline { "\n" } else { "" });
    0
}

fn env(world: &World, args: &[&str], io: &mut Io<'_>) -> i32 {
    if !args.is_empty() {
        io.warn("env: running a command with env is not supported in a Wasm container");
        return 125;
    }
    for (k, v) in &world.env {
        let _ = writeln!(io.stdout, "{k}={v}");
    }
    0
}

/// One line of `ls -l`: type and permissions, links, owner, group, size, mtime, name.
fn long_line(meta: &std::fs::Metadata, name: &str) -> String {
    let mode = meta.mode();
    let kind = if fs::is(mode, nix::libc::S_IFDIR) {
        'd'
    } else if fs::is(mode, nix::libc::S_IFLNK) {
        'l'
    } else {
        '-'
    };
    let mut perms = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let when = jiff::Timestamp::from_second(meta.mtime())
        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    format!("{kind}{perms} {} {} {} {:>8} {when} {name}", meta.nlink(), meta.uid(), meta.gid(), meta.size())
}

fn ls(world: &World, args: &[&str], io: &mut Io<'_>) -> i32 {
    let Some((set, mut paths)) = flags("ls", args, "la1", io) else { return 2 };
    let (long, all) = (set.contains('l'), set.contains('a'));
    if paths.is_empty() {
        paths.push(".");
    }
    let many = paths.len() > 1;
    let mut code = 0;
    for (i, path) in paths.iter().enumerate() {
        match ls_one(world, path, long, all, many, io) {
            Ok(()) => {}
            Err(e) => {
                io.warn(&format!("ls: cannot access '{path}': {e}"));
                code = 2;
            }
        }
        if many && i + 1 < paths.len() {
            let _ = writeln!(io.stdout);
        }
    }
    code
}

fn ls_one(world: &World, path: &str, long: bool, all: bool, many: bool, io: &mut Io<'_>) -> Result<(), FsError> {
    let (fd, kind) = match world.view.open(path)? {
        Entry::Virtual(children) => {
            if many {
                let _ = writeln!(io.stdout, "{path}:");
            }
            for child in children {
                let _ = writeln!(io.stdout, "{}", if long { format!("d--------- ? ? ? ? ? {child}") } else { child });
            }
            return Ok(());
        }
        Entry::Real { fd, kind, .. } => (fd, kind),
    };
    let file = fs::reopen(&fd)?;
    if kind != Kind::Directory {
        let line = if long { long_line(&file.metadata()?, path) } else { path.to_string() };
        let _ = writeln!(io.stdout, "{line}");
        return Ok(());
    }
    if many {
        let _ = writeln!(io.stdout, "{path}:");
    }
    let dir = std::fs::read_dir(crate::pods::safe_path::fd_path(&fd))?;
    let mut names: Vec<String> =
        dir.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if all {
        names.extend([".".to_string(), "..".to_string()]);
    }
    names.retain(|n| all || !n.starts_with('.'));
    names.sort();
    for name in names {
        if io.cancel.is_cancelled() {
            break;
        }
        let line = if long {
            match fs::lstat_at(&fd, &name) {
                Ok(_) => {
                    let meta = std::fs::symlink_metadata(crate::pods::safe_path::fd_path(&fd).join(&name))?;
                    long_line(&meta, &name)
                }
                Err(_) => name,
            }
        } else {
            name
        };
        let _ = writeln!(io.stdout, "{line}");
    }
    Ok(())
}

/// Copies `from` (stdin when `None`) to stdout until its end (or the exec is stopped).
fn copy(mut from: Option<&mut std::fs::File>, io: &mut Io<'_>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if io.cancel.is_cancelled() {
            return Ok(());
        }
        let n = match from.as_mut() {
            Some(file) => file.read(&mut buf)?,
            None => io.stdin.read(&mut buf)?,
        };
        if n == 0 {
            return Ok(());
        }
        io.stdout.write_all(buf.get(..n).unwrap_or_default())?;
    }
}

fn cat(world: &World, args: &[&str], io: &mut Io<'_>) -> i32 {
    let Some((_, mut paths)) = flags("cat", args, "", io) else { return 1 };
    if paths.is_empty() {
        paths.push("-");
    }
    let mut code = 0;
    for path in paths {
        let result = if path == "-" {
            copy(None, io).map_err(FsError::from)
        } else {
            read_file(world, path).and_then(|mut f| copy(Some(&mut f), io).map_err(FsError::from))
        };
        if let Err(e) = result {
            io.warn(&format!("cat: {path}: {e}"));
            code = 1;
        }
    }
    code
}

/// Opens a regular file (or refuses a directory) for reading.
fn read_file(world: &World, path: &str) -> Result<std::fs::File, FsError> {
    match world.view.open(path)? {
        Entry::Real { fd, kind: Kind::File, .. } => fs::reopen(&fd),
        Entry::Real { .. } | Entry::Virtual(_) => Err(FsError::IsADirectory),
    }
}

fn mkdir(world: &World, args: &[&str], io: &mut Io<'_>) -> i32 {
    let Some((set, paths)) = flags("mkdir", args, "p", io) else { return 1 };
    if paths.is_empty() {
        io.warn("mkdir: missing operand");
        return 1;
    }
    let parents = set.contains('p');
    let mut code = 0;
    for path in paths {
        let made = if parents {
            world.view.writable(path).and_then(|at| {
                crate::pods::safe_path::open_beneath(&at.dir.host_path, &at.rel, true)
                    .map_err(FsError::from)
                    .and_then(|(_, kind)| if kind == Kind::Directory { Ok(()) } else { Err(FsError::Exists) })
            })
        } else {
            world.view.parent_of(path, false).and_then(|(dir, name)| {
                nix::sys::stat::mkdirat(&dir, name.as_str(), nix::sys::stat::Mode::from_bits_truncate(0o755))
                    .map_err(FsError::from)
            })
        };
        if let Err(e) = made {
            io.warn(&format!("mkdir: cannot create directory '{path}': {e}"));
            code = 1;
        }
    }
    code
}

fn rm(world: &World, args: &[&str], io: &mut Io<'_>) -> i32 {
    let Some((set, paths)) = flags("rm", args, "rfRd", io) else { return 1 };
    let (recursive, force) = (set.contains('r') || set.contains('R'), set.contains('f'));
    if paths.is_empty() && !force {
        io.warn("rm: missing operand");
        return 1;
    }
    let mut code = 0;
    for path in paths {
        let removed = world.view.parent_of(path, false).and_then(|(dir, name)| remove(&dir, &name, recursive, 0));
        match removed {
            Ok(()) => {}
            Err(FsError::NotFound) if force => {}
            Err(e) => {
                io.warn(&format!("rm: cannot remove '{path}': {e}"));
                code = 1;
            }
        }
    }
    code
}

/// Removes `name` in `dir` (links themselves, never what they point to).
fn remove(dir: &OwnedFd, name: &str, recursive: bool, depth: usize) -> Result<(), FsError> {
    let st = fs::lstat_at(dir, name)?;
    if !fs::is(st.st_mode, nix::libc::S_IFDIR) {
        return Ok(nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?);
    }
    if !recursive {
        return Err(FsError::IsADirectory);
    }
    if depth >= MAX_DEPTH {
        return Err(FsError::Io("directory tree too deep".into()));
    }
    let flags = nix::fcntl::OFlag::O_PATH
        | nix::fcntl::OFlag::O_DIRECTORY
        | nix::fcntl::OFlag::O_NOFOLLOW
        | nix::fcntl::OFlag::O_CLOEXEC;
    let child = nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::empty())?;
    let entries = std::fs::read_dir(crate::pods::safe_path::fd_path(&child))?;
    for entry in entries {
        let entry = entry?;
        remove(&child, &entry.file_name().to_string_lossy(), true, depth.saturating_add(1))?;
    }
    Ok(nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
}

fn sleep(args: &[&str], io: &mut Io<'_>) -> i32 {
    let Some(secs) = args.first().and_then(|s| s.trim_end_matches('s').parse::<f64>().ok()) else {
        io.warn(&format!("sleep: invalid time interval '{}'", args.first().copied().unwrap_or_default()));
        return 1;
    };
    if !secs.is_finite() || secs < 0.0 {
        io.warn(&format!("sleep: invalid time interval '{secs}'"));
        return 1;
    }
    let until = std::time::Instant::now() + Duration::from_secs_f64(secs.min(MAX_SLEEP));
    while std::time::Instant::now() < until && !io.cancel.is_cancelled() {
        std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()).min(Duration::from_millis(50)));
    }
    0
}

/// `test -e|-f|-d|-n|-z X`, `test X`: 0 true, 1 false, 2 a usage error.
fn test(world: &World, args: &[&str]) -> i32 {
    let truth = match args {
        [] => false,
        [s] => !s.is_empty(),
        ["-n", s] => !s.is_empty(),
        ["-z", s] => s.is_empty(),
        ["-e", p] => world.view.open(p).is_ok(),
        ["-f", p] => matches!(world.view.open(p), Ok(Entry::Real { kind: Kind::File, .. })),
        ["-d", p] => {
            matches!(world.view.open(p), Ok(Entry::Real { kind: Kind::Directory, .. }) | Ok(Entry::Virtual(_)))
        }
        [a, "=", b] => a == b,
        [a, "!=", b] => a != b,
        _ => return 2,
    };
    i32::from(!truth)
}
