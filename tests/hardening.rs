//! End-to-end: the holes a review of the API server reproduced stay closed. Client numbers that
//! used to panic a handler, writes at the cluster-wide path of a namespaced resource, file modes
//! of the data directory, the serving certificate under strict verification (Python 3.13), and
//! unpaginated lists streamed whole. Real `skiff server`, real kubectl, curl and Python.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{tail, Cluster};
use k8s_rs_pb::api::core::v1::ConfigMapList;
use k8s_rs_pb::apimachinery::pkg::runtime::Unknown;
use protobuf::Message;
use serde_json::{json, Value};

fn bound_pod(name: &str) -> String {
    // A pod bound to a node waits for its kubelet, so its deletion is graceful (the path that
    // computes a deadline from the grace period).
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "busybox"}]}})
    .to_string()
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn huge_grace_periods_are_answered_not_panicked() {
    let c = Cluster::start();
    for name in ["by-query", "by-body", "by-kubectl"] {
        c.kubectl_stdin(&["create", "-f", "-"], Some(&bound_pod(name)));
    }
    let huge = i64::MAX;
    let (code, body) = c.curl(
        "DELETE",
        &format!("/api/v1/namespaces/default/pods/by-query?gracePeriodSeconds={huge}"),
        "application/json",
        None,
    );
    assert_eq!(code, 200, "query grace period: {body}\n{}", tail(&c.server_log()));
    let pod = parse(&body);
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], json!(huge));
    assert!(pod["metadata"]["deletionTimestamp"].as_str().is_some_and(|t| t.starts_with("9999-")), "{pod}");

    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": huge}).to_string();
    let (code, body) =
        c.curl("DELETE", "/api/v1/namespaces/default/pods/by-body", "application/json", Some(options.as_bytes()));
    assert_eq!(code, 200, "body grace period: {body}");
    assert_eq!(parse(&body)["metadata"]["deletionGracePeriodSeconds"], json!(huge));

    // Past 64 bits: a decoding error, 400, as kube-apiserver answers.
    let options = r#"{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":1e30}"#;
    let (code, body) =
        c.curl("DELETE", "/api/v1/namespaces/default/pods/by-body", "application/json", Some(options.as_bytes()));
    assert_eq!(code, 400, "{body}");
    let (code, body) = c.curl(
        "DELETE",
        "/api/v1/namespaces/default/pods/by-body?gracePeriodSeconds=99999999999999999999",
        "application/json",
        None,
    );
    assert_eq!(code, 400, "{body}");

    c.kubectl(&["delete", "pod", "by-kubectl", &format!("--grace-period={huge}"), "--wait=false"]);
    let pod = c.get_json(&["pod", "by-kubectl"]);
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], json!(huge));
    // The server is still serving.
    c.kubectl(&["get", "pods"]);
}

#[test]
fn client_numbers_are_bounded_at_admission() {
    let c = Cluster::start();
    let pod = |spec: Value| {
        let mut spec = spec;
        spec["containers"][0]["name"] = json!("c");
        spec["containers"][0]["image"] = json!("busybox");
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}).to_string()
    };
    let cases = [
        (
            pod(json!({"activeDeadlineSeconds": i64::MAX, "containers": [{}]})),
            "spec.activeDeadlineSeconds: Invalid value: 9223372036854775807: must be between 1 and 2147483647, inclusive",
        ),
        (
            pod(json!({"terminationGracePeriodSeconds": -1, "containers": [{}]})),
            "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            pod(json!({"containers": [{"ports": [{"containerPort": 70000}]}]})),
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            pod(json!({"containers": [{"resources": {"requests": {"memory": "99999999999999999999999Pi"}}}]})),
            "spec.containers[0].resources.requests[memory]: Invalid value: \"99999999999999999999999Pi\"",
        ),
    ];
    for (manifest, message) in cases {
        let (code, body) =
            c.curl("POST", "/api/v1/namespaces/default/pods", "application/json", Some(manifest.as_bytes()));
        assert_eq!(code, 422, "{manifest}: {body}");
        let status = parse(&body);
        assert_eq!(status["reason"], "Invalid", "{body}");
        assert!(status["message"].as_str().is_some_and(|m| m.contains(message)), "{message} in {body}");
        let stderr = c.kubectl_fails(&["create", "-f", "-"], Some(&manifest));
        assert!(stderr.contains(message), "kubectl: {stderr}");
    }
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": -1, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    .to_string();
    let stderr = c.kubectl_fails(&["create", "-f", "-"], Some(&deployment));
    assert!(stderr.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"), "{stderr}");
    // Nothing was stored.
    assert_eq!(c.kubectl(&["get", "pods,deployments", "-o", "name"]).trim(), "");
}

