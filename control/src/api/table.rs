//! Server-side printing for `kubectl get`: the columns and cells of a `meta.k8s.io/v1` Table.
//!
//! This is a port of `k8s.io/kubernetes/pkg/printers/internalversion/printers.go` over untyped
//! JSON. As in the real API server, rows always carry every cell, wide (`priority: 1`) ones
//! included; kubectl hides the wide columns unless `-o wide` is given. Column names use
//! Kubernetes' spelling (`Name`, `Up-to-date`, `Port(s)`); kubectl upper-cases them.
//!
//! Every accessor is defensive: missing fields and wrong JSON types print as Kubernetes prints a
//! zero value (`""`, `0`, `<none>`, `<unknown>`), never panic.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};

use super::selector::from_label_selector;

mod cluster;

// ---------------------------------------------------------------------------------------------
// Human durations
// ---------------------------------------------------------------------------------------------

/// Formats a duration with ~2-3 significant figures, exactly like Kubernetes'
/// `duration.HumanDuration`: `59s`, `119s`, `2m`, `9m59s`, `10m`, `179m`, `3h`, `7h59m`, `47h`,
/// `2d`, `7d23h`, `8d`, `729d`, `2y`, `7y364d`, `8y`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    if hours < 24 * 365 * 8 {
        return with_remainder(days / 365, "y", days % 365, "d");
    }
    format!("{}y", days / 365)
}

/// Formats `<major><unit>` followed by `<minor><unit>` unless the minor part is zero.
fn with_remainder(major: u64, major_unit: &str, minor: u64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

/// [`human_duration`] for signed durations: up to one second in the future (clock skew) prints
/// as `0s`, anything further as `<invalid>`.
fn human_signed(d: SignedDuration) -> String {
    if d.as_secs() < -1 {
        "<invalid>".to_string()
    } else if d.is_negative() {
        "0s".to_string()
    } else {
        human_duration(d.unsigned_abs())
    }
}

/// Time elapsed since `t`, or `<unknown>` when the timestamp is absent.
fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_signed(now.duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Defensive JSON accessors
// ---------------------------------------------------------------------------------------------

/// The value at a path of object keys.
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

/// The string at `path`, or `""`.
fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or_default()
}

/// The string at `path` when present and non-empty.
fn nonempty<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    Some(text(v, path)).filter(|s| !s.is_empty())
}

/// The integer at `path` (integral floats accepted), if any.
fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    let value = at(v, path)?;
    value.as_i64().or_else(|| value.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

/// The integer at `path`, or 0.
fn int(v: &Value, path: &[&str]) -> i64 {
    opt_int(v, path).unwrap_or(0)
}

/// The boolean at `path`, if any.
fn flag(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

/// The array at `path`, or an empty slice.
fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// The object at `path`, if any.
fn object<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    at(v, path).and_then(Value::as_object)
}

/// The RFC 3339 timestamp at `path`, if present and parseable.
fn time(v: &Value, path: &[&str]) -> Option<Timestamp> {
    nonempty(v, path).and_then(|s| s.parse().ok())
}

/// `metadata.name`.
fn name(obj: &Value) -> &str {
    text(obj, &["metadata", "name"])
}

/// The AGE cell: time since `metadata.creationTimestamp`.
fn age(obj: &Value, now: Timestamp) -> Value {
    Value::from(since(time(obj, &["metadata", "creationTimestamp"]), now))
}

/// Whether `metadata.deletionTimestamp` is set.
fn is_deleting(obj: &Value) -> bool {
    at(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null())
}

/// `s`, or `<none>` when empty.
fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// A JSON scalar rendered as text (strings unquoted).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The status of the first condition of `ty` is `True` (`status.conditions`).
fn condition_true(obj: &Value, ty: &str) -> bool {
    list(obj, &["status", "conditions"])
        .iter()
        .find(|c| text(c, &["type"]) == ty)
        .is_some_and(|c| text(c, &["status"]) == "True")
}

// ---------------------------------------------------------------------------------------------
// Shared cell formatting
// ---------------------------------------------------------------------------------------------

/// `labels.FormatLabels`: sorted `k=v` pairs joined by `,`, `<none>` when empty.
fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = labels.into_iter().flatten().map(|(k, v)| format!("{k}={}", scalar_text(v))).collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// `metav1.FormatLabelSelector`: the canonical selector string, `<none>` when empty, `<error>`
/// when invalid.
fn format_label_selector(sel: Option<&Value>) -> String {
    match from_label_selector(sel.unwrap_or(&Value::Null)) {
        Ok(s) => or_none(&s.to_string()),
        Err(_) => "<error>".to_string(),
    }
}

/// The Deployment SELECTOR cell: the canonical selector string, `<invalid>` when invalid.
fn plain_label_selector(sel: Option<&Value>) -> String {
    match from_label_selector(sel.unwrap_or(&Value::Null)) {
        Ok(s) => s.to_string(),
        Err(_) => "<invalid>".to_string(),
    }
}

/// `layoutContainerCells`: comma-joined container names and images of a pod spec.
fn container_cells(pod_spec: Option<&Value>) -> [Value; 2] {
    let containers = pod_spec.map(|s| list(s, &["containers"])).unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    [Value::from(names.join(",")), Value::from(images.join(","))]
}

/// The pod spec of a workload's `spec.template`.
fn template_spec(obj: &Value) -> Option<&Value> {
    at(obj, &["spec", "template", "spec"])
}

/// `printBoolPtr`: `True`, `False` or `<unset>`.
fn bool_ptr(v: Option<bool>) -> String {
    match v {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Column definitions
// ---------------------------------------------------------------------------------------------

/// One `TableColumnDefinition`.
struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: u8,
    description: &'static str,
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";
const SELECTOR_DOC: &str = "Label query over pods that should match the replica count.";

/// A default-priority column.
const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", priority: 0, description }
}

/// A column shown only with `-o wide`.
const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", priority: 1, description }
}

const NAME: Column = Column { name: "Name", ty: "string", format: "name", priority: 0, description: NAME_DOC };
const AGE: Column = col("Age", "string", AGE_DOC);
const CONTAINERS: Column = wide("Containers", "string", CONTAINERS_DOC);
const IMAGES: Column = wide("Images", "string", IMAGES_DOC);
const SELECTOR: Column = wide("Selector", "string", SELECTOR_DOC);

const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "Replicas is the number of desired replicas."),
    col("Current", "integer", "Replicas is the most recently observed number of replicas."),
    col("Ready", "integer", "The number of ready replicas for this replica set."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const STATEFUL_SET_COLUMNS: &[Column] =
    &[NAME, col("Ready", "string", "Number of the pod with ready state"), AGE, CONTAINERS, IMAGES];

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
    col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
    col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
    col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod."),
    col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col("Completions", "string", "The number of pods which reached phase Succeeded."),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    col("Timezone", "string", "The time zone name for the given schedule."),
    col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions."),
    col("Active", "integer", "A list of pointers to currently running jobs."),
    col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "type determines how the Service is exposed."),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    col("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

const NAMESPACE_COLUMNS: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "string", "The object that this event is about."),
    wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    wide("Count", "string", "The number of times this event has occurred."),
    Column { name: "Name", ty: "string", format: "name", priority: 1, description: NAME_DOC },
];

const CONFIG_MAP_COLUMNS: &[Column] = &[NAME, col("Data", "string", "Data contains the configuration data."), AGE];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "Used to facilitate programmatic handling of secret data."),
    col("Data", "string", "Data contains the secret data."),
    AGE,
];

const ENDPOINTS_COLUMNS: &[Column] =
    &[NAME, col("Endpoints", "string", "The set of all endpoints is the union of all subsets."), AGE];

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
    col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
    AGE,
];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
];

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
    col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
    col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
    col("StorageClass", "string", "StorageClass of the pvc"),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
];

const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
    col(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
    ),
    col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
    AGE,
];

const PV_COLUMNS: &[Column] = &[
    NAME,
    col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
    col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
    col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
    col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
    col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
    col("StorageClass", "string", "storageClassName is the name of StorageClass to which this persistent volume belongs."),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
    col("Reason", "string", "reason is a brief CamelCase string that describes any failure."),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
];

const LEASE_COLUMNS: &[Column] =
    &[NAME, col("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."), AGE];

const COMPONENT_STATUS_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the component conditions"),
    col("Message", "string", "Message of the component conditions"),
    col("Error", "string", "Errors of the component conditions"),
];

