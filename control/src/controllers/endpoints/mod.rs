//! Service endpoints. The EndpointSlice and Endpoints controllers (one reconcile per Service
//! writes both): for every Service with a selector, the pods it selects become EndpointSlices
//! (labelled and owned as kube-controller-manager's) and the legacy Endpoints of the same name.
//! Driven by Service, Pod, EndpointSlice and Endpoints changes; writes only what changed, only
//! through the registry. Services without a selector are left to their hand-made endpoints.
//! Also the `kubernetes` Service, pointing at the API server ([`kubernetes`]).

pub mod build;
pub mod kube_dns;
pub mod kubernetes;
mod pace;
mod pod_views;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry, WriteOptions};
use crate::api::selector::LabelSelector;
use build::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, TRIGGER_TIME};

const NAME: &str = "controller-endpoints";

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    services: Arc<Informer>,
    pods: Arc<Informer>,
    slices: Arc<Informer>,
    endpoints: Arc<Informer>,
    /// The selected pods as the endpoints read them, decoded once per pod version.
    views: pod_views::PodViews,
    /// At most one round of writes per Service per batch period.
    pace: pace::Pace,
}

pub use pace::DEFAULT_BATCH_PERIOD;

/// Starts the controller under the informers' supervisor, writing a Service's endpoints at most
/// once per `batch_period`.
pub fn start(informers: &Arc<Informers>, batch_period: std::time::Duration) {
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        services: informers.get("", "Service"),
        pods: informers.get("", "Pod"),
        slices: informers.get("discovery.k8s.io", "EndpointSlice"),
        endpoints: informers.get("", "Endpoints"),
        views: pod_views::PodViews::default(),
        pace: pace::Pace::new(batch_period),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        let services = Arc::clone(&ctx.services);
        Controller::new(NAME, Arc::clone(&ctx.services))
            .watches(Arc::clone(&ctx.pods), move |pod| services_of(&services, pod))
            .watches(Arc::clone(&ctx.slices), |slice| slice_service(slice).into_iter().collect())
            .watches(Arc::clone(&ctx.endpoints), |ep| vec![ObjectKey::of(ep)])
            .workers(2)
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// The selector of a Service; `None` without one (manual endpoints).
fn selector(svc: &Value) -> Option<LabelSelector> {
    let map = svc.pointer("/spec/selector").and_then(Value::as_object).filter(|m| !m.is_empty())?;
    LabelSelector::from_match_labels(map).ok()
}

/// The Services in the pod's namespace whose selector matches it.
fn services_of(services: &Informer, pod: &Value) -> Vec<ObjectKey> {
    let Some(ns) = object::namespace(pod) else { return Vec::new() };
    let labels = object::labels(pod);
    services
        .list(Some(ns))
        .iter()
        .filter(|s| selector(s).is_some_and(|sel| sel.matches(&labels)))
        .map(|s| ObjectKey::of(s))
        .collect()
}

/// The Service of a slice this controller manages.
fn slice_service(slice: &Value) -> Option<ObjectKey> {
    let labels = object::labels(slice);
    if labels.get(MANAGED_BY_LABEL).and_then(Value::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let name = labels.get(SERVICE_NAME_LABEL).and_then(Value::as_str)?;
    Some(ObjectKey::namespaced(object::namespace(slice)?, name))
}

fn opts(manager: &str) -> WriteOptions {
    WriteOptions { field_manager: Some(manager.into()), ..Default::default() }
}

/// Whether `current` already holds what `desired` asks (the fields the controller owns).
fn same(current: &Value, desired: &Value, fields: &[&str]) -> bool {
    let labels_same = desired
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| current.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v));
    let empty = json!([]);
    let field = |obj: &Value, f: &str| obj.get(f).filter(|v| !v.is_null()).cloned().unwrap_or_else(|| empty.clone());
    labels_same && fields.iter().all(|f| field(current, f) == field(desired, f))
}

/// `current` with `desired`'s labels, ownerReferences and `fields`.
fn merged(current: &Value, desired: &Value, fields: &[&str]) -> Value {
    let mut next = current.clone();
    if let Some(labels) = desired.pointer("/metadata/labels").and_then(Value::as_object) {
        let meta = object::meta_mut(&mut next);
        let slot = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(map) = slot.as_object_mut() {
            map.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(owners) = desired.pointer("/metadata/ownerReferences") {
            meta.insert("ownerReferences".into(), owners.clone());
        }
    }
    if let Some(map) = next.as_object_mut() {
        for f in fields {
            map.insert((*f).to_string(), desired.get(*f).cloned().unwrap_or_else(|| json!([])));
        }
    }
    next
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(ns) = key.ns() else { return Ok(Action::Done) };
    let svc = ctx.services.get(&key);
    let sel = svc.as_deref().filter(|s| object::deletion_timestamp(s).is_none()).and_then(selector);
    let (Some(svc), Some(sel)) = (svc, sel) else {
        remove(&ctx, &key, ns).await?;
        return Ok(Action::Done);
    };
    if let Some(wait) = ctx.pace.wait(&key, std::time::Instant::now()) {
        return Ok(Action::RequeueAfter(wait));
    }
    let round = write(&ctx, &key, ns, &svc, &sel).await?;
    if round != Round::Unchanged {
        ctx.pace.wrote(&key, std::time::Instant::now());
    }
    Ok(match round {
        // A slice the informer has not shown yet: look again once it has.
        Round::Raced => Action::RequeueAfter(std::time::Duration::ZERO),
        Round::Unchanged | Round::Written => Action::Done,
    })
}

/// The EndpointSlices this controller made for the Service `key`.
fn owned_slices(ctx: &Ctx, ns: &str, key: &ObjectKey) -> Vec<Arc<Value>> {
    ctx.slices.list(Some(ns)).into_iter().filter(|s| slice_service(s).as_ref() == Some(key)).collect()
}

/// No Service (or no selector any more): this controller's objects go.
async fn remove(ctx: &Ctx, key: &ObjectKey, ns: &str) -> Result<(), Error> {
    ctx.views.forget(key);
    ctx.pace.forget(key);
    let slice_ri = ctx.registry.resource("discovery.k8s.io", "EndpointSlice")?;
    for slice in owned_slices(ctx, ns, key) {
        delete(&ctx.registry, slice_ri, ns, object::name(&slice)).await?;
    }
    if let Some(ep) = ctx.endpoints.get(key) {
        let ours = ep.pointer("/metadata/annotations").and_then(|a| a.get(TRIGGER_TIME)).is_some();
        if ours && ctx.services.get(key).is_none_or(|s| selector(&s).is_none()) {
            let ep_ri = ctx.registry.resource("", "Endpoints")?;
            delete(&ctx.registry, ep_ri, ns, &key.name).await?;
        }
    }
    Ok(())
}

/// What one round of writes for a Service came to.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    Unchanged,
    Written,
    /// A slice to create existed already.
    Raced,
}

