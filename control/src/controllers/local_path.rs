//! The local-path provisioner: skiff's default StorageClass `local-path` (provisioner
//! `skiff.io/local-path`, `WaitForFirstConsumer`, reclaim `Delete`) and the controller that gives
//! each of its claims a PersistentVolume once the scheduler picked the claim's node
//! (`volume.kubernetes.io/selected-node`): a `hostPath` directory under the node's storage
//! directory (the Node's `skiff.io/local-storage-path` annotation, else the class's `nodePath`
//! parameter, else `/var/lib/skiff/storage`), pinned to that node by `nodeAffinity`, bound to
//! the claim. The kubelet creates the directory when a pod mounts it. A deleted claim takes its
//! volume with it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry, WriteOptions};
use crate::api::storage_class_admission::DEFAULT_CLASS_ANNOTATION;

const NAME: &str = "controller-local-path";
/// The StorageClass skiff creates.
pub const CLASS: &str = "local-path";
/// The provisioner this controller serves.
pub const PROVISIONER: &str = "skiff.io/local-path";
/// Set by the scheduler on a `WaitForFirstConsumer` claim: the node its first pod goes to.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The node agent's storage directory, on its Node.
pub const NODE_STORAGE_ANNOTATION: &str = "skiff.io/local-storage-path";
/// Where volumes go on a node that says nothing.
pub const DEFAULT_NODE_PATH: &str = "/var/lib/skiff/storage";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

pub struct Ctx {
    registry: Arc<Registry>,
    claims: Arc<Informer>,
    volumes: Arc<Informer>,
    classes: Arc<Informer>,
    nodes: Arc<Informer>,
}

/// Starts the controller (and the StorageClass creation) under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let claims = informers.get("", "PersistentVolumeClaim");
    let volumes = informers.get("", "PersistentVolume");
    let classes = informers.get("storage.k8s.io", "StorageClass");
    let nodes = informers.get("", "Node");
    let registry = Arc::clone(informers.registry());
    tokio::spawn(ensure_class(Arc::clone(&registry)));
    let ctx = Arc::new(Ctx { registry, claims: Arc::clone(&claims), volumes: Arc::clone(&volumes), classes, nodes });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        Controller::new(NAME, Arc::clone(&claims))
            .watches(Arc::clone(&volumes), |pv| claim_of(pv).into_iter().collect())
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// Creates the StorageClass `local-path` (the cluster default) unless it exists.
async fn ensure_class(registry: Arc<Registry>) {
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    loop {
        let result = match registry.resource("storage.k8s.io", "StorageClass") {
            Ok(ri) => registry.create(ri, None, class.clone(), &WriteOptions::default()).await.map(drop),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return tracing::info!(class = CLASS, "created the default StorageClass"),
            Err(ApiError::AlreadyExists { .. }) => return,
            Err(e) => {
                tracing::debug!(error = %e, "creating the StorageClass; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The claim a volume is bound to.
fn claim_of(pv: &Value) -> Option<ObjectKey> {
    let r = pv.pointer("/spec/claimRef")?;
    Some(ObjectKey::namespaced(r.get("namespace")?.as_str()?, r.get("name")?.as_str()?))
}

/// The name of the volume provisioned for a claim.
pub fn volume_name(claim: &Value) -> String {
    format!("pvc-{}", object::str_at(claim, &["metadata", "uid"]).unwrap_or_default())
}

/// The PersistentVolume for `claim` of `class` on `node` (its directory under `root`).
pub fn desired_volume(claim: &Value, class: &Value, node: &str, root: &str) -> Value {
    let name = volume_name(claim);
    let spec = claim.get("spec").cloned().unwrap_or(Value::Null);
    let storage = spec.pointer("/resources/requests/storage").cloned().unwrap_or_else(|| json!("1Gi"));
    let dir = format!(
        "{}/{name}_{}_{}",
        root.trim_end_matches('/'),
        object::namespace(claim).unwrap_or_default(),
        object::name(claim)
    );
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.get("accessModes").cloned().unwrap_or_else(|| json!(["ReadWriteOnce"])),
            "persistentVolumeReclaimPolicy": class.get("reclaimPolicy").cloned().unwrap_or_else(|| json!("Delete")),
            "storageClassName": object::name(class),
            "volumeMode": spec.get("volumeMode").cloned().unwrap_or_else(|| json!("Filesystem")),
            "hostPath": {"path": dir, "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": object::namespace(claim), "name": object::name(claim),
                "uid": object::str_at(claim, &["metadata", "uid"]),
            },
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
            ]}]}},
        },
    })
}

