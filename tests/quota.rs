//! ResourceQuota and LimitRange end to end with kubectl 1.32 (no node: pods stay Pending and
//! still count): a quota's usage is tracked and shown by `describe`/`get -o yaml`, creates over
//! it are refused with kube's message, a deleted pod frees its slot, concurrent creates never
//! overshoot; a LimitRange gives defaults and refuses a container over its maximum.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const IMAGE: &str = "--image=127.0.0.1:1/none:1";

fn used(c: &Cluster, ns: &str, quota: &str, resource: &str) -> Option<String> {
    let q = c.get_json(&["quota", quota, "-n", ns]);
    q["status"]["used"][resource].as_str().map(String::from)
}

/// Waits for the namespace's `kube-root-ca.crt` ConfigMap, which counts against configmaps too
/// (as in Kubernetes).
fn wait_root_ca(c: &Cluster, ns: &str) {
    eventually(&format!("kube-root-ca.crt in {ns}"), WAIT, || {
        c.kubectl_output(&["get", "configmap", "kube-root-ca.crt", "-n", ns], None).status.success()
    });
}

fn wait_used(c: &Cluster, ns: &str, quota: &str, resource: &str, want: &str) {
    eventually(&format!("{ns}/{quota} used {resource}={want}"), WAIT, || {
        used(c, ns, quota, resource).as_deref() == Some(want)
    });
}

#[test]
fn quota_counts_refuses_and_frees() {
    let c = Cluster::start();
    wait_root_ca(&c, "default");
    c.kubectl(&["create", "quota", "q", "--hard=pods=2,count/configmaps=2"]);
    wait_used(&c, "default", "q", "pods", "0");
    assert_eq!(used(&c, "default", "q", "count/configmaps").as_deref(), Some("1"), "kube-root-ca.crt counts");
    let q = c.get_json(&["quota", "q"]);
    assert_eq!(q["status"]["hard"]["pods"], "2", "{q}");

    c.kubectl(&["run", "p1", IMAGE]);
    c.kubectl(&["run", "p2", IMAGE]);
    let err = c.kubectl_fails(&["run", "p3", IMAGE], None);
    assert!(
        err.contains(
            "(Forbidden): pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{err}"
    );
    // A dry run is answered the same way and charges nothing.
    let err = c.kubectl_fails(&["run", "p3", IMAGE, "--dry-run=server"], None);
    assert!(err.contains("exceeded quota: q"), "{err}");

    c.kubectl(&["create", "configmap", "a"]);
    let err = c.kubectl_fails(&["create", "configmap", "b"], None);
    assert!(
        err.contains("configmaps \"b\" is forbidden: exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"),
        "{err}"
    );

    let yaml = c.kubectl(&["get", "quota", "q", "-o", "yaml"]);
    assert!(yaml.contains("used:") && yaml.contains("pods: \"2\""), "{yaml}");
    let table = c.kubectl(&["get", "quota", "q"]);
    assert!(table.contains("REQUEST") && table.contains("count/configmaps: 2/2, pods: 2/2"), "{table}");
    let describe = c.kubectl(&["describe", "quota", "q"]);
    let rows: Vec<Vec<&str>> = describe.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.contains(&vec!["pods", "2", "2"]), "{describe}");
    assert!(rows.contains(&vec!["count/configmaps", "2", "2"]), "{describe}");

    // Deleting a pod frees its slot (the controller recounts), then the third pod fits.
    c.kubectl(&["delete", "pod", "p1", "--wait=false"]);
    wait_used(&c, "default", "q", "pods", "1");
    c.kubectl(&["run", "p3", IMAGE]);
    assert_eq!(used(&c, "default", "q", "pods").as_deref(), Some("2"));
    c.kubectl(&["delete", "configmap", "a"]);
    wait_used(&c, "default", "q", "count/configmaps", "1");
    c.kubectl(&["create", "configmap", "b"]);
}

#[test]
fn concurrent_creates_never_overshoot() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "burst"]);
    wait_root_ca(&c, "burst");
    // kube-root-ca.crt takes one of the five.
    c.kubectl(&["create", "quota", "q", "-n", "burst", "--hard=count/configmaps=5"]);
    wait_used(&c, "burst", "q", "count/configmaps", "1");
    let accepted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let name = format!("cm{i}");
                    c.kubectl_output(&["create", "configmap", &name, "-n", "burst"], None).status.success()
                })
            })
            .collect();
        handles.into_iter().map(|h| usize::from(h.join().unwrap_or(false))).sum()
    });
    assert_eq!(accepted, 4, "exactly the quota's worth of creates is accepted");
    let listed = c.get_json(&["configmaps", "-n", "burst"]);
    let made = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|cm| cm["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("cm")));
    assert_eq!(made.count(), 4, "{listed}");
    wait_used(&c, "burst", "q", "count/configmaps", "5");
}

