//! Resolving a path of the image (e.g. its entrypoint) inside an unpacked root filesystem the way the
//! image sees it: symlinks are followed with the rootfs as `/`, and `..` never climbs above it.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINK_HOPS: u32 = 40;

/// Resolves `path` (absolute in the image) inside `root`; the result is always under `root`.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, String> {
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = root.join(resolved.iter().collect::<PathBuf>()).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err("too many levels of symbolic links".to_string());
                }
                let target = std::fs::read_link(&candidate).map_err(|e| format!("reading link: {e}"))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            Ok(_) => resolved.push(part),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("{path} does not exist in the image"));
            }
            Err(e) => return Err(format!("inspecting {}: {e}", candidate.display())),
        }
    }
    Ok(root.join(resolved.iter().collect::<PathBuf>()))
}

/// Normal and `..` components of `path` (root and `.` dropped).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("app"))?;
        std::fs::write(root.join("app/real.wasm"), b"\0asm")?;
        std::os::unix::fs::symlink("/app/real.wasm", root.join("app/abs.wasm"))?;
        std::os::unix::fs::symlink("../../../../app/real.wasm", root.join("app/rel.wasm"))?;
        std::os::unix::fs::symlink("/etc", root.join("etc"))?;
        assert_eq!(resolve_in_root(root, "/app/abs.wasm")?, root.join("app/real.wasm"));
        assert_eq!(resolve_in_root(root, "/app/rel.wasm")?, root.join("app/real.wasm"));
        assert_eq!(resolve_in_root(root, "/../../app/real.wasm")?, root.join("app/real.wasm"));
        // A link to the host's /etc stays inside the image: root/etc -> root (which has no passwd).
        assert!(resolve_in_root(root, "/etc/passwd").is_err());
        std::os::unix::fs::symlink("loop", root.join("loop"))?;
        assert!(resolve_in_root(root, "/loop").is_err());
        Ok(())
    }
}