/// A ComponentStatus row: `Healthy` when its Healthy condition is True, as kube-apiserver prints it.
fn component_status_cells(obj: &Value) -> Vec<Value> {
    let conditions = obj.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let healthy = conditions.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Healthy"));
    let field = |c: Option<&Value>, k: &str| c.and_then(|c| c.get(k)).and_then(Value::as_str).unwrap_or("").to_string();
    let status = match healthy.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Healthy",
        Some(_) => "Unhealthy",
        None => "Unknown",
    };
    vec![name(obj).into(), status.into(), field(healthy, "message").into(), field(healthy, "error").into()]
}

/// Validating- and MutatingWebhookConfigurations.
const WEBHOOK_CONFIGURATION_COLUMNS: &[Column] =
    &[NAME, col("Webhooks", "integer", "Webhooks indicates the number of webhooks in the configuration."), AGE];

const POLICY_COLUMNS: &[Column] = &[
    NAME,
    col("Validations", "integer", "Validations indicates the number of validation expressions"),
    col("ParamKind", "string", "ParamKind specifies the kind of resources used to parameterize this policy"),
    AGE,
];

const POLICY_BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("PolicyName", "string", "PolicyName indicates the name of the policy that is being bound"),
    col("ParamRef", "string", "ParamRef indicates the param resource that the policy is configured with"),
    AGE,
];

const RUNTIME_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Handler", "string", "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class."),
    AGE,
];

const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
];

const PDB_COLUMNS: &[Column] = &[
    NAME,
    col("Min Available", "string", "The minimum number of pods that must be available."),
    col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
    col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
    AGE,
];

const HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "string", "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count."),
    col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used)."),
    col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
    col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
    col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler."),
    AGE,
];

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col("Class", "string", "The name of the IngressClass resource that should be used for ingress."),
    col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller that is responsible for handling this class"),
    col("Parameters", "string", "A reference to a resource with additional parameters"),
    AGE,
];

const DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

/// The column set of a kind.
fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => POD_COLUMNS,
        "Deployment" => DEPLOYMENT_COLUMNS,
        "ReplicaSet" | "ReplicationController" => REPLICA_SET_COLUMNS,
        "StatefulSet" => STATEFUL_SET_COLUMNS,
        "DaemonSet" => DAEMON_SET_COLUMNS,
        "Job" => JOB_COLUMNS,
        "CronJob" => CRON_JOB_COLUMNS,
        "Service" => SERVICE_COLUMNS,
        "Ingress" => INGRESS_COLUMNS,
        "IngressClass" => INGRESS_CLASS_COLUMNS,
        "Node" => NODE_COLUMNS,
        "Namespace" => NAMESPACE_COLUMNS,
        "Event" => EVENT_COLUMNS,
        "ConfigMap" => CONFIG_MAP_COLUMNS,
        "Secret" => SECRET_COLUMNS,
        "Endpoints" => ENDPOINTS_COLUMNS,
        "EndpointSlice" => ENDPOINT_SLICE_COLUMNS,
        "ServiceAccount" => SERVICE_ACCOUNT_COLUMNS,
        "PersistentVolumeClaim" => PVC_COLUMNS,
        "PersistentVolume" => PV_COLUMNS,
        "StorageClass" => STORAGE_CLASS_COLUMNS,
        "Lease" => LEASE_COLUMNS,
        "ComponentStatus" => COMPONENT_STATUS_COLUMNS,
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => WEBHOOK_CONFIGURATION_COLUMNS,
        "ValidatingAdmissionPolicy" => POLICY_COLUMNS,
        "ValidatingAdmissionPolicyBinding" => POLICY_BINDING_COLUMNS,
        "RuntimeClass" => RUNTIME_CLASS_COLUMNS,
        "ResourceQuota" => RESOURCE_QUOTA_COLUMNS,
        "PodDisruptionBudget" => PDB_COLUMNS,
        "HorizontalPodAutoscaler" => HPA_COLUMNS,
        _ => cluster::columns(kind).unwrap_or(DEFAULT_COLUMNS),
    }
}

/// The `columnDefinitions` of a Table listing objects of `kind`: JSON objects with `name`,
/// `type`, `format`, `description` and `priority` (0 = default, 1 = only with `-o wide`).
/// Unknown kinds get `Name` and `Age`.
pub fn column_definitions(kind: &str) -> Vec<Value> {
    columns(kind)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

/// The cells of one Table row for `obj`, in the order of [`column_definitions`] (wide cells
/// included). `now` is the reference time for the age-like columns.
pub fn row_cells(kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match kind {
        "Pod" => pod_cells(obj, now),
        "Deployment" => deployment_cells(obj, now),
        "ReplicaSet" => replica_set_cells(obj, now),
        "ReplicationController" => replication_controller_cells(obj, now),
        "StatefulSet" => stateful_set_cells(obj, now),
        "DaemonSet" => daemon_set_cells(obj, now),
        "Job" => job_cells(obj, now),
        "CronJob" => cron_job_cells(obj, now),
        "Service" => service_cells(obj, now),
        "Ingress" => ingress_cells(obj, now),
        "IngressClass" => ingress_class_cells(obj, now),
        "Node" => node_cells(obj, now),
        "Namespace" => vec![name(obj).into(), text(obj, &["status", "phase"]).into(), age(obj, now)],
        "Event" => event_cells(obj, now),
        "ConfigMap" => vec![name(obj).into(), config_map_data_count(obj).into(), age(obj, now)],
        "Secret" => secret_cells(obj, now),
        "Endpoints" => vec![name(obj).into(), format_endpoints(obj).into(), age(obj, now)],
        "EndpointSlice" => endpoint_slice_cells(obj, now),
        "ServiceAccount" => {
            vec![name(obj).into(), (list(obj, &["secrets"]).len() as i64).into(), age(obj, now)]
        }
        "PersistentVolumeClaim" => pvc_cells(obj, now),
        "PersistentVolume" => pv_cells(obj, now),
        "StorageClass" => storage_class_cells(obj, now),
        "Lease" => vec![name(obj).into(), text(obj, &["spec", "holderIdentity"]).into(), age(obj, now)],
        "ComponentStatus" => component_status_cells(obj),
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            vec![name(obj).into(), (list(obj, &["webhooks"]).len() as i64).into(), age(obj, now)]
        }
        "ValidatingAdmissionPolicy" => {
            let kind = obj
                .pointer("/spec/paramKind")
                .map(|k| format!("{}/{}", k["apiVersion"].as_str().unwrap_or(""), k["kind"].as_str().unwrap_or("")));
            vec![
                name(obj).into(),
                (list(obj, &["spec", "validations"]).len() as i64).into(),
                kind.unwrap_or_else(|| "<unset>".into()).into(),
                age(obj, now),
            ]
        }
        "ValidatingAdmissionPolicyBinding" => {
            let param = obj.pointer("/spec/paramRef").map(|r| {
                let ns = r["namespace"].as_str().map(|n| format!("{n}/")).unwrap_or_default();
                format!("{ns}{}", r["name"].as_str().unwrap_or("*"))
            });
            vec![
                name(obj).into(),
                text(obj, &["spec", "policyName"]).into(),
                param.unwrap_or_else(|| "<unset>".into()).into(),
                age(obj, now),
            ]
        }
        "RuntimeClass" => vec![name(obj).into(), text(obj, &["handler"]).into(), age(obj, now)],
        "ResourceQuota" => resource_quota_cells(obj, now),
        "PodDisruptionBudget" => pdb_cells(obj, now),
        "HorizontalPodAutoscaler" => hpa_cells(obj, now),
        _ => cluster::cells(kind, obj, now).unwrap_or_else(|| vec![name(obj).into(), age(obj, now)]),
    }
}

// ---------------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------------

/// Restart count and the time of the latest restart of a set of containers.
#[derive(Default, Clone, Copy)]
struct Restarts {
    count: i64,
    last: Option<Timestamp>,
}

impl Restarts {
    /// Accounts one container status.
    fn add(&mut self, status: &Value) {
        self.count += int(status, &["restartCount"]);
        let finished = time(status, &["lastState", "terminated", "finishedAt"]);
        self.last = self.last.max(finished);
    }

    /// The RESTARTS cell: `3`, or `3 (5m ago)` when the last restart time is known.
    fn cell(&self, now: Timestamp) -> String {
        match self.last {
            Some(last) if self.count != 0 => format!("{} ({} ago)", self.count, since(Some(last), now)),
            _ => self.count.to_string(),
        }
    }
}

/// READY / STATUS / RESTARTS of a pod, computed as `printPod` does.
struct PodSummary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: Restarts,
}

