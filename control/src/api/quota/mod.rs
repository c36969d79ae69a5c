//! ResourceQuota and LimitRange admission, run by the [`Registry`] on creates and updates.
//!
//! Order in a write (as kube-apiserver's plugin chain): LimitRange defaults (mutating, before the
//! ServiceAccount admission and the mutating webhooks); LimitRange bounds (validating, after the
//! webhooks, beside Pod Security); ResourceQuota last, just before the store write. The quota
//! step charges every matching quota's `status.used` with an optimistic write (the quota's
//! revision as precondition, retried on conflict) so concurrent creates never overshoot; the
//! quota controller (`controllers/resource_quota.rs`) recomputes the truth afterwards. A dry run
//! is checked but charges nothing; a write that fails after the charge gives it back.

pub mod usage;

/// Storage prefix of LimitRanges.
pub const LIMIT_RANGES: &str = "/registry/core/limitranges/";
/// Storage prefix of ResourceQuotas.
pub const QUOTAS: &str = "/registry/core/resourcequotas/";

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::limit_range;
use super::object;
use super::optimistic;
use super::registry::Registry;
use super::resources::ResourceInfo;
use usage::{add, mask, parse_list, pretty, Usage};

/// What a write charged: per quota name, the amounts added to its `status.used`.
#[derive(Debug, Default)]
pub struct Charge {
    namespace: String,
    quotas: Vec<(String, Usage)>,
}

fn is_core(ri: &ResourceInfo, kind: &str) -> bool {
    ri.group.is_empty() && ri.custom.is_none() && ri.kind == kind
}

/// `pods "p" is forbidden: <why>` (kube's `admission.NewForbidden`).
fn forbidden(ri: &ResourceInfo, obj: &Value, why: &str) -> ApiError {
    ApiError::Forbidden(format!("{} \"{}\" is forbidden: {why}", ri.group_resource(), object::name(obj)))
}

/// The new usage of `quota` if `delta` is added (only the resources it limits), or kube's
/// `exceeded quota: ...` message.
pub fn check(quota: &Value, delta: &Usage) -> Result<Usage, String> {
    let hard = parse_list(quota.pointer("/status/hard"));
    let used = parse_list(quota.pointer("/status/used"));
    let requested = mask(delta, hard.keys());
    let new = mask(&add(&used, &requested), requested.keys());
    let exceeded: Vec<String> =
        new.iter().filter(|(k, v)| hard.get(*k).is_some_and(|h| *v > h)).map(|(k, _)| k.clone()).collect();
    if exceeded.is_empty() {
        return Ok(requested);
    }
    Err(format!(
        "exceeded quota: {}, requested: {}, used: {}, limited: {}",
        object::name(quota),
        pretty(&mask(&requested, &exceeded)),
        pretty(&mask(&used, &exceeded)),
        pretty(&mask(&hard, &exceeded)),
    ))
}

/// One quota's verdict on an object costing `delta` (kube's `checkRequest` for one quota):
/// `None` when the quota does not concern it, else the amounts to charge; refused when a
/// container does not name a limited cpu/memory, when the quota's usage is not known yet (but
/// its `status.hard` is), or when the usage would pass `status.hard`.
pub fn evaluate(quota: &Value, ri: &ResourceInfo, obj: &Value, delta: &Usage) -> ApiResult<Option<Usage>> {
    let (group, plural) = (ri.group, ri.plural);
    if !usage::quota_selects(quota, group, plural, obj) {
        return Ok(None);
    }
    let mut hard: Vec<String> = quota
        .pointer("/status/hard")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .filter(|k| usage::covers(group, plural, k))
        .collect();
    if hard.is_empty() {
        return Ok(None);
    }
    hard.sort();
    let name = object::name(quota);
    if is_core(ri, "Pod") {
        usage::pod_constraints(obj, &hard).map_err(|e| forbidden(ri, obj, &format!("failed quota: {name}: {e}")))?;
    }
    let used = quota.pointer("/status/used").and_then(Value::as_object);
    if hard.iter().any(|h| used.is_none_or(|u| !u.contains_key(h))) {
        let why = format!("status unknown for quota: {name}, resources: {}", hard.join(","));
        return Err(forbidden(ri, obj, &why));
    }
    check(quota, delta).map(Some).map_err(|why| forbidden(ri, obj, &why))
}

