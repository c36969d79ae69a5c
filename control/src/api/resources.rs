//! The table of served resources: group, version, kind, plural, short names, scope and
//! subresources, each tied to its `k8s-openapi` type for typed validation.

use std::sync::Arc;

use k8s_openapi::api::{
    admissionregistration::v1 as admissionregistration, apps::v1 as apps, autoscaling::v1 as autoscaling_v1,
    autoscaling::v2 as autoscaling, batch::v1 as batch, certificates::v1 as certificates,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery, events::v1 as events,
    flowcontrol::v1 as flowcontrol, networking::v1 as networking, node::v1 as node, policy::v1 as policy,
    rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
use k8s_openapi::schemars::{Schema, SchemaGenerator};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Decodes `value` as the resource's typed struct and encodes it back: the result has only the
/// fields the type knows, and the unknown ones are reported by JSON path.
pub type Normalize = fn(Value) -> Result<(Value, Vec<String>), String>;

/// Adds the JSON schema of a built-in kind (and of every type it uses) to a generator's
/// definitions and returns a reference to it; what the OpenAPI documents are built from.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One served resource.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural, the URL path segment.
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Subresources served beside the main resource (`status`, `scale`, `binding`, `log`).
    pub subresources: &'static [&'static str],
    /// Part of `kubectl get all`.
    pub in_category_all: bool,
    pub normalize: Normalize,
    /// The JSON schema of a built-in kind (`None` for custom resources, whose schema is their
    /// CRD's).
    pub schema: Option<SchemaFn>,
    /// For a custom resource (served for a CRD): its schema, storage version, columns, scale.
    pub custom: Option<Arc<crate::api::crd::Custom>>,
    /// For a built-in resource served in a version it is not stored in: how to convert.
    pub conversion: Option<&'static crate::api::conversion::Conversion>,
    /// A delete that removes the object answers with the object (kube-apiserver's stores with
    /// `ReturnDeletedObject`) instead of a success `Status`.
    pub returns_deleted_object: bool,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn singular(&self) -> String {
        match &self.custom {
            Some(custom) if !custom.singular.is_empty() => custom.singular.clone(),
            _ => self.kind.to_lowercase(),
        }
    }

    /// The kind of a list of these (`PodList`; a CRD's `listKind`).
    pub fn list_kind(&self) -> String {
        match &self.custom {
            Some(custom) if !custom.list_kind.is_empty() => custom.list_kind.clone(),
            _ => format!("{}List", self.kind),
        }
    }

    /// False for the versions of a custom resource other than the one it is stored in (they
    /// address the same objects).
    pub fn is_storage_version(&self) -> bool {
        self.conversion.is_none() && self.custom.as_ref().is_none_or(|c| c.storage_version == self.version)
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// Group and resource as Kubernetes writes them in messages: `deployments.apps`, `pods`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Storage prefix of all objects of this resource: `/registry/<group>/<plural>/`.
    pub fn prefix(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// Storage prefix of the objects in one namespace (or all, for `None`).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// Storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.prefix()),
            _ => format!("{}{name}", self.prefix()),
        }
    }
}

/// Whether a `k8s-openapi` scope marker is namespaced.
trait Scope {
    const NAMESPACED: bool;
}
impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

pub(crate) fn normalize<T: DeserializeOwned + Serialize>(value: Value) -> Result<(Value, Vec<String>), String> {
    let mut unknown = Vec::new();
    let typed: T = serde_ignored::deserialize(value, |path| unknown.push(field_path(&path.to_string())))
        .map_err(|e| e.to_string())?;
    let value = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    Ok((value, unknown))
}

