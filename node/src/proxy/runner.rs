//! Runs `nft -f -`: one script, one atomic transaction.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// Where Debian installs nft.
const NFT_PATHS: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// A failed `nft` run.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// nft could not be started or fed.
    #[error("running {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// nft refused the script (nothing of it was applied).
    #[error("nft refused the rules: {stderr}")]
    Refused {
        /// What nft said.
        stderr: String,
    },
}

/// The `nft` binary.
#[derive(Clone, Debug)]
pub struct Nft {
    path: PathBuf,
}

impl Nft {
    /// The installed nft, if any.
    pub fn find() -> Option<Self> {
        NFT_PATHS.iter().map(Path::new).find(|p| p.is_file()).map(|p| Nft { path: p.to_path_buf() })
    }

    /// Applies `script` in one transaction.
    pub async fn apply(&self, script: &str) -> Result<(), NftError> {
        let spawn = |source| NftError::Spawn { path: self.path.clone(), source };
        let mut child = tokio::process::Command::new(&self.path)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await.map_err(spawn)?;
        }
        let out = child.wait_with_output().await.map_err(spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // nft repeats the offending line; a few lines are enough to tell what went wrong.
            let stderr: Vec<&str> = stderr.lines().take(6).collect();
            Err(NftError::Refused { stderr: stderr.join("\n") })
        }
    }

    /// Applies `script` synchronously (the agent's shutdown path, where no runtime may be left).
    pub fn apply_blocking(&self, script: &str) -> Result<(), NftError> {
        use std::io::Write;
        let spawn = |source| NftError::Spawn { path: self.path.clone(), source };
        let mut child = std::process::Command::new(&self.path)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(spawn)?;
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NftError::Refused { stderr: String::from_utf8_lossy(&out.stderr).into_owned() })
        }
    }
}
