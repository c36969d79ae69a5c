//! Admission webhooks with the real kubectl against a real `skiff server`: Validating- and
//! MutatingWebhookConfigurations calling the HTTPS test host of `skiff_testkit::webhook` on
//! loopback (by `url`) or inside a network namespace the test made (by `service`, resolved
//! through a selector-less Service and its EndpointSlice).

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::node::TestNet;
use common::{eventually, Cluster};
use serde_json::Value;
use skiff_testkit::webhook::{WebhookHost, ANNOTATION, LABEL};

static PROBE: AtomicU32 = AtomicU32::new(0);

fn loopback_host() -> WebhookHost {
    WebhookHost::start(IpAddr::from([127, 0, 0, 1]), &[]).expect("webhook host")
}

/// A webhook configuration of `kind` with one webhook per `(name, url, extra)`; `extra` is YAML
/// added to the webhook (indented by the caller's 2 spaces).
fn configuration(kind: &str, name: &str, ca: &str, hooks: &[(&str, &str, &str)]) -> String {
    let mut out =
        format!("apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nwebhooks:\n");
    for (hook, url, extra) in hooks {
        out.push_str(&format!(
            "- name: {hook}\n  clientConfig:\n    url: {url}\n    caBundle: {ca}\n  rules:\n  - operations: [CREATE]\n    apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [configmaps]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n{extra}"
        ));
    }
    out
}

/// Waits until creating a ConfigMap in `ns` fails (the configuration is in effect; a probe that
/// got through before is deleted) and returns kubectl's error.
fn wait_until_refused(c: &Cluster, ns: &str) -> String {
    let mut stderr = String::new();
    eventually("the webhook to take effect", Duration::from_secs(20), || {
        let name = format!("probe-{}", PROBE.fetch_add(1, Ordering::Relaxed));
        let out = c.kubectl_output(&["create", "configmap", &name, "-n", ns], None);
        if out.status.success() {
            c.kubectl(&["delete", "configmap", &name, "-n", ns]);
            return false;
        }
        stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        true
    });
    stderr
}

#[test]
fn validating_webhook_denies_with_kubes_message_and_selectors_exclude() {
    let c = Cluster::start();
    let host = loopback_host();
    let extra = "  namespaceSelector:\n    matchExpressions:\n    - {key: webhooks, operator: NotIn, values: [\"off\"]}\n  objectSelector:\n    matchExpressions:\n    - {key: skip, operator: DoesNotExist}\n";
    let config = configuration(
        "ValidatingWebhookConfiguration",
        "deny",
        &host.ca_bundle(),
        &[("deny.skiff.dev", &host.url("/deny"), extra)],
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&config));
    let listed = c.kubectl(&["get", "validatingwebhookconfigurations"]);
    let row: Vec<&str> = listed.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert!(listed.starts_with("NAME") && listed.contains("WEBHOOKS") && row[..2] == ["deny", "1"], "{listed}");
    let refused = wait_until_refused(&c, "default");
    assert!(
        refused.contains("admission webhook \"deny.skiff.dev\" denied the request: the test webhook refuses probe-"),
        "{refused}"
    );
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-file\n";
    let refused = c.kubectl_fails(&["create", "-f", "-"], Some(manifest));
    assert!(
        refused.contains("Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"deny.skiff.dev\" denied the request: the test webhook refuses from-file"),
        "{refused}"
    );

    // What the webhook was sent.
    let review = host.reviews().pop().expect("a review");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    let request = &review["request"];
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["kind"], serde_json::json!({"group": "", "version": "v1", "kind": "ConfigMap"}));
    assert_eq!(request["resource"]["resource"], "configmaps");
    assert_eq!(request["namespace"], "default");
    assert_eq!(request["object"]["kind"], "ConfigMap");
    assert_eq!(request["dryRun"], false);
    assert!(request["userInfo"]["username"].as_str().is_some_and(|u| !u.is_empty()), "{request}");

    // Not denied: a namespace the namespaceSelector leaves out, an object the objectSelector leaves out.
    c.kubectl(&["create", "namespace", "quiet"]);
    c.kubectl(&["label", "namespace", "quiet", "webhooks=off"]);
    eventually("the namespace label to reach the webhooks", Duration::from_secs(20), || {
        c.kubectl_output(&["create", "configmap", "in-quiet", "-n", "quiet"], None).status.success()
    });
    let skipped = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: skipped\n  namespace: default\n  labels: {skip: \"yes\"}\n";
    c.kubectl_stdin(&["create", "-f", "-"], Some(skipped));
    c.kubectl(&["get", "configmap", "skipped", "-n", "default"]);

    // Server-side dry run: the webhook (sideEffects None) is called with dryRun and still denies.
    let before = host.reviews().len();
    let dry = c.kubectl_fails(&["create", "configmap", "dry", "--dry-run=server"], None);
    assert!(dry.contains("denied the request: the test webhook refuses dry"), "{dry}");
    let reviews = host.reviews();
    assert_eq!(reviews.len(), before + 1);
    assert_eq!(reviews[before]["request"]["dryRun"], true);

    // Webhooks are not called for their own configurations: this update goes through.
    c.kubectl(&["label", "validatingwebhookconfiguration", "deny", "touched=yes"]);
    assert_eq!(host.reviews().len(), before + 1);

    // Deleting the configuration lifts the denial.
    c.kubectl(&["delete", "validatingwebhookconfiguration", "deny"]);
    eventually("the webhook to be gone", Duration::from_secs(20), || {
        c.kubectl_output(&["create", "configmap", "after", "-n", "default"], None).status.success()
    });
}

