//! Admission webhooks (`admissionregistration.k8s.io/v1` Validating- and
//! MutatingWebhookConfigurations), run by the [`registry`](super::registry) on create, update
//! and delete of every resource, subresources and custom resources included.
//!
//! - [`config`]: the configurations' webhooks, a snapshot kept from the watch cache.
//!   Namespace labels for `namespaceSelector` come from the registry's namespace cache.
//! - [`matching`]: rules, selectors and `matchConditions` (pure).
//! - [`call`]: the AdmissionReview over HTTPS and the checks of the answer.
//! - [`resolve`]: a `service` reference to an endpoint address through EndpointSlices.
//! - [`patch`]: a mutating webhook's JSON Patch applied.
//! - [`validation`]: defaults and validation of the configuration objects.
//! - [`policy`]: ValidatingAdmissionPolicies and their bindings (CEL, evaluated in process);
//!   [`policy_validation`] checks those objects.
//!
//! Order, as kube-apiserver: built-in mutating admission, mutating webhooks in configuration
//! and webhook order (`reinvocationPolicy: IfNeeded` ones re-run once when a later webhook
//! changed the object), built-in validation, the ValidatingAdmissionPolicies (bindings in name
//! order), then the validating webhooks in parallel. Objects of `admissionregistration.k8s.io`
//! itself are never sent to webhooks or policies (so a bad policy can always be removed).

pub mod call;
pub mod config;
pub mod matching;
pub mod patch;
pub mod policy;
pub mod policy_validation;
pub mod resolve;
pub mod validation;

use std::sync::Arc;

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};
use super::prefix_cache::PrefixCache;
use super::resources::{ResourceInfo, Resources};
use super::watch_cache::WatchCache;
use crate::store::Store;
use call::{CallError, Target};
use config::{Endpoint, FailurePolicy, Hook, Snapshot};
pub use matching::{Attributes, Operation};

/// The webhook engine of one API server.
pub struct Webhooks {
    store: Arc<dyn Store>,
    cache: Arc<config::Cache>,
    /// The namespaces, for `namespaceSelector` (the registry's cache of them).
    namespaces: Arc<PrefixCache>,
}

/// The versions of `ri`'s group and resource other than its own (for `matchPolicy: Equivalent`).
pub fn other_versions(served: &Resources, ri: &ResourceInfo) -> Vec<&'static str> {
    served
        .iter()
        .filter(|r| r.group == ri.group && r.plural == ri.plural && r.version != ri.version)
        .map(|r| r.version)
        .collect()
}

/// The attributes of a request on `ri`, without object, name or namespace yet.
pub fn attributes<'a>(
    ri: &'a ResourceInfo,
    operation: Operation,
    subresource: &'a str,
    other_versions: &'a [&'a str],
) -> Attributes<'a> {
    Attributes {
        operation,
        group: ri.group,
        version: ri.version,
        kind: ri.kind,
        resource: ri.plural,
        subresource,
        namespaced: ri.namespaced,
        namespace: None,
        name: "",
        object: None,
        old_object: None,
        dry_run: false,
        user: None,
        other_versions,
    }
}

/// What one webhook call came to.
enum Outcome {
    /// Not called (no match, or a skipped failure under `failurePolicy: Ignore`).
    Skipped,
    /// Allowed, with the patch a mutating webhook returned and the version it saw the object in.
    Allowed(Option<json_patch::Patch>, String),
}

impl Webhooks {
    /// An engine reading the configurations from `store`, kept up to date by `watch`.
    pub fn new(store: Arc<dyn Store>, watch: Arc<WatchCache>, namespaces: Arc<PrefixCache>) -> Self {
        let cache = Arc::new(config::Cache::new(Arc::clone(&store), watch));
        Self { store, cache, namespaces }
    }

    /// The labels of the request's namespace (`None` outside one, or when it does not exist).
    async fn namespace_labels(&self, a: &Attributes<'_>) -> ApiResult<Option<Map<String, Value>>> {
        let Some(ns) = a.namespace.filter(|_| a.namespaced) else { return Ok(None) };
        let namespace = self.namespaces.get(&format!("{}{ns}", super::registry::NAMESPACES)).await?;
        Ok(namespace.map(|n| super::object::labels(&n)))
    }

    async fn snapshot(&self, a: &Attributes<'_>) -> ApiResult<Option<Arc<Snapshot>>> {
        if a.group == validation::GROUP {
            return Ok(None);
        }
        let snapshot = self.cache.snapshot().await?;
        Ok((!snapshot.is_empty()).then_some(snapshot))
    }

    /// Runs the mutating webhooks on `a.object`; returns the object they changed it to, `None`
    /// when none changed it.
    pub async fn mutate(&self, a: &Attributes<'_>, warnings: &mut Vec<String>) -> ApiResult<Option<Value>> {
        let Some(snapshot) = self.snapshot(a).await? else { return Ok(None) };
        let hooks: Vec<&Hook> = snapshot.mutating_hooks().collect();
        if hooks.is_empty() {
            return Ok(None);
        }
        let labels = self.namespace_labels(a).await?;
        let mut object = a.object.cloned();
        let mut last_change = None;
        let mut called = Vec::new();
        for (i, hook) in hooks.iter().enumerate() {
            let current = Attributes { object: object.as_ref(), ..a.clone() };
            if let Outcome::Allowed(patch, seen) = self.run(hook, &current, labels.as_ref(), warnings).await? {
                called.push(i);
                if self.patched(hook, a, &seen, &mut object, patch.as_ref())? {
                    last_change = Some(i);
                }
            }
        }
        if let Some(last) = last_change {
            // Once more for those asking to see later webhooks' changes.
            for i in called.into_iter().filter(|i| *i < last && hooks[*i].reinvoke) {
                let current = Attributes { object: object.as_ref(), ..a.clone() };
                if let Outcome::Allowed(patch, seen) = self.run(hooks[i], &current, labels.as_ref(), warnings).await? {
                    self.patched(hooks[i], a, &seen, &mut object, patch.as_ref())?;
                }
            }
        }
        Ok(last_change.and(object))
    }

