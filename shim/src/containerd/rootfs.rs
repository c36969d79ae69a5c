//! The bundle's rootfs: the snapshot mounts containerd sends with Create are mounted on `bundle/rootfs`
//! (as runc's shim does), and unmounted when the task is deleted (or by the `delete` command).

use std::path::Path;

use containerd_shim::protos::types::mount::Mount;
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use super::error::ShimError;

/// Mounts `mounts` on `target` (nothing to do when containerd prepared the rootfs itself).
pub async fn mount(mounts: &[Mount], target: &Path) -> Result<(), ShimError> {
    for m in mounts {
        containerd_shim::util::mount_rootfs(m, target)
            .await
            .map_err(|e| ShimError::Mount(format!("{} on {}: {e}", m.type_, target.display())))?;
    }
    Ok(())
}

/// Unmounts everything mounted on `target` (lazily, so a busy file does not keep it), ignoring "not mounted".
pub fn unmount(target: &Path) -> Result<(), ShimError> {
    for _ in 0..16 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(ShimError::Mount(format!("unmounting {}: {e}", target.display()))),
        }
    }
    Ok(())
}
