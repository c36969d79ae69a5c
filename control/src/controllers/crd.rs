//! The CustomResourceDefinition controller: serves the custom resources of each CRD whose names
//! do not clash with another CRD's in the same group (the router and discovery see them at
//! once), and reports it in `status` (`acceptedNames`, `NamesAccepted`, `Established`,
//! `storedVersions`). A CRD marked for deletion stops taking new objects (`Terminating`), its
//! objects are deleted, then the `customresourcecleanup.apiextensions.k8s.io` finalizer is
//! removed and the CRD goes, and with it its endpoints.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::runtime::{Action, Controller, Error, Informers, ObjectKey};
use crate::api::crd::definition::{self, Names, CLEANUP_FINALIZER};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, ListQuery, Registry, WriteOptions};
use crate::api::resources::ResourceInfo;

const GROUP: &str = "apiextensions.k8s.io";
const KIND: &str = "CustomResourceDefinition";
/// How soon a terminating CRD whose objects are still going is looked at again.
const RECHECK: Duration = Duration::from_millis(500);

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let crds = informers.get(GROUP, KIND);
    let ctx = Arc::new(Ctx { registry: Arc::clone(informers.registry()) });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe("controller-crd");
    supervisor.spawn("controller-crd", move || {
        // One worker: the table of served resources changes one CRD at a time.
        Controller::new("controller-crd", Arc::clone(&crds)).workers(1).run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

fn crd_resource(registry: &Registry) -> Result<&ResourceInfo, ApiError> {
    registry.resource(GROUP, KIND)
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let registry = &ctx.registry;
    let ri = crd_resource(registry)?;
    // Read from the registry, not the informer: the status written last must be seen.
    let crd = match registry.get(ri, None, &key.name).await {
        Ok(crd) => crd,
        Err(ApiError::NotFound { .. }) => {
            registry.custom.set(&key.name, Vec::new());
            return Ok(Action::Done);
        }
        Err(e) => return Err(e.into()),
    };
    if object::deletion_timestamp(&crd).is_some() {
        return terminate(registry, &key.name, &crd).await;
    }
    let mine = definition::names(&crd);
    let conflict = registry
        .custom
        .crds()
        .iter()
        .filter(|(name, _)| **name != key.name)
        .filter_map(|(_, infos)| served_names(infos))
        .find_map(|other| definition::name_conflict(&mine, &other));
    let status = match &conflict {
        Some((reason, message)) => {
            registry.custom.set(&key.name, Vec::new());
            vec![
                ("NamesAccepted", "False", *reason, message.clone()),
                ("Established", "False", "NotAccepted", "not all names are accepted".to_string()),
            ]
        }
        None => {
            // Served before Established is written: whoever waits for it can use the kind.
            registry.custom.set(&key.name, definition::resource_infos(&crd));
            vec![
                ("NamesAccepted", "True", "NoConflicts", "no conflicts found".to_string()),
                ("Established", "True", "InitialNamesAccepted", "the initial names have been accepted".to_string()),
            ]
        }
    };
    let accepted = conflict.is_none();
    write_status(registry, &key.name, |current| {
        let mut next = current.clone();
        for (ty, st, reason, message) in &status {
            set_condition(&mut next, ty, st, reason, message);
        }
        if accepted {
            if let Some(names) = current.pointer("/spec/names") {
                next["status"]["acceptedNames"] = names.clone();
            }
            if let Some(storage) = storage_version(current) {
                let stored =
                    next["status"].get("storedVersions").and_then(Value::as_array).cloned().unwrap_or_default();
                if !stored.iter().any(|v| v == storage.as_str()) {
                    let mut stored = stored;
                    stored.push(json!(storage));
                    next["status"]["storedVersions"] = Value::Array(stored);
                }
            }
        }
        next
    })
    .await?;
    tracing::debug!(crd = %key.name, accepted, "custom resource definition reconciled");
    Ok(Action::Done)
}

/// The names a served CRD holds, from its resources.
fn served_names(infos: &[ResourceInfo]) -> Option<Names> {
    let ri = infos.first()?;
    let custom = ri.custom.as_ref()?;
    Some(Names {
        group: ri.group.to_string(),
        plural: ri.plural.to_string(),
        singular: custom.singular.clone(),
        kind: ri.kind.to_string(),
        list_kind: custom.list_kind.clone(),
        short_names: ri.short_names.iter().map(|s| s.to_string()).collect(),
        categories: custom.categories.clone(),
    })
}

fn storage_version(crd: &Value) -> Option<String> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .map(String::from)
}

/// Sets one condition of `status.conditions`, keeping `lastTransitionTime` unless the status flips.
fn set_condition(crd: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    let st = &mut crd["status"];
    if !st.get("conditions").is_some_and(Value::is_array) {
        st["conditions"] = json!([]);
    }
    let Some(list) = st.get_mut("conditions").and_then(Value::as_array_mut) else { return };
    let existing = list.iter().position(|c| c.get("type").and_then(Value::as_str) == Some(ty));
    let since = existing
        .and_then(|i| list.get(i))
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(object::now_rfc3339()));
    let cond = json!({"type": ty, "status": status, "lastTransitionTime": since, "reason": reason, "message": message});
    match existing {
        Some(i) => list[i] = cond,
        None => list.push(cond),
    }
}

/// Writes the CRD's status through `/status` when `change` alters it.
async fn write_status(registry: &Registry, name: &str, change: impl Fn(&Value) -> Value) -> Result<(), Error> {
    let ri = crd_resource(registry)?;
    let opts = WriteOptions { field_manager: None, ..Default::default() };
    match registry.update_with(ri, None, name, Some("status"), &opts, |current| Ok(change(current))).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A CRD marked for deletion: refuse new objects, delete the existing ones, then let it go.
async fn terminate(registry: &Registry, name: &str, crd: &Value) -> Result<Action, Error> {
    let infos = definition::resource_infos(crd);
    if !object::finalizers(crd).iter().any(|f| f == CLEANUP_FINALIZER) {
        registry.custom.set(name, Vec::new());
        return Ok(Action::Done);
    }
    // Still served (lists, deletes), but creates are refused while it terminates.
    registry.custom.set(name, infos.clone());
    write_status(registry, name, |current| {
        let mut next = current.clone();
        set_condition(
            &mut next,
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        );
        next
    })
    .await?;
    if let Some(ri) = infos.iter().find(|r| r.is_storage_version()) {
        let items = registry.list(ri, &ListQuery::default()).await?.items;
        let any = !items.is_empty();
        for item in items {
            let item_name = object::name(&item).to_string();
            match registry.delete(ri, object::namespace(&item), &item_name, &DeleteOptions::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, crd = name, object = item_name, "deleting a custom object"),
            }
        }
        if any && !registry.list(ri, &ListQuery::default()).await?.items.is_empty() {
            // Objects held by their own finalizers: wait for them.
            return Ok(Action::RequeueAfter(RECHECK));
        }
    }
    let ri = crd_resource(registry)?;
    let removed = registry
        .update_with(ri, None, name, None, &WriteOptions::default(), |current| {
            let mut next = current.clone();
            if let Some(list) = next.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
                list.retain(|f| f != CLEANUP_FINALIZER);
            }
            Ok(next)
        })
        .await;
    match removed {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    registry.custom.set(name, Vec::new());
    tracing::info!(crd = name, "custom resource definition deleted with its objects");
    Ok(Action::Done)
}
