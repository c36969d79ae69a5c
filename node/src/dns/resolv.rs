//! A pod's resolver configuration (pure): `dnsPolicy` and `dnsConfig` applied as the kubelet does,
//! giving both the `/etc/resolv.conf` text of Linux containers and the settings Wasm guests'
//! name lookups follow.

use k8s_openapi::api::core::v1::PodSpec;

/// The kubelet's default `--resolv-conf`.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The host's resolver configuration text: systemd-resolved's upstream file when `path` is the
/// default and the stub is in use (127.0.0.53 does not answer inside a pod), else `path`.
pub fn read_host(path: &std::path::Path) -> String {
    if path == std::path::Path::new(HOST_RESOLV_CONF) {
        if let Ok(text) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return text;
        }
    }
    std::fs::read_to_string(path).unwrap_or_default()
}

/// At most this many nameservers (glibc's limit; the kubelet drops the rest).
pub const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains (the kubelet's limit).
pub const MAX_SEARCHES: usize = 32;

/// The node-side inputs: the cluster DNS and the host's resolver configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeDns {
    /// The cluster DNS address (`--cluster-dns`), if the node has one.
    pub cluster_dns: Option<std::net::IpAddr>,
    /// The cluster domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// The host's resolver configuration (`--resolv-conf`; empty when none).
    pub host: ResolvConf,
}

/// The parts of a resolv.conf the kubelet manages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines.
    pub nameservers: Vec<String>,
    /// The `search` list.
    pub searches: Vec<String>,
    /// `options` (`ndots:5`, `edns0`...).
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads the `nameserver`, `search`/`domain` and `options` lines of resolv.conf text.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_string)),
                Some("search" | "domain") => conf.searches = words.map(str::to_string).collect(),
                Some("options") => conf.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        conf
    }

    /// The file's text: `search`, `nameserver` lines, `options` (what containerd's CRI writes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }

    /// `ndots:N` (default 1, as the C library).
    pub fn ndots(&self) -> usize {
        self.options.iter().rev().find_map(|o| o.strip_prefix("ndots:")?.parse().ok()).unwrap_or(1)
    }
}

/// The `dnsPolicy` the kubelet applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The cluster DNS with the pod's search paths.
    Cluster,
    /// The node's own resolver configuration.
    Host,
    /// Only `dnsConfig`.
    None,
}

/// Which policy a pod gets: `ClusterFirst` (the default) uses the cluster DNS unless the pod is on
/// the host's network or the node has no cluster DNS (then as `Default`); `ClusterFirstWithHostNet`
/// always the cluster DNS when there is one.
pub fn policy(spec: Option<&PodSpec>, node: &NodeDns) -> Policy {
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let asked = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let cluster = match asked {
        "None" => return Policy::None,
        "Default" => false,
        "ClusterFirstWithHostNet" => true,
        _ => !host_network,
    };
    if cluster && node.cluster_dns.is_some() {
        Policy::Cluster
    } else {
        Policy::Host
    }
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// The pod's resolver configuration in namespace `namespace`.
pub fn pod_resolv(spec: Option<&PodSpec>, namespace: &str, node: &NodeDns) -> ResolvConf {
    let domain = node.cluster_domain.trim_end_matches('.');
    let mut conf = match (policy(spec, node), node.cluster_dns) {
        (Policy::Cluster, Some(ip)) => {
            let mut searches = vec![format!("{namespace}.svc.{domain}"), format!("svc.{domain}"), domain.to_string()];
            push_unique(&mut searches, node.host.searches.iter().cloned());
            ResolvConf { nameservers: vec![ip.to_string()], searches, options: vec!["ndots:5".into()] }
        }
        (Policy::None, _) => ResolvConf::default(),
        _ => node.host.clone(),
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        push_unique(&mut conf.nameservers, config.nameservers.iter().flatten().cloned());
        push_unique(&mut conf.searches, config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else { continue };
            let text = match option.value.as_deref() {
                Some(value) => format!("{name}:{value}"),
                None => name.to_string(),
            };
            conf.options.retain(|o| o.split(':').next() != Some(name));
            conf.options.push(text);
        }
    }
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.truncate(MAX_SEARCHES);
    conf
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption};

    use super::*;

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: Some("10.43.0.10".parse().expect("ip")),
            cluster_domain: "cluster.local".into(),
            host: ResolvConf::parse("# host\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
        }
    }

    fn spec(policy: Option<&str>) -> PodSpec {
        PodSpec { dns_policy: policy.map(Into::into), ..Default::default() }
    }

    #[test]
    fn cluster_first_is_the_default() {
        let text = pod_resolv(Some(&spec(None)), "shop", &node()).render();
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.43.0.10\noptions ndots:5\n"
        );
        assert_eq!(pod_resolv(Some(&spec(Some("ClusterFirst"))), "shop", &node()).render(), text);
    }

    #[test]
    fn default_policy_and_no_cluster_dns_use_the_host() {
        let host = "search corp.example\nnameserver 192.0.2.53\noptions edns0\n";
        assert_eq!(pod_resolv(Some(&spec(Some("Default"))), "shop", &node()).render(), host);
        let mut no_dns = node();
        no_dns.cluster_dns = None;
        assert_eq!(pod_resolv(Some(&spec(None)), "shop", &no_dns).render(), host);
        let host_net = PodSpec { host_network: Some(true), ..Default::default() };
        assert_eq!(pod_resolv(Some(&host_net), "shop", &node()).render(), host);
        let with_host_net = PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            ..Default::default()
        };
        assert!(pod_resolv(Some(&with_host_net), "shop", &node()).render().contains("nameserver 10.43.0.10"));
    }

    #[test]
    fn none_takes_only_dns_config_and_config_merges() {
        let config = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into()]),
            searches: Some(vec!["my.example".into()]),
            options: Some(vec![
                PodDNSConfigOption { name: Some("ndots".into()), value: Some("2".into()) },
                PodDNSConfigOption { name: Some("edns0".into()), value: None },
            ]),
        };
        let none = PodSpec { dns_policy: Some("None".into()), dns_config: Some(config.clone()), ..Default::default() };
        assert_eq!(
            pod_resolv(Some(&none), "shop", &node()).render(),
            "search my.example\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
        let merged = PodSpec { dns_config: Some(config), ..Default::default() };
        let conf = pod_resolv(Some(&merged), "shop", &node());
        assert_eq!(conf.nameservers, ["10.43.0.10", "192.0.2.1"]);
        assert_eq!(conf.searches.last().map(String::as_str), Some("my.example"));
        assert_eq!(conf.options, ["ndots:2", "edns0"]);
        assert_eq!(conf.ndots(), 2);
    }

    #[test]
    fn parse_reads_the_managed_lines() {
        let conf =
            ResolvConf::parse("domain a.example\nsearch b.example c.example ; x\nnameserver 1.1.1.1\nsortlist 1\n");
        assert_eq!(conf.searches, ["b.example", "c.example"]);
        assert_eq!(conf.nameservers, ["1.1.1.1"]);
        assert_eq!(conf.ndots(), 1);
    }
}