/// Builds the pod summary.
fn pod_summary(pod: &Value) -> PodSummary {
    let phase = text(pod, &["status", "phase"]);
    let mut reason = nonempty(pod, &["status", "reason"]).unwrap_or(phase).to_string();
    let gated = list(pod, &["status", "conditions"])
        .iter()
        .any(|c| text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated");
    if gated {
        reason = "SchedulingGated".to_string();
    }
    let init_specs = list(pod, &["spec", "initContainers"]);
    let sidecar_specs = init_specs.iter().filter(|c| text(c, &["restartPolicy"]) == "Always");
    let sidecars: HashSet<&str> = sidecar_specs.clone().map(|c| text(c, &["name"])).collect();
    let total = list(pod, &["spec", "containers"]).len() + sidecar_specs.count();
    let mut summary = PodSummary { ready: 0, total, reason, restarts: Restarts::default() };

    let mut sidecar_restarts = Restarts::default();
    let initializing = scan_init_containers(pod, &sidecars, &mut summary, &mut sidecar_restarts);
    if !initializing || condition_true(pod, "Initialized") {
        summary.restarts = sidecar_restarts;
        scan_containers(pod, &mut summary);
    }

    if is_deleting(pod) && text(pod, &["status", "reason"]) == "NodeLost" {
        summary.reason = "Unknown".to_string();
    } else if is_deleting(pod) && !matches!(phase, "Failed" | "Succeeded") {
        summary.reason = "Terminating".to_string();
    }
    summary
}

/// Walks init container statuses; returns true while the pod is still initializing (and sets
/// the `Init:...` reason).
fn scan_init_containers(
    pod: &Value,
    sidecars: &HashSet<&str>,
    summary: &mut PodSummary,
    sidecar_restarts: &mut Restarts,
) -> bool {
    let init_count = list(pod, &["spec", "initContainers"]).len();
    for (i, status) in list(pod, &["status", "initContainerStatuses"]).iter().enumerate() {
        summary.restarts.add(status);
        let is_sidecar = sidecars.contains(text(status, &["name"]));
        if is_sidecar {
            sidecar_restarts.add(status);
        }
        let terminated = object(status, &["state", "terminated"]);
        if terminated.is_some() && int(status, &["state", "terminated", "exitCode"]) == 0 {
            continue;
        }
        if is_sidecar && flag(status, &["started"]) == Some(true) {
            if flag(status, &["ready"]) == Some(true) {
                summary.ready += 1;
            }
            continue;
        }
        let waiting_reason = text(status, &["state", "waiting", "reason"]);
        summary.reason = if terminated.is_some() {
            format!("Init:{}", terminated_reason(status))
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{init_count}")
        };
        return true;
    }
    false
}

/// The reason of a terminated container: its `reason`, else `Signal:N` or `ExitCode:N`.
fn terminated_reason(status: &Value) -> String {
    if let Some(reason) = nonempty(status, &["state", "terminated", "reason"]) {
        return reason.to_string();
    }
    let signal = int(status, &["state", "terminated", "signal"]);
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int(status, &["state", "terminated", "exitCode"]))
    }
}

/// Walks the regular container statuses (last to first, so the first container's reason wins).
fn scan_containers(pod: &Value, summary: &mut PodSummary) {
    let mut has_running = false;
    for status in list(pod, &["status", "containerStatuses"]).iter().rev() {
        summary.restarts.add(status);
        let waiting_reason = text(status, &["state", "waiting", "reason"]);
        if !waiting_reason.is_empty() {
            summary.reason = waiting_reason.to_string();
        } else if object(status, &["state", "terminated"]).is_some() {
            summary.reason = terminated_reason(status);
        } else if flag(status, &["ready"]) == Some(true) && object(status, &["state", "running"]).is_some() {
            has_running = true;
            summary.ready += 1;
        }
    }
    if summary.reason == "Completed" && has_running {
        let ready = list(pod, &["status", "conditions"])
            .iter()
            .any(|c| text(c, &["type"]) == "Ready" && text(c, &["status"]) == "True");
        summary.reason = if ready { "Running" } else { "NotReady" }.to_string();
    }
}

/// The READINESS GATES cell: `true/total`, or `<none>`.
fn readiness_gates(pod: &Value) -> String {
    let gates = list(pod, &["spec", "readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = list(pod, &["status", "conditions"]);
    let passing = gates
        .iter()
        .filter(|gate| {
            let ty = text(gate, &["conditionType"]);
            conditions.iter().find(|c| text(c, &["type"]) == ty).is_some_and(|c| text(c, &["status"]) == "True")
        })
        .count();
    format!("{passing}/{}", gates.len())
}

/// Pod: Name, Ready, Status, Restarts, Age, IP, Node, Nominated Node, Readiness Gates.
fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let summary = pod_summary(pod);
    let ip = list(pod, &["status", "podIPs"])
        .first()
        .map(|p| text(p, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, &["status", "podIP"]));
    vec![
        name(pod).into(),
        format!("{}/{}", summary.ready, summary.total).into(),
        summary.reason.into(),
        summary.restarts.cell(now).into(),
        age(pod, now),
        or_none(ip).into(),
        or_none(text(pod, &["spec", "nodeName"])).into(),
        or_none(text(pod, &["status", "nominatedNodeName"])).into(),
        readiness_gates(pod).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

/// `spec.replicas`, defaulting to 1 as the API server's defaulting would.
fn desired_replicas(obj: &Value) -> i64 {
    opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
}

/// Deployment: Name, Ready, Up-to-date, Available, Age, Containers, Images, Selector.
fn deployment_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let [containers, images] = container_cells(template_spec(obj));
    vec![
        name(obj).into(),
        format!("{}/{}", int(obj, &["status", "readyReplicas"]), desired_replicas(obj)).into(),
        int(obj, &["status", "updatedReplicas"]).into(),
        int(obj, &["status", "availableReplicas"]).into(),
        age(obj, now),
        containers,
        images,
        plain_label_selector(at(obj, &["spec", "selector"])).into(),
    ]
}

/// ReplicaSet: Name, Desired, Current, Ready, Age, Containers, Images, Selector.
fn replica_set_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut cells = replica_counts(obj, now);
    cells.push(format_label_selector(at(obj, &["spec", "selector"])).into());
    cells
}

/// ReplicationController: like ReplicaSet, with a map selector.
fn replication_controller_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut cells = replica_counts(obj, now);
    cells.push(format_labels(object(obj, &["spec", "selector"])).into());
    cells
}

/// The cells ReplicaSet and ReplicationController share (all but the selector).
fn replica_counts(obj: &Value, now: Timestamp) -> Vec<Value> {
    let [containers, images] = container_cells(template_spec(obj));
    vec![
        name(obj).into(),
        desired_replicas(obj).into(),
        int(obj, &["status", "replicas"]).into(),
        int(obj, &["status", "readyReplicas"]).into(),
        age(obj, now),
        containers,
        images,
    ]
}

/// StatefulSet: Name, Ready, Age, Containers, Images.
fn stateful_set_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let [containers, images] = container_cells(template_spec(obj));
    vec![
        name(obj).into(),
        format!("{}/{}", int(obj, &["status", "readyReplicas"]), desired_replicas(obj)).into(),
        age(obj, now),
        containers,
        images,
    ]
}

/// DaemonSet: Name, Desired, Current, Ready, Up-to-date, Available, Node Selector, Age,
/// Containers, Images, Selector.
fn daemon_set_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let [containers, images] = container_cells(template_spec(obj));
    let status = |field: &str| Value::from(int(obj, &["status", field]));
    vec![
        name(obj).into(),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        format_labels(object(obj, &["spec", "template", "spec", "nodeSelector"])).into(),
        age(obj, now),
        containers,
        images,
        format_label_selector(at(obj, &["spec", "selector"])).into(),
    ]
}

/// Whether the first Job condition of `ty` has status `True`.
fn job_condition(job: &Value, ty: &str) -> bool {
    condition_true(job, ty)
}

