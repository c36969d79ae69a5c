//! Applies rules: `nft -f -` (one script, one atomic transaction) for the full sync and for
//! changes of chains, rules or sets; changes of set elements only as one netlink batch
//! ([`super::netlink`], also one transaction), which costs no process and no cache dump.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::netlink::{self, NetlinkError};
use super::nft::{self, ElementChange, Plan, Table};

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

/// A failed update.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// `nft` failed or refused the script.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The netlink batch failed or was refused.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The blocking netlink exchange did not finish.
    #[error("the netlink task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How an update went to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Nothing changed.
    Nothing,
    /// Set elements only, as one netlink batch.
    Netlink,
    /// An `nft -f` script.
    Nft,
}

/// The element changes of several services (`(old, new)` plans) as one list: every deletion
/// before any addition, so a key moving between services never exists twice.
pub fn element_changes<'a>(pairs: &[(&'a Plan, &'a Plan)]) -> Vec<ElementChange<'a>> {
    let all: Vec<ElementChange> = pairs.iter().flat_map(|(old, new)| nft::element_changes(old, new)).collect();
    let (mut out, adds): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| c.value.is_none());
    out.extend(adds);
    out
}

/// Turns what the table holds for some services (`old`) into `new` in one transaction: a
/// netlink batch when only set elements change (an endpoint added, removed or replaced), an
/// `nft -f` script otherwise.
pub async fn apply_update<'a>(
    nft: &Nft,
    table: &Table,
    pairs: impl IntoIterator<Item = (&'a Plan, &'a Plan)>,
) -> Result<Route, UpdateError> {
    let pairs: Vec<(&Plan, &Plan)> = pairs.into_iter().collect();
    if pairs.iter().all(|(old, new)| nft::elements_only(old, new)) {
        let changes = element_changes(&pairs);
        if changes.is_empty() {
            return Ok(Route::Nothing);
        }
        let encoded = netlink::encode(&table.name, &changes);
        if encoded.bytes.len() <= netlink::MAX_BATCH_BYTES {
            tokio::task::spawn_blocking(move || netlink::send(&encoded)).await??;
            return Ok(Route::Netlink);
        }
    }
    let script: String = pairs.iter().map(|(old, new)| nft::update(table, old, new)).collect();
    if script.is_empty() {
        return Ok(Route::Nothing);
    }
    nft.apply(&script).await?;
    Ok(Route::Nft)
}
