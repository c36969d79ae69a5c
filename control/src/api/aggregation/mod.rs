//! API aggregation (`apiregistration.k8s.io/v1` APIServices), as kube-aggregator does it:
//!
//! - every group-version the server serves itself has a *local* APIService (`spec.service`
//!   unset, `Available=True` with reason `Local`), kept by the
//!   [`apiservice` controller](crate::controllers::apiservice);
//! - a *remote* APIService (`spec.service`, trusted with its `caBundle` or
//!   `insecureSkipTLSVerify`) has `/apis/<group>/<version>/...` proxied to that Service over
//!   HTTPS ([`proxy`]), the user passed in `X-Remote-User`/`X-Remote-Group`; the controller
//!   checks its reachability (`Available`) and keeps its discovery document, which the server's
//!   own discovery (legacy and aggregated) then includes ([`discovery`]).
//!
//! Invariant: requests for a remote group-version never reach the registry; a group-version
//! skiff serves itself is never proxied (a remote APIService that names one is ignored).

pub mod discovery;
pub mod proxy;
pub mod validation;

use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;

/// Storage prefix of the APIServices.
pub const PREFIX: &str = "/registry/apiregistration.k8s.io/apiservices/";
/// The group of APIServices.
pub const GROUP: &str = "apiregistration.k8s.io";
/// The label of the local APIServices the server made itself (as kube-aggregator's
/// autoregistration).
pub const AUTOMANAGED_LABEL: &str = "kube-aggregator.kubernetes.io/automanaged";

/// Where a remote APIService is served and how it is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    /// PEM certificates the extension server's certificate must chain to.
    pub ca_bundle: Vec<u8>,
    /// `insecureSkipTLSVerify`: the server's certificate is not checked.
    pub insecure: bool,
}

/// One remote group-version as the proxy and discovery see it.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The APIService's name (`<version>.<group>`).
    pub name: String,
    pub group: String,
    pub version: String,
    pub group_priority: i64,
    pub version_priority: i64,
    pub backend: Backend,
    /// Whether the last check reached it, and why not.
    pub available: Result<(), String>,
    /// Its `APIResourceList`, from the last successful check.
    pub resources: Option<Value>,
}

/// Parses a remote APIService; `None` for a local one (or one without group and version).
pub fn parse_remote(obj: &Value) -> Option<Remote> {
    let spec = obj.get("spec")?;
    let service = spec.get("service").filter(|s| s.is_object())?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let ca_bundle = spec
        .get("caBundle")
        .and_then(Value::as_str)
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        })
        .unwrap_or_default();
    let group = text(spec, "group");
    let version = text(spec, "version");
    if version.is_empty() {
        return None;
    }
    Some(Remote {
        name: crate::api::object::name(obj).to_string(),
        group,
        version,
        group_priority: spec.get("groupPriorityMinimum").and_then(Value::as_i64).unwrap_or(0),
        version_priority: spec.get("versionPriority").and_then(Value::as_i64).unwrap_or(0),
        backend: Backend {
            namespace: text(service, "namespace"),
            name: text(service, "name"),
            port: service.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(443),
            ca_bundle,
            insecure: spec.get("insecureSkipTLSVerify").and_then(Value::as_bool).unwrap_or(false),
        },
        available: Err("not checked yet".into()),
        resources: None,
    })
}

/// The remote APIServices, as the controller last saw them; read by every `/apis` request.
#[derive(Default)]
pub struct Aggregator {
    remotes: RwLock<Arc<Vec<Remote>>>,
}

impl Aggregator {
    /// Replaces the set of remote APIServices.
    pub fn set(&self, remotes: Vec<Remote>) {
        *self.remotes.write() = Arc::new(remotes);
    }

    /// A snapshot of the remote APIServices.
    pub fn remotes(&self) -> Arc<Vec<Remote>> {
        Arc::clone(&self.remotes.read())
    }

    /// The remote APIService of one group-version.
    pub fn find(&self, group: &str, version: &str) -> Option<Remote> {
        self.remotes.read().iter().find(|r| r.group == group && r.version == version).cloned()
    }
}