/// The Job STATUS cell.
fn job_status(job: &Value) -> &'static str {
    if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if is_deleting(job) {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// The Job COMPLETIONS cell: `1/3`, `0/1`, or `2/1 of 4` for work-queue jobs.
fn job_completions(job: &Value) -> String {
    let succeeded = int(job, &["status", "succeeded"]);
    if let Some(completions) = opt_int(job, &["spec", "completions"]) {
        return format!("{succeeded}/{completions}");
    }
    let parallelism = int(job, &["spec", "parallelism"]);
    if parallelism > 1 {
        format!("{succeeded}/1 of {parallelism}")
    } else {
        format!("{succeeded}/1")
    }
}

/// The Job DURATION cell: start to completion (or to now), empty before the job starts.
fn job_duration(job: &Value, now: Timestamp) -> String {
    let Some(start) = time(job, &["status", "startTime"]) else {
        return String::new();
    };
    let end = time(job, &["status", "completionTime"]).unwrap_or(now);
    human_signed(end.duration_since(start))
}

/// Job: Name, Status, Completions, Duration, Age, Containers, Images, Selector.
fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let [containers, images] = container_cells(template_spec(job));
    vec![
        name(job).into(),
        job_status(job).into(),
        job_completions(job).into(),
        job_duration(job, now).into(),
        age(job, now),
        containers,
        images,
        format_label_selector(at(job, &["spec", "selector"])).into(),
    ]
}

/// CronJob: Name, Schedule, Timezone, Suspend, Active, Last Schedule, Age, Containers, Images,
/// Selector.
fn cron_job_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let job_spec = at(cj, &["spec", "jobTemplate", "spec"]);
    let [containers, images] = container_cells(job_spec.and_then(|s| at(s, &["template", "spec"])));
    let last_schedule = match time(cj, &["status", "lastScheduleTime"]) {
        Some(t) => since(Some(t), now),
        None => "<none>".to_string(),
    };
    vec![
        name(cj).into(),
        text(cj, &["spec", "schedule"]).into(),
        or_none(text(cj, &["spec", "timeZone"])).into(),
        bool_ptr(flag(cj, &["spec", "suspend"])).into(),
        (list(cj, &["status", "active"]).len() as i64).into(),
        last_schedule.into(),
        age(cj, now),
        containers,
        images,
        format_label_selector(job_spec.and_then(|s| s.get("selector"))).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Services and endpoints
// ---------------------------------------------------------------------------------------------

/// Strings of an array field.
fn strings<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a str> {
    list(v, path).iter().filter_map(Value::as_str).collect()
}

/// Load balancer ingress points (IP, else hostname), sorted and de-duplicated.
fn load_balancer_ingress(svc: &Value) -> Vec<String> {
    let points: BTreeSet<&str> = list(svc, &["status", "loadBalancer", "ingress"])
        .iter()
        .filter_map(|i| nonempty(i, &["ip"]).or_else(|| nonempty(i, &["hostname"])))
        .collect();
    points.into_iter().map(str::to_string).collect()
}

/// The EXTERNAL-IP cell of a service.
fn service_external_ip(svc: &Value, ty: &str) -> String {
    let external_ips = strings(svc, &["spec", "externalIPs"]);
    match ty {
        "ClusterIP" | "NodePort" => or_none(&external_ips.join(",")),
        "LoadBalancer" => {
            let mut all = load_balancer_ingress(svc);
            all.extend(external_ips.iter().map(|s| s.to_string()));
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// The PORT(S) cell: `80/TCP`, `80:30080/TCP` for node ports, comma-separated.
fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int(p, &["port"]);
            let protocol = nonempty(p, &["protocol"]).unwrap_or("TCP");
            match int(p, &["nodePort"]) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    or_none(&pieces.join(","))
}

/// EndpointSlice: Name, AddressType, Ports (`<unset>` without), Endpoints (three addresses, then
/// `+ N more...`; `<unset>` without), Age, as kubectl's printer.
fn endpoint_slice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    const MAX: usize = 3;
    let ports: Vec<String> = list(slice, &["ports"])
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(port) => port.to_string(),
            None => "<unset>".to_string(),
        })
        .collect();
    let addresses: Vec<&str> = list(slice, &["endpoints"]).iter().flat_map(|e| strings(e, &["addresses"])).collect();
    let mut endpoints = addresses.iter().take(MAX).copied().collect::<Vec<_>>().join(",");
    if addresses.len() > MAX {
        endpoints.push_str(&format!(" + {} more...", addresses.len() - MAX));
    }
    let or_unset = |s: String| if s.is_empty() { "<unset>".to_string() } else { s };
    vec![
        name(slice).into(),
        text(slice, &["addressType"]).into(),
        or_unset(ports.join(",")).into(),
        or_unset(endpoints).into(),
        age(slice, now),
    ]
}

/// Ingress: Name, Class, Hosts (at most 4, then `+ N more...`; `*` for none), Address, Ports, Age.
fn ingress_cells(ing: &Value, now: Timestamp) -> Vec<Value> {
    let class = nonempty(ing, &["spec", "ingressClassName"]).unwrap_or("<none>");
    let hosts: Vec<&str> = list(ing, &["spec", "rules"]).iter().filter_map(|r| nonempty(r, &["host"])).collect();
    let hosts = match hosts.len() {
        0 => "*".to_string(),
        n if n > 4 => format!("{} + {} more...", hosts[..4].join(","), n - 4),
        _ => hosts.join(","),
    };
    let ports = if list(ing, &["spec", "tls"]).is_empty() { "80" } else { "80, 443" };
    vec![
        name(ing).into(),
        class.into(),
        hosts.into(),
        load_balancer_ingress(ing).join(",").into(),
        ports.into(),
        age(ing, now),
    ]
}

/// IngressClass: Name, Controller, Parameters (`Kind/name` or `<none>`), Age.
fn ingress_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    let parameters =
        match (nonempty(class, &["spec", "parameters", "kind"]), nonempty(class, &["spec", "parameters", "name"])) {
            (Some(kind), Some(n)) => match nonempty(class, &["spec", "parameters", "apiGroup"]) {
                Some(group) => format!("{kind}.{group}/{n}"),
                None => format!("{kind}/{n}"),
            },
            _ => "<none>".to_string(),
        };
    vec![name(class).into(), text(class, &["spec", "controller"]).into(), parameters.into(), age(class, now)]
}

/// Service: Name, Type, Cluster-IP, External-IP, Port(s), Age, Selector.
fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let ty = nonempty(svc, &["spec", "type"]).unwrap_or("ClusterIP");
    let cluster_ip = strings(svc, &["spec", "clusterIPs"])
        .first()
        .copied()
        .or_else(|| nonempty(svc, &["spec", "clusterIP"]))
        .unwrap_or("<none>");
    vec![
        name(svc).into(),
        ty.into(),
        cluster_ip.into(),
        service_external_ip(svc, ty).into(),
        service_ports(svc).into(),
        age(svc, now),
        format_labels(object(svc, &["spec", "selector"])).into(),
    ]
}

/// `host:port`, bracketing IPv6 hosts like `net.JoinHostPort`.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The ENDPOINTS cell: up to three `ip:port` entries, then `+ N more...`; `<none>` without
/// subsets.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = list(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown = Vec::new();
    let mut count = 0;
    for subset in subsets {
        let ips: Vec<&str> = list(subset, &["addresses"]).iter().map(|a| text(a, &["ip"])).collect();
        let ports = list(subset, &["ports"]);
        let entries: Vec<String> = if ports.is_empty() {
            ips.iter().map(|ip| ip.to_string()).collect()
        } else {
            ports.iter().flat_map(|p| ips.iter().map(move |ip| join_host_port(ip, int(p, &["port"])))).collect()
        };
        count += entries.len();
        shown.extend(entries.into_iter().take(MAX.saturating_sub(shown.len())));
    }
    let joined = shown.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// The node STATUS cell: `Ready`, `NotReady` or `Unknown`, plus `,SchedulingDisabled`.
fn node_status(node: &Value) -> String {
    let ready = list(node, &["status", "conditions"]).iter().rev().find(|c| text(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if text(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if flag(node, &["spec", "unschedulable"]) == Some(true) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

/// The node ROLES cell, from `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels.
fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    for (key, value) in object(node, &["metadata", "labels"]).into_iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if key == "kubernetes.io/role" {
            let role = scalar_text(value);
            if !role.is_empty() {
                roles.insert(role);
            }
        }
    }
    or_none(&roles.into_iter().collect::<Vec<_>>().join(","))
}

/// The first node address of `ty`, or `<none>`.
fn node_address(node: &Value, ty: &str) -> String {
    let address = list(node, &["status", "addresses"])
        .iter()
        .find(|a| text(a, &["type"]) == ty)
        .map(|a| text(a, &["address"]))
        .unwrap_or("<none>");
    address.to_string()
}

/// A `status.nodeInfo` field, or `<unknown>`.
fn node_info(node: &Value, field: &str) -> String {
    nonempty(node, &["status", "nodeInfo", field]).unwrap_or("<unknown>").to_string()
}

/// Node: Name, Status, Roles, Age, Version, Internal-IP, External-IP, OS-Image,
/// Kernel-Version, Container-Runtime.
fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(node).into(),
        node_status(node).into(),
        node_roles(node).into(),
        age(node, now),
        text(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        node_address(node, "InternalIP").into(),
        node_address(node, "ExternalIP").into(),
        node_info(node, "osImage").into(),
        node_info(node, "kernelVersion").into(),
        node_info(node, "containerRuntimeVersion").into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// The first field present among core/v1 and events.k8s.io/v1 spellings.
fn first_text<'a>(v: &'a Value, paths: &[&[&str]]) -> &'a str {
    paths.iter().find_map(|p| nonempty(v, p)).unwrap_or_default()
}

/// The first timestamp present among several spellings.
fn first_time(v: &Value, paths: &[&[&str]]) -> Option<Timestamp> {
    paths.iter().find_map(|p| time(v, p))
}

/// The event SOURCE cell: `component` or `component, host`.
fn event_source(ev: &Value) -> String {
    let component = first_text(
        ev,
        &[
            &["source", "component"],
            &["deprecatedSource", "component"],
            &["reportingComponent"],
            &["reportingController"],
        ],
    );
    let host = first_text(ev, &[&["source", "host"], &["deprecatedSource", "host"], &["reportingInstance"]]);
    if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    }
}

