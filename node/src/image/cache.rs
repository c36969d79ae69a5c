//! The on-disk cache: content-addressed blobs, unpacked root filesystems and `index.json`
//! (reference -> image), every file written atomically (temporary name + rename).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::error::ImageError;
use super::WasmImage;

const INDEX_VERSION: u32 = 1;
const TMP_PREFIX: &str = ".tmp-";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How old an unpacked root nothing indexes must be before [`CacheDir::sweep_orphan_roots`] takes it.
pub(crate) const ORPHAN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Paths and atomic writes inside the cache directory.
#[derive(Debug, Clone)]
pub(crate) struct CacheDir {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: HashMap<String, WasmImage>,
}

impl CacheDir {
    /// Creates the layout under `root` and removes temporary files left by an interrupted run.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let cache = CacheDir { root: root.to_path_buf() };
        for dir in [cache.blobs_dir(), cache.rootfs_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| ImageError::io("creating", &dir, e))?;
            sweep_tmp(&dir);
        }
        sweep_tmp(&cache.root);
        Ok(cache)
    }

    /// Removes unpacked roots no image of `indexed` uses (left by a crash between unpacking and
    /// the index write, or by an index from another version that was ignored), once they are
    /// older than [`ORPHAN_MIN_AGE`], so a root another process is about to index stays. Returns
    /// the bytes removed.
    pub fn sweep_orphan_roots<'a>(&self, indexed: impl IntoIterator<Item = &'a WasmImage>) -> u64 {
        let used: std::collections::HashSet<&Path> = indexed.into_iter().filter_map(|i| i.rootfs.as_deref()).collect();
        let Ok(entries) = std::fs::read_dir(self.rootfs_dir()) else { return 0 };
        let mut freed = 0u64;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if used.contains(path.as_path()) || name.to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
            if !meta.is_dir() || age < ORPHAN_MIN_AGE {
                continue;
            }
            let size = tree_size(&path);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => freed = freed.saturating_add(size),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing an unused image root"),
            }
        }
        if freed > 0 {
            tracing::info!(freed, "removed image roots no image uses");
        }
        freed
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// After images were dropped from the index: removes their unpacked roots and blobs that no
    /// image in `remaining` uses, and every other blob older than `min_age` none of them uses (the
    /// layers and configs of unpacked images). Returns the bytes removed; a file that cannot be
    /// removed is logged and skipped.
    pub fn remove_unneeded(
        &self,
        removed: &[std::sync::Arc<WasmImage>],
        remaining: &[std::sync::Arc<WasmImage>],
        min_age: std::time::Duration,
    ) -> u64 {
        let mut freed = 0u64;
        for image in removed {
            if let Some(root) =
                image.rootfs.as_ref().filter(|r| !remaining.iter().any(|o| o.rootfs.as_ref() == Some(*r)))
            {
                let size = tree_size(root);
                match std::fs::remove_dir_all(root) {
                    Ok(()) => freed = freed.saturating_add(size),
                    Err(e) => tracing::warn!(path = %root.display(), error = %e, "removing an image's root"),
                }
            }
        }
        let needed: std::collections::HashSet<&Path> = remaining.iter().map(|i| i.wasm_path.as_path()).collect();
        let Ok(entries) = std::fs::read_dir(self.blobs_dir()) else { return freed };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
            if needed.contains(path.as_path()) || age < min_age || !meta.is_file() {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => freed = freed.saturating_add(meta.len()),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing a blob"),
            }
        }
        freed
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn rootfs_dir(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// `blobs/sha256/<hex>` for a `sha256:<hex>` digest.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|hex| self.blobs_dir().join(hex))
    }

    /// `rootfs/<hex>` for a manifest digest.
    pub fn rootfs_path(&self, manifest_digest: &str) -> Option<PathBuf> {
        sha256_hex(manifest_digest).map(|hex| self.rootfs_dir().join(hex))
    }

    /// A fresh temporary path next to `target` (same filesystem, so a rename is atomic).
    pub fn tmp_for(target: &Path) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        target.with_file_name(format!("{TMP_PREFIX}{name}-{}-{n}", std::process::id()))
    }

    /// Loads `index.json`, keeping only images whose files are still on disk. No file -> empty.
    pub fn load_index(&self) -> Result<HashMap<String, WasmImage>, ImageError> {
        let path = self.index_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(ImageError::io("reading", &path, e)),
        };
        let index: IndexFile = match serde_json::from_slice(&bytes) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable image index");
                return Ok(HashMap::new());
            }
        };
        if index.version != INDEX_VERSION {
            tracing::warn!(version = index.version, "ignoring image index of another version");
            return Ok(HashMap::new());
        }
        Ok(index
            .images
            .into_iter()
            .filter(|(_, img)| {
                // Linux images from before containerd held them are pulled again.
                (img.kind == super::ImageKind::Linux && img.linux.is_some() || img.wasm_path.is_file())
                    && img.rootfs.as_ref().is_none_or(|r| r.is_dir())
            })
            .collect())
    }

    /// Writes `index.json` atomically.
    pub fn save_index(&self, images: HashMap<String, WasmImage>) -> Result<(), ImageError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(&IndexFile { version: INDEX_VERSION, images })
            .map_err(|e| ImageError::io("encoding", &path, std::io::Error::other(e)))?;
        write_atomic(&path, &bytes)
    }
}

/// The bytes of the regular files under `dir` (links not followed; what cannot be read counts 0).
pub(crate) fn tree_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                todo.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = CacheDir::tmp_for(path);
    std::fs::write(&tmp, bytes).map_err(|e| ImageError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ImageError::io("renaming into", path, e)
    })
}

/// The hex part of a well-formed `sha256:<64 lowercase hex>` digest.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

fn sweep_tmp(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let result = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover temporary file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dates `path` back by `ago`.
    fn age(path: &Path, ago: std::time::Duration) {
        let when = std::time::SystemTime::now() - ago;
        std::fs::File::open(path).expect("open").set_modified(when).expect("set mtime");
    }

    #[test]
    fn roots_no_image_uses_go_once_old_enough() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = CacheDir::open(dir.path()).expect("cache");
        let root = |hex: char| cache.rootfs_path(&format!("sha256:{}", hex.to_string().repeat(64))).expect("path");
        let (kept, orphan, young) = (root('a'), root('b'), root('c'));
        for r in [&kept, &orphan, &young] {
            std::fs::create_dir_all(r.join("bin")).expect("root");
            std::fs::write(r.join("bin/app.wasm"), vec![0u8; 100]).expect("file");
        }
        let unpacking = cache.rootfs_dir().join(format!("{TMP_PREFIX}d"));
        std::fs::create_dir_all(&unpacking).expect("tmp");
        for r in [&kept, &orphan, &unpacking] {
            age(r, ORPHAN_MIN_AGE * 2);
        }
        let indexed = WasmImage { rootfs: Some(kept.clone()), ..test_image() };
        assert_eq!(cache.sweep_orphan_roots([&indexed]), 100);
        assert!(kept.is_dir(), "an indexed root stays");
        assert!(!orphan.exists(), "an old root nothing indexes goes");
        assert!(young.is_dir(), "a young one may be about to be indexed");
        assert!(unpacking.is_dir(), "an unpack in progress is not this sweep's");
    }

    fn test_image() -> WasmImage {
        WasmImage {
            reference: "r".into(),
            image_id: String::new(),
            wasm_path: PathBuf::new(),
            wasm_digest: String::new(),
            rootfs: None,
            entrypoint: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            kind: Default::default(),
            cmd: Vec::new(),
            user: None,
            stop_signal: None,
            linux: None,
        }
    }
}
