//! Reading a file of an image (`/etc/passwd`, `/etc/group`) from a container's snapshot before
//! runc mounts it: the snapshot's mounts name the layer directories (an overlay's `upperdir` and
//! `lowerdir`s, top first, or one bind-mounted directory), and the file is the topmost layer's copy,
//! unless a layer above deletes it (an overlay whiteout: a 0/0 character device) or hides its
//! directory (an opaque directory, or a whiteout or file in its place).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use containerd_client::types::Mount;

/// The extended attribute that makes an overlay directory hide the layers below it.
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque\0";
/// Files larger than this are not read (a passwd file is a few KB).
const MAX_FILE: u64 = 4 << 20;

/// The layer directories of `mounts`, top first: an overlay's upper then lower directories, or a
/// bind mount's source. Other mount types give none (nothing can be read).
pub fn layer_dirs(mounts: &[Mount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for mount in mounts {
        match mount.r#type.as_str() {
            "overlay" => {
                let option = |name: &str| mount.options.iter().find_map(|o| o.strip_prefix(name));
                dirs.extend(option("upperdir=").map(PathBuf::from));
                if let Some(lower) = option("lowerdir=") {
                    dirs.extend(lower.split(':').filter(|d| !d.is_empty()).map(PathBuf::from));
                }
            }
            "bind" | "rbind" => dirs.push(PathBuf::from(&mount.source)),
            _ => {}
        }
    }
    dirs
}

/// What one layer says about a path.
enum Found {
    File(PathBuf),
    /// Deleted or hidden here: the layers below do not count.
    Hidden,
    /// Not here, and nothing here hides the layers below.
    Absent,
}

/// The text of `path` (relative to the image's root, e.g. `etc/passwd`) in the layers `dirs`
/// (top first); `None` when no layer has it, a layer above deletes it, or it is not a readable
/// regular file (symbolic links are not followed).
pub fn read_file(dirs: &[PathBuf], path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    for dir in dirs {
        match in_layer(dir, &parts) {
            Found::File(file) => {
                let meta = std::fs::metadata(&file).ok()?;
                return (meta.len() <= MAX_FILE).then(|| std::fs::read_to_string(&file).ok()).flatten();
            }
            Found::Hidden => return None,
            Found::Absent => {}
        }
    }
    None
}

fn in_layer(dir: &Path, parts: &[&str]) -> Found {
    let mut here = dir.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        here.push(part);
        let Ok(meta) = std::fs::symlink_metadata(&here) else {
            // Missing here; an opaque directory above it still hides the lower layers.
            return if i > 0 && is_opaque(here.parent().unwrap_or(dir)) { Found::Hidden } else { Found::Absent };
        };
        let last = i + 1 == parts.len();
        let kind = meta.file_type();
        if kind.is_char_device() || (!last && !kind.is_dir()) || (last && !kind.is_file()) {
            // A whiteout, a file where a directory should be, or not a regular file.
            return Found::Hidden;
        }
        if last {
            return Found::File(here);
        }
    }
    Found::Absent
}

fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut value = [0u8; 2];
    // SAFETY: both pointers are valid NUL-terminated strings and the buffer's length is passed.
    let n = unsafe {
        libc::lgetxattr(c_path.as_ptr(), OPAQUE_XATTR.as_ptr().cast(), value.as_mut_ptr().cast(), value.len())
    };
    n == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(kind: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: kind.into(),
            source: source.into(),
            target: String::new(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn an_overlay_lists_its_upper_then_lower_directories() {
        let overlay = mount("overlay", "overlay", &["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l2:/l1"]);
        assert_eq!(layer_dirs(&[overlay]), [PathBuf::from("/u"), "/l2".into(), "/l1".into()]);
        assert_eq!(layer_dirs(&[mount("bind", "/only", &["ro", "rbind"])]), [PathBuf::from("/only")]);
        assert!(layer_dirs(&[mount("tmpfs", "none", &[])]).is_empty());
    }

    #[test]
    fn the_topmost_copy_wins_and_a_whiteout_or_a_file_in_the_way_hides_the_layers_below(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let layer = |name: &str| -> std::io::Result<PathBuf> {
            let dir = root.path().join(name);
            std::fs::create_dir_all(dir.join("etc"))?;
            Ok(dir)
        };
        let (bottom, middle, top) = (layer("bottom")?, layer("middle")?, layer("top")?);
        std::fs::write(bottom.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n")?;
        std::fs::write(middle.join("etc/passwd"), "app:x:1000:1000::/:/bin/sh\n")?;
        std::fs::write(bottom.join("etc/group"), "app:x:1000:\n")?;
        let dirs = vec![top.clone(), middle.clone(), bottom.clone()];
        assert_eq!(read_file(&dirs, "etc/passwd").as_deref(), Some("app:x:1000:1000::/:/bin/sh\n"));
        assert_eq!(read_file(&dirs, "/etc/group").as_deref(), Some("app:x:1000:\n"));
        assert_eq!(read_file(&dirs, "etc/shadow"), None);
        assert_eq!(read_file(&dirs, "etc/../etc/passwd"), None);
        // A directory in a file's place, or a file in a directory's place, hides what is below.
        std::fs::create_dir(top.join("etc/passwd"))?;
        assert_eq!(read_file(&dirs, "etc/passwd"), None);
        std::fs::remove_dir(top.join("etc/passwd"))?;
        std::fs::remove_dir(top.join("etc"))?;
        std::fs::write(top.join("etc"), "")?;
        assert_eq!(read_file(&dirs, "etc/group"), None);
        std::fs::remove_file(top.join("etc"))?;
        // A whiteout (character device 0/0) needs CAP_MKNOD: checked where the test runs as root.
        let whiteout = std::ffi::CString::new(top.join("etc").as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR | 0o600, 0) } == 0 {
            assert_eq!(read_file(&dirs, "etc/passwd"), None);
        }
        Ok(())
    }
}
