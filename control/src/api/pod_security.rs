//! Pod Security admission: the `pod-security.kubernetes.io/enforce|audit|warn` namespace labels
//! with the `privileged`, `baseline` and `restricted` levels of the Pod Security Standards, as
//! Kubernetes' PodSecurity admission plugin checks them. `enforce` refuses a pod (403 with the
//! violations), `warn` returns them as warnings, `audit` logs them.

use serde_json::Value;

use super::error::ApiError;

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const RESTRICTED_VOLUMES: &[&str] =
    &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .collect()
}

fn cname(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or_default()
}

fn quoted_list(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn subjects(names: &[String]) -> String {
    if names.len() == 1 {
        format!("container {:?}", names[0])
    } else {
        format!("containers {}", quoted_list(names))
    }
}

fn flag(v: Option<&Value>) -> Option<bool> {
    v.and_then(Value::as_bool)
}

/// The violations of `level` by a pod, in Kubernetes' wording and order.
pub fn violations(level: Level, pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let pod_sc = spec.get("securityContext").cloned().unwrap_or(Value::Null);
    let cs = containers(pod);
    let names_where = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        cs.iter().filter(|c| pred(c)).map(|c| cname(c).to_string()).collect()
    };

    // Baseline.
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| flag(spec.get(**k)) == Some(true))
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        out.push(format!("host namespaces ({})", host.join(", ")));
    }
    let privileged = names_where(&|c| flag(c.pointer("/securityContext/privileged")) == Some(true));
    if !privileged.is_empty() {
        out.push(format!("privileged ({} must not set securityContext.privileged=true)", subjects(&privileged)));
    }
    let mut added: Vec<String> = Vec::new();
    let mut added_by: Vec<String> = Vec::new();
    for c in &cs {
        let caps =
            c.pointer("/securityContext/capabilities/add").and_then(Value::as_array).cloned().unwrap_or_default();
        let bad: Vec<String> = caps
            .iter()
            .filter_map(Value::as_str)
            .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
            .map(String::from)
            .collect();
        if !bad.is_empty() {
            added_by.push(cname(c).to_string());
            for b in bad {
                if !added.contains(&b) {
                    added.push(b);
                }
            }
        }
    }
    if !added.is_empty() {
        out.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            subjects(&added_by),
            quoted_list(&added)
        ));
    }
    let volumes = spec.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    let host_paths: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 { "volume" } else { "volumes" };
        out.push(format!("hostPath volumes ({noun} {})", quoted_list(&host_paths)));
    }
    let mut ports = Vec::new();
    let mut port_users = Vec::new();
    for c in &cs {
        let mut used = false;
        for p in c.get("ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(hp) = p.get("hostPort").and_then(Value::as_i64).filter(|p| *p != 0) {
                ports.push(hp.to_string());
                used = true;
            }
        }
        if used {
            port_users.push(cname(c).to_string());
        }
    }
    if !ports.is_empty() {
        let noun = if ports.len() == 1 { "hostPort" } else { "hostPorts" };
        out.push(format!("hostPort ({} uses {noun} {})", subjects(&port_users), ports.join(", ")));
    }
    let unmasked = names_where(&|c| {
        c.pointer("/securityContext/procMount").and_then(Value::as_str).is_some_and(|m| m != "Default")
    });
    if !unmasked.is_empty() {
        out.push(format!("procMount ({} must not set securityContext.procMount to \"Unmasked\")", subjects(&unmasked)));
    }
    let unconfined_pod = pod_sc.pointer("/seccompProfile/type").and_then(Value::as_str) == Some("Unconfined");
    let unconfined = names_where(&|c| {
        c.pointer("/securityContext/seccompProfile/type").and_then(Value::as_str) == Some("Unconfined")
    });
    if unconfined_pod || !unconfined.is_empty() {
        let who = match (unconfined_pod, unconfined.is_empty()) {
            (true, true) => "pod".to_string(),
            (true, false) => format!("pod and {}", subjects(&unconfined)),
            _ => subjects(&unconfined),
        };
        out.push(format!("seccompProfile ({who} must not set securityContext.seccompProfile.type to \"Unconfined\")"));
    }
    let sysctls: Vec<String> = pod_sc
        .get("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(String::from)
        .collect();
    if !sysctls.is_empty() {
        out.push(format!("forbidden sysctls ({})", sysctls.join(", ")));
    }
    if level == Level::Baseline {
        return out;
    }

    // Restricted.
    let restricted: Vec<(String, String)> = volumes
        .iter()
        .filter_map(|v| {
            let name = v.get("name").and_then(Value::as_str)?.to_string();
            let kind = v.as_object()?.keys().find(|k| *k != "name")?.clone();
            (!RESTRICTED_VOLUMES.contains(&kind.as_str())).then_some((name, kind))
        })
        .collect();
    if !restricted.is_empty() {
        let names: Vec<String> = restricted.iter().map(|(n, _)| n.clone()).collect();
        let mut kinds: Vec<String> = Vec::new();
        for (_, k) in &restricted {
            if !kinds.contains(k) {
                kinds.push(k.clone());
            }
        }
        let noun = if names.len() == 1 { "volume" } else { "volumes" };
        let kind_noun = if kinds.len() == 1 { "volume type" } else { "volume types" };
        out.push(format!(
            "restricted volume types ({noun} {} uses restricted {kind_noun} {})",
            quoted_list(&names),
            quoted_list(&kinds)
        ));
    }
    let escalation = names_where(&|c| flag(c.pointer("/securityContext/allowPrivilegeEscalation")) != Some(false));
    if !escalation.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            subjects(&escalation)
        ));
    }
    let drop_all = names_where(&|c| {
        !c.pointer("/securityContext/capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "ALL"))
    });
    let add_other = names_where(&|c| {
        c.pointer("/securityContext/capabilities/add")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x != "NET_BIND_SERVICE"))
    });
    if !drop_all.is_empty() || !add_other.is_empty() {
        let mut parts = Vec::new();
        if !drop_all.is_empty() {
            parts.push(format!("{} must set securityContext.capabilities.drop=[\"ALL\"]", subjects(&drop_all)));
        }
        if !add_other.is_empty() {
            parts.push(format!(
                "{} must not include capabilities other than \"NET_BIND_SERVICE\" in securityContext.capabilities.add",
                subjects(&add_other)
            ));
        }
        out.push(format!("unrestricted capabilities ({})", parts.join("; ")));
    }
    let pod_non_root = flag(pod_sc.get("runAsNonRoot"));
    let explicit_false = names_where(&|c| flag(c.pointer("/securityContext/runAsNonRoot")) == Some(false));
    let unset = names_where(&|c| flag(c.pointer("/securityContext/runAsNonRoot")).is_none());
    let mut parts = Vec::new();
    if pod_non_root == Some(false) {
        parts.push("pod must not set securityContext.runAsNonRoot=false".to_string());
    }
    if !explicit_false.is_empty() {
        parts.push(format!("{} must not set securityContext.runAsNonRoot=false", subjects(&explicit_false)));
    }
    if pod_non_root.is_none() && !unset.is_empty() {
        parts.push(format!("pod or {} must set securityContext.runAsNonRoot=true", subjects(&unset)));
    }
    if !parts.is_empty() {
        out.push(format!("runAsNonRoot != true ({})", parts.join("; ")));
    }
    let pod_root = pod_sc.get("runAsUser").and_then(Value::as_i64) == Some(0);
    let root = names_where(&|c| c.pointer("/securityContext/runAsUser").and_then(Value::as_i64) == Some(0));
    if pod_root || !root.is_empty() {
        let who = match (pod_root, root.is_empty()) {
            (true, true) => "pod".to_string(),
            (true, false) => format!("pod and {}", subjects(&root)),
            _ => subjects(&root),
        };
        out.push(format!("runAsUser=0 ({who} must not set runAsUser=0)"));
    }
    let pod_seccomp = pod_sc.pointer("/seccompProfile/type").and_then(Value::as_str);
    let pod_ok = matches!(pod_seccomp, Some("RuntimeDefault" | "Localhost"));
    let missing = names_where(&|c| match c.pointer("/securityContext/seccompProfile/type").and_then(Value::as_str) {
        Some("RuntimeDefault" | "Localhost") => false,
        Some(_) => true,
        None => !pod_ok,
    });
    if !missing.is_empty() && !unconfined_pod && unconfined.is_empty() {
        let who = if missing.len() == 1 {
            format!("pod or container {:?}", missing[0])
        } else {
            format!("pod or containers {}", quoted_list(&missing))
        };
        out.push(format!(
            "seccompProfile ({who} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        ));
    }
    out
}

/// The levels a namespace's labels set: (enforce, warn, audit).
fn levels(namespace: &Value) -> [(Option<Level>, &'static str); 3] {
    let label = |mode: &str| {
        namespace
            .pointer("/metadata/labels")
            .and_then(|l| l.get(format!("pod-security.kubernetes.io/{mode}")))
            .and_then(Value::as_str)
            .and_then(Level::parse)
    };
    [(label("enforce"), "enforce"), (label("warn"), "warn"), (label("audit"), "audit")]
}

/// Admits a pod into `namespace` (the Namespace object): `Err` (403) when it violates the
/// enforced level, else the warnings for the `warn` level.
pub fn admit(namespace: &Value, pod: &Value) -> Result<Vec<String>, ApiError> {
    check(namespace, pod, true)
}

/// The pod template of a workload object, as a pod Pod Security can check: Deployments,
/// ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs, ReplicationControllers and PodTemplates.
pub fn workload_template(group: &str, kind: &str, obj: &Value) -> Option<Value> {
    let pointer = match (group, kind) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch", "Job") => "/spec/template",
        ("", "ReplicationController") => "/spec/template",
        ("batch", "CronJob") => "/spec/jobTemplate/spec/template",
        ("", "PodTemplate") => "/template",
        _ => return None,
    };
    let template = obj.pointer(pointer)?;
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    Some(serde_json::json!({"metadata": {"name": name}, "spec": template.get("spec").cloned().unwrap_or(Value::Null)}))
}

/// Checks a workload's pod template (see [`workload_template`]) for the `warn` and `audit` levels
/// only, as Kubernetes does: its pods are enforced when they are created.
pub fn admit_workload(namespace: &Value, template: &Value) -> Vec<String> {
    check(namespace, template, false).unwrap_or_default()
}

fn check(namespace: &Value, pod: &Value, enforce: bool) -> Result<Vec<String>, ApiError> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let mut warnings = Vec::new();
    for (level, mode) in levels(namespace) {
        let Some(level) = level else { continue };
        if mode == "enforce" && !enforce {
            continue;
        }
        let found = violations(level, pod);
        if found.is_empty() {
            continue;
        }
        let what = format!("PodSecurity \"{}:latest\": {}", level.name(), found.join(", "));
        match mode {
            "enforce" => return Err(ApiError::Forbidden(format!("pods \"{name}\" is forbidden: violates {what}"))),
            "warn" => warnings.push(format!("would violate {what}")),
            _ => tracing::info!(pod = name, "audit: would violate {what}"),
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}})
    }

    #[test]
    fn workload_templates_warn_but_are_never_enforced() {
        let namespace = ns(
            json!({"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/warn": "baseline"}),
        );
        let deploy = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {
            "hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}}}});
        let template = workload_template("apps", "Deployment", &deploy).expect("a workload");
        let warnings = admit_workload(&namespace, &template);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("would violate PodSecurity \"baseline:latest\": host namespaces"),
            "{warnings:?}"
        );
        assert!(admit(&namespace, &template).is_err(), "the same spec as a pod is refused");
        let cron = json!({"metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        assert!(workload_template("batch", "CronJob", &cron).is_some());
        assert!(workload_template("", "ConfigMap", &cron).is_none());
    }

    #[test]
    fn levels_as_kubernetes_checks_them() {
        let plain = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert!(violations(Level::Baseline, &plain).is_empty());
        assert_eq!(
            violations(Level::Restricted, &plain),
            vec![
                "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)",
                "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"])",
                "runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)",
                "seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            ]
        );
        let hardened = json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
        assert!(violations(Level::Restricted, &hardened).is_empty());
        let bad = json!({"metadata": {"name": "p"}, "spec": {"hostNetwork": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}}, "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
        assert_eq!(
            violations(Level::Baseline, &bad),
            vec![
                "host namespaces (hostNetwork=true)",
                "privileged (container \"c\" must not set securityContext.privileged=true)",
                "non-default capabilities (container \"c\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
                "hostPath volumes (volume \"root\")",
                "hostPort (container \"c\" uses hostPort 8080)",
            ]
        );
        assert!(violations(Level::Privileged, &bad).is_empty());

        let enforce = ns(json!({"pod-security.kubernetes.io/enforce": "baseline"}));
        let err = admit(&enforce, &bad).expect_err("enforced");
        assert!(
            err.to_string()
                .starts_with("pods \"p\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces"),
            "{err}"
        );
        assert_eq!(err.code(), 403);
        let warn = ns(json!({"pod-security.kubernetes.io/warn": "restricted"}));
        let warnings = admit(&warn, &plain).expect("warn only");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation"));
        assert!(admit(&ns(json!({})), &bad).expect("no labels").is_empty());
    }
}
