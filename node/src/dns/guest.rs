//! Wasm guests' name lookups through their pod's DNS settings: a hickory resolver built from the
//! pod's resolv.conf text (nameservers, search list, `ndots`), handed to the engine as its
//! [`NameResolver`]. It runs on the pod's executor, inside the pod's network namespace, so it
//! reaches the cluster DNS as a Linux container of the pod would.

use std::net::IpAddr;

use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use skiff_engine::{Lookup, NameResolver};

/// A pod's resolver.
pub struct PodResolver {
    resolver: TokioResolver,
}

impl std::fmt::Debug for PodResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodResolver").finish_non_exhaustive()
    }
}

impl PodResolver {
    /// From the pod's resolv.conf text; `None` when it names no nameserver.
    pub fn new(resolv_conf: &str) -> Option<Self> {
        let (config, mut opts) = hickory_resolver::system_conf::parse_resolv_conf(resolv_conf).ok()?;
        if config.name_servers().is_empty() {
            return None;
        }
        // The pod's /etc/hosts is not the node's.
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let resolver = hickory_resolver::Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Some(PodResolver { resolver })
    }
}

impl NameResolver for PodResolver {
    fn resolve(&self, host: &str) -> Lookup {
        let resolver = self.resolver.clone();
        let host = host.to_string();
        Box::pin(async move {
            let found = resolver.lookup_ip(host.as_str()).await.map_err(std::io::Error::other)?;
            Ok(found.iter().collect::<Vec<IpAddr>>())
        })
    }
}