#[test]
fn mutating_webhook_adds_a_label_and_dry_run_shows_it() {
    let c = Cluster::start();
    let host = loopback_host();
    let config = configuration(
        "MutatingWebhookConfiguration",
        "label",
        &host.ca_bundle(),
        &[("label.skiff.dev", &host.url("/label"), "")],
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&config));
    let mut n = 0;
    eventually("the mutating webhook to take effect", Duration::from_secs(20), || {
        n += 1;
        let name = format!("m{n}");
        c.kubectl(&["create", "configmap", &name]);
        let cm = c.get_json(&["configmap", &name]);
        cm["metadata"]["labels"][LABEL] == "yes"
    });
    let out = c.kubectl_output(&["create", "configmap", "shown"], None);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Warning: the test webhook added a label"), "{stderr}");
    let shown = c.kubectl(&["get", "configmap", "shown", "--show-labels"]);
    assert!(shown.contains(&format!("{LABEL}=yes")), "{shown}");

    // A server-side dry run returns the mutated object and stores nothing.
    let dry = c.kubectl(&["create", "configmap", "dry", "--dry-run=server", "-o", "json"]);
    let dry: Value = serde_json::from_str(&dry).expect("json");
    assert_eq!(dry["metadata"]["labels"][LABEL], "yes", "{dry}");
    assert_eq!(host.reviews().last().map(|r| r["request"]["dryRun"].clone()), Some(Value::Bool(true)));
    let missing = c.kubectl_fails(&["get", "configmap", "dry"], None);
    assert!(missing.contains("NotFound"), "{missing}");
}

