//! Secret-bearing files of the data directory: the directory is 0700 and every file holding a
//! key, token or the store is 0600, written atomically so it is never seen half-written nor, even
//! for an instant, with a wider mode. Modes left wider by an earlier version are narrowed on start.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every secret-bearing file.
pub const FILE_MODE: u32 = 0o600;

/// A file operation that failed, with the path it was on.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError { path: path.to_path_buf(), source }
}

/// Creates `dir` (and its parents) if needed and makes it 0700.
pub fn private_dir(dir: &Path) -> Result<(), FileError> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(at(dir))?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(at(dir))
}

/// Narrows an existing file to 0600; a missing file is fine.
pub fn restrict(path: &Path) -> Result<(), FileError> {
    match std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(at(path)),
    }
}

/// Creates an empty 0600 file if none exists, so what opens it later (SQLite) keeps that mode
/// (SQLite gives its `-wal` and `-shm` files the database file's mode).
pub fn create_private(path: &Path) -> Result<(), FileError> {
    match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict(path),
        Err(e) => Err(at(path)(e)),
    }
}

/// Writes `contents` to `path` atomically with mode 0600: a temporary file in the same directory,
/// created 0600, synced, then renamed over `path`.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&tmp).map_err(at(&tmp))?;
        // The mode a umask narrowed stays narrow; one it could not widen is set explicitly.
        file.set_permissions(Permissions::from_mode(FILE_MODE)).map_err(at(&tmp))?;
        file.write_all(contents).map_err(at(&tmp))?;
        file.sync_all().map_err(at(&tmp))?;
        std::fs::rename(&tmp, path).map_err(at(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The mode bits of `path` (for tests and checks).
pub fn mode(path: &Path) -> Result<u32, FileError> {
    Ok(std::fs::metadata(path).map_err(at(path))?.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("private dir");
        assert_eq!(mode(&dir).expect("mode"), 0o700);

        let token = dir.join("admin.token");
        std::fs::write(&token, "old").expect("write");
        std::fs::set_permissions(&token, Permissions::from_mode(0o644)).expect("chmod");
        write_private(&token, b"new").expect("write private");
        assert_eq!(std::fs::read(&token).expect("read"), b"new");
        assert_eq!(mode(&token).expect("mode"), 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

        let db = dir.join("state.db");
        create_private(&db).expect("create");
        assert_eq!(mode(&db).expect("mode"), 0o600);
        std::fs::set_permissions(&db, Permissions::from_mode(0o644)).expect("chmod");
        create_private(&db).expect("existing");
        assert_eq!(mode(&db).expect("mode"), 0o600);
        restrict(&dir.join("absent")).expect("a missing file is fine");
    }
}