/// The event OBJECT cell: `kind/name` (kind lower-cased), or just the kind.
fn event_target(reference: Option<&Value>) -> String {
    let (kind, obj_name) = reference.map(|r| (text(r, &["kind"]), text(r, &["name"]))).unwrap_or_default();
    let kind = kind.to_lowercase();
    if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    }
}

/// Event (core/v1 or events.k8s.io/v1): Last Seen, Type, Reason, Object, Subobject, Source,
/// Message, First Seen, Count, Name.
fn event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = match first_time(ev, &[&["firstTimestamp"], &["deprecatedFirstTimestamp"]]) {
        Some(t) => since(Some(t), now),
        None => since(time(ev, &["eventTime"]), now),
    };
    let mut last = match first_time(ev, &[&["lastTimestamp"], &["deprecatedLastTimestamp"]]) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = opt_int(ev, &["count"]).or_else(|| opt_int(ev, &["deprecatedCount"])).unwrap_or(0);
    if let Some(series) = at(ev, &["series"]).filter(|s| s.is_object()) {
        last = since(time(series, &["lastObservedTime"]), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let reference = at(ev, &["involvedObject"]).or_else(|| at(ev, &["regarding"]));
    let message = first_text(ev, &[&["message"], &["note"]]).trim();
    vec![
        last.into(),
        text(ev, &["type"]).into(),
        text(ev, &["reason"]).into(),
        event_target(reference).into(),
        reference.map(|r| text(r, &["fieldPath"])).unwrap_or_default().into(),
        event_source(ev).into(),
        message.into(),
        first.into(),
        count.into(),
        name(ev).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Config, storage and the rest
// ---------------------------------------------------------------------------------------------

/// Number of keys of an object field.
fn key_count(v: &Value, path: &[&str]) -> usize {
    object(v, path).map_or(0, Map::len)
}

/// ResourceQuota: Name, Age, Request and Limit (`<resource>: <used>/<hard>` of `status.hard`,
/// sorted; `limits.*` in Limit, the rest in Request).
fn resource_quota_cells(quota: &Value, now: Timestamp) -> Vec<Value> {
    let used = object(quota, &["status", "used"]);
    let mut request = Vec::new();
    let mut limit = Vec::new();
    let mut hard: Vec<(&String, &Value)> = object(quota, &["status", "hard"]).into_iter().flatten().collect();
    hard.sort_by(|a, b| a.0.cmp(b.0));
    for (resource, hard) in hard {
        let quantity = |v: Option<&Value>| match v {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "0".to_string(),
        };
        let cell = format!("{resource}: {}/{}", quantity(used.and_then(|u| u.get(resource))), quantity(Some(hard)));
        if resource.split('.').next() == Some("limits") && resource.contains('.') {
            limit.push(cell);
        } else {
            request.push(cell);
        }
    }
    vec![name(quota).into(), age(quota, now), request.join(", ").into(), limit.join(", ").into()]
}

/// The ConfigMap DATA cell: entries of `data` plus `binaryData`.
fn config_map_data_count(cm: &Value) -> i64 {
    (key_count(cm, &["data"]) + key_count(cm, &["binaryData"])) as i64
}

/// Secret: Name, Type, Data, Age. `stringData` keys not yet merged into `data` count too.
fn secret_cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    let data = object(secret, &["data"]);
    let extra = object(secret, &["stringData"])
        .into_iter()
        .flatten()
        .filter(|(k, _)| !data.is_some_and(|d| d.contains_key(*k)))
        .count();
    let count = (data.map_or(0, Map::len) + extra) as i64;
    vec![name(secret).into(), text(secret, &["type"]).into(), count.into(), age(secret, now)]
}

/// `GetAccessModesAsString`: `RWO,ROX,RWX,RWOP` in that order.
fn access_modes(v: &Value, path: &[&str]) -> String {
    let modes = strings(v, path);
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(mode, _)| modes.contains(mode))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

/// The storage class of a claim: the beta annotation, else `spec.storageClassName`.
fn claim_class(pvc: &Value) -> String {
    let annotation = at(pvc, &["metadata", "annotations", "volume.beta.kubernetes.io/storage-class"]);
    match annotation.and_then(Value::as_str) {
        Some(class) => class.to_string(),
        None => text(pvc, &["spec", "storageClassName"]).to_string(),
    }
}

/// PersistentVolumeClaim: Name, Status, Volume, Capacity, Access Modes, StorageClass,
/// VolumeAttributesClass, Age, VolumeMode.
fn pvc_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if is_deleting(pvc) { "Terminating" } else { text(pvc, &["status", "phase"]) };
    let volume = text(pvc, &["spec", "volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        let capacity = at(pvc, &["status", "capacity", "storage"]).map(scalar_text).unwrap_or_default();
        (capacity, access_modes(pvc, &["status", "accessModes"]))
    };
    let unset = |path: &[&str]| nonempty(pvc, path).unwrap_or("<unset>").to_string();
    vec![
        name(pvc).into(),
        phase.into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        claim_class(pvc).into(),
        unset(&["spec", "volumeAttributesClassName"]).into(),
        age(pvc, now),
        unset(&["spec", "volumeMode"]).into(),
    ]
}

/// StorageClass: the default one's name is marked `(default)`, as kubectl shows it.
fn storage_class_cells(sc: &Value, now: Timestamp) -> Vec<Value> {
    let mut shown = name(sc).to_string();
    if crate::api::storage_class_admission::is_default(sc) {
        shown.push_str(" (default)");
    }
    let or = |v: &str, default: &str| if v.is_empty() { default.to_string() } else { v.to_string() };
    let expansion = at(sc, &["allowVolumeExpansion"]).and_then(Value::as_bool).unwrap_or(false);
    vec![
        shown.into(),
        text(sc, &["provisioner"]).into(),
        or(text(sc, &["reclaimPolicy"]), "Delete").into(),
        or(text(sc, &["volumeBindingMode"]), "Immediate").into(),
        expansion.to_string().into(),
        age(sc, now),
    ]
}

/// PersistentVolume: capacity, modes, policy, phase, `namespace/claim`, class.
fn pv_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if is_deleting(pv) { "Terminating" } else { text(pv, &["status", "phase"]) };
    let claim = match (text(pv, &["spec", "claimRef", "namespace"]), text(pv, &["spec", "claimRef", "name"])) {
        (_, "") => String::new(),
        (ns, name) => format!("{ns}/{name}"),
    };
    let unset = |path: &[&str]| nonempty(pv, path).unwrap_or("<unset>").to_string();
    vec![
        name(pv).into(),
        at(pv, &["spec", "capacity", "storage"]).map(scalar_text).unwrap_or_default().into(),
        access_modes(pv, &["spec", "accessModes"]).into(),
        text(pv, &["spec", "persistentVolumeReclaimPolicy"]).into(),
        phase.into(),
        claim.into(),
        text(pv, &["spec", "storageClassName"]).into(),
        unset(&["spec", "volumeAttributesClassName"]).into(),
        text(pv, &["status", "reason"]).into(),
        age(pv, now),
        unset(&["spec", "volumeMode"]).into(),
    ]
}

/// PodDisruptionBudget: Name, Min Available, Max Unavailable, Allowed Disruptions, Age; an unset
/// bound prints `N/A`.
fn pdb_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let bound = |field: &str| match at(obj, &["spec", field]) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".to_string(),
    };
    vec![
        name(obj).into(),
        bound("minAvailable").into(),
        bound("maxUnavailable").into(),
        int(obj, &["status", "disruptionsAllowed"]).into(),
        age(obj, now),
    ]
}

