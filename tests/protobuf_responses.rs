//! Protobuf responses, as Go clients negotiate them: a real `skiff server` answers
//! `Accept: application/vnd.kubernetes.protobuf, */*` with `k8s\0`-enveloped typed messages for
//! get, list, create, errors and watches (length-prefixed `WatchEvent` frames), falls back to
//! JSON for custom resources (406 when protobuf is all the client takes), and kubectl's typed
//! commands get protobuf answers.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use k8s_rs_pb::api::apps::v1 as apps;
use k8s_rs_pb::api::core::v1 as core;
use k8s_rs_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_rs_pb::apimachinery::pkg::runtime::Unknown;
use protobuf::Message;
use serde_json::{json, Value};
use skiff_control::api::http::protobuf::decode;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const PROTOBUF_OR_ANY: &str = "application/vnd.kubernetes.protobuf, */*";

struct Client {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: String,
    token: String,
}

struct Answer {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Client {
    fn new(cluster: &Cluster) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(cluster.data_dir().join("ca.crt")).expect("read ca.crt");
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca.crt is PEM"))
            .timeout(Duration::from_secs(20))
            .build()
            .expect("reqwest client");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Client { runtime, http, url: cluster.url(), token: cluster.token() }
    }

    fn send(&self, method: reqwest::Method, path: &str, accept: &str, body: Option<&Value>) -> Answer {
        let mut request =
            self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token).header("Accept", accept);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.runtime.block_on(async {
            let response = request.send().await.expect("request");
            let code = response.status().as_u16();
            let content_type =
                response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = response.bytes().await.expect("body").to_vec();
            Answer { code, content_type, body }
        })
    }

    fn get(&self, path: &str, accept: &str) -> Answer {
        self.send(reqwest::Method::GET, path, accept, None)
    }

    fn json(&self, path: &str) -> Value {
        let answer = self.get(path, "application/json");
        assert_eq!(answer.code, 200, "{}", String::from_utf8_lossy(&answer.body));
        serde_json::from_slice(&answer.body).expect("json")
    }
}

/// The typed message of a protobuf body, and its envelope's (apiVersion, kind).
fn typed<M: Message>(body: &[u8]) -> ((String, String), M) {
    let envelope = body.strip_prefix(b"k8s\0").expect("the k8s\\0 magic");
    let unknown = Unknown::parse_from_bytes(envelope).expect("a runtime.Unknown");
    let type_meta = (unknown.typeMeta.apiVersion().to_string(), unknown.typeMeta.kind().to_string());
    (type_meta, M::parse_from_bytes(unknown.raw()).expect("the typed message"))
}

/// The `WatchEvent`s of a protobuf watch body: each a 4-byte big-endian length and the message.
fn frames(body: &[u8]) -> Vec<meta::WatchEvent> {
    let mut rest = body;
    let mut events = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        assert!(tail.len() >= len, "a whole frame");
        let (frame, tail) = tail.split_at(len);
        events.push(meta::WatchEvent::parse_from_bytes(frame).expect("a WatchEvent"));
        rest = tail;
    }
    assert!(rest.is_empty(), "no partial frame");
    events
}

fn without_type(mut item: Value) -> Value {
    if let Some(map) = item.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    item
}