/// `used` with `amounts` added (or, for a refund, taken away, never below zero), as stored.
fn charged(quota: &Value, amounts: &Usage, refund: bool) -> Value {
    let mut next = quota.clone();
    let used = parse_list(quota.pointer("/status/used"));
    if let Some(status) = next.get_mut("status").and_then(Value::as_object_mut) {
        let map = status.entry("used").or_insert_with(|| json!({}));
        if let Some(map) = map.as_object_mut() {
            for (k, v) in amounts {
                let have = used.get(k).copied().unwrap_or(0);
                let now = if refund { have.saturating_sub(*v).max(0) } else { have.saturating_add(*v) };
                map.insert(k.clone(), json!(usage::format(k, now)));
            }
        }
    }
    next
}

impl Registry {
    /// LimitRanger, mutating: a new pod's containers get the defaults of the namespace's
    /// LimitRanges.
    pub(crate) async fn limit_range_defaults(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        obj: &mut Value,
    ) -> ApiResult<()> {
        let (true, Some(ns)) = (is_core(ri, "Pod"), ns) else { return Ok(()) };
        let ranges = self.policies.in_namespace(LIMIT_RANGES, ns).await?;
        if !ranges.is_empty() {
            limit_range::default_pod(&ranges, obj);
        }
        Ok(())
    }

    /// LimitRanger, validating: a new pod, or a claim created or resized, within the bounds.
    pub(crate) async fn limit_range_validate(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        obj: &Value,
        current: Option<&Value>,
    ) -> ApiResult<()> {
        let Some(ns) = ns else { return Ok(()) };
        let pod = is_core(ri, "Pod") && current.is_none();
        let claim = is_core(ri, "PersistentVolumeClaim");
        if !(pod || claim) || object::deletion_timestamp(obj).is_some() {
            return Ok(());
        }
        let ranges = self.policies.in_namespace(LIMIT_RANGES, ns).await?;
        if ranges.is_empty() {
            return Ok(());
        }
        let verdict =
            if pod { limit_range::validate_pod(&ranges, obj) } else { limit_range::validate_pvc(&ranges, obj) };
        verdict.map_err(|why| forbidden(ri, obj, &why))
    }

