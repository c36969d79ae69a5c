//! CNI: the network configuration (bridge + host-local, loopback, portmap) and running the plugins.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::config::{Ipv4Cidr, NetworkConfig, PortMapping, Protocol};
use super::error::SandboxError;

/// CNI spec version we speak (Debian's plugins 1.1.1 accept 0.1.0 ... 1.0.0).
pub const CNI_VERSION: &str = "1.0.0";
/// CNI network name of the pod network (host-local keys its data by it, under our own data dir).
pub const NETWORK_NAME: &str = "skiff";
/// Interface name of the pod's veth end.
pub const POD_IFNAME: &str = "eth0";

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// The plugin configurations of this node's pod network, and the directory the plugins are in.
#[derive(Debug, Clone)]
pub struct Cni {
    bin_dir: PathBuf,
    loopback: Value,
    bridge: Value,
    portmap: Value,
    gateway: Ipv4Addr,
}

impl Cni {
    /// Builds the plugin configurations for `cfg`; host-local keeps its leases in `ipam_dir`.
    pub fn new(cfg: &NetworkConfig, cidr: Ipv4Cidr, ipam_dir: &Path) -> Self {
        let gateway = Ipv4Addr::from(u32::from(cidr.addr) + 1);
        // Pods route through the bridge's gateway: the service CIDR (the node's service proxy
        // translates ClusterIPs there) and, in a cluster with allocated pod CIDRs, everything
        // (the default route), which the node routes on to the other nodes' pod networks and
        // their hosts. A node with a pod CIDR of its own choosing keeps its pods off-link only
        // for Services, as before.
        let routes: Vec<Value> = cfg.service_cidr.iter().map(|dst| json!({ "dst": dst })).collect();
        Cni {
            bin_dir: cfg.cni_bin_dir.clone(),
            loopback: json!({ "type": "loopback" }),
            bridge: json!({
                "type": "bridge",
                "bridge": cfg.bridge,
                "isGateway": true,
                "isDefaultGateway": cfg.default_route,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": cidr.to_string(), "gateway": gateway.to_string() }]],
                    "routes": routes,
                    "dataDir": ipam_dir,
                },
            }),
            portmap: json!({ "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }),
            gateway,
        }
    }

    /// The network as a CNI configuration list (written to the state dir for operators and tools).
    pub fn conflist(&self) -> Value {
        json!({ "cniVersion": CNI_VERSION, "name": NETWORK_NAME, "plugins": [self.bridge, self.portmap] })
    }

    /// The loopback configuration (a network of its own, as kubelets do).
    pub fn loopback_conf(&self) -> Value {
        json!({ "cniVersion": CNI_VERSION, "name": "skiff-loopback", "plugins": [self.loopback] })
    }

    /// Brings up `lo` in the namespace (ADD) or does nothing harmful (DEL).
    pub async fn loopback(&self, cmd: Command, id: &str, netns: &Path) -> Result<Value, SandboxError> {
        let conf = with_header(&self.loopback, "skiff-loopback", None);
        self.exec("loopback", cmd, id, netns, "lo", &conf).await
    }

    /// Attaches the namespace to the bridge with an address from host-local (ADD) or detaches it and
    /// gives the address back (DEL).
    pub async fn bridge(
        &self,
        cmd: Command,
        id: &str,
        netns: &Path,
        prev: Option<&Value>,
    ) -> Result<Value, SandboxError> {
        let conf = with_header(&self.bridge, NETWORK_NAME, prev);
        self.exec("bridge", cmd, id, netns, POD_IFNAME, &conf).await
    }

    /// Sets up (ADD) or removes (DEL) the host port forwarding of a sandbox; `prev` is the bridge result
    /// (required for ADD; DEL deletes by container id).
    pub async fn portmap(
        &self,
        cmd: Command,
        id: &str,
        netns: &Path,
        ports: &[PortMapping],
        prev: Option<&Value>,
    ) -> Result<Value, SandboxError> {
        let mut conf = with_header(&self.portmap, NETWORK_NAME, prev);
        let maps: Vec<Value> = ports.iter().map(port_json).collect();
        conf["runtimeConfig"] = json!({ "portMappings": maps });
        self.exec("portmap", cmd, id, netns, POD_IFNAME, &conf).await
    }

    /// The bridge's own address, the pods' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    async fn exec(
        &self,
        plugin: &str,
        cmd: Command,
        id: &str,
        netns: &Path,
        ifname: &str,
        conf: &Value,
    ) -> Result<Value, SandboxError> {
        let bin = self.bin_dir.join(plugin);
        let stdin = serde_json::to_vec(conf).map_err(|e| SandboxError::Record { path: bin.clone(), source: e })?;
        let path_env = std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        let mut child = tokio::process::Command::new(&bin)
            .env_clear()
            .env("PATH", path_env)
            .env("CNI_COMMAND", cmd.as_str())
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SandboxError::io("run CNI plugin", &bin, e))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(&stdin).await.map_err(|e| SandboxError::io("write config to", &bin, e))?;
        }
        let out = child.wait_with_output().await.map_err(|e| SandboxError::io("wait for", &bin, e))?;
        if !out.status.success() {
            return Err(plugin_error(plugin, cmd, &out.stdout, &out.stderr, out.status.code()));
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| SandboxError::BadResult { plugin: plugin.into(), reason: format!("not JSON: {e}") })
    }
}