/// Turns serde_ignored's path (`?.spec.containers.0.bogus`, `?` for map levels) into the form
/// Kubernetes prints (`spec.containers[0].bogus`).
fn field_path(raw: &str) -> String {
    let mut out = String::new();
    for seg in raw.split('.').filter(|s| !s.is_empty() && *s != "?") {
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

macro_rules! resource {
    ($ty:ty, [$($short:literal),*], [$($sub:literal),*], $all:literal) => {
        ResourceInfo {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            kind: <$ty as Resource>::KIND,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            short_names: &[$($short),*],
            namespaced: <<$ty as Resource>::Scope as Scope>::NAMESPACED,
            subresources: &[$($sub),*],
            in_category_all: $all,
            normalize: normalize::<$ty>,
            schema: Some(|generator| generator.subschema_for::<$ty>()),
            custom: None,
            conversion: None,
            returns_deleted_object: false,
        }
    };
    ($ty:ty, [$($short:literal),*], [$($sub:literal),*], $all:literal, $conversion:expr) => {
        ResourceInfo { conversion: Some($conversion), ..resource!($ty, [$($short),*], [$($sub),*], $all) }
    };
}

/// `ri`, answering a delete with the deleted object (`ReturnDeletedObject` in kube-apiserver's
/// storage of pods, services, service accounts and storage classes).
fn returning_deleted(ri: ResourceInfo) -> ResourceInfo {
    ResourceInfo { returns_deleted_object: true, ..ri }
}

/// Every resource the API server serves.
pub fn all() -> Vec<ResourceInfo> {
    vec![
        resource!(core::Namespace, ["ns"], ["status", "finalize"], false),
        returning_deleted(resource!(
            core::Pod,
            ["po"],
            ["status", "binding", "log", "eviction", "ephemeralcontainers"],
            true
        )),
        resource!(core::ConfigMap, ["cm"], [], false),
        resource!(core::Secret, [], [], false),
        returning_deleted(resource!(core::Service, ["svc"], ["status"], true)),
        resource!(core::Endpoints, ["ep"], [], false),
        resource!(core::Event, ["ev"], [], false),
        resource!(core::Node, ["no"], ["status"], false),
        returning_deleted(resource!(core::ServiceAccount, ["sa"], [], false)),
        resource!(core::PersistentVolume, ["pv"], ["status"], false),
        resource!(core::PersistentVolumeClaim, ["pvc"], ["status"], false),
        resource!(core::ResourceQuota, ["quota"], ["status"], false),
        resource!(core::LimitRange, ["limits"], [], false),
        resource!(core::ReplicationController, ["rc"], ["status", "scale"], true),
        // Computed on each request (api/http/component_status.rs), never stored.
        resource!(core::ComponentStatus, ["cs"], [], false),
        resource!(apps::Deployment, ["deploy"], ["status", "scale"], true),
        resource!(apps::ReplicaSet, ["rs"], ["status", "scale"], true),
        resource!(apps::StatefulSet, ["sts"], ["status", "scale"], true),
        resource!(apps::DaemonSet, ["ds"], ["status"], true),
        resource!(apps::ControllerRevision, [], [], false),
        resource!(batch::Job, [], ["status"], true),
        resource!(batch::CronJob, ["cj"], ["status"], true),
        resource!(coordination::Lease, [], [], false),
        resource!(certificates::CertificateSigningRequest, ["csr"], ["status", "approval"], false),
        resource!(discovery::EndpointSlice, [], [], false),
        resource!(networking::Ingress, ["ing"], ["status"], false),
        resource!(networking::IngressClass, [], [], false),
        resource!(networking::NetworkPolicy, ["netpol"], [], false),
        resource!(policy::PodDisruptionBudget, ["pdb"], ["status"], false),
        resource!(scheduling::PriorityClass, ["pc"], [], false),
        resource!(autoscaling::HorizontalPodAutoscaler, ["hpa"], ["status"], true),
        // Stored as v2 (listed first: the one `by_kind` finds), served as v1 too.
        resource!(autoscaling_v1::HorizontalPodAutoscaler, ["hpa"], ["status"], true, &crate::api::conversion::hpa::V1),
        resource!(node::RuntimeClass, [], [], false),
        returning_deleted(resource!(storage::StorageClass, ["sc"], [], false)),
        resource!(events::Event, [], [], false),
        resource!(rbac::Role, [], [], false),
        resource!(rbac::RoleBinding, [], [], false),
        resource!(rbac::ClusterRole, [], [], false),
        resource!(rbac::ClusterRoleBinding, [], [], false),
        resource!(apiextensions::CustomResourceDefinition, ["crd", "crds"], ["status"], false),
        resource!(admissionregistration::ValidatingWebhookConfiguration, [], [], false),
        resource!(admissionregistration::MutatingWebhookConfiguration, [], [], false),
        resource!(admissionregistration::ValidatingAdmissionPolicy, [], ["status"], false),
        resource!(admissionregistration::ValidatingAdmissionPolicyBinding, [], [], false),
        resource!(apiregistration::APIService, [], ["status"], false),
        resource!(flowcontrol::FlowSchema, [], ["status"], false),
        resource!(flowcontrol::PriorityLevelConfiguration, [], ["status"], false),
    ]
}

/// The resource table with lookups by URL and kind.
#[derive(Debug)]
pub struct Resources {
    list: Vec<ResourceInfo>,
}

impl Default for Resources {
    fn default() -> Self {
        Self { list: all() }
    }
}

impl Resources {
    /// A table of the given resources.
    pub fn from_list(list: Vec<ResourceInfo>) -> Self {
        Self { list }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ResourceInfo> {
        self.list.iter()
    }

    /// The resource served at `/api(s)/<group>/<version>/<plural>`.
    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.list.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&ResourceInfo> {
        self.list.iter().find(|r| r.group == group && r.kind == kind)
    }

    /// The distinct `(group, version)` pairs, core first, in a stable order.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for r in &self.list {
            if !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_and_scopes_come_from_the_types() {
        let resources = Resources::default();
        let pods = resources.by_plural("", "v1", "pods").expect("pods");
        assert!(pods.namespaced);
        assert_eq!(pods.kind, "Pod");
        let nodes = resources.by_plural("", "v1", "nodes").expect("nodes");
        assert!(!nodes.namespaced);
        let deploy = resources.by_kind("apps", "Deployment").expect("deployments");
        assert_eq!(deploy.key(Some("shop"), "web"), "/registry/apps/deployments/shop/web");
        assert_eq!(deploy.group_resource(), "deployments.apps");
    }

    #[test]
    fn normalize_reports_unknown_fields() {
        let pods = Resources::default();
        let pods = pods.by_plural("", "v1", "pods").expect("pods");
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}], "nope": true}
        });
        let (_, unknown) = (pods.normalize)(pod).expect("decodes");
        assert_eq!(unknown.len(), 2, "{unknown:?}");
        assert!(unknown.contains(&"spec.nope".to_string()), "{unknown:?}");
        assert!(unknown.contains(&"spec.containers[0].bogus".to_string()), "{unknown:?}");
    }
}
