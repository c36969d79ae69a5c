//! Admission: defaulting and validation of objects before they are stored, per kind.
//!
//! Defaults follow what a Kubernetes API server fills in, so `kubectl get -o yaml` shows the
//! fields users expect; validation rejects what Kubernetes rejects, with its field paths.

use serde_json::{json, Map, Value};

use super::names;
use super::object;

/// One invalid field: its path and what is wrong.
pub type Cause = (String, String);

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn obj_at<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = value;
    for key in path {
        cur = cur.get_mut(*key)?;
    }
    cur.as_object_mut()
}

/// Fills in the defaults Kubernetes applies on create and update.
pub fn default(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                default_pod_spec(spec);
            }
            if let Some(map) = obj.as_object_mut() {
                let status = map.entry("status").or_insert_with(|| json!({}));
                if let Some(status) = status.as_object_mut() {
                    set_default(status, "phase", json!("Pending"));
                    set_default(status, "qosClass", json!("BestEffort"));
                }
            }
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                if kind != "DaemonSet" {
                    set_default(spec, "replicas", json!(1));
                }
                // ReplicaSetSpec has no revisionHistoryLimit.
                if kind != "ReplicaSet" {
                    set_default(spec, "revisionHistoryLimit", json!(10));
                }
                match kind {
                    "Deployment" => {
                        set_default(spec, "progressDeadlineSeconds", json!(600));
                        default_strategy(spec, "strategy", json!({"maxSurge": "25%", "maxUnavailable": "25%"}));
                    }
                    "StatefulSet" => {
                        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                        default_strategy(spec, "updateStrategy", json!({"partition": 0}));
                    }
                    "DaemonSet" => {
                        default_strategy(spec, "updateStrategy", json!({"maxSurge": 0, "maxUnavailable": 1}));
                    }
                    _ => {}
                }
            }
            if let Some(pod) = obj_at(obj, &["spec", "template", "spec"]) {
                default_pod_spec(pod);
            }
        }
        "Job" => default_job(obj),
        "CronJob" => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
            if let Some(pod) = obj_at(obj, &["spec", "jobTemplate", "spec", "template", "spec"]) {
                default_pod_spec(pod);
                set_default(pod, "restartPolicy", json!("OnFailure"));
            }
        }
        "Service" => default_service(obj),
        "LimitRange" => super::limit_range::default_object(obj),
        "Namespace" => {
            if let Some(map) = obj.as_object_mut() {
                let spec = map.entry("spec").or_insert_with(|| json!({}));
                if let Some(spec) = spec.as_object_mut() {
                    set_default(spec, "finalizers", json!(["kubernetes"]));
                }
                let status = map.entry("status").or_insert_with(|| json!({}));
                if let Some(status) = status.as_object_mut() {
                    set_default(status, "phase", json!("Active"));
                }
            }
            let name = object::name(obj).to_string();
            let labels = object::meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        "Secret" => {
            if let Some(map) = obj.as_object_mut() {
                set_default(map, "type", json!("Opaque"));
            }
        }
        "HorizontalPodAutoscaler" => crate::controllers::hpa::spec::default(obj),
        _ => {}
    }
}

/// A workload's update strategy as Kubernetes defaults it: the type RollingUpdate when unset
/// (also in a present but empty strategy, which typed clients send), and each unset
/// `rollingUpdate` parameter from `rolling` when the type is RollingUpdate.
fn default_strategy(spec: &mut Map<String, Value>, field: &str, rolling: Value) {
    let Some(strategy) = spec.entry(field).or_insert_with(|| json!({})).as_object_mut() else { return };
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type") != Some(&json!("RollingUpdate")) {
        return;
    }
    let Some(params) = strategy.entry("rollingUpdate").or_insert_with(|| json!({})).as_object_mut() else { return };
    for (k, v) in rolling.as_object().into_iter().flatten() {
        set_default(params, k, v.clone());
    }
}