/// A plugin's configuration with the fields the runtime injects.
fn with_header(plugin: &Value, name: &str, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["cniVersion"] = json!(CNI_VERSION);
    conf["name"] = json!(name);
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

fn port_json(p: &PortMapping) -> Value {
    let protocol = match p.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    let mut v = json!({ "hostPort": p.host_port, "containerPort": p.container_port, "protocol": protocol });
    if let Some(ip) = p.host_ip {
        v["hostIP"] = json!(ip.to_string());
    }
    v
}

/// Turns a failed plugin run into an error carrying the plugin's own message.
fn plugin_error(plugin: &str, cmd: Command, stdout: &[u8], stderr: &[u8], status: Option<i32>) -> SandboxError {
    let parsed: Option<Value> = serde_json::from_slice(stdout).ok();
    let (code, msg) = match parsed {
        Some(v) if v.get("msg").is_some() => {
            let code = v.get("code").and_then(Value::as_u64).unwrap_or(999) as u32;
            let mut msg = v.get("msg").and_then(Value::as_str).unwrap_or_default().to_string();
            if let Some(details) = v.get("details").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                msg = format!("{msg}: {details}");
            }
            (code, msg)
        }
        _ => {
            let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
            (999, format!("exit status {status:?}: {}", text.trim()))
        }
    };
    SandboxError::Plugin { plugin: plugin.into(), command: cmd.as_str(), code, msg }
}

/// The pod's IPv4 address and gateway from a bridge plugin result (CNI 1.0.0 `ips`).
pub fn parse_ip(plugin: &str, result: &Value, fallback_gw: Ipv4Addr) -> Result<(IpAddr, IpAddr), SandboxError> {
    let bad = |reason: &str| SandboxError::BadResult { plugin: plugin.into(), reason: reason.into() };
    let ips = result.get("ips").and_then(Value::as_array).ok_or_else(|| bad("no ips"))?;
    for entry in ips {
        let Some(addr) = entry.get("address").and_then(Value::as_str) else {
            continue;
        };
        let ip: IpAddr = addr.split('/').next().unwrap_or_default().parse().map_err(|_| bad("bad address"))?;
        if !ip.is_ipv4() {
            continue;
        }
        let gw = entry
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok())
            .unwrap_or(IpAddr::V4(fallback_gw));
        return Ok((ip, gw));
    }
    Err(bad("no IPv4 address"))
}
