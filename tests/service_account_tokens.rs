//! End to end: a pod's ServiceAccount credentials, as Kubernetes gives them. ServiceAccount admission
//! adds the `kube-api-access-*` projected volume; the kubelet writes a token bound to the pod (through
//! the TokenRequest API), the cluster CA from `kube-root-ca.crt` and the namespace; the container also
//! gets `KUBERNETES_SERVICE_HOST`/`_PORT`. The token then calls the API as the ServiceAccount, with
//! its RBAC, and stops working when the pod is deleted.
//!
//! Needs root, containerd, runc, the CNI plugins, docker-registry, umoci, skopeo and busybox-static.

mod common;

use std::time::Duration;

use common::eventually;
use common::linux::LinuxCluster;

const WAIT: Duration = Duration::from_secs(90);
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn pod(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra_spec}  containers:\n  - name: main\n    image: busybox\n    command: [sleep, \"3600\"]\n"
    )
}

fn wait_ready(s: &LinuxCluster, pod: &str) {
    eventually(&format!("pod {pod} Ready"), WAIT, || {
        let out = s.cluster.kubectl_output(
            &["get", "pod", pod, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
            None,
        );
        String::from_utf8_lossy(&out.stdout) == "True"
    });
}

#[test]
fn a_pod_gets_a_bound_token_that_calls_the_api_as_its_service_account() {
    let s = LinuxCluster::start_linux("skiff-satok");
    let c = &s.cluster;
    c.kubectl(&["create", "serviceaccount", "ci"]);
    c.kubectl(&["create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods"]);
    c.kubectl(&["create", "rolebinding", "ci-reads", "--role=pod-reader", "--serviceaccount=default:ci"]);
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod("client", "  serviceAccountName: ci\n")));
    wait_ready(&s, "client");

    // Admission: the account and the projected volume, mounted read-only in the container.
    let spec = c.get_json(&["pod", "client"])["spec"].clone();
    assert_eq!(spec["serviceAccountName"], "ci");
    let volume = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-")));
    let volume = volume.unwrap_or_else(|| panic!("no kube-api-access volume: {spec}"));
    let mount = &spec["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], SA_DIR);
    assert_eq!(mount["name"], volume["name"]);
    assert_eq!(mount["readOnly"], true);

    // What the container reads.
    let exec = |cmd: &str| c.kubectl(&["exec", "client", "--", "sh", "-c", cmd]);
    assert_eq!(exec(&format!("cat {SA_DIR}/namespace")), "default");
    assert!(exec(&format!("cat {SA_DIR}/ca.crt")).starts_with("-----BEGIN CERTIFICATE-----"));
    let cluster_ip = c.kubectl(&["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(exec("echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT").trim(), format!("{cluster_ip}:443"));
    let err = c.kubectl_fails(&["exec", "client", "--", "sh", "-c", &format!("echo x > {SA_DIR}/token")], None);
    assert!(err.contains("Read-only file system"), "{err}");
    let token = exec(&format!("cat {SA_DIR}/token"));
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // The token is the ServiceAccount, bound to this pod, with the account's permissions.
    let whoami: serde_json::Value =
        serde_json::from_str(&c.kubectl(&["--token", &token, "auth", "whoami", "-o", "json"])).expect("whoami json");
    assert_eq!(whoami["status"]["userInfo"]["username"], "system:serviceaccount:default:ci");
    assert_eq!(whoami["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"][0], "client");
    c.kubectl(&["--token", &token, "get", "pods"]);
    let err = c.kubectl_fails(&["--token", &token, "delete", "pod", "client", "--wait=false"], None);
    assert!(err.contains("cannot delete resource \"pods\""), "{err}");

    // Without automounting there is nothing; a missing account is refused at admission.
    let manual = pod("manual", "  automountServiceAccountToken: false\n");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&manual));
    let volumes = c.get_json(&["pod", "manual"])["spec"]["volumes"].clone();
    assert!(volumes.is_null() || volumes.as_array().is_some_and(Vec::is_empty), "{volumes}");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&pod("orphan", "  serviceAccountName: nobody\n")));
    assert!(err.contains("error looking up service account default/nobody"), "{err}");

    // The bound token dies with its pod.
    c.kubectl(&["delete", "pod", "client", "--wait=true", "--timeout=60s"]);
    eventually("the deleted pod's token refused", WAIT, || {
        let out = c.kubectl_output(&["--token", &token, "get", "pods"], None);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Unauthorized")
    });

    // kube-root-ca.crt is put back when deleted.
    c.kubectl(&["delete", "configmap", "kube-root-ca.crt"]);
    eventually("kube-root-ca.crt recreated", WAIT, || {
        c.kubectl_output(&["get", "configmap", "kube-root-ca.crt"], None).status.success()
    });
    c.kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"]);
}