/// A quantity as stored (a string, or a number printed as one).
fn quantity(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One metric's `current/target` as kubectl's `formatHPAMetrics` prints it.
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let unknown = || "<unknown>".to_string();
    let kind = text(spec, &["type"]);
    let field = match kind {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => return "<unknown type>".into(),
    };
    let source = at(spec, &[field]).unwrap_or(&Value::Null);
    let current = status.and_then(|s| at(s, &[field])).and_then(|s| at(s, &["current"]));
    let target = at(source, &["target"]).unwrap_or(&Value::Null);
    let value = |v: Option<&Value>, key: &str| quantity(v.and_then(|v| at(v, &[key])));
    match kind {
        "Resource" | "ContainerResource" => {
            let resource = text(source, &["name"]);
            if let Some(target_value) = value(Some(target), "averageValue") {
                let current = value(current, "averageValue").unwrap_or_else(unknown);
                return format!("{resource}: {current}/{target_value}");
            }
            let current = current
                .and_then(|c| at(c, &["averageUtilization"]))
                .and_then(Value::as_i64)
                .map_or_else(unknown, |u| format!("{u}%"));
            let target = at(target, &["averageUtilization"])
                .and_then(Value::as_i64)
                .map_or("<auto>".into(), |u| format!("{u}%"));
            format!("{resource}: {current}/{target}")
        }
        "Pods" => {
            let current = value(current, "averageValue").unwrap_or_else(unknown);
            format!("{current}/{}", value(Some(target), "averageValue").unwrap_or_default())
        }
        _ => {
            if let Some(average) = value(Some(target), "averageValue") {
                let current = value(current, "averageValue").unwrap_or_else(unknown);
                format!("{current}/{average} (avg)")
            } else {
                let current = value(current, "value").unwrap_or_else(unknown);
                format!("{current}/{}", value(Some(target), "value").unwrap_or_default())
            }
        }
    }
}

/// The TARGETS cell: at most two metrics, then `+ N more...`.
fn hpa_targets(obj: &Value) -> String {
    let specs = list(obj, &["spec", "metrics"]);
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = list(obj, &["status", "currentMetrics"]);
    let shown: Vec<String> = specs.iter().take(2).enumerate().map(|(i, s)| hpa_metric(s, statuses.get(i))).collect();
    let joined = shown.join(", ");
    match specs.len().checked_sub(2) {
        Some(more) if more > 0 => format!("{joined} + {more} more..."),
        _ => joined,
    }
}

