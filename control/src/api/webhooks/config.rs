//! The webhooks of the stored configurations and the ValidatingAdmissionPolicies with their
//! bindings, parsed once per change: one snapshot read by every
//! request, rebuilt from the in-process watch cache's events (never re-listed per request, never
//! polled). The labels `namespaceSelector` matches come from the registry's namespace cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{broadcast, OnceCell};

use super::policy::{parse_binding, parse_policy, Binding, Policy};
use crate::api::selector::{self, LabelSelector};
use crate::api::watch_cache::{list_decoded, relist, WatchCache};
use crate::store::{Revision, Store, StoreError};

/// Storage prefix of the ValidatingWebhookConfigurations.
pub const VALIDATING_PREFIX: &str = "/registry/admissionregistration.k8s.io/validatingwebhookconfigurations/";
/// Storage prefix of the MutatingWebhookConfigurations.
pub const MUTATING_PREFIX: &str = "/registry/admissionregistration.k8s.io/mutatingwebhookconfigurations/";
/// Storage prefix of the ValidatingAdmissionPolicies.
pub const POLICY_PREFIX: &str = "/registry/admissionregistration.k8s.io/validatingadmissionpolicies/";
/// Storage prefix of the ValidatingAdmissionPolicyBindings.
pub const BINDING_PREFIX: &str = "/registry/admissionregistration.k8s.io/validatingadmissionpolicybindings/";
/// Everything the snapshot follows.
const PREFIXES: [&str; 4] = [VALIDATING_PREFIX, MUTATING_PREFIX, POLICY_PREFIX, BINDING_PREFIX];

/// What happens when a call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

/// Where a webhook is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Url(String),
    Service { namespace: String, name: String, path: String, port: u16 },
}

/// One rule of a webhook (`RuleWithOperations`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub operations: Vec<String>,
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub resources: Vec<String>,
    /// `*`, `Cluster` or `Namespaced`.
    pub scope: String,
}