#[test]
fn built_in_kinds_answer_protobuf_and_custom_resources_json() {
    let c = Cluster::start();
    let client = Client::new(&c);
    c.kubectl(&["create", "configmap", "pb", "--from-literal=a=b"]);

    // get: the same object as its JSON form.
    let path = "/api/v1/namespaces/default/configmaps/pb";
    let answer = client.get(path, PROTOBUF_OR_ANY);
    assert_eq!((answer.code, answer.content_type.as_str()), (200, PROTOBUF));
    let ((api_version, kind), cm) = typed::<core::ConfigMap>(&answer.body);
    assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "ConfigMap"));
    assert_eq!(cm.data.get("a").map(String::as_str), Some("b"));
    assert_eq!(decode(&answer.body).expect("decodes"), client.json(path));

    // create: a Deployment answered 201 in protobuf.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "busybox", "ports": [{"containerPort": 80}]}]}},
        },
    });
    let answer = client.send(
        reqwest::Method::POST,
        "/apis/apps/v1/namespaces/default/deployments",
        "application/vnd.kubernetes.protobuf,application/json",
        Some(&deployment),
    );
    assert_eq!(
        (answer.code, answer.content_type.as_str()),
        (201, PROTOBUF),
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let ((_, kind), created) = typed::<apps::Deployment>(&answer.body);
    assert_eq!(kind, "Deployment");
    assert_eq!(created.spec.replicas, Some(2));
    assert_eq!(created.spec.template.spec.containers[0].ports[0].containerPort(), 80);
    assert!(created.metadata.creationTimestamp.seconds() > 0, "times are set");
    // The deployment controller writes the object too: the two reads are compared at one revision.
    let (stored, from_protobuf) = (0..50)
        .map(|_| {
            let stored = client.json("/apis/apps/v1/namespaces/default/deployments/web");
            let got = client.get("/apis/apps/v1/namespaces/default/deployments/web", PROTOBUF_OR_ANY);
            (stored, decode(&got.body).expect("decodes"))
        })
        .find(|(json, proto)| json["metadata"]["resourceVersion"] == proto["metadata"]["resourceVersion"])
        .expect("two reads at one revision");
    assert_eq!(from_protobuf, stored);

    // list: a ConfigMapList whose items are the JSON list's.
    let answer = client.get("/api/v1/namespaces/default/configmaps", PROTOBUF_OR_ANY);
    assert_eq!((answer.code, answer.content_type.as_str()), (200, PROTOBUF));
    let ((_, kind), list) = typed::<core::ConfigMapList>(&answer.body);
    assert_eq!(kind, "ConfigMapList");
    assert!(!list.metadata.resourceVersion().is_empty());
    let decoded = decode(&answer.body).expect("decodes");
    let from_json = client.json("/api/v1/namespaces/default/configmaps");
    let json_items: Vec<Value> =
        from_json["items"].as_array().expect("items").iter().cloned().map(without_type).collect();
    assert_eq!(decoded["items"], Value::Array(json_items));

    // errors: a Status message.
    let answer = client.get("/api/v1/namespaces/default/configmaps/nope", PROTOBUF_OR_ANY);
    assert_eq!((answer.code, answer.content_type.as_str()), (404, PROTOBUF));
    let ((_, kind), status) = typed::<meta::Status>(&answer.body);
    assert_eq!((kind.as_str(), status.code(), status.reason()), ("Status", 404, "NotFound"));

    // metadata only.
    let accept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let answer = client.get("/api/v1/namespaces/default/configmaps", accept);
    assert_eq!(answer.content_type, PROTOBUF);
    let ((api_version, kind), partial) = typed::<meta::PartialObjectMetadataList>(&answer.body);
    assert_eq!((api_version.as_str(), kind.as_str()), ("meta.k8s.io/v1", "PartialObjectMetadataList"));
    assert!(partial.items.iter().any(|i| i.metadata.name() == "pb"));

    // watch: length-prefixed WatchEvents, each object enveloped.
    let answer = client.get(
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=2&fieldSelector=metadata.name%3Dpb",
        PROTOBUF,
    );
    assert_eq!((answer.code, answer.content_type.as_str()), (200, "application/vnd.kubernetes.protobuf;stream=watch"));
    let events = frames(&answer.body);
    assert_eq!(events.len(), 1, "the one ConfigMap, ADDED");
    assert_eq!(events[0].type_(), "ADDED");
    let ((_, kind), watched) = typed::<core::ConfigMap>(events[0].object.raw());
    assert_eq!((kind.as_str(), watched.metadata.name()), ("ConfigMap", "pb"));
    // Streaming lists: the initial state, then the initial-events-end BOOKMARK.
    let answer = client.get(
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dpb\
         &sendInitialEvents=true&allowWatchBookmarks=true",
        PROTOBUF,
    );
    let events = frames(&answer.body);
    let types: Vec<&str> = events.iter().map(|e| e.type_()).collect();
    assert_eq!(types, ["ADDED", "BOOKMARK"]);
    let ((_, kind), bookmark) = typed::<core::ConfigMap>(events[1].object.raw());
    assert_eq!(kind, "ConfigMap");
    assert_eq!(bookmark.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str), Some("true"));

    // Custom resources have no protobuf form.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(CRD));
    eventually("the CRD serves", Duration::from_secs(20), || {
        c.kubectl_output(&["get", "gadgets"], None).status.success()
    });
    c.kubectl_stdin(&["apply", "-f", "-"], Some(GADGET));
    let path = "/apis/example.com/v1/namespaces/default/gadgets/g1";
    let answer = client.get(path, PROTOBUF);
    assert_eq!(answer.code, 406, "{}", String::from_utf8_lossy(&answer.body));
    let status: Value = serde_json::from_slice(&answer.body).expect("a JSON Status");
    assert_eq!(status["reason"], "NotAcceptable");
    let answer = client.get(path, PROTOBUF_OR_ANY);
    assert_eq!((answer.code, answer.content_type.as_str()), (200, "application/json"));
    let gadget: Value = serde_json::from_slice(&answer.body).expect("json");
    assert_eq!(gadget["spec"]["size"], 3);
    // ... but their metadata has.
    let accept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let answer = client.get(path, accept);
    assert_eq!((answer.code, answer.content_type.as_str()), (200, PROTOBUF));
    let (_, partial) = typed::<meta::PartialObjectMetadata>(&answer.body);
    assert_eq!(partial.metadata.name(), "g1");
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"#;