    /// Applies `patch` to `object`; true when the object changed.
    /// The patch applies to the object as the webhook saw it (`seen`, the version its rules
    /// matched); the result is converted back to the request's version.
    fn patched(
        &self,
        hook: &Hook,
        a: &Attributes<'_>,
        seen: &str,
        object: &mut Option<Value>,
        patch: Option<&json_patch::Patch>,
    ) -> ApiResult<bool> {
        let (Some(patch), Some(current)) = (patch, object.as_ref()) else { return Ok(false) };
        let base = super::conversion::between(a.group, a.kind, a.version, seen, current.clone());
        let next = patch::apply(&base, patch).map_err(|e| {
            ApiError::Internal(format!(
                "failed calling webhook \"{}\": received invalid webhook response: {e}",
                hook.name
            ))
        })?;
        let next = super::conversion::between(a.group, a.kind, seen, a.version, next);
        let changed = &next != current;
        *object = Some(next);
        Ok(changed)
    }

    /// Runs the ValidatingAdmissionPolicies, then the validating webhooks, all at once; the first
    /// denial (policies first, then in webhook order) fails the request.
    pub async fn validate(&self, a: &Attributes<'_>, warnings: &mut Vec<String>) -> ApiResult<()> {
        let Some(snapshot) = self.snapshot(a).await? else { return Ok(()) };
        let labels = self.namespace_labels(a).await?;
        run_policies(&snapshot, a, labels.as_ref(), warnings)?;
        let calls = snapshot.validating_hooks().map(|hook| async {
            let mut own = Vec::new();
            let outcome = self.run(hook, a, labels.as_ref(), &mut own).await;
            (outcome, own)
        });
        let mut first_error = None;
        for (outcome, own) in futures::future::join_all(calls).await {
            warnings.extend(own);
            if let (Err(e), None) = (outcome, &first_error) {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One webhook: match, call, and the verdict or failure as the request's result.
    #[tracing::instrument(skip_all, fields(webhook = %hook.name, operation = a.operation.as_str(), resource = a.resource, name = a.name))]
    async fn run(
        &self,
        hook: &Hook,
        a: &Attributes<'_>,
        namespace_labels: Option<&Map<String, Value>>,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Outcome> {
        let Some(version) = matching::matching_version(hook, a) else { return Ok(Outcome::Skipped) };
        if !matching::namespace_matches(&hook.namespace_selector, a, namespace_labels)
            || !matching::object_matches(&hook.object_selector, a)
        {
            return Ok(Outcome::Skipped);
        }
        let failed = |reason: String| match hook.failure_policy {
            FailurePolicy::Fail => {
                Err(ApiError::Internal(format!("failed calling webhook \"{}\": {reason}", hook.name)))
            }
            FailurePolicy::Ignore => {
                tracing::warn!(reason, "admission webhook failed; ignored (failurePolicy: Ignore)");
                Ok(Outcome::Skipped)
            }
        };
        match matching::conditions_hold(hook, a) {
            Ok(true) => {}
            Ok(false) => return Ok(Outcome::Skipped),
            Err(e) => return failed(e.to_string()),
        }
        if a.dry_run && !hook.dry_run_safe {
            return Err(ApiError::BadRequest(format!("admission webhook \"{}\" does not support dry run", hook.name)));
        }
        let target = match &hook.endpoint {
            Endpoint::Url(url) => Target { url: url.clone(), resolved: None },
            Endpoint::Service { namespace, name, path, port } => {
                match resolve::service(&self.store, namespace, name, path, *port).await {
                    Ok(target) => target,
                    Err(e) => return failed(e.to_string()),
                }
            }
        };
        let uid = uuid::Uuid::new_v4().to_string();
        let review = call::review(a, version, &uid);
        let verdict = match call::call(hook, &target, &review, &uid).await {
            Ok(verdict) => verdict,
            Err(e @ (CallError::Call(_) | CallError::InvalidResponse(_))) => return failed(e.to_string()),
        };
        warnings.extend(verdict.warnings);
        if let Some(denial) = verdict.denied {
            tracing::debug!(code = denial.code, "admission webhook denied the request");
            return Err(ApiError::Denied {
                code: denial.code,
                reason: denial.reason.clone(),
                message: call::denial_message(&hook.name, &denial),
            });
        }
        Ok(Outcome::Allowed(verdict.patch, version.to_string()))
    }
}

/// The bound ValidatingAdmissionPolicies: a violation is a warning under a `Warn` binding and
/// the request's failure under a `Deny` one.
#[tracing::instrument(skip_all, fields(operation = a.operation.as_str(), resource = a.resource, name = a.name))]
fn run_policies(
    snapshot: &Snapshot,
    a: &Attributes<'_>,
    labels: Option<&Map<String, Value>>,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    for (p, binding) in snapshot.bound_policies() {
        if let policy::Decision::Violation { code, reason, message } = policy::evaluate(p, binding, a, labels) {
            if binding.warn {
                warnings.push(policy::warning(&p.name, &binding.name, &message));
            }
            if binding.deny {
                tracing::debug!(policy = p.name, binding = binding.name, "admission policy denied the request");
                return Err(ApiError::Denied { code, reason, message });
            }
        }
    }
    Ok(())
}