/// Where the volumes of `node` go.
fn node_root(node: Option<&Value>, class: &Value) -> String {
    node.and_then(|n| n.pointer("/metadata/annotations").and_then(|a| a.get(NODE_STORAGE_ANNOTATION)))
        .and_then(Value::as_str)
        .or_else(|| class.pointer("/parameters/nodePath").and_then(Value::as_str))
        .unwrap_or(DEFAULT_NODE_PATH)
        .to_string()
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(claim) = ctx.claims.get(&key) else { return release(&key, &ctx).await };
    if object::deletion_timestamp(&claim).is_some() {
        return Ok(Action::Done);
    }
    let class_name = object::str_at(&claim, &["spec", "storageClassName"]).unwrap_or_default();
    let Some(class) = ctx.classes.get(&ObjectKey { namespace: None, name: class_name.to_string() }) else {
        return Ok(Action::Done);
    };
    if object::str_at(&class, &["provisioner"]) != Some(PROVISIONER) {
        return Ok(Action::Done);
    }
    let bound = object::str_at(&claim, &["status", "phase"]) == Some("Bound");
    if bound {
        return Ok(Action::Done);
    }
    let volume = match object::str_at(&claim, &["spec", "volumeName"]).filter(|v| !v.is_empty()) {
        Some(name) => name.to_string(),
        None => {
            let Some(node) = claim.pointer("/metadata/annotations").and_then(|a| a.get(SELECTED_NODE)) else {
                return Ok(Action::Done);
            };
            let node = node.as_str().unwrap_or_default();
            let node_obj = ctx.nodes.get(&ObjectKey { namespace: None, name: node.to_string() });
            let pv = desired_volume(&claim, &class, node, &node_root(node_obj.as_deref(), &class));
            let ri = ctx.registry.resource("", "PersistentVolume")?;
            match ctx.registry.create(ri, None, pv, &opts()).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(claim = %key, %node, "provisioned a local volume");
            volume_name(&claim)
        }
    };
    bind(&ctx.registry, &key, &claim, &volume).await?;
    Ok(Action::Done)
}

fn opts() -> WriteOptions {
    WriteOptions { field_manager: Some(NAME.into()), ..Default::default() }
}

/// Binds the claim to `volume`: its `volumeName`, then both statuses.
async fn bind(registry: &Registry, key: &ObjectKey, claim: &Value, volume: &str) -> Result<(), Error> {
    let ns = key.namespace.as_deref();
    let pvc = registry.resource("", "PersistentVolumeClaim")?;
    let uid = object::str_at(claim, &["metadata", "uid"]).unwrap_or_default().to_string();
    let same = |cur: &Value| object::str_at(cur, &["metadata", "uid"]) == Some(uid.as_str());
    registry
        .update_with(pvc, ns, &key.name, None, &opts(), |cur| {
            if !same(cur) {
                return Err(ApiError::BadRequest("the claim was replaced".into()));
            }
            let mut next = cur.clone();
            next["spec"]["volumeName"] = json!(volume);
            next["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
            next["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] = json!("yes");
            Ok(next)
        })
        .await?;
    let pv_ri = registry.resource("", "PersistentVolume")?;
    let pv = registry.get(pv_ri, None, volume).await?;
    registry
        .update_with(pv_ri, None, volume, Some("status"), &opts(), |cur| {
            let mut next = cur.clone();
            next["status"] = json!({"phase": "Bound"});
            Ok(next)
        })
        .await?;
    registry
        .update_with(pvc, ns, &key.name, Some("status"), &opts(), |cur| {
            let mut next = cur.clone();
            next["status"] = json!({
                "phase": "Bound",
                "accessModes": pv.pointer("/spec/accessModes").cloned().unwrap_or(Value::Null),
                "capacity": pv.pointer("/spec/capacity").cloned().unwrap_or(Value::Null),
            });
            Ok(next)
        })
        .await?;
    Ok(())
}

/// A claim is gone: its provisioned volumes with reclaim policy `Delete` go too.
async fn release(key: &ObjectKey, ctx: &Ctx) -> Result<Action, Error> {
    let ri = ctx.registry.resource("", "PersistentVolume")?;
    for pv in ctx.volumes.list_all() {
        let ours = pv.pointer("/metadata/annotations").and_then(|a| a.get(PROVISIONED_BY)).and_then(Value::as_str)
            == Some(PROVISIONER);
        let delete = object::str_at(&pv, &["spec", "persistentVolumeReclaimPolicy"]) == Some("Delete");
        if ours && delete && claim_of(&pv).as_ref() == Some(key) {
            match ctx.registry.delete(ri, None, object::name(&pv), &DeleteOptions::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => tracing::info!(claim = %key, "deleted its local volume"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_is_pinned_to_the_node_under_its_storage_directory() {
        let claim = json!({"metadata": {"name": "data-web-0", "namespace": "shop", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
                     "storageClassName": "local-path"}});
        let class = json!({"metadata": {"name": "local-path"}, "provisioner": PROVISIONER, "reclaimPolicy": "Delete"});
        let node =
            json!({"metadata": {"name": "n1", "annotations": {NODE_STORAGE_ANNOTATION: "/data/skiff/storage/"}}});
        let pv = desired_volume(&claim, &class, "n1", &node_root(Some(&node), &class));
        assert_eq!(pv["metadata"]["name"], "pvc-u1");
        assert_eq!(pv["spec"]["hostPath"]["path"], "/data/skiff/storage/pvc-u1_shop_data-web-0");
        assert_eq!(pv["spec"]["capacity"]["storage"], "2Gi");
        assert_eq!(pv["spec"]["claimRef"]["uid"], "u1");
        assert_eq!(
            pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0],
            "n1"
        );
        assert_eq!(claim_of(&pv), Some(ObjectKey::namespaced("shop", "data-web-0")));
        assert_eq!(node_root(None, &class), DEFAULT_NODE_PATH);
        let with_path = json!({"metadata": {"name": "c"}, "parameters": {"nodePath": "/srv/vols"}});
        assert_eq!(node_root(None, &with_path), "/srv/vols");
    }
}