#[test]
fn cluster_wide_path_of_a_namespaced_resource_serves_only_list_and_watch() {
    let c = Cluster::start();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "stray", "namespace": "default"}, "data": {"a": "b"}})
    .to_string();
    let (code, body) = c.curl("POST", "/api/v1/configmaps", "application/json", Some(cm.as_bytes()));
    assert_eq!(code, 405, "{body}");
    let status = parse(&body);
    assert_eq!(status["reason"], "MethodNotAllowed", "{body}");
    assert_eq!(status["message"], "the server does not allow this method on the requested resource");
    let (code, _) = c.curl("DELETE", "/api/v1/configmaps", "application/json", None);
    assert_eq!(code, 405);
    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        let ct = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        let body = if matches!(method, "PUT" | "PATCH") { Some(cm.as_bytes()) } else { None };
        let (code, text) = c.curl(method, "/api/v1/configmaps/stray", ct, body);
        assert_eq!(code, 404, "{method}: {text}");
        assert_eq!(parse(&text)["message"], "the server could not find the requested resource", "{method}");
    }
    let (code, _) = c.curl("POST", "/apis/apps/v1/deployments", "application/json", Some(b"{}"));
    assert_eq!(code, 405);
    // Nothing was stored anywhere: neither namespaced nor under a namespace-less key.
    c.kubectl_stdin(&["create", "-f", "-"], Some(&cm));
    // (Every namespace also has its `kube-root-ca.crt`.)
    let names = c.kubectl(&["get", "configmaps", "-A", "-o", "name"]);
    let ours: Vec<&str> = names.lines().filter(|n| *n != "configmap/kube-root-ca.crt").collect();
    assert_eq!(ours, ["configmap/stray"]);
    // Lists and watches across namespaces still work, and cluster-scoped writes too.
    let (code, body) = c.curl("GET", "/api/v1/configmaps", "application/json", None);
    assert_eq!(code, 200, "{body}");
    let items = parse(&body)["items"].clone();
    let ours = items.as_array().into_iter().flatten().filter(|i| i["metadata"]["name"] != "kube-root-ca.crt");
    assert_eq!(ours.count(), 1, "{items}");
    let (code, body) = c.curl("GET", "/api/v1/configmaps?watch=1&timeoutSeconds=1", "application/json", None);
    assert_eq!(code, 200);
    assert!(body.contains("\"ADDED\"") && body.contains("stray"), "{body}");
    c.kubectl(&["get", "pods", "-A"]);
    c.kubectl(&["create", "namespace", "still-works"]);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn secret_files(dir: &Path) -> Vec<PathBuf> {
    ["admin.token", "kubeconfig", "ca.key", "server.key", "state.db", "state.db-wal", "state.db-shm"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

fn assert_private(dir: &Path, when: &str) {
    assert_eq!(mode(dir), 0o700, "{when}: data dir");
    for f in secret_files(dir) {
        assert_eq!(mode(&f), 0o600, "{when}: {}", f.display());
    }
}

#[test]
fn data_dir_and_secret_bearing_files_are_private_across_restarts() {
    let mut c = Cluster::start();
    c.kubectl(&["create", "configmap", "x", "--from-literal=a=b"]);
    let dir = c.data_dir().to_path_buf();
    assert_private(&dir, "first start");

    // A data dir an earlier version left world-readable is narrowed on the next start.
    c.kill9();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for f in secret_files(&dir).iter().filter(|f| f.exists()) {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod file");
    }
    c.spawn();
    c.kubectl(&["create", "configmap", "y", "--from-literal=a=b"]);
    assert_private(&dir, "restart");
    assert_eq!(c.kubectl(&["get", "configmap", "x", "-o", "jsonpath={.data.a}"]), "b");
}

fn python313() -> PathBuf {
    let root = Command::new("pyenv").arg("root").output().expect("pyenv root");
    let root = String::from_utf8_lossy(&root.stdout).trim().to_string();
    let python = Path::new(&root).join("versions/3.13.0/bin/python3");
    assert!(python.exists(), "{} is missing (pyenv install 3.13.0)", python.display());
    python
}

fn run_python(python: &Path, script: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .output()
        .expect("run python");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

const STRICT_GET_VERSION: &str = r#"
import json, ssl, sys, urllib.request
url, cafile, token = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
req = urllib.request.Request(url + "/version", headers={"Authorization": "Bearer " + token})
with urllib.request.urlopen(req, context=ctx) as resp:
    print(json.load(resp)["gitVersion"])
for host in ("localhost", "127.0.0.1"):
    port = url.rsplit(":", 1)[1]
    with urllib.request.urlopen(urllib.request.Request(f"https://{host}:{port}/version",
            headers={"Authorization": "Bearer " + token}), context=ctx) as resp:
        assert resp.status == 200
print("OK")
"#;

const OFFICIAL_CLIENT: &str = r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
names = [n.metadata.name for n in client.CoreV1Api().list_namespace().items]
assert "default" in names, names
print("OK")
"#;

#[test]
fn python_313_strict_verification_accepts_the_serving_certificate() {
    let python = python313();
    let c = Cluster::start();
    let ca = c.data_dir().join("ca.crt");
    let ca = ca.to_str().expect("utf-8 path");
    let (ok, out) = run_python(&python, STRICT_GET_VERSION, &[&c.url(), ca, &c.token()], c.data_dir());
    assert!(ok && out.trim_end().ends_with("OK"), "strict verification failed:\n{out}");

    // The official client (urllib3 on the same default context) connects on 3.13 too.
    let (has_client, _) = run_python(&python, "import kubernetes", &[], c.data_dir());
    assert!(has_client, "the `kubernetes` package is not installed for Python 3.13 (scripts/install-deps.sh)");
    let kubeconfig = c.kubeconfig();
    let (ok, out) = run_python(&python, OFFICIAL_CLIENT, &[kubeconfig.to_str().expect("utf-8")], c.data_dir());
    assert!(ok && out.trim_end().ends_with("OK"), "official client on 3.13:\n{out}");
}

#[test]
fn large_unpaginated_lists_are_complete_and_valid() {
    const N: usize = 3000;
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "bulk"]);
    let items: Vec<Value> = (0..N)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("cm-{i:05}"), "namespace": "bulk", "labels": {"set": "bulk"}},
                   "data": {"i": i.to_string()}})
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    // A `kind: List` has no OpenAPI schema of its own on skiff yet, so kubectl validates nothing here.
    c.kubectl_stdin(&["create", "--validate=false", "-f", "-"], Some(&list));
    let (_, latest) = c.curl("GET", "/api/v1/namespaces/bulk/configmaps?limit=1", "application/json", None);
    let latest: i64 = parse(&latest)["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("rv");

    // HTTP, objects: every item once, in key order, and the list's resourceVersion.
    let (code, body) = c.curl("GET", "/api/v1/namespaces/bulk/configmaps", "application/json", None);
    assert_eq!(code, 200);
    let list = parse(&body);
    assert_eq!(list["kind"], "ConfigMapList");
    let rv: i64 = list["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("list rv");
    assert!(rv >= latest, "list revision {rv} older than {latest}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .filter(|n| *n != "kube-root-ca.crt")
        .collect();
    let want: Vec<String> = (0..N).map(|i| format!("cm-{i:05}")).collect();
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
    for item in list["items"].as_array().expect("items") {
        let item_rv: i64 = item["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("item rv");
        assert!(item_rv <= rv);
    }

    // The same list in protobuf, as Go clients ask for it: streamed in pages too (two passes, the
    // envelope's length first), every item once, in key order.
    let path = c.data_dir().join("list.pb");
    let out = Command::new("curl")
        .args(["-sk", "-o"])
        .arg(&path)
        .args(["-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", c.token()))
        .args(["-H", "Accept: application/vnd.kubernetes.protobuf"])
        .arg(format!("{}/api/v1/namespaces/bulk/configmaps", c.url()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let bytes = std::fs::read(&path).expect("the protobuf body");
    let unknown = Unknown::parse_from_bytes(bytes.strip_prefix(b"k8s\0").expect("magic")).expect("an Unknown");
    assert_eq!(unknown.typeMeta.kind(), "ConfigMapList");
    let pb_list = ConfigMapList::parse_from_bytes(unknown.raw()).expect("a ConfigMapList");
    let pb_names: Vec<&str> =
        pb_list.items.iter().map(|i| i.metadata.name()).filter(|n| *n != "kube-root-ca.crt").collect();
    assert_eq!(pb_names, want.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(pb_list.metadata.resourceVersion().parse::<i64>().is_ok_and(|v| v >= rv));

    // Across namespaces, with a label selector, and as a Table.
    let (code, body) = c.curl("GET", "/api/v1/configmaps?labelSelector=set%3Dbulk", "application/json", None);
    assert_eq!(code, 200);
    assert_eq!(parse(&body)["items"].as_array().map(Vec::len), Some(N));
    let (code, body) =
        c.curl_accept("/api/v1/namespaces/bulk/configmaps", "application/json;as=Table;v=v1;g=meta.k8s.io");
    assert_eq!(code, 200);
    let table = parse(&body);
    assert_eq!(table["kind"], "Table");
    assert!(table["columnDefinitions"].as_array().is_some_and(|c| !c.is_empty()));
    // The namespace's own `kube-root-ca.crt` sorts last.
    assert_eq!(table["rows"].as_array().map(Vec::len), Some(N + 1));
    assert_eq!(table["rows"][N - 1]["cells"][0], json!(format!("cm-{:05}", N - 1)));

    // kubectl without chunking (one unpaginated list), as JSON and as its table.
    let out = c.kubectl(&["get", "configmaps", "-n", "bulk", "--chunk-size=0", "-o", "json"]);
    assert_eq!(parse(&out)["items"].as_array().map(Vec::len), Some(N + 1));
    let out = c.kubectl(&["get", "configmaps", "-A", "-l", "set=bulk", "--chunk-size=0", "--no-headers"]);
    assert_eq!(out.lines().count(), N);
    // And a watch's initial state, read in pages too.
    let (code, body) =
        c.curl("GET", "/api/v1/namespaces/bulk/configmaps?watch=1&timeoutSeconds=2", "application/json", None);
    assert_eq!(code, 200);
    assert_eq!(body.lines().filter(|l| l.contains("\"ADDED\"")).count(), N + 1);
}

/// A client that sends part of its headers and then nothing is disconnected once the header-read
/// timeout passes (30 s), instead of holding its connection forever (slowloris).
#[test]
fn slow_clients_are_disconnected() {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let c = Cluster::start();
    let mut client = common::Process(Some(
        Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{}", c.port)])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client"),
    ));
    let child = client.0.as_mut().expect("child");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"GET /version HTTP/1.1\r\nHost: skiff\r\n").expect("partial headers");
    stdin.flush().expect("flush");
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(50) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stdin);
    assert!(closed, "a client stalled mid-headers was still connected after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(20), "closed too early: {:?}", started.elapsed());
    // Everyone else is still served.
    c.kubectl(&["get", "namespaces"]);
}