/// One webhook of a configuration, ready to match and call.
#[derive(Clone, Debug)]
pub struct Hook {
    /// The webhook's `name` (`x.example.com`), as messages name it.
    pub name: String,
    pub endpoint: Endpoint,
    /// PEM certificates the server's certificate must chain to.
    pub ca_bundle: Vec<u8>,
    pub rules: Vec<Rule>,
    pub failure_policy: FailurePolicy,
    /// `matchPolicy: Equivalent` (the default) also matches other versions of the same resource.
    pub equivalent: bool,
    pub namespace_selector: LabelSelector,
    pub object_selector: LabelSelector,
    /// `None` or `NoneOnDryRun`: safe to call for a dry-run request.
    pub dry_run_safe: bool,
    pub timeout: Duration,
    /// `(name, expression)` of each `matchConditions` entry.
    pub match_conditions: Vec<(String, String)>,
    /// `reinvocationPolicy: IfNeeded` (mutating webhooks only).
    pub reinvoke: bool,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

/// A `namespaceSelector`/`objectSelector`; unset matches everything, a bad one nothing.
pub fn selector_from_json(v: Option<&Value>) -> LabelSelector {
    match v {
        // An unset selector matches everything.
        None | Some(Value::Null) => LabelSelector::everything(),
        Some(sel) => selector::from_label_selector(sel).unwrap_or_else(|_| LabelSelector::nothing()),
    }
}

/// One `RuleWithOperations`.
pub fn rule_from_json(r: &Value) -> Rule {
    Rule {
        operations: strings(r.get("operations")),
        api_groups: strings(r.get("apiGroups")),
        api_versions: strings(r.get("apiVersions")),
        resources: strings(r.get("resources")),
        scope: r.get("scope").and_then(Value::as_str).unwrap_or("*").to_string(),
    }
}

/// Parses one webhook of a (validated, defaulted) configuration.
pub fn parse_hook(w: &Value) -> Option<Hook> {
    let name = w.get("name").and_then(Value::as_str)?.to_string();
    let client = w.get("clientConfig")?;
    let endpoint = match (client.get("url").and_then(Value::as_str), client.get("service")) {
        (Some(url), _) => Endpoint::Url(url.to_string()),
        (None, Some(svc)) => Endpoint::Service {
            namespace: svc.get("namespace").and_then(Value::as_str)?.to_string(),
            name: svc.get("name").and_then(Value::as_str)?.to_string(),
            path: svc.get("path").and_then(Value::as_str).unwrap_or("/").to_string(),
            port: svc.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(443),
        },
        _ => return None,
    };
    let ca_bundle = client
        .get("caBundle")
        .and_then(Value::as_str)
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        })
        .unwrap_or_default();
    let rules = w.get("rules").and_then(Value::as_array).into_iter().flatten().map(rule_from_json).collect();
    let match_conditions = w
        .get("matchConditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("name")?.as_str()?.to_string(), c.get("expression")?.as_str()?.to_string())))
        .collect();
    Some(Hook {
        name,
        endpoint,
        ca_bundle,
        rules,
        failure_policy: match w.get("failurePolicy").and_then(Value::as_str) {
            Some("Ignore") => FailurePolicy::Ignore,
            _ => FailurePolicy::Fail,
        },
        equivalent: w.get("matchPolicy").and_then(Value::as_str) != Some("Exact"),
        namespace_selector: selector_from_json(w.get("namespaceSelector")),
        object_selector: selector_from_json(w.get("objectSelector")),
        dry_run_safe: matches!(w.get("sideEffects").and_then(Value::as_str), Some("None" | "NoneOnDryRun")),
        timeout: Duration::from_secs(w.get("timeoutSeconds").and_then(Value::as_u64).unwrap_or(10).clamp(1, 30)),
        match_conditions,
        reinvoke: w.get("reinvocationPolicy").and_then(Value::as_str) == Some("IfNeeded"),
    })
}

/// The webhooks of one configuration object, in their order.
fn parse_configuration(obj: &Value) -> Vec<Hook> {
    obj.get("webhooks").and_then(Value::as_array).into_iter().flatten().filter_map(parse_hook).collect()
}

/// What every request reads: the webhooks by configuration name (configurations in name order,
/// as kube-apiserver sorts them).
#[derive(Default)]
pub struct Snapshot {
    pub mutating: BTreeMap<String, Arc<Vec<Hook>>>,
    pub validating: BTreeMap<String, Arc<Vec<Hook>>>,
    /// ValidatingAdmissionPolicies by name.
    pub policies: BTreeMap<String, Arc<Policy>>,
    /// ValidatingAdmissionPolicyBindings by name (evaluated in name order).
    pub bindings: BTreeMap<String, Arc<Binding>>,
    /// The revision the snapshot is complete up to.
    revision: Revision,
}

impl Snapshot {
    /// True when no webhook or policy binding is configured (the common case: nothing to do).
    pub fn is_empty(&self) -> bool {
        self.mutating.is_empty() && self.validating.is_empty() && self.bindings.is_empty()
    }

    /// Each binding with the policy it binds (bindings of missing policies do nothing).
    pub fn bound_policies(&self) -> impl Iterator<Item = (&Policy, &Binding)> {
        self.bindings.values().filter_map(|b| Some((self.policies.get(&b.policy)?.as_ref(), b.as_ref())))
    }

    /// Mutating webhooks in the order they run.
    pub fn mutating_hooks(&self) -> impl Iterator<Item = &Hook> {
        self.mutating.values().flat_map(|v| v.iter())
    }

    /// Validating webhooks.
    pub fn validating_hooks(&self) -> impl Iterator<Item = &Hook> {
        self.validating.values().flat_map(|v| v.iter())
    }