/// An ephemeral container's defaults (pull policy by tag, termination message); it takes no
/// resources, ports or probes to default.
fn default_ephemeral(spec: &mut Map<String, Value>) {
    let Some(list) = spec.get_mut("ephemeralContainers").and_then(Value::as_array_mut) else { return };
    for c in list.iter_mut().filter_map(Value::as_object_mut) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
        let policy = if image_tag_is_latest(&image) { "Always" } else { "IfNotPresent" };
        set_default(c, "imagePullPolicy", json!(policy));
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    default_ephemeral(spec);
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
                let policy = if image_tag_is_latest(&image) { "Always" } else { "IfNotPresent" };
                set_default(c, "imagePullPolicy", json!(policy));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                default_requests_from_limits(c);
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
                for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    if let Some(probe) = c.get_mut(kind).and_then(Value::as_object_mut) {
                        default_probe(probe);
                    }
                }
            }
        }
    }
}

/// A container that limits a resource but does not request it requests its limit (kube's
/// `SetDefaults_Pod`).
fn default_requests_from_limits(c: &mut Map<String, Value>) {
    let Some(resources) = c.get_mut("resources").and_then(Value::as_object_mut) else { return };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).filter(|l| !l.is_empty()).cloned() else {
        return;
    };
    if let Some(requests) = resources.entry("requests").or_insert_with(|| json!({})).as_object_mut() {
        for (k, v) in limits {
            requests.entry(k).or_insert(v);
        }
    }
}

/// Probe timing defaults (and `httpGet.scheme`), as the Kubernetes API server fills them in.
fn default_probe(probe: &mut Map<String, Value>) {
    set_default(probe, "timeoutSeconds", json!(1));
    set_default(probe, "periodSeconds", json!(10));
    set_default(probe, "successThreshold", json!(1));
    set_default(probe, "failureThreshold", json!(3));
    if let Some(http) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_default(http, "scheme", json!("HTTP"));
        set_default(http, "path", json!("/"));
    }
}

/// `:latest` or no tag (and no digest) pulls always, as in Kubernetes.
fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

