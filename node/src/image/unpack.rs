//! Unpacking image layers (tar, optionally gzip) in order into a root filesystem directory:
//! paths may not escape it, and OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`) delete lower-layer files.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use tar::{Archive, EntryType};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// What went wrong while unpacking: a bad image or a local I/O failure.
#[derive(Debug)]
pub(crate) enum UnpackError {
    /// The layer itself is unacceptable (escaping path, unknown compression, corrupt tar).
    Invalid(String),
    /// A local file operation failed.
    Io(&'static str, PathBuf, std::io::Error),
}

/// Unpacks `layers` (blob files, bottom layer first) into `dest`, which must exist.
pub(crate) fn unpack_layers(layers: &[PathBuf], dest: &Path) -> Result<(), UnpackError> {
    let root = dest.canonicalize().map_err(|e| UnpackError::Io("resolving", dest.to_path_buf(), e))?;
    for layer in layers {
        // Whiteouts only hide files of lower layers, so applying all of them before extracting the
        // layer's own files is exactly the OCI semantics, whatever the entry order in the tar.
        apply_whiteouts(layer, &root)?;
        extract(layer, &root)?;
    }
    Ok(())
}

fn open_layer(layer: &Path) -> Result<Archive<Box<dyn Read>>, UnpackError> {
    let mut file = File::open(layer).map_err(|e| UnpackError::Io("opening", layer.to_path_buf(), e))?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(|e| UnpackError::Io("reading", layer.to_path_buf(), e))?;
    let file = File::open(layer).map_err(|e| UnpackError::Io("opening", layer.to_path_buf(), e))?;
    let reader: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(BufReader::new(file))),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            return Err(UnpackError::Invalid("zstd-compressed layers are not supported".to_string()));
        }
        _ => Box::new(BufReader::new(file)),
    };
    let mut archive = Archive::new(reader);
    archive.set_overwrite(true);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    Ok(archive)
}

fn corrupt(e: std::io::Error) -> UnpackError {
    UnpackError::Invalid(format!("corrupt layer: {e}"))
}

/// The entry path as plain relative components; an error if it contains `..`.
fn relative_components(path: &Path) -> Result<Vec<&std::ffi::OsStr>, UnpackError> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(UnpackError::Invalid(format!("layer entry {} escapes the image root", path.display())))
            }
        }
    }
    Ok(parts)
}

fn apply_whiteouts(layer: &Path, root: &Path) -> Result<(), UnpackError> {
    let mut archive = open_layer(layer)?;
    for entry in archive.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if !name.starts_with(WHITEOUT_PREFIX) {
            continue;
        }
        let parts = relative_components(&path)?;
        let parent_rel: PathBuf = parts[..parts.len().saturating_sub(1)].iter().collect();
        let Some(parent) = resolve_inside(root, &parent_rel)? else { continue };
        if name == OPAQUE_WHITEOUT {
            let entries = std::fs::read_dir(&parent).map_err(|e| UnpackError::Io("listing", parent.clone(), e))?;
            for child in entries.flatten() {
                remove_any(&child.path())?;
            }
        } else {
            let hidden = &name[WHITEOUT_PREFIX.len()..];
            if !hidden.is_empty() && hidden != "." && hidden != ".." {
                remove_any(&parent.join(hidden))?;
            }
        }
    }
    Ok(())
}

/// `root/rel` with symlinks resolved, if it exists and stays inside `root`; `None` if it does not exist.
fn resolve_inside(root: &Path, rel: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let canon = match root.join(rel).canonicalize() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(UnpackError::Io("resolving", root.join(rel), e)),
    };
    if !canon.starts_with(root) {
        return Err(UnpackError::Invalid(format!("layer whiteout {} points outside the image root", rel.display())));
    }
    Ok(Some(canon))
}

fn remove_any(path: &Path) -> Result<(), UnpackError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(UnpackError::Io("inspecting", path.to_path_buf(), e)),
    };
    let result = if meta.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    result.map_err(|e| UnpackError::Io("removing", path.to_path_buf(), e))
}

fn extract(layer: &Path, root: &Path) -> Result<(), UnpackError> {
    let mut archive = open_layer(layer)?;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(WHITEOUT_PREFIX)) {
            continue;
        }
        relative_components(&path)?;
        match entry.header().entry_type() {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::GNUSparse => {}
            // Devices and FIFOs mean nothing to a Wasm guest.
            _ => continue,
        }
        let unpacked = entry
            .unpack_in(root)
            .map_err(|e| UnpackError::Invalid(format!("cannot unpack layer entry {}: {e}", path.display())))?;
        if !unpacked {
            return Err(UnpackError::Invalid(format!("layer entry {} escapes the image root", path.display())));
        }
    }
    Ok(())
}