    /// Applies one stored change (a put or a delete of `key`).
    fn apply(&mut self, key: &str, deleted: bool, obj: &Value) {
        if let Some(name) = key.strip_prefix(POLICY_PREFIX) {
            match parse_policy(obj).filter(|_| !deleted) {
                Some(p) => drop(self.policies.insert(name.to_string(), Arc::new(p))),
                None => drop(self.policies.remove(name)),
            }
            return;
        }
        if let Some(name) = key.strip_prefix(BINDING_PREFIX) {
            match parse_binding(obj).filter(|_| !deleted) {
                Some(b) => drop(self.bindings.insert(name.to_string(), Arc::new(b))),
                None => drop(self.bindings.remove(name)),
            }
            return;
        }
        let (map, name) = if let Some(name) = key.strip_prefix(VALIDATING_PREFIX) {
            (&mut self.validating, name)
        } else if let Some(name) = key.strip_prefix(MUTATING_PREFIX) {
            (&mut self.mutating, name)
        } else {
            return;
        };
        let hooks = if deleted { Vec::new() } else { parse_configuration(obj) };
        if hooks.is_empty() {
            map.remove(name);
        } else {
            map.insert(name.to_string(), Arc::new(hooks));
        }
    }
}

/// See the module documentation. Started on first use.
pub struct Cache {
    store: Arc<dyn Store>,
    watch: Arc<WatchCache>,
    snapshot: RwLock<Arc<Snapshot>>,
    started: OnceCell<()>,
}

impl Cache {
    /// A cache over `store`, following `watch` once first read.
    pub fn new(store: Arc<dyn Store>, watch: Arc<WatchCache>) -> Self {
        Self { store, watch, snapshot: RwLock::new(Arc::new(Snapshot::default())), started: OnceCell::new() }
    }

    /// The current webhooks. The first call lists the configurations and starts following.
    pub async fn snapshot(self: &Arc<Self>) -> Result<Arc<Snapshot>, StoreError> {
        self.started
            .get_or_try_init(|| async {
                let events = self.prime().await?;
                tokio::spawn(Arc::clone(self).follow(events));
                Ok::<(), StoreError>(())
            })
            .await?;
        Ok(Arc::clone(&self.snapshot.read()))
    }

    /// Lists everything the snapshot holds; returns the subscription to follow from there.
    async fn prime(&self) -> Result<crate::api::watch_cache::Receiver, StoreError> {
        // Subscribed before listing: no change between the two is missed.
        let (_, events) = self.watch.subscribe_now();
        let mut snapshot = Snapshot::default();
        snapshot.revision =
            list_decoded(self.store.as_ref(), &PREFIXES, |key, obj| snapshot.apply(key, false, &obj)).await?;
        tracing::debug!(
            mutating = snapshot.mutating.len(),
            validating = snapshot.validating.len(),
            policies = snapshot.policies.len(),
            bindings = snapshot.bindings.len(),
            revision = snapshot.revision,
            "admission webhook configurations loaded"
        );
        *self.snapshot.write() = Arc::new(snapshot);
        Ok(events)
    }

    /// Applies the watch cache's events; lagging behind re-lists.
    async fn follow(self: Arc<Self>, mut events: crate::api::watch_cache::Receiver) {
        loop {
            match events.recv().await {
                Ok(event) => {
                    let relevant = PREFIXES.iter().any(|p| event.key.starts_with(p));
                    let current = Arc::clone(&self.snapshot.read());
                    if !relevant || event.revision <= current.revision {
                        continue;
                    }
                    let mut next = Snapshot {
                        mutating: current.mutating.clone(),
                        validating: current.validating.clone(),
                        policies: current.policies.clone(),
                        bindings: current.bindings.clone(),
                        revision: event.revision,
                    };
                    next.apply(&event.key, event.deleted, &event.object());
                    *self.snapshot.write() = Arc::new(next);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "admission webhook cache fell behind; re-listing");
                    events = relist("admission webhooks", || self.prime()).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
