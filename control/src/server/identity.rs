//! The server's identity in leader election: `<hostname>_<id>`, with the id made once and kept
//! in the data directory (`server-id`), so a restarted server is the same candidate and takes
//! its own Lease back at once. Two servers never share a data directory, so never an identity.

use std::path::Path;

use super::files::{self, FileError};

/// The file holding the id.
pub const ID_FILE: &str = "server-id";

/// This server's holder identity, making the id on first start.
pub fn server_identity(dir: &Path) -> Result<String, FileError> {
    let path = dir.join(ID_FILE);
    let id = match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            files::write_private(&path, id.as_bytes())?;
            id
        }
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    Ok(if host.is_empty() { id } else { format!("{host}_{id}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_stable_per_data_directory_and_differs_between_them() {
        let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let first = server_identity(a.path()).expect("identity");
        assert_eq!(server_identity(a.path()).expect("identity"), first);
        assert_ne!(server_identity(b.path()).expect("identity"), first);
    }
}