#[test]
fn failing_webhooks_follow_the_failure_policy() {
    let c = Cluster::start();
    let host = loopback_host();
    let slow_url = host.url("/slow");
    let config = configuration(
        "ValidatingWebhookConfiguration",
        "failing",
        &host.ca_bundle(),
        &[
            ("slow.skiff.dev", &slow_url, "  timeoutSeconds: 1\n  namespaceSelector: {matchLabels: {case: slow}}\n"),
            (
                "ignored.skiff.dev",
                &slow_url,
                "  timeoutSeconds: 1\n  failurePolicy: Ignore\n  namespaceSelector: {matchLabels: {case: ignore}}\n",
            ),
            ("garbage.skiff.dev", &host.url("/garbage"), "  namespaceSelector: {matchLabels: {case: garbage}}\n"),
            ("uid.skiff.dev", &host.url("/wrong-uid"), "  namespaceSelector: {matchLabels: {case: uid}}\n"),
        ],
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&config));
    for case in ["slow", "ignore", "garbage", "uid"] {
        c.kubectl(&["create", "namespace", case]);
        c.kubectl(&["label", "namespace", case, &format!("case={case}")]);
    }

    let slow = wait_until_refused(&c, "slow");
    assert!(
        slow.contains(&format!(
            "Internal error occurred: failed calling webhook \"slow.skiff.dev\": failed to call webhook: Post \"{slow_url}?timeout=1s\": context deadline exceeded"
        )),
        "{slow}"
    );
    let garbage = wait_until_refused(&c, "garbage");
    assert!(
        garbage.contains("Internal error occurred: failed calling webhook \"garbage.skiff.dev\": failed to call webhook: couldn't decode the response"),
        "{garbage}"
    );
    let uid = wait_until_refused(&c, "uid");
    assert!(
        uid.contains(
            "failed calling webhook \"uid.skiff.dev\": received invalid webhook response: expected response.uid="
        ),
        "{uid}"
    );
    // failurePolicy Ignore: the timeout is logged, the object created (after the webhook was tried).
    let before = host.reviews().len();
    c.kubectl(&["create", "configmap", "tolerated", "-n", "ignore"]);
    c.kubectl(&["get", "configmap", "tolerated", "-n", "ignore"]);
    assert!(
        host.reviews()[before..].iter().any(|r| r["request"]["name"] == "tolerated"),
        "the ignored webhook was still called"
    );

    // A bad configuration is refused with Kubernetes' field paths.
    let bad = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: bad\nwebhooks:\n- name: bad.skiff.dev\n  clientConfig:\n    url: http://127.0.0.1:1/\n  timeoutSeconds: 31\n  admissionReviewVersions: [v1beta1]\n";
    let refused = c.kubectl_fails(&["create", "-f", "-"], Some(bad));
    for expected in [
        "The ValidatingWebhookConfiguration \"bad\" is invalid",
        "webhooks[0].clientConfig.url: Invalid value: \"http://127.0.0.1:1/\": 'https' is the only allowed URL scheme",
        "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
        "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
    ] {
        assert!(refused.contains(expected), "{expected}\nin: {refused}");
    }
}

/// A network namespace with a veth pair to the host, deleted on drop.
struct Netns {
    name: String,
    host_ip: String,
    inner_ip: String,
}

impl Netns {
    fn new(net: &TestNet) -> Self {
        // The /24 the TestNet derived for this test; nothing else uses it here.
        let base = net.cidr.trim_end_matches(".0/24").to_string();
        let ns =
            Netns { name: format!("skiff-{}", net.node), host_ip: format!("{base}.1"), inner_ip: format!("{base}.2") };
        let host_if = format!("{}h", net.bridge);
        let inner_if = format!("{}n", net.bridge);
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("ip");
            assert!(status.success(), "ip {args:?}");
        };
        run(&["netns", "add", &ns.name]);
        run(&["link", "add", &host_if, "type", "veth", "peer", "name", &inner_if]);
        run(&["link", "set", &inner_if, "netns", &ns.name]);
        run(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &host_if]);
        run(&["link", "set", &host_if, "up"]);
        run(&["-n", &ns.name, "addr", "add", &format!("{}/30", ns.inner_ip), "dev", &inner_if]);
        run(&["-n", &ns.name, "link", "set", &inner_if, "up"]);
        run(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

#[test]
fn service_reference_resolves_through_endpoint_slices() {
    let c = Cluster::start();
    let net = TestNet::new();
    let ns = Netns::new(&net);
    let host = WebhookHost::start_in_netns(&ns.name, ns.inner_ip.parse().expect("ip"), &["hook.default.svc"])
        .expect("webhook host in the netns");
    assert!(!ns.host_ip.is_empty());
    let objects = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: hook\n  namespace: default\nspec:\n  ports:\n  - {{name: https, port: 443, targetPort: 8443}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: hook-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: hook}}\naddressType: IPv4\nports:\n- {{name: https, port: {port}, protocol: TCP}}\nendpoints:\n- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n",
        port = host.addr.port(),
        ip = ns.inner_ip
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&objects));
    let config = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: by-service\nwebhooks:\n- name: service.skiff.dev\n  clientConfig:\n    service: {{namespace: default, name: hook, path: /deny}}\n    caBundle: {ca}\n  rules:\n  - operations: [CREATE]\n    apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [configmaps]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n",
        ca = host.ca_bundle()
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&config));
    let stored = c.get_json(&["validatingwebhookconfiguration", "by-service"]);
    assert_eq!(stored["webhooks"][0]["clientConfig"]["service"]["port"], 443, "port defaulted");
    let refused = wait_until_refused(&c, "default");
    assert!(
        refused.contains("admission webhook \"service.skiff.dev\" denied the request: the test webhook refuses probe-"),
        "{refused}"
    );
    assert!(!host.reviews().is_empty(), "the host in the netns was called");
}

