//! Wiring one sandbox: namespace + loopback + bridge (prepare), host ports, and the reverse (unwire).

use std::path::Path;

use serde_json::Value;

use super::cni::{parse_ip, Cni, Command};
use super::config::PortMapping;
use super::error::SandboxError;
use super::netns::{create_netns, is_live_netns, netns_path, remove_netns};
use super::record::Prepared;

/// Creates the namespace `<prefix><id>` and runs loopback and bridge ADD (concurrently: they touch
/// different interfaces). On failure everything made so far is removed again.
pub async fn prepare(cni: &Cni, netns_prefix: &str, id: &str) -> Result<Prepared, SandboxError> {
    let netns = create_netns(&format!("{netns_prefix}{id}")).await?;
    let (lo, br) = tokio::join!(cni.loopback(Command::Add, id, &netns), cni.bridge(Command::Add, id, &netns, None));
    let wired = lo.and(br).and_then(|result| {
        let (ip, gateway) = parse_ip("bridge", &result, cni.gateway())?;
        Ok(Prepared { container_id: id.to_string(), netns_path: netns.clone(), ip, gateway, bridge_result: result })
    });
    if wired.is_err() {
        // DEL is idempotent and also gives back an address host-local may have handed out.
        if let Err(e) = unwire(cni, id, &netns, &[], None).await {
            tracing::warn!(container_id = id, error = %e, "cleanup after a failed sandbox setup");
        }
    }
    wired
}

/// Runs portmap ADD for the sandbox's host ports; on failure its partial rules are removed again.
pub async fn map_ports(cni: &Cni, p: &Prepared, ports: &[PortMapping]) -> Result<(), SandboxError> {
    if ports.is_empty() {
        return Ok(());
    }
    let res = cni.portmap(Command::Add, &p.container_id, &p.netns_path, ports, Some(&p.bridge_result)).await;
    if res.is_err() {
        if let Err(e) = cni.portmap(Command::Del, &p.container_id, &p.netns_path, ports, Some(&p.bridge_result)).await {
            tracing::warn!(container_id = %p.container_id, error = %e, "cleanup after a failed portmap ADD");
        }
    }
    res.map(drop)
}

/// CNI DEL in reverse order (portmap, bridge, loopback) with the sandbox's container id, then the
/// namespace is unmounted and deleted. Idempotent; a namespace that is already gone is fine
/// (the plugins then only release what they hold on the host, e.g. the address).
/// `ports: None` means unknown (an orphan): portmap DEL runs anyway, it deletes by container id.
pub async fn unwire(
    cni: &Cni,
    id: &str,
    netns: &Path,
    ports: &[PortMapping],
    bridge_result: Option<&Value>,
) -> Result<(), SandboxError> {
    let live = is_live_netns(netns);
    if !live {
        // A leftover file that is not a namespace would make the plugins fail; an empty CNI_NETNS
        // tells them there is nothing to clean inside.
        remove_netns(netns)?;
    }
    let ns_arg = if live { netns } else { Path::new("") };
    if !ports.is_empty() || bridge_result.is_none() {
        cni.portmap(Command::Del, id, ns_arg, ports, bridge_result).await?;
    }
    cni.bridge(Command::Del, id, ns_arg, bridge_result).await?;
    if live {
        cni.loopback(Command::Del, id, ns_arg).await?;
    }
    remove_netns(netns)
}

/// The namespace path of container id `id` under `prefix`.
pub fn netns_of(prefix: &str, id: &str) -> std::path::PathBuf {
    netns_path(&format!("{prefix}{id}"))
}