fn hpa_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        text(obj, &["spec", "scaleTargetRef", "kind"]),
        text(obj, &["spec", "scaleTargetRef", "name"])
    );
    let min_pods =
        at(obj, &["spec", "minReplicas"]).and_then(Value::as_i64).map_or("<unset>".into(), |m| m.to_string());
    vec![
        name(obj).into(),
        reference.into(),
        hpa_targets(obj).into(),
        min_pods.into(),
        int(obj, &["spec", "maxReplicas"]).into(),
        int(obj, &["status", "currentReplicas"]).into(),
        age(obj, now),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    /// An RFC 3339 timestamp `secs` seconds before [`now`].
    fn ago(secs: i64) -> String {
        (now() - SignedDuration::from_secs(secs)).to_string()
    }

    fn names(kind: &str) -> Vec<String> {
        column_definitions(kind).iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    }

    fn default_names(kind: &str) -> Vec<String> {
        column_definitions(kind)
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn check_shape(kind: &str, obj: &Value) -> Vec<Value> {
        let cells = row_cells(kind, obj, now());
        assert_eq!(cells.len(), column_definitions(kind).len(), "{kind}: one cell per column");
        cells
    }

    #[test]
    fn human_duration_boundaries() {
        let h = |s: u64| human_duration(Duration::from_secs(s));
        assert_eq!(h(0), "0s");
        assert_eq!(h(5), "5s");
        assert_eq!(h(119), "119s");
        assert_eq!(h(120), "2m");
        assert_eq!(h(121), "2m1s");
        assert_eq!(h(3 * 60 + 2), "3m2s");
        assert_eq!(h(599), "9m59s");
        assert_eq!(h(600), "10m");
        assert_eq!(h(3 * 3600 - 1), "179m");
        assert_eq!(h(3 * 3600), "3h");
        assert_eq!(h(3 * 3600 + 5 * 60), "3h5m");
        assert_eq!(h(8 * 3600 - 1), "7h59m");
        assert_eq!(h(8 * 3600), "8h");
        assert_eq!(h(48 * 3600 - 1), "47h");
        assert_eq!(h(48 * 3600), "2d");
        assert_eq!(h(53 * 3600), "2d5h");
        assert_eq!(h(8 * 86400 - 1), "7d23h");
        assert_eq!(h(8 * 86400), "8d");
        assert_eq!(h(45 * 86400), "45d");
        assert_eq!(h(730 * 86400 - 1), "729d");
        assert_eq!(h(730 * 86400), "2y");
        assert_eq!(h(731 * 86400), "2y1d");
        assert_eq!(h(3 * 365 * 86400), "3y");
        assert_eq!(h(8 * 365 * 86400 - 1), "7y364d");
        assert_eq!(h(8 * 365 * 86400), "8y");
        assert_eq!(h(20 * 365 * 86400), "20y");
        assert_eq!(human_duration(Duration::from_millis(1999)), "1s");
    }

    #[test]
    fn ages_in_the_future_and_missing() {
        assert_eq!(human_signed(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(human_signed(SignedDuration::from_secs(-2)), "<invalid>");
        assert_eq!(age(&json!({"metadata": {"creationTimestamp": ago(-1)}}), now()), "0s");
        assert_eq!(age(&json!({"metadata": {"creationTimestamp": ago(-60)}}), now()), "<invalid>");
        assert_eq!(age(&json!({"metadata": {}}), now()), "<unknown>");
        assert_eq!(age(&json!({"metadata": {"creationTimestamp": "garbage"}}), now()), "<unknown>");
        assert_eq!(age(&json!({"metadata": {"creationTimestamp": ago(302)}}), now()), "5m2s");
    }

    #[test]
    fn column_definitions_shape() {
        let cols = column_definitions("Pod");
        assert_eq!(
            cols[0],
            json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DOC, "priority": 0})
        );
        assert_eq!(
            names("Pod"),
            ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        assert_eq!(default_names("Pod"), ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(default_names("Deployment"), ["Name", "Ready", "Up-to-date", "Available", "Age"]);
        assert_eq!(default_names("ReplicaSet"), ["Name", "Desired", "Current", "Ready", "Age"]);
        assert_eq!(names("StatefulSet"), ["Name", "Ready", "Age", "Containers", "Images"]);
        assert_eq!(
            default_names("DaemonSet"),
            ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age"]
        );
        assert_eq!(default_names("Job"), ["Name", "Status", "Completions", "Duration", "Age"]);
        assert_eq!(
            default_names("CronJob"),
            ["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age"]
        );
        assert_eq!(names("Service"), ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]);
        assert_eq!(default_names("Node"), ["Name", "Status", "Roles", "Age", "Version"]);
        assert_eq!(default_names("Event"), ["Last Seen", "Type", "Reason", "Object", "Message"]);
        assert_eq!(
            names("Event"),
            ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"]
        );
        assert_eq!(names("Namespace"), ["Name", "Status", "Age"]);
        assert_eq!(names("ConfigMap"), ["Name", "Data", "Age"]);
        assert_eq!(names("Secret"), ["Name", "Type", "Data", "Age"]);
        assert_eq!(names("Endpoints"), ["Name", "Endpoints", "Age"]);
        assert_eq!(names("ServiceAccount"), ["Name", "Secrets", "Age"]);
        assert_eq!(
            default_names("PersistentVolumeClaim"),
            ["Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass", "VolumeAttributesClass", "Age"]
        );
        assert_eq!(names("Lease"), ["Name", "Holder", "Age"]);
        assert_eq!(names("RuntimeClass"), ["Name", "Handler", "Age"]);
        assert_eq!(
            names("PodDisruptionBudget"),
            ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"]
        );
        assert_eq!(names("Widget"), ["Name", "Age"]);
        for kind in ["Pod", "Event", "Widget"] {
            assert!(column_definitions(kind).iter().any(|c| c["format"] == "name"));
        }
    }

    fn crashing_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-7d9f", "namespace": "default", "creationTimestamp": ago(3 * 3600 + 5 * 60)},
            "spec": {
                "nodeName": "node-a",
                "containers": [{"name": "app", "image": "nginx:1.25"}, {"name": "logger", "image": "busybox"}]
            },
            "status": {
                "phase": "Running",
                "podIP": "10.244.0.7",
                "podIPs": [{"ip": "10.244.0.7"}],
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0,
                     "state": {"running": {"startedAt": ago(3 * 3600)}}},
                    {"name": "logger", "ready": false, "restartCount": 5,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}}
                ]
            }
        })
    }

    #[test]
    fn pod_with_two_containers_one_ready_restarted() {
        let cells = check_shape("Pod", &crashing_pod());
        assert_eq!(
            cells,
            vec![
                json!("web-7d9f"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("5 (5m ago)"),
                json!("3h5m"),
                json!("10.244.0.7"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_status_variants() {
        let status = |pod: Value| row_cells("Pod", &pod, now())[2].clone();
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
                             "status": {"phase": "Pending"}});
        assert_eq!(status(pending.clone()), "Pending");
        let cells = row_cells("Pod", &pending, now());
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[3], "0");
        assert_eq!(cells[5], "<none>");
        assert_eq!(cells[6], "<none>");

        let mut evicted = pending.clone();
        evicted["status"] = json!({"phase": "Failed", "reason": "Evicted"});
        assert_eq!(status(evicted), "Evicted");

        let mut terminating = crashing_pod();
        terminating["metadata"]["deletionTimestamp"] = json!(ago(10));
        assert_eq!(status(terminating.clone()), "Terminating");
        terminating["status"]["reason"] = json!("NodeLost");
        assert_eq!(status(terminating), "Unknown");

        let init = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "i2", "state": {"running": {}}}
            ], "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]}
        });
        assert_eq!(status(init.clone()), "Init:1/2");
        let mut init_failed = init.clone();
        init_failed["status"]["initContainerStatuses"][1] =
            json!({"name": "i2", "restartCount": 2, "state": {"terminated": {"exitCode": 3}}});
        assert_eq!(status(init_failed.clone()), "Init:ExitCode:3");
        assert_eq!(row_cells("Pod", &init_failed, now())[3], "2");
        let mut init_waiting = init.clone();
        init_waiting["status"]["initContainerStatuses"][1] =
            json!({"name": "i2", "state": {"waiting": {"reason": "ImagePullBackOff"}}});
        assert_eq!(status(init_waiting), "Init:ImagePullBackOff");

        let completed = json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        });
        assert_eq!(status(completed), "Completed");
        let oom = json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"signal": 9}}}]}
        });
        assert_eq!(status(oom), "Signal:9");

        let gated = json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}});
        assert_eq!(status(gated), "SchedulingGated");
    }

    #[test]
    fn pod_sidecars_and_readiness_gates() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "a"}],
                "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "example.com/lb", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1,
                                           "state": {"running": {}}}],
                "containerStatuses": [{"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}}]
            }
        });
        let cells = row_cells("Pod", &pod, now());
        assert_eq!(cells[1], "2/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[8], "1/2");
    }

    #[test]
    fn deployment_row() {
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "nginx", "namespace": "default", "creationTimestamp": ago(600)},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}},
                             "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"},
                                                     {"name": "exporter", "image": "nginx/exporter:1.1"}]}}
            },
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}
        });
        assert_eq!(
            check_shape("Deployment", &deploy),
            vec![
                json!("nginx"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("10m"),
                json!("nginx,exporter"),
                json!("nginx:1.25,nginx/exporter:1.1"),
                json!("app=nginx"),
            ]
        );
        let fresh = json!({"metadata": {"name": "d"}, "spec": {"selector": {}}});
        assert_eq!(row_cells("Deployment", &fresh, now())[1], "0/1");
        assert_eq!(row_cells("Deployment", &fresh, now())[7], "");
    }

    #[test]
    fn replica_set_stateful_set_daemon_set_rows() {
        let rs = json!({
            "metadata": {"name": "nginx-7d9f", "creationTimestamp": ago(90)},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nginx", "pod-template-hash": "7d9f"}},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        assert_eq!(
            check_shape("ReplicaSet", &rs),
            vec![
                json!("nginx-7d9f"),
                json!(2),
                json!(2),
                json!(1),
                json!("90s"),
                json!("nginx"),
                json!("nginx"),
                json!("app=nginx,pod-template-hash=7d9f")
            ]
        );
        let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(check_shape("StatefulSet", &sts)[..3], [json!("db"), json!("3/3"), json!("<unknown>")]);
        let ds = json!({
            "metadata": {"name": "agent"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["agent"]}]},
                     "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                           "containers": [{"name": "agent", "image": "agent:v1"}]}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                       "updatedNumberScheduled": 2, "numberAvailable": 1}
        });
        let cells = check_shape("DaemonSet", &ds);
        assert_eq!(cells[1..7], [json!(2), json!(2), json!(1), json!(2), json!(1), json!("kubernetes.io/os=linux")]);
        assert_eq!(cells[10], "app in (agent)");
        let rc = json!({"metadata": {"name": "rc"}, "spec": {"selector": {"app": "x"}}});
        assert_eq!(check_shape("ReplicationController", &rc)[7], "app=x");
    }

    #[test]
    fn job_and_cron_job_rows() {
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": ago(400)},
            "spec": {"completions": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"startTime": ago(400), "completionTime": ago(380), "succeeded": 1,
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                      {"type": "Complete", "status": "True"}]}
        });
        let cells = check_shape("Job", &job);
        assert_eq!(cells[..5], [json!("pi"), json!("Complete"), json!("1/1"), json!("20s"), json!("6m40s")]);
        assert_eq!(cells[7], "batch.kubernetes.io/controller-uid=abc");

        let running = json!({"metadata": {"name": "q"}, "spec": {"parallelism": 3},
                             "status": {"startTime": ago(30), "active": 3}});
        let cells = row_cells("Job", &running, now());
        assert_eq!(cells[1..4], [json!("Running"), json!("0/1 of 3"), json!("30s")]);
        let suspended = json!({"metadata": {"name": "s"}, "spec": {"completions": 2},
                               "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(row_cells("Job", &suspended, now())[1..4], [json!("Suspended"), json!("0/2"), json!("")]);
        let failed =
            json!({"metadata": {"name": "f"}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        assert_eq!(row_cells("Job", &failed, now())[1], "Failed");

        let cj = json!({
            "metadata": {"name": "hello", "creationTimestamp": ago(86400 * 3)},
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "hello", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": ago(65)}
        });
        assert_eq!(
            check_shape("CronJob", &cj),
            vec![
                json!("hello"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("65s"),
                json!("3d"),
                json!("hello"),
                json!("busybox"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn service_rows() {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "creationTimestamp": ago(45 * 86400)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"],
                     "selector": {"app": "web", "tier": "fe"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}
        });
        assert_eq!(
            check_shape("Service", &svc),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.12.34"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("45d"),
                json!("app=web,tier=fe")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1",
                        "ports": [{"port": 443}]},
                        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}}});
        let cells = row_cells("Service", &lb, now());
        assert_eq!(cells[2..5], [json!("10.0.0.1"), json!("203.0.113.9,lb.example.com"), json!("443/TCP")]);
        let pending = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}});
        assert_eq!(row_cells("Service", &pending, now())[2..5], [json!("<none>"), json!("<pending>"), json!("<none>")]);
        let ext =
            json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(row_cells("Service", &ext, now())[3], "db.example.com");
        let headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIPs": ["None"], "externalIPs": ["1.2.3.4"]}});
        assert_eq!(row_cells("Service", &headless, now())[1..4], [json!("ClusterIP"), json!("None"), json!("1.2.3.4")]);
    }

    fn warning_event() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-7d9f.17c8a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-7d9f", "namespace": "default",
                               "fieldPath": "spec.containers{logger}"},
            "reason": "BackOff", "type": "Warning",
            "message": "Back-off restarting failed container logger\n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": ago(3600), "lastTimestamp": ago(30), "count": 12
        })
    }

    #[test]
    fn event_rows() {
        assert_eq!(
            check_shape("Event", &warning_event()),
            vec![
                json!("30s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-7d9f"),
                json!("spec.containers{logger}"),
                json!("kubelet, node-a"),
                json!("Back-off restarting failed container logger"),
                json!("60m"),
                json!(12),
                json!("web-7d9f.17c8a")
            ]
        );
        // New-style event: eventTime only, reportingController, no count.
        let v1 = json!({
            "metadata": {"name": "n.1"}, "eventTime": "2024-05-01T11:59:50.123456Z",
            "involvedObject": {"kind": "Node", "name": "node-a"},
            "reason": "Starting", "type": "Normal", "message": "Starting kubelet.",
            "reportingComponent": "kubelet", "reportingInstance": "node-a"
        });
        let cells = check_shape("Event", &v1);
        assert_eq!(cells[..4], [json!("9s"), json!("Normal"), json!("Starting"), json!("node/node-a")]);
        assert_eq!(cells[5], "kubelet, node-a");
        assert_eq!(cells[7..9], [json!("9s"), json!(1)]);
        // Series events report the series' last observation and count.
        let mut series = warning_event();
        series["series"] = json!({"count": 40, "lastObservedTime": ago(5)});
        let cells = row_cells("Event", &series, now());
        assert_eq!((cells[0].clone(), cells[8].clone()), (json!("5s"), json!(40)));
        // events.k8s.io/v1 shape.
        let ev = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Deployment", "name": "web"},
                        "note": "Scaled up", "reason": "ScalingReplicaSet", "type": "Normal",
                        "reportingController": "deployment-controller", "deprecatedCount": 2,
                        "deprecatedFirstTimestamp": ago(200), "deprecatedLastTimestamp": ago(100)});
        let cells = row_cells("Event", &ev, now());
        assert_eq!(
            cells[..7],
            [
                json!("100s"),
                json!("Normal"),
                json!("ScalingReplicaSet"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller"),
                json!("Scaled up")
            ]
        );
        assert_eq!(cells[7..9], [json!("3m20s"), json!(2)]);
    }

    #[test]
    fn node_rows() {
        let node = json!({
            "metadata": {"name": "node-a", "creationTimestamp": ago(10 * 86400),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "",
                                    "kubernetes.io/role": "infra", "kubernetes.io/hostname": "node-a"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "node-a"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "skiff://0.1.0"}
            }
        });
        assert_eq!(
            check_shape("Node", &node),
            vec![
                json!("node-a"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,infra,worker"),
                json!("10d"),
                json!("v1.33.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0-18-amd64"),
                json!("skiff://0.1.0")
            ]
        );
        let bare = json!({"metadata": {"name": "n"}});
        assert_eq!(
            row_cells("Node", &bare, now()),
            vec![
                json!("n"),
                json!("Unknown"),
                json!("<none>"),
                json!("<unknown>"),
                json!(""),
                json!("<none>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(row_cells("Node", &not_ready, now())[1], "NotReady");
    }

    #[test]
    fn pdb_rows() {
        let pdb = json!({"metadata": {"name": "web", "creationTimestamp": ago(5)},
                         "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            check_shape("PodDisruptionBudget", &pdb),
            vec![json!("web"), json!("2"), json!("N/A"), json!(1), json!("5s")]
        );
        let pct = json!({"metadata": {"name": "p"}, "spec": {"maxUnavailable": "25%"}});
        assert_eq!(check_shape("PodDisruptionBudget", &pct)[1..4], [json!("N/A"), json!("25%"), json!(0)]);
    }

    #[test]
    fn config_and_misc_rows() {
        let ns =
            json!({"metadata": {"name": "kube-system", "creationTimestamp": ago(5)}, "status": {"phase": "Active"}});
        assert_eq!(check_shape("Namespace", &ns), vec![json!("kube-system"), json!("Active"), json!("5s")]);
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(check_shape("ConfigMap", &cm)[1], 3);
        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                            "data": {"tls.crt": "", "tls.key": ""}, "stringData": {"ca.crt": "x", "tls.key": "y"}});
        assert_eq!(check_shape("Secret", &secret)[1..3], [json!("kubernetes.io/tls"), json!(3)]);
        let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "t"}]});
        assert_eq!(check_shape("ServiceAccount", &sa)[1], 1);
        let lease = json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "skiff-1"}});
        assert_eq!(check_shape("Lease", &lease)[1], "skiff-1");
        let rc = json!({"metadata": {"name": "wasm"}, "handler": "wasmtime"});
        assert_eq!(check_shape("RuntimeClass", &rc)[1], "wasmtime");
        let widget = json!({"metadata": {"name": "w", "creationTimestamp": ago(7200)}});
        assert_eq!(check_shape("Widget", &widget), vec![json!("w"), json!("120m")]);
    }

    #[test]
    fn endpoints_rows() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}
        ]});
        assert_eq!(check_shape("Endpoints", &ep)[1], "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more...");
        let small = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}]});
        assert_eq!(row_cells("Endpoints", &small, now())[1], "[fd00::1]:8080");
        let headless = json!({"subsets": [{"addresses": [{"ip": "10.0.0.9"}]}]});
        assert_eq!(row_cells("Endpoints", &headless, now())[1], "10.0.0.9");
        assert_eq!(row_cells("Endpoints", &json!({}), now())[1], "<none>");
    }

    #[test]
    fn pvc_rows() {
        let bound = json!({
            "metadata": {"name": "data", "creationTimestamp": ago(60)},
            "spec": {"volumeName": "pv-1", "storageClassName": "standard", "volumeMode": "Filesystem",
                     "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "capacity": {"storage": "2Gi"}}
        });
        assert_eq!(
            check_shape("PersistentVolumeClaim", &bound),
            vec![
                json!("data"),
                json!("Bound"),
                json!("pv-1"),
                json!("2Gi"),
                json!("RWO,RWX"),
                json!("standard"),
                json!("<unset>"),
                json!("60s"),
                json!("Filesystem")
            ]
        );
        let pending = json!({"metadata": {"name": "p", "deletionTimestamp": ago(1),
                             "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}},
                             "spec": {"storageClassName": "standard"}, "status": {"phase": "Pending"}});
        assert_eq!(
            row_cells("PersistentVolumeClaim", &pending, now())[1..7],
            [json!("Terminating"), json!(""), json!(""), json!(""), json!("legacy"), json!("<unset>")]
        );
    }

    #[test]
    fn malformed_objects_never_panic() {
        let shapes = [
            json!(null),
            json!(42),
            json!("pod"),
            json!([1, 2]),
            json!({}),
            json!({"metadata": "x", "spec": [], "status": 7}),
            json!({"metadata": {"name": 5, "creationTimestamp": 5, "labels": [], "deletionTimestamp": {}},
                   "spec": {"containers": "x", "initContainers": [1, null], "replicas": "3", "ports": [null, 1, {"port": "x"}],
                            "selector": "app=x", "template": 1, "readinessGates": [{}], "type": 1},
                   "status": {"conditions": [null, 1], "containerStatuses": [null, {"state": 1}],
                              "initContainerStatuses": [{"state": {"terminated": 1}}], "podIPs": [1],
                              "addresses": "x", "loadBalancer": {"ingress": [1]}},
                   "involvedObject": 1, "series": 1, "subsets": [1, {"addresses": [1], "ports": [1]}],
                   "data": [], "secrets": {}}),
        ];
        let kinds = [
            "Pod",
            "Deployment",
            "ReplicaSet",
            "ReplicationController",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "CronJob",
            "Service",
            "Node",
            "Namespace",
            "Event",
            "ConfigMap",
            "Secret",
            "Endpoints",
            "ServiceAccount",
            "PersistentVolumeClaim",
            "Lease",
            "RuntimeClass",
            "Widget",
        ];
        for kind in kinds {
            for obj in &shapes {
                check_shape(kind, obj);
            }
        }
        let weird = &shapes[6];
        assert_eq!(row_cells("Deployment", weird, now())[7], "<invalid>");
        assert_eq!(row_cells("ReplicaSet", weird, now())[7], "<error>");
    }

    #[test]
    fn hpa_rows_show_reference_targets_and_bounds() {
        let hpa = json!({
            "metadata": {"name": "burn", "creationTimestamp": ago(120)},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "burn"}, "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [
                         {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                         {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "64Mi"}}},
                         {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1"}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12, "averageValue": "6m"}}}]},
        });
        let cells = row_cells("HorizontalPodAutoscaler", &hpa, now());
        assert_eq!(column_definitions("HorizontalPodAutoscaler").len(), cells.len());
        assert_eq!(
            cells,
            vec![
                json!("burn"),
                json!("Deployment/burn"),
                json!("cpu: 12%/50%, memory: <unknown>/64Mi + 1 more..."),
                json!("1"),
                json!(3),
                json!(2),
                json!("2m")
            ]
        );
        let bare = json!({"metadata": {"name": "x"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2}});
        let cells = row_cells("HorizontalPodAutoscaler", &bare, now());
        assert_eq!((cells[2].clone(), cells[3].clone()), (json!("<none>"), json!("<unset>")));
    }
}