/// Writes what differs of the Service's EndpointSlices and Endpoints.
async fn write(ctx: &Ctx, key: &ObjectKey, ns: &str, svc: &Value, sel: &LabelSelector) -> Result<Round, Error> {
    let slice_ri = ctx.registry.resource("discovery.k8s.io", "EndpointSlice")?;
    let ep_ri = ctx.registry.resource("", "Endpoints")?;
    let mut round = Round::Unchanged;
    let selected = ctx.pods.cached_where(Some(ns), |pod| pod.matches(sel));
    let pods = ctx.views.of(key, &selected);
    let pod_refs: Vec<&build::PodEndpoint> = pods.iter().map(|p| p.as_ref()).collect();

    // EndpointSlices.
    let desired = build::desired_slices(svc, &pod_refs);
    let mut existing: BTreeMap<String, Arc<Value>> =
        owned_slices(ctx, ns, key).into_iter().map(|s| (object::name(&s).to_string(), s)).collect();
    const SLICE_FIELDS: &[&str] = &["addressType", "endpoints", "ports"];
    for want in desired {
        let name = object::name(&want).to_string();
        match existing.remove(&name) {
            Some(have) if same(&have, &want, SLICE_FIELDS) => {}
            Some(_) => {
                round = Round::Written;
                let r = ctx
                    .registry
                    .update_with(slice_ri, Some(ns), &name, None, &opts(MANAGED_BY), |cur| {
                        Ok(merged(cur, &want, SLICE_FIELDS))
                    })
                    .await;
                tolerate_gone(r.map(|_| ()))?;
            }
            None => match ctx.registry.create(slice_ri, Some(ns), want, &opts(MANAGED_BY)).await {
                Ok(_) => round = Round::Written,
                Err(ApiError::AlreadyExists { .. }) => return Ok(Round::Raced),
                Err(e) => return Err(e.into()),
            },
        }
    }
    for name in existing.keys() {
        round = Round::Written;
        delete(&ctx.registry, slice_ri, ns, name).await?;
    }

    // The legacy Endpoints.
    let mut want = build::desired_endpoints(svc, &pod_refs);
    const EP_FIELDS: &[&str] = &["subsets"];
    match ctx.endpoints.get(key) {
        Some(have) if same(&have, &want, EP_FIELDS) => {}
        Some(_) => {
            round = Round::Written;
            let now = object::now_rfc3339();
            let r = ctx
                .registry
                .update_with(ep_ri, Some(ns), &key.name, None, &opts("endpoint-controller"), |cur| {
                    let mut next = merged(cur, &want, EP_FIELDS);
                    if next == *cur {
                        return Ok(next);
                    }
                    set_trigger_time(&mut next, &now);
                    Ok(next)
                })
                .await;
            tolerate_gone(r.map(|_| ()))?;
        }
        None => {
            round = Round::Written;
            set_trigger_time(&mut want, &object::now_rfc3339());
            match ctx.registry.create(ep_ri, Some(ns), want, &opts("endpoint-controller")).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(round)
}

fn set_trigger_time(ep: &mut Value, now: &str) {
    let meta = object::meta_mut(ep);
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if let Some(map) = annotations.as_object_mut() {
        map.insert(TRIGGER_TIME.into(), json!(now));
    }
}

fn tolerate_gone(r: Result<(), ApiError>) -> Result<(), Error> {
    match r {
        Ok(()) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn delete(
    registry: &Registry,
    ri: &crate::api::resources::ResourceInfo,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    tolerate_gone(registry.delete(ri, Some(ns), name, &DeleteOptions::default()).await.map(|_| ()))
}

#[cfg(test)]
mod controller_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_objects_are_not_rewritten() {
        let want = json!({"metadata": {"labels": {"a": "b"}}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        let mut have = want.clone();
        have["metadata"]["labels"]["extra"] = json!("kept");
        have["metadata"]["resourceVersion"] = json!("7");
        assert!(same(&have, &want, &["subsets"]));
        have["subsets"] = json!([]);
        assert!(!same(&have, &want, &["subsets"]));
        let next = merged(&have, &want, &["subsets"]);
        assert!(same(&next, &want, &["subsets"]) && next["metadata"]["labels"]["extra"] == "kept");
        // An empty list and an absent field are the same.
        assert!(same(&json!({"metadata": {}}), &json!({"metadata": {}, "subsets": []}), &["subsets"]));
    }
}