#[test]
fn reinvocation_reruns_an_earlier_webhook_once() {
    let c = Cluster::start();
    let host = loopback_host();
    let config = configuration(
        "MutatingWebhookConfiguration",
        "chain",
        &host.ca_bundle(),
        &[
            ("a-label.skiff.dev", &host.url("/label"), "  reinvocationPolicy: IfNeeded\n"),
            ("b-annotate.skiff.dev", &host.url("/annotate"), ""),
        ],
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&config));
    let mut n = 0;
    let mut name = String::new();
    eventually("the mutating webhooks to take effect", Duration::from_secs(20), || {
        n += 1;
        name = format!("r{n}");
        c.kubectl(&["create", "configmap", &name]);
        let cm = c.get_json(&["configmap", &name]);
        cm["metadata"]["labels"][LABEL] == "yes" && cm["metadata"]["annotations"][ANNOTATION] == "yes"
    });
    // The annotation came after the label webhook ran: it is called again (and only once more).
    let calls = |path_object: &str| {
        host.reviews()
            .iter()
            .filter(|r| {
                r["request"]["name"] == name.as_str()
                    && r["request"]["object"]["metadata"]
                        .get("annotations")
                        .is_some_and(|a| a.get(ANNOTATION).is_some())
                        == (path_object == "annotated")
            })
            .count()
    };
    assert_eq!(calls("annotated"), 1, "the label webhook saw the annotated object once: {:?}", host.reviews());
    assert_eq!(calls("plain"), 2, "the label and annotate webhooks each saw the object before the annotation");
}

#[test]
fn an_equivalent_version_webhook_sees_and_patches_the_object_in_its_own_version() {
    // The webhook asks for autoscaling/v2 HPAs; kubectl 1.32 writes autoscaling/v1.
    let c = Cluster::start();
    let host = loopback_host();
    let config = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata:\n  name: hpa-v2\nwebhooks:\n- name: hpa.skiff.dev\n  clientConfig:\n    url: {url}\n    caBundle: {ca}\n  rules:\n  - operations: [CREATE]\n    apiGroups: [autoscaling]\n    apiVersions: [v2]\n    resources: [horizontalpodautoscalers]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n",
        url = host.url("/annotate"),
        ca = host.ca_bundle()
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&config));
    c.kubectl(&["create", "deployment", "x", "--image=busybox"]);
    eventually("the webhook to annotate a v1 HPA", Duration::from_secs(20), || {
        let _ = c.kubectl_output(&["delete", "hpa", "x", "--ignore-not-found"], None);
        c.kubectl(&["autoscale", "deploy/x", "--min=1", "--max=3", "--cpu-percent=50"]);
        c.get_json(&["hpa", "x"])["metadata"]["annotations"][ANNOTATION] == "yes"
    });
    let review = host
        .reviews()
        .into_iter()
        .rev()
        .find(|r| r["request"]["kind"]["kind"] == "HorizontalPodAutoscaler")
        .expect("a review of the HPA");
    let request = &review["request"];
    assert_eq!(request["kind"]["version"], "v2", "{review}");
    assert_eq!(request["requestKind"]["version"], "v1", "{review}");
    assert_eq!(request["object"]["apiVersion"], "autoscaling/v2", "{review}");
    assert_eq!(request["object"]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50, "{review}");
    // The patch made against v2 landed, and the object kept its metric.
    let hpa = c.get_json(&["hpa", "x"]);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50, "{hpa}");
}