fn default_job(obj: &mut Value) {
    let uid = object::str_at(obj, &["metadata", "uid"]).unwrap_or("").to_string();
    let name = object::name(obj).to_string();
    let Some(spec) = obj_at(obj, &["spec"]) else { return };
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "completions", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    let manual = spec.get("manualSelector").and_then(Value::as_bool).unwrap_or(false);
    if !manual && !uid.is_empty() {
        let generated = json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
            "controller-uid": uid, "job-name": name});
        set_default(spec, "selector", json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
        if let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) {
            let meta = template.entry("metadata").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if let (Some(labels), Some(generated)) = (labels.as_object_mut(), generated.as_object()) {
                    for (k, v) in generated {
                        labels.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
    }
    if let Some(pod) = spec.get_mut("template").and_then(|t| t.get_mut("spec")).and_then(Value::as_object_mut) {
        default_pod_spec(pod);
    }
}

fn default_service(obj: &mut Value) {
    // Every Service has `status: {loadBalancer: {}}`, as kube-apiserver writes it.
    if let Some(map) = obj.as_object_mut() {
        let status = map.entry("status").or_insert_with(|| json!({}));
        if let Some(status) = status.as_object_mut() {
            set_default(status, "loadBalancer", json!({}));
        }
    }
    let Some(spec) = obj_at(obj, &["spec"]) else { return };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    // ipFamilies and ipFamilyPolicy come with the ClusterIP (api/service_alloc).
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            // 0 and "" mean unset, as in Kubernetes' defaulting (typed clients send the zero value).
            if p.get("targetPort").is_some_and(|t| t == &json!(0) || t == &json!("")) {
                p.remove("targetPort");
            }
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
}

/// Checks an object about to be stored. Returns every cause found.
pub fn validate(kind: &str, namespaced: bool, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = object::name(obj);
    let name_check = match kind {
        "Namespace" | "Service" => names::check_dns1123_label(name),
        _ => check_path_segment_name(name).and_then(|_| match kind {
            "Pod"
            | "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "CronJob"
            | "ConfigMap"
            | "Secret"
            | "Node"
            | "ServiceAccount"
            | "PersistentVolumeClaim"
            | "PersistentVolume"
            | "Lease"
            | "RuntimeClass"
            | "StorageClass"
            | "Ingress"
            | "NetworkPolicy"
            | "EndpointSlice"
            | "Endpoints" => names::check_dns1123_subdomain(name),
            _ => Ok(()),
        }),
    };
    if name.is_empty() {
        causes.push(("metadata.name".into(), "Required value: name or generateName is required".into()));
    } else if let Err(msg) = name_check {
        causes.push(("metadata.name".into(), format!("Invalid value: \"{name}\": {msg}")));
    }
    if namespaced && object::namespace(obj).is_none_or(str::is_empty) {
        causes.push(("metadata.namespace".into(), "Required value".into()));
    }
    for (key, value) in object::labels(obj) {
        if let Err(msg) = names::check_qualified_name(&key) {
            causes.push(("metadata.labels".into(), format!("Invalid value: \"{key}\": {msg}")));
        }
        match value.as_str() {
            Some(v) => {
                if let Err(msg) = names::check_label_value(v) {
                    causes.push(("metadata.labels".into(), format!("Invalid value: \"{v}\": {msg}")));
                }
            }
            None => causes.push(("metadata.labels".into(), format!("Invalid value: {value}: must be a string"))),
        }
    }
    match kind {
        "Pod" => validate_pod_spec(obj.get("spec"), "spec", &mut causes),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => validate_workload(obj, &mut causes),
        "Job" => {
            validate_job(obj, &mut causes);
            validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut causes)
        }
        "CronJob" => {
            match object::str_at(obj, &["spec", "schedule"]).filter(|s| !s.is_empty()) {
                None => causes.push(("spec.schedule".into(), "Required value".into())),
                Some(s) => validate_cron(s, object::str_at(obj, &["spec", "timeZone"]), &mut causes),
            }
            validate_pod_spec(
                obj.pointer("/spec/jobTemplate/spec/template/spec"),
                "spec.jobTemplate.spec.template.spec",
                &mut causes,
            );
        }
        "Service" => validate_service(obj, &mut causes),
        "Ingress" => super::ingress_validation::validate_ingress(obj, &mut causes),
        "IngressClass" => super::ingress_validation::validate_ingress_class(obj, &mut causes),
        "PodDisruptionBudget" => causes.extend(crate::controllers::disruption::budget::validate(obj)),
        "HorizontalPodAutoscaler" => causes.extend(crate::controllers::hpa::spec::validate(obj)),
        _ => {}
    }
    causes
}

/// A CronJob's schedule and time zone, with Kubernetes' messages.
fn validate_cron(schedule: &str, time_zone: Option<&str>, causes: &mut Vec<Cause>) {
    use crate::controllers::cron_schedule::{parse_cron, parse_time_zone};
    if let Err(e) = parse_cron(schedule) {
        causes.push(("spec.schedule".into(), format!("Invalid value: \"{schedule}\": {e}")));
    }
    if let (Some(tz), Err(e)) = (time_zone, parse_time_zone(time_zone)) {
        causes.push(("spec.timeZone".into(), format!("Invalid value: \"{tz}\": {e}")));
    }
}

/// Names must be usable as one URL path segment.
fn check_path_segment_name(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!("may not be '{name}'"));
    }
    if name.contains('/') || name.contains('%') {
        return Err("may not contain '/' or '%'".into());
    }
    Ok(())
}

fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        causes.push((path.to_string(), "Required value".into()));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push((format!("{path}.containers"), "Required value".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for (list, items) in [
        ("initContainers", spec.get("initContainers").and_then(Value::as_array).cloned().unwrap_or_default()),
        ("containers", containers),
    ] {
        for (i, c) in items.iter().enumerate() {
            let field = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                causes.push((format!("{field}.name"), "Required value".into()));
            } else if let Err(msg) = names::check_dns1123_label(name) {
                causes.push((format!("{field}.name"), format!("Invalid value: \"{name}\": {msg}")));
            } else if !seen.insert(name.to_string()) {
                causes.push((format!("{field}.name"), format!("Duplicate value: \"{name}\"")));
            }
            if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                causes.push((format!("{field}.image"), "Required value".into()));
            }
            let sidecar = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
            if list == "initContainers" && !sidecar && c.get("lifecycle").is_some_and(|l| !l.is_null()) {
                causes.push((
                    format!("{field}.lifecycle"),
                    "Forbidden: may not be set for init containers without restartPolicy=Always".into(),
                ));
            } else {
                let grace = spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
                validate_lifecycle(c, &field, grace, causes);
                validate_stop_signal(c, spec, &field, causes);
            }
        }
    }
    validate_pod_numbers(spec, path, causes);
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !matches!(policy, "Always" | "OnFailure" | "Never") {
            causes.push((
                format!("{path}.restartPolicy"),
                format!("Unsupported value: \"{policy}\": supported values: \"Always\", \"OnFailure\", \"Never\""),
            ));
        }
    }
}

/// A container's `lifecycle.stopSignal` (KEP-4960) as kube-apiserver validates it: only with
/// `spec.os.name`, and then a signal of that OS (Windows: SIGTERM and SIGKILL).
fn validate_stop_signal(c: &Value, spec: &Value, field: &str, causes: &mut Vec<Cause>) {
    let Some(signal) = c.get("lifecycle").and_then(|l| l.get("stopSignal")).filter(|s| !s.is_null()) else { return };
    let path = format!("{field}.lifecycle.stopSignal");
    let signal = signal.as_str().unwrap_or_default();
    let supported: Vec<String> = match spec.pointer("/os/name").and_then(Value::as_str) {
        None | Some("") => {
            causes.push((path, "Forbidden: may not be set for containers with empty `spec.os.name`".into()));
            return;
        }
        Some("windows") => vec!["SIGKILL".into(), "SIGTERM".into()],
        Some(_) => linux_stop_signals(),
    };
    if !supported.iter().any(|s| s == signal) {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        causes.push((path, format!("Unsupported value: \"{signal}\": supported values: {}", list.join(", "))));
    }
}

/// The Linux signals a container may be stopped with, sorted.
fn linux_stop_signals() -> Vec<String> {
    const NAMED: [&str; 35] = [
        "SIGABRT",
        "SIGALRM",
        "SIGBUS",
        "SIGCHLD",
        "SIGCLD",
        "SIGCONT",
        "SIGFPE",
        "SIGHUP",
        "SIGILL",
        "SIGINT",
        "SIGIO",
        "SIGIOT",
        "SIGKILL",
        "SIGPIPE",
        "SIGPOLL",
        "SIGPROF",
        "SIGPWR",
        "SIGQUIT",
        "SIGRTMAX",
        "SIGRTMIN",
        "SIGSEGV",
        "SIGSTKFLT",
        "SIGSTOP",
        "SIGSYS",
        "SIGTERM",
        "SIGTRAP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGUSR1",
        "SIGUSR2",
        "SIGVTALRM",
        "SIGWINCH",
        "SIGXCPU",
    ];
    let mut all: Vec<String> = NAMED.iter().map(|s| s.to_string()).collect();
    all.push("SIGXFSZ".into());
    all.extend((1..=15).map(|n| format!("SIGRTMIN+{n}")));
    all.extend((1..=14).map(|n| format!("SIGRTMAX-{n}")));
    all.sort();
    all
}