#[test]
fn cpu_quota_needs_requests() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "cq"]);
    c.kubectl(&["create", "quota", "compute", "-n", "cq", "--hard=requests.cpu=1,limits.memory=1Gi"]);
    wait_used(&c, "cq", "compute", "requests.cpu", "0");
    let err = c.kubectl_fails(&["run", "bare", "-n", "cq", IMAGE], None);
    assert!(
        err.contains("pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: bare; requests.cpu for: bare"),
        "{err}"
    );
    let pod = |name: &str, cpu: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: cq}}\nspec:\n  containers:\n  - name: c\n    image: 127.0.0.1:1/none:1\n    resources:\n      requests: {{cpu: {cpu}}}\n      limits: {{memory: 256Mi}}\n"
        )
    };
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("a", "600m")));
    wait_used(&c, "cq", "compute", "requests.cpu", "600m");
    assert_eq!(used(&c, "cq", "compute", "limits.memory").as_deref(), Some("256Mi"));
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&pod("b", "500m")));
    assert!(
        err.contains(
            "exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"
        ),
        "{err}"
    );
}

#[test]
fn limit_range_defaults_and_bounds() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "lr"]);
    let range = "apiVersion: v1\nkind: LimitRange\nmetadata: {name: limits, namespace: lr}\nspec:\n  limits:\n  - type: Container\n    max: {cpu: \"1\"}\n    default: {cpu: 500m, memory: 128Mi}\n    defaultRequest: {cpu: 100m}\n";
    c.kubectl_stdin(&["apply", "-f", "-"], Some(range));
    let stored = c.get_json(&["limitrange", "limits", "-n", "lr"]);
    // The LimitRange's own defaulting: memory's default request is its default limit.
    assert_eq!(stored["spec"]["limits"][0]["defaultRequest"]["memory"], "128Mi", "{stored}");

    // Admission reads LimitRanges from a cache that follows the store: wait until it has this one.
    let mut seen = Value::Null;
    eventually("the LimitRange defaults reach admission", WAIT, || {
        let out = c.kubectl_output(&["run", "d", "-n", "lr", IMAGE, "--dry-run=server", "-o", "json"], None);
        seen = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        seen.pointer("/spec/containers/0/resources/limits/cpu").is_some()
    });
    c.kubectl(&["run", "d", "-n", "lr", IMAGE]);
    let pod = c.get_json(&["pod", "d", "-n", "lr"]);
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["cpu"], "500m", "{pod}");
    assert_eq!(resources["limits"]["memory"], "128Mi", "{pod}");
    assert_eq!(resources["requests"]["cpu"], "100m", "{pod}");
    assert_eq!(resources["requests"]["memory"], "128Mi", "{pod}");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container d; cpu, memory limit for container d",
        "{pod}"
    );

    let big = "apiVersion: v1\nkind: Pod\nmetadata: {name: big, namespace: lr}\nspec:\n  containers:\n  - name: c\n    image: 127.0.0.1:1/none:1\n    resources:\n      limits: {cpu: \"2\"}\n";
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(big));
    assert!(
        err.contains("(Forbidden)")
            && err.contains("pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"),
        "{err}"
    );
    let missing = c.kubectl_output(&["get", "pod", "big", "-n", "lr"], None);
    assert!(!missing.status.success(), "the refused pod was not stored");
}

#[test]
fn an_update_that_raises_usage_is_refused() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "svc"]);
    c.kubectl(&["create", "quota", "ports", "-n", "svc", "--hard=services.nodeports=1,services=3"]);
    wait_used(&c, "svc", "ports", "services", "0");
    c.kubectl(&["create", "service", "clusterip", "a", "-n", "svc", "--tcp=80"]);
    c.kubectl(&["create", "service", "nodeport", "b", "-n", "svc", "--tcp=80"]);
    assert_eq!(used(&c, "svc", "ports", "services.nodeports").as_deref(), Some("1"));
    let err = c.kubectl_fails(&["patch", "service", "a", "-n", "svc", "-p", r#"{"spec":{"type":"NodePort"}}"#], None);
    assert!(
        err.contains("services \"a\" is forbidden: exceeded quota: ports, requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1"),
        "{err}"
    );
    let a = c.get_json(&["service", "a", "-n", "svc"]);
    assert_eq!(a["spec"]["type"], "ClusterIP", "{a}");
    // Deleting the NodePort Service frees its port for the update.
    c.kubectl(&["delete", "service", "b", "-n", "svc"]);
    wait_used(&c, "svc", "ports", "services.nodeports", "0");
    c.kubectl(&["patch", "service", "a", "-n", "svc", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    assert_eq!(used(&c, "svc", "ports", "services.nodeports").as_deref(), Some("1"));
    assert_eq!(used(&c, "svc", "ports", "services").as_deref(), Some("1"));
}
