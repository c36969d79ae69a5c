//! API aggregation with the real kubectl against a real `skiff server`: the local APIServices
//! of every served group-version, and a remote one proxied to the extension API server of
//! `skiff_testkit::extension` on loopback (reached through a selector-less Service and its
//! EndpointSlice, trusted through the APIService's `caBundle`).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;
use skiff_testkit::extension::{ExtensionServer, SEEN_AUTHORIZATION, SEEN_GROUPS, SEEN_USER};

const GROUP: &str = "wid.skiff.dev";
const WAIT: Duration = Duration::from_secs(30);

fn available(c: &Cluster, name: &str) -> (String, String, String) {
    let svc = c.get_json(&["apiservice", name]);
    let cond = svc["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .cloned()
        .unwrap_or(Value::Null);
    let text = |k: &str| cond[k].as_str().unwrap_or("").to_string();
    (text("status"), text("reason"), text("message"))
}

#[test]
fn local_apiservices_are_listed_for_every_served_group_version() {
    let c = Cluster::start();
    eventually("the local APIServices", WAIT, || {
        c.kubectl_output(&["get", "apiservice", "v1.apps"], None).status.success()
            && c.kubectl_output(&["get", "apiservice", "v2.autoscaling"], None).status.success()
    });
    assert_eq!(available(&c, "v1."), ("True".into(), "Local".into(), "Local APIServices are always available".into()));
    let table = c.kubectl(&["get", "apiservices"]);
    assert!(
        table.contains("v1.apps") && table.contains("Local") && table.contains("v1beta1.metrics.k8s.io"),
        "{table}"
    );
}

#[test]
fn a_remote_apiservice_is_proxied_and_joins_discovery() {
    let c = Cluster::start();
    let ext = ExtensionServer::start(IpAddr::from([127, 0, 0, 1]), &["wid.default.svc"], GROUP, "v1alpha1")
        .expect("extension server");
    let objects = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: wid, namespace: default}}\nspec:\n  ports:\n  - {{name: https, port: 443, targetPort: 8443}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: wid-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: wid}}\naddressType: IPv4\nports:\n- {{name: https, port: {port}, protocol: TCP}}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n  conditions: {{ready: true}}\n---\napiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: v1alpha1.{GROUP}}}\nspec:\n  group: {GROUP}\n  version: v1alpha1\n  groupPriorityMinimum: 1000\n  versionPriority: 15\n  service: {{namespace: default, name: wid}}\n  caBundle: {ca}\n",
        port = ext.addr.port(),
        ca = ext.ca_bundle()
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&objects));
    let name = format!("v1alpha1.{GROUP}");
    eventually("the APIService to be available", WAIT, || available(&c, &name).0 == "True");
    assert_eq!(available(&c, &name).1, "Passed");

    // Proxied: the extension server's own discovery document, and its objects.
    let doc: Value =
        serde_json::from_str(&c.kubectl(&["get", "--raw", &format!("/apis/{GROUP}/v1alpha1")])).expect("json");
    assert_eq!(doc["resources"][0]["name"], "widgets", "{doc}");
    let list: Value = serde_json::from_str(&c.kubectl(&[
        "get",
        "--raw",
        &format!("/apis/{GROUP}/v1alpha1/namespaces/default/widgets"),
    ]))
    .expect("json");
    let seen = &list["items"][0]["metadata"]["annotations"];
    assert_eq!(seen[SEEN_AUTHORIZATION], "false", "the caller's credential is not passed on: {list}");
    assert!(!seen[SEEN_USER].as_str().unwrap_or("").is_empty(), "{list}");
    assert!(seen[SEEN_GROUPS].as_str().is_some_and(|g| g.contains("system:authenticated")), "{list}");

    // Discovery: the group in /apis, /apis/<group>, and kubectl api-resources (aggregated).
    let group: Value = serde_json::from_str(&c.kubectl(&["get", "--raw", &format!("/apis/{GROUP}")])).expect("json");
    assert_eq!(group["preferredVersion"]["groupVersion"], format!("{GROUP}/v1alpha1"), "{group}");
    let apis = c.kubectl(&["get", "--raw", "/apis"]);
    assert!(apis.contains(GROUP), "{apis}");
    eventually("kubectl api-resources to list widgets", WAIT, || {
        let out = c.kubectl_output(&["api-resources", "--api-group", GROUP], None);
        String::from_utf8_lossy(&out.stdout).contains("widgets")
    });
    let resources = c.kubectl(&["api-resources", "--api-group", GROUP]);
    assert!(resources.contains("wd") && resources.contains("Widget"), "{resources}");

    // A dead backend: 503 with a clear message, and Available=False.
    drop(ext);
    eventually("the APIService to be unavailable", WAIT, || available(&c, &name).0 == "False");
    let (_, reason, message) = available(&c, &name);
    assert_eq!(reason, "FailedDiscoveryCheck", "{message}");
    let (code, body) = c.curl_accept(&format!("/apis/{GROUP}/v1alpha1/namespaces/default/widgets"), "application/json");
    assert_eq!(code, 503, "{body}");
    let status: Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["reason"], "ServiceUnavailable", "{body}");
    assert!(status["message"].as_str().is_some_and(|m| m.starts_with("service unavailable: ")), "{body}");
    c.kubectl(&["delete", "apiservice", &name]);
    c.kubectl(&["delete", "service", "wid"]);
    c.kubectl(&["delete", "endpointslice", "wid-1"]);
}