/// A container's `lifecycle` hooks as kube-apiserver validates them (`validateLifecycleHandler`):
/// exactly one handler each (exec, httpGet, tcpSocket, sleep, in that order), an exec command, an
/// httpGet port and scheme, and a sleep shorter than the pod's grace period.
fn validate_lifecycle(c: &Value, field: &str, grace: Option<i64>, causes: &mut Vec<Cause>) {
    for hook in ["postStart", "preStop"] {
        let Some(handler) = c.get("lifecycle").and_then(|l| l.get(hook)).filter(|h| !h.is_null()) else { continue };
        let path = format!("{field}.lifecycle.{hook}");
        let mut handlers = 0;
        for kind in ["exec", "httpGet", "tcpSocket", "sleep"] {
            let Some(action) = handler.get(kind).filter(|a| !a.is_null()) else { continue };
            if handlers > 0 {
                causes.push((format!("{path}.{kind}"), "Forbidden: may not specify more than 1 handler type".into()));
                continue;
            }
            handlers += 1;
            match kind {
                "exec" if action.get("command").and_then(Value::as_array).is_none_or(Vec::is_empty) => {
                    causes.push((format!("{path}.exec.command"), "Required value".into()));
                }
                "httpGet" => {
                    let port = action.get("port");
                    match port {
                        Some(p) if p.is_i64() => in_range(port, 1, 65535, format!("{path}.httpGet.port"), causes),
                        Some(p) if p.as_str().is_some_and(|s| !s.is_empty()) => {}
                        _ => causes.push((format!("{path}.httpGet.port"), "Required value".into())),
                    }
                    if let Some(scheme) = action.get("scheme").and_then(Value::as_str) {
                        if !matches!(scheme, "HTTP" | "HTTPS") {
                            causes.push((
                                format!("{path}.httpGet.scheme"),
                                format!("Unsupported value: \"{scheme}\": supported values: \"HTTP\", \"HTTPS\""),
                            ));
                        }
                    }
                }
                "sleep" => {
                    let seconds = action.get("seconds").and_then(Value::as_i64).unwrap_or(0);
                    if let Some(g) = grace.filter(|g| seconds <= 0 || seconds > *g) {
                        causes.push((
                            format!("{path}.sleep"),
                            format!(
                                "Invalid value: {seconds}: must be greater than 0 and less than \
                                 terminationGracePeriodSeconds ({g})"
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        if handlers == 0 {
            causes.push((path, "Required value: must specify a handler type".into()));
        }
    }
}

/// `Invalid value: <v>: must be greater than or equal to 0` unless `value` is absent or >= 0.
fn non_negative(value: Option<&Value>, field: String, causes: &mut Vec<Cause>) {
    if let Some(v) = value.and_then(Value::as_i64).filter(|v| *v < 0) {
        causes.push((field, format!("Invalid value: {v}: must be greater than or equal to 0")));
    }
}

/// `Invalid value: <v>: must be between <lo> and <hi>, inclusive` unless absent or in range.
fn in_range(value: Option<&Value>, lo: i64, hi: i64, field: String, causes: &mut Vec<Cause>) {
    if let Some(v) = value.and_then(Value::as_i64).filter(|v| !(lo..=hi).contains(v)) {
        causes.push((field, format!("Invalid value: {v}: must be between {lo} and {hi}, inclusive")));
    }
}

/// Every number of a pod spec a node or controller computes with, bounded as Kubernetes bounds
/// it (`ValidatePodSpec`): deadlines, grace periods, ports, probe timings, resource quantities.
fn validate_pod_numbers(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    in_range(
        spec.get("activeDeadlineSeconds"),
        1,
        i64::from(i32::MAX),
        format!("{path}.activeDeadlineSeconds"),
        causes,
    );
    non_negative(spec.get("terminationGracePeriodSeconds"), format!("{path}.terminationGracePeriodSeconds"), causes);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let field = format!("{path}.{list}[{i}]");
            for (j, port) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                match port.get("containerPort").and_then(Value::as_i64) {
                    None => causes.push((format!("{field}.ports[{j}].containerPort"), "Required value".into())),
                    Some(_) => in_range(
                        port.get("containerPort"),
                        1,
                        65535,
                        format!("{field}.ports[{j}].containerPort"),
                        causes,
                    ),
                }
                in_range(port.get("hostPort"), 0, 65535, format!("{field}.ports[{j}].hostPort"), causes);
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let Some(p) = c.get(probe) else { continue };
                for n in
                    ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"]
                {
                    non_negative(p.get(n), format!("{field}.{probe}.{n}"), causes);
                }
                if let Some(v) = p.get("terminationGracePeriodSeconds").and_then(Value::as_i64).filter(|v| *v <= 0) {
                    causes.push((
                        format!("{field}.{probe}.terminationGracePeriodSeconds"),
                        format!("Invalid value: {v}: must be greater than 0"),
                    ));
                }
                for handler in ["httpGet", "tcpSocket", "grpc"] {
                    let port = p.get(handler).and_then(|h| h.get("port"));
                    if port.is_some_and(Value::is_i64) {
                        in_range(port, 1, 65535, format!("{field}.{probe}.{handler}.port"), causes);
                    }
                }
            }
            for kind in ["requests", "limits"] {
                let Some(map) = c.pointer(&format!("/resources/{kind}")).and_then(Value::as_object) else { continue };
                for (name, q) in map {
                    let text = q.as_str().map(String::from).unwrap_or_else(|| q.to_string());
                    let field = format!("{field}.resources.{kind}[{name}]");
                    match crate::scheduler::quantity::parse_milli(&text) {
                        None => causes.push((field, format!("Invalid value: \"{text}\": {QUANTITY_ERROR}"))),
                        Some(m) if m < 0 => {
                            causes.push((field, format!("Invalid value: \"{text}\": must be greater than or equal to 0")))
                        }
                        Some(m) if m > MAX_MILLI => causes.push((
                            field,
                            format!("Invalid value: \"{text}\": must be no more than {MAX_UNITS} (a quantity that fits in 64 bits)"),
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    }
}

const QUANTITY_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// The largest quantity a request or limit may name, in milli-units: what `MilliValue()` can
/// hold in an `int64` (about 9.2 exa-units).
const MAX_MILLI: i128 = i64::MAX as i128;
const MAX_UNITS: i64 = i64::MAX / 1000;

fn validate_workload(obj: &Value, causes: &mut Vec<Cause>) {
    let selector = obj.pointer("/spec/selector");
    match selector {
        None | Some(Value::Null) => causes.push(("spec.selector".into(), "Required value".into())),
        Some(sel) => {
            let template_labels =
                obj.pointer("/spec/template/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
            let empty = ["matchLabels", "matchExpressions"].iter().all(|k| {
                sel.get(*k).is_none_or(|v| {
                    v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty) || v.is_null()
                })
            });
            match super::selector::from_label_selector(sel) {
                Ok(_) if empty => causes
                    .push(("spec.selector".into(), "Invalid value: empty selector is invalid for deployment".into())),
                Ok(parsed) if !parsed.matches(&template_labels) => causes.push((
                    "spec.template.metadata.labels".into(),
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        Value::Object(template_labels)
                    ),
                )),
                Ok(_) => {}
                Err(e) => causes.push(("spec.selector".into(), format!("Invalid value: {e}"))),
            }
        }
    }
    if let Some(replicas) = obj.pointer("/spec/replicas").and_then(Value::as_i64) {
        if replicas < 0 {
            causes.push((
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
    }
    for n in ["minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds"] {
        non_negative(obj.pointer(&format!("/spec/{n}")), format!("spec.{n}"), causes);
    }
    validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", causes);
}

fn validate_job(obj: &Value, causes: &mut Vec<Cause>) {
    for n in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"] {
        non_negative(obj.pointer(&format!("/spec/{n}")), format!("spec.{n}"), causes);
    }
}

fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = object::str_at(obj, &["spec", "type"]).unwrap_or("ClusterIP");
    if !matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        causes.push(("spec.type".into(), format!("Unsupported value: \"{ty}\"")));
    }
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && object::str_at(obj, &["spec", "clusterIP"]) != Some("None") {
        causes.push(("spec.ports".into(), "Required value".into()));
    }
    for (i, p) in ports.iter().enumerate() {
        match p.get("port").and_then(Value::as_i64) {
            Some(port) if (1..=65535).contains(&port) => {}
            Some(port) => causes.push((
                format!("spec.ports[{i}].port"),
                format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
            )),
            None => causes.push((format!("spec.ports[{i}].port"), "Required value".into())),
        }
        in_range(p.get("nodePort"), 0, 65535, format!("spec.ports[{i}].nodePort"), causes);
        if p.get("targetPort").is_some_and(Value::is_i64) {
            in_range(p.get("targetPort"), 1, 65535, format!("spec.ports[{i}].targetPort"), causes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_and_validation() {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        default("Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert!(validate("Pod", true, &pod).is_empty());

        let bad = json!({"metadata": {"name": "Bad_Name", "namespace": "d"}, "spec": {"containers": []}});
        let causes = validate("Pod", true, &bad);
        assert!(causes.iter().any(|(f, _)| f == "metadata.name"));
        assert!(causes.iter().any(|(f, _)| f == "spec.containers"));
    }

    fn cause<'a>(causes: &'a [Cause], field: &str) -> Option<&'a str> {
        causes.iter().find(|(f, _)| f == field).map(|(_, m)| m.as_str())
    }

    #[test]
    fn client_numbers_are_bounded() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
            "activeDeadlineSeconds": i64::MAX,
            "terminationGracePeriodSeconds": -1,
            "containers": [{"name": "c", "image": "i",
                "ports": [{"containerPort": 70000, "hostPort": -1}, {"containerPort": 0}, {"containerPort": 80}],
                "livenessProbe": {"periodSeconds": -3, "httpGet": {"port": 65536}},
                "resources": {"requests": {"cpu": "99999999999999999999", "memory": "1Gi"},
                              "limits": {"memory": "-1", "cpu": "abc"}}}]}});
        let causes = validate("Pod", true, &pod);
        assert_eq!(
            cause(&causes, "spec.activeDeadlineSeconds"),
            Some("Invalid value: 9223372036854775807: must be between 1 and 2147483647, inclusive")
        );
        assert_eq!(
            cause(&causes, "spec.terminationGracePeriodSeconds"),
            Some("Invalid value: -1: must be greater than or equal to 0")
        );
        assert_eq!(
            cause(&causes, "spec.containers[0].ports[0].containerPort"),
            Some("Invalid value: 70000: must be between 1 and 65535, inclusive")
        );
        assert!(cause(&causes, "spec.containers[0].ports[0].hostPort").is_some());
        assert!(cause(&causes, "spec.containers[0].ports[1].containerPort").is_some());
        assert!(cause(&causes, "spec.containers[0].ports[2].containerPort").is_none());
        assert!(cause(&causes, "spec.containers[0].livenessProbe.periodSeconds").is_some());
        assert!(cause(&causes, "spec.containers[0].livenessProbe.httpGet.port").is_some());
        assert!(cause(&causes, "spec.containers[0].resources.requests[cpu]").is_some_and(|m| m.contains("no more")));
        assert!(cause(&causes, "spec.containers[0].resources.requests[memory]").is_none());
        assert!(cause(&causes, "spec.containers[0].resources.limits[memory]")
            .is_some_and(|m| m.contains(">= 0") || m.contains("greater than or equal to 0")));
        assert!(cause(&causes, "spec.containers[0].resources.limits[cpu]").is_some_and(|m| m.contains("regular")));

        let ok = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"activeDeadlineSeconds": 2147483647,
            "terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "i"}]}});
        assert!(validate("Pod", true, &ok).is_empty());

        let deploy = json!({"metadata": {"name": "d", "namespace": "d"}, "spec": {"replicas": -1,
            "selector": {"matchLabels": {"a": "b"}}, "minReadySeconds": -2,
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate("Deployment", true, &deploy);
        assert_eq!(cause(&causes, "spec.replicas"), Some("Invalid value: -1: must be greater than or equal to 0"));
        assert!(cause(&causes, "spec.minReadySeconds").is_some());

        let job = json!({"metadata": {"name": "j", "namespace": "d"}, "spec": {"backoffLimit": -1,
            "activeDeadlineSeconds": -1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate("Job", true, &job);
        assert!(cause(&causes, "spec.backoffLimit").is_some());
        assert!(cause(&causes, "spec.activeDeadlineSeconds").is_some());

        let svc = json!({"metadata": {"name": "s", "namespace": "d"},
            "spec": {"ports": [{"port": 80, "targetPort": 70000, "nodePort": 99999}]}});
        let causes = validate("Service", true, &svc);
        assert!(cause(&causes, "spec.ports[0].targetPort").is_some());
        assert!(cause(&causes, "spec.ports[0].nodePort").is_some());
    }

    #[test]
    fn a_stop_signal_needs_the_pods_os_and_one_of_its_signals() {
        let pod = |os: Value, signal: &str| {
            let mut spec =
                json!({"containers": [{"name": "c", "image": "busybox", "lifecycle": {"stopSignal": signal}}]});
            if !os.is_null() {
                spec["os"] = os;
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
        };
        let path = "spec.containers[0].lifecycle.stopSignal";
        let causes = validate("Pod", true, &pod(Value::Null, "SIGUSR1"));
        assert_eq!(cause(&causes, path), Some("Forbidden: may not be set for containers with empty `spec.os.name`"));
        assert_eq!(cause(&validate("Pod", true, &pod(json!({"name": "linux"}), "SIGUSR1")), path), None);
        assert_eq!(cause(&validate("Pod", true, &pod(json!({"name": "linux"}), "SIGRTMIN+3")), path), None);
        let causes = validate("Pod", true, &pod(json!({"name": "linux"}), "SIGFOO"));
        assert!(cause(&causes, path)
            .is_some_and(|m| m.starts_with("Unsupported value: \"SIGFOO\": supported values: \"SIGABRT\"")));
        let causes = validate("Pod", true, &pod(json!({"name": "windows"}), "SIGUSR1"));
        assert_eq!(
            cause(&causes, path),
            Some("Unsupported value: \"SIGUSR1\": supported values: \"SIGKILL\", \"SIGTERM\"")
        );
        assert_eq!(linux_stop_signals().len(), 65);
    }

    #[test]
    fn lifecycle_hooks_name_exactly_one_handler() {
        let pod = |lifecycle: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
                "terminationGracePeriodSeconds": 10,
                "containers": [{"name": "c", "image": "busybox", "lifecycle": lifecycle}],
                "initContainers": [{"name": "i", "image": "busybox", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}]
            }})
        };
        let causes = validate(
            "Pod",
            true,
            &pod(json!({
                "postStart": {"exec": {"command": ["true"]}, "httpGet": {"port": 80}},
                "preStop": {}
            })),
        );
        assert_eq!(
            cause(&causes, "spec.containers[0].lifecycle.postStart.httpGet"),
            Some("Forbidden: may not specify more than 1 handler type")
        );
        assert_eq!(
            cause(&causes, "spec.containers[0].lifecycle.preStop"),
            Some("Required value: must specify a handler type")
        );
        assert_eq!(
            cause(&causes, "spec.initContainers[0].lifecycle"),
            Some("Forbidden: may not be set for init containers without restartPolicy=Always")
        );
        let causes = validate(
            "Pod",
            true,
            &pod(json!({
                "postStart": {"exec": {"command": []}},
                "preStop": {"sleep": {"seconds": 11}}
            })),
        );
        assert_eq!(cause(&causes, "spec.containers[0].lifecycle.postStart.exec.command"), Some("Required value"));
        assert_eq!(
            cause(&causes, "spec.containers[0].lifecycle.preStop.sleep"),
            Some("Invalid value: 11: must be greater than 0 and less than terminationGracePeriodSeconds (10)")
        );
        let causes = validate(
            "Pod",
            true,
            &pod(json!({
                "postStart": {"httpGet": {"port": 0, "scheme": "FTP"}},
                "preStop": {"sleep": {"seconds": 10}}
            })),
        );
        assert!(cause(&causes, "spec.containers[0].lifecycle.postStart.httpGet.port").is_some());
        assert!(cause(&causes, "spec.containers[0].lifecycle.postStart.httpGet.scheme").is_some());
        assert!(cause(&causes, "spec.containers[0].lifecycle.preStop.sleep").is_none());
    }

    #[test]
    fn image_pull_policy_by_tag() {
        assert!(image_tag_is_latest("nginx"));
        assert!(image_tag_is_latest("127.0.0.1:5000/x:latest"));
        assert!(!image_tag_is_latest("127.0.0.1:5000/x:1"));
        assert!(!image_tag_is_latest("x@sha256:abc"));
    }
}
