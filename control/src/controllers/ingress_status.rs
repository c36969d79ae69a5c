//! skiff's IngressClass and the Ingress status: at start the IngressClass `skiff`
//! (`spec.controller: skiff.io/ingress`, the cluster default) is created if absent, and every
//! Ingress of a skiff class (or of no class while a skiff class is the default) gets the nodes'
//! InternalIPs as `status.loadBalancer.ingress` (the ADDRESS column): every node agent serves
//! the Ingresses on its address (see `skiff-node`'s `ingress`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use super::service_lb::node_addresses;
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{Registry, WriteOptions};

/// The controller's name (task, field manager).
const NAME: &str = "controller-ingress-status";
/// The IngressClass skiff creates.
pub const CLASS: &str = "skiff";
/// The `spec.controller` of skiff's IngressClasses.
pub const CONTROLLER: &str = "skiff.io/ingress";
/// Marks the default IngressClass.
const DEFAULT_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const GROUP: &str = "networking.k8s.io";

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    ingresses: Arc<Informer>,
    classes: Arc<Informer>,
    nodes: Arc<Informer>,
}

/// Starts the controller (and the IngressClass creation) under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let ingresses = informers.get(GROUP, "Ingress");
    let classes = informers.get(GROUP, "IngressClass");
    let nodes = informers.get("", "Node");
    let registry = Arc::clone(informers.registry());
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(&registry),
        ingresses: Arc::clone(&ingresses),
        classes: Arc::clone(&classes),
        nodes: Arc::clone(&nodes),
    });
    tokio::spawn(ensure_class(registry));
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        let (all, all2) = (Arc::clone(&ingresses), Arc::clone(&ingresses));
        Controller::new(NAME, Arc::clone(&ingresses))
            .watches(Arc::clone(&nodes), move |_node| every(&all))
            .watches(Arc::clone(&classes), move |_class| every(&all2))
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// Creates the IngressClass `skiff` unless it exists; retried until the API answers.
async fn ensure_class(registry: Arc<Registry>) {
    let class = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": CLASS, "annotations": {DEFAULT_ANNOTATION: "true"}},
        "spec": {"controller": CONTROLLER}
    });
    loop {
        let result = match registry.resource(GROUP, "IngressClass") {
            Ok(ri) => registry.create(ri, None, class.clone(), &WriteOptions::default()).await.map(drop),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(class = CLASS, "created the default IngressClass");
                return;
            }
            Err(ApiError::AlreadyExists { .. }) => return,
            Err(e) => {
                tracing::debug!(error = %e, "creating the IngressClass; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn every(ingresses: &Informer) -> Vec<ObjectKey> {
    ingresses.list_all().iter().map(|i| ObjectKey::of(i)).collect()
}

/// Whether skiff serves `ingress`, given every IngressClass.
pub fn is_ours(ingress: &Value, classes: &[Arc<Value>]) -> bool {
    let ours = |c: &&Arc<Value>| object::str_at(c, &["spec", "controller"]) == Some(CONTROLLER);
    let class = object::str_at(ingress, &["spec", "ingressClassName"])
        .or_else(|| ingress.pointer("/metadata/annotations/kubernetes.io~1ingress.class").and_then(Value::as_str));
    match class {
        Some(name) => classes.iter().filter(ours).any(|c| object::name(c) == name),
        None => classes.iter().filter(ours).any(|c| {
            c.pointer("/metadata/annotations").and_then(|a| a.get(DEFAULT_ANNOTATION)).and_then(Value::as_str)
                == Some("true")
        }),
    }
}

/// The `status.loadBalancer` an Ingress of skiff's gets.
pub fn desired_status(ips: &[std::net::IpAddr]) -> Value {
    if ips.is_empty() {
        return json!({});
    }
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    json!({ "ingress": ingress })
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(ing) = ctx.ingresses.get(&key) else { return Ok(Action::Done) };
    if !is_ours(&ing, &ctx.classes.list_all()) {
        return Ok(Action::Done);
    }
    let desired = desired_status(&node_addresses(&ctx.nodes.list_all()));
    let current = ing.pointer("/status/loadBalancer").cloned().unwrap_or_else(|| json!({}));
    if current != desired {
        let ri = ctx.registry.resource(GROUP, "Ingress")?;
        let opts = WriteOptions { field_manager: Some("skiff-ingress".into()), ..Default::default() };
        ctx.registry
            .update_with(ri, key.namespace.as_deref(), &key.name, Some("status"), &opts, |cur| {
                let mut next = cur.clone();
                next["status"]["loadBalancer"] = desired.clone();
                Ok(next)
            })
            .await?;
    }
    Ok(Action::Done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn class(name: &str, controller: &str, default: bool) -> Arc<Value> {
        let annotations = if default { json!({DEFAULT_ANNOTATION: "true"}) } else { json!({}) };
        Arc::new(json!({"metadata": {"name": name, "annotations": annotations}, "spec": {"controller": controller}}))
    }

    #[test]
    fn ours_by_class_name_legacy_annotation_or_default() {
        let classes = vec![class("skiff", CONTROLLER, true), class("nginx", "k8s.io/ingress-nginx", false)];
        assert!(is_ours(&json!({"spec": {"ingressClassName": "skiff"}}), &classes));
        assert!(!is_ours(&json!({"spec": {"ingressClassName": "nginx"}}), &classes));
        assert!(is_ours(
            &json!({"metadata": {"annotations": {"kubernetes.io/ingress.class": "skiff"}}, "spec": {}}),
            &classes
        ));
        assert!(is_ours(&json!({"spec": {}}), &classes), "no class: the default one");
        let not_default = vec![class("skiff", CONTROLLER, false)];
        assert!(!is_ours(&json!({"spec": {}}), &not_default));
    }

    #[test]
    fn status_lists_the_node_addresses() {
        let ips = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(desired_status(&ips), json!({"ingress": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}));
        assert_eq!(desired_status(&[]), json!({}));
    }
}