const GADGET: &str = r#"
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g1, namespace: default}
spec: {size: 3}
"#;

/// kubectl's typed commands negotiate protobuf answers, and read them.
#[test]
fn kubectl_typed_commands_read_protobuf_answers() {
    let c = Cluster::start();
    let out = c.kubectl_output(&["-v=8", "create", "configmap", "x", "--from-literal=a=b"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configmap/x created"));
    assert!(answered_protobuf(&stderr), "no protobuf response logged:\n{stderr}");
    assert_eq!(c.get_json(&["configmap", "x"])["data"]["a"], "b");
    c.kubectl(&["create", "deployment", "d", "--image=busybox", "--replicas=1"]);
    c.kubectl(&["scale", "deployment", "d", "--replicas=2"]);
    assert_eq!(c.get_json(&["deployment", "d"])["spec"]["replicas"], 2);
    c.kubectl(&["expose", "deployment", "d", "--port=80"]);
    assert_eq!(c.get_json(&["service", "d"])["spec"]["ports"][0]["port"], 80);
    c.kubectl(&["create", "job", "j", "--image=busybox"]);
    c.kubectl(&["run", "p", "--image=busybox", "--restart=Never"]);
    c.kubectl(&["delete", "configmap", "x"]);
    // Reviews too (a SelfSubjectAccessReview).
    let out = c.kubectl_output(&["-v=8", "auth", "can-i", "create", "pods"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes", "{stderr}");
    assert!(answered_protobuf(&stderr), "no protobuf response logged:\n{stderr}");
}

/// Whether kubectl's `-v=8` log shows a protobuf `Content-Type` among `Response Headers:` (the
/// request's own Content-Type is protobuf too).
fn answered_protobuf(stderr: &str) -> bool {
    let mut in_response_headers = false;
    for line in stderr.lines() {
        if line.contains("Response Headers:") {
            in_response_headers = true;
        } else if line.contains("Request Headers:") || line.contains("Response Body:") {
            in_response_headers = false;
        } else if in_response_headers && line.contains("Content-Type: application/vnd.kubernetes.protobuf") {
            return true;
        }
    }
    false
}