    /// ResourceQuota admission: refuses a create (or an update of a Service or claim that raises
    /// usage) that would exceed a quota of the namespace, else charges the quotas (not on a dry
    /// run). Each quota is judged on its stored version (the cache only says which exist). Give
    /// the charge back with [`Registry::quota_refund`] if the write then fails.
    pub(crate) async fn quota_charge(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        obj: &Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> ApiResult<Charge> {
        let none = Charge::default();
        let (true, Some(ns)) = (ri.namespaced, ns) else { return Ok(none) };
        if old.is_some() && !(is_core(ri, "Service") || is_core(ri, "PersistentVolumeClaim")) {
            return Ok(none);
        }
        let quotas = self.policies.in_namespace(QUOTAS, ns).await?;
        if quotas.is_empty() {
            return Ok(none);
        }
        let (group, plural) = (ri.group, ri.plural);
        let mut delta = usage::object_usage(group, plural, obj);
        if let Some(old) = old {
            delta = usage::subtract_non_negative(&delta, &usage::object_usage(group, plural, old));
        }
        let negative: Vec<&str> = delta.iter().filter(|(_, v)| **v < 0).map(|(k, _)| k.as_str()).collect();
        if !negative.is_empty() {
            let why = format!("quota usage is negative for resource(s): {}", negative.join(","));
            return Err(forbidden(ri, obj, &why));
        }
        delta.retain(|_, v| *v != 0);
        if delta.is_empty() {
            return Ok(none);
        }
        let quota_ri = self.resource("", "ResourceQuota")?;
        let mut done = Charge { namespace: ns.to_string(), quotas: Vec::new() };
        for cached in &quotas {
            let name = object::name(cached).to_string();
            let result = if dry_run {
                match self.get(quota_ri, Some(ns), &name).await {
                    Ok(quota) => evaluate(&quota, ri, obj, &delta).map(|_| Usage::new()),
                    Err(e) => Err(e),
                }
            } else {
                let mut requested = Usage::new();
                self.compare_and_swap(quota_ri, ns, &name, |current| {
                    requested = evaluate(current, ri, obj, &delta)?.unwrap_or_default();
                    Ok((!requested.is_empty()).then(|| charged(current, &requested, false)))
                })
                .await
                .map(|_| requested)
            };
            match result {
                Ok(requested) => done.quotas.push((name, requested)),
                // Deleted meanwhile: it limits nothing any more.
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => {
                    self.quota_refund(done).await;
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Gives back what [`Registry::quota_charge`] took (best effort: the quota controller
    /// recomputes usage anyway).
    pub(crate) async fn quota_refund(&self, charge: Charge) {
        let Ok(quota_ri) = self.resource("", "ResourceQuota") else { return };
        for (name, amounts) in charge.quotas.into_iter().filter(|(_, a)| !a.is_empty()) {
            let result = self
                .compare_and_swap(quota_ri, &charge.namespace, &name, |current| {
                    Ok(Some(charged(current, &amounts, true)))
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(quota = %name, error = %e, "quota charge not given back");
            }
        }
    }

    /// Read-modify-write of one stored object on its revision, retried on conflict; `change`
    /// returns `None` for nothing to write. Used for quota status, below admission.
    async fn compare_and_swap<F>(&self, ri: &ResourceInfo, ns: &str, name: &str, mut change: F) -> ApiResult<Value>
    where
        F: FnMut(&Value) -> ApiResult<Option<Value>>,
    {
        let key = ri.key(Some(ns), name);
        // More tries than other writes: every create in the namespace charges the same quota.
        for _ in 0..2 * optimistic::MAX_ATTEMPTS {
            let (kv, current) = optimistic::read(&*self.store, ri, &key, name).await?;
            let Some(mut next) = change(&current)? else { return Ok(current) };
            let result = self.store.update(&key, super::registry::encode(ri, &next), kv.mod_revision).await;
            if let Some(written) = optimistic::written(result, ri, name)? {
                object::set_resource_version(&mut next, written.mod_revision);
                return Ok(next);
            }
        }
        Err(optimistic::too_many_writers(ri, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_third_pod_exceeds_with_kubes_message() {
        let quota = json!({"metadata": {"name": "q"},
            "status": {"hard": {"pods": "2", "count/configmaps": "1"}, "used": {"pods": "2", "count/configmaps": "0"}}});
        let pod = usage::pod_usage(&json!({"spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(
            check(&quota, &pod).expect_err("refused"),
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let cm = usage::object_usage("", "configmaps", &json!({}));
        let requested = check(&quota, &cm).expect("room for one");
        assert_eq!(pretty(&requested), "count/configmaps=1");
        let after = charged(&quota, &requested, false);
        assert_eq!(after["status"]["used"]["count/configmaps"], "1");
        assert_eq!(charged(&after, &requested, true)["status"]["used"]["count/configmaps"], "0");
        let refund_below_zero = charged(&quota, &requested, true);
        assert_eq!(refund_below_zero["status"]["used"]["count/configmaps"], "0");
    }

    #[test]
    fn cpu_sums_compare_in_milli_units() {
        let quota = json!({"metadata": {"name": "compute"},
            "status": {"hard": {"requests.cpu": "1", "limits.memory": "1Gi"},
                       "used": {"requests.cpu": "800m", "limits.memory": "512Mi"}}});
        let pod = json!({"spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": "300m"}, "limits": {"memory": "256Mi"}}}]}});
        assert_eq!(
            check(&quota, &usage::pod_usage(&pod)).expect_err("refused"),
            "exceeded quota: compute, requested: requests.cpu=300m, used: requests.cpu=800m, limited: requests.cpu=1"
        );
    }
}