/// A webhook configuration of `kind` whose one webhook watches CREATE of `pods/binding`.
fn binding_configuration(kind: &str, name: &str, ca: &str, url: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nwebhooks:\n- name: {name}.skiff.dev\n  clientConfig:\n    url: {url}\n    caBundle: {ca}\n  rules:\n  - operations: [CREATE]\n    apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods/binding]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n"
    )
}

#[test]
fn binding_webhooks_see_the_binding_and_can_refuse_or_annotate_it() {
    let c = Cluster::start();
    let host = loopback_host();
    // No node runs here: the test binds the pods itself, as a scheduler would.
    let pod = |name: &str| {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: app\n    image: 127.0.0.1:1/none:1\n"
        );
        c.kubectl_stdin(&["create", "-f", "-"], Some(&manifest));
    };
    let bind = |name: &str| {
        let binding = format!(
            r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"{name}"}},"target":{{"apiVersion":"v1","kind":"Node","name":"node-a"}}}}"#
        );
        let path = format!("/api/v1/namespaces/default/pods/{name}/binding");
        c.curl("POST", &path, "application/json", Some(binding.as_bytes()))
    };

    let deny =
        binding_configuration("ValidatingWebhookConfiguration", "no-binding", &host.ca_bundle(), &host.url("/deny"));
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&deny));
    pod("refused");
    let mut answer = (0, String::new());
    eventually("the binding webhook to take effect", Duration::from_secs(20), || {
        answer = bind("refused");
        answer.0 == 403
    });
    assert!(answer.1.contains("admission webhook \\\"no-binding.skiff.dev\\\" denied the request"), "{}", answer.1);
    assert_eq!(c.kubectl(&["get", "pod", "refused", "-o", "jsonpath={.spec.nodeName}"]), "", "refused: not bound");
    // What it was sent: the Binding, not the pod.
    let review = host.reviews().pop().expect("a review");
    let request = &review["request"];
    assert_eq!(request["kind"], serde_json::json!({"group": "", "version": "v1", "kind": "Binding"}));
    assert_eq!(request["resource"], serde_json::json!({"group": "", "version": "v1", "resource": "pods"}));
    assert_eq!((request["subResource"].as_str(), request["operation"].as_str()), (Some("binding"), Some("CREATE")));
    assert_eq!((request["name"].as_str(), request["namespace"].as_str()), (Some("refused"), Some("default")));
    assert_eq!(request["object"]["kind"], "Binding");
    assert_eq!(request["object"]["target"]["name"], "node-a");
    assert_eq!(request["oldObject"], Value::Null);
    // A webhook on pods alone is not asked about bindings, and this one is not asked about pods.
    assert!(host.reviews().iter().all(|r| r["request"]["kind"]["kind"] == "Binding"));
    c.kubectl(&["delete", "validatingwebhookconfiguration", "no-binding"]);

    // A mutating webhook annotates the Binding: the annotation lands on the bound pod.
    let annotate = binding_configuration(
        "MutatingWebhookConfiguration",
        "note-binding",
        &host.ca_bundle(),
        &host.url("/annotate"),
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&annotate));
    // Each try binds a new pod, so one bound before the configuration took effect does not count.
    let mut tries = 0;
    let mut noted = String::new();
    eventually("the mutating binding webhook to be called", Duration::from_secs(20), || {
        tries += 1;
        noted = format!("noted-{tries}");
        pod(&noted);
        let before = host.reviews().len();
        let (code, body) = bind(&noted);
        assert_eq!(code, 201, "{body}");
        host.reviews().len() > before
    });
    let pod = c.get_json(&["pod", &noted]);
    assert_eq!(pod["spec"]["nodeName"], "node-a");
    assert_eq!(pod["metadata"]["annotations"][ANNOTATION], "yes", "{pod}");
}
