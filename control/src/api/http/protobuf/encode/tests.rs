use super::*;
use crate::api::http::protobuf::decode;
use k8s_rs_pb::api::apps::v1 as apps;
use k8s_rs_pb::api::core::v1 as core;
use k8s_rs_pb::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::json;

/// JSON -> protobuf response body -> JSON (by the request decoder) gives the object back; and
/// the bottom-up writer writes the message as rust-protobuf's own writer does.
fn round_trip(obj: &Value) -> Value {
    same_bytes_as_the_library(obj);
    let bytes = object(obj).unwrap_or_else(|e| panic!("encodes: {e}"));
    assert!(bytes.starts_with(MAGIC));
    decode(&bytes).unwrap_or_else(|e| panic!("decodes: {e}"))
}

/// The typed message inside a response body (typed parsing only: the generated types'
/// reflection deadlocks, see build.rs).
fn typed<M: Message>(bytes: &[u8]) -> (String, String, M) {
    let unknown = Unknown::parse_from_bytes(bytes.strip_prefix(MAGIC).expect("magic")).expect("an Unknown");
    assert!(unknown.has_contentEncoding() && unknown.contentEncoding().is_empty());
    assert!(unknown.has_contentType() && unknown.contentType().is_empty());
    let message = M::parse_from_bytes(unknown.raw()).expect("the typed message");
    (unknown.typeMeta.apiVersion().to_string(), unknown.typeMeta.kind().to_string(), message)
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-1", "namespace": "default", "uid": "0b6c1f0e-1111-2222-3333-444455556666",
            "resourceVersion": "42", "generation": 1,
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "labels": {"app": "web"}, "annotations": {"note": "x"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u1", "controller": true}],
            "managedFields": [{
                "manager": "kubectl", "operation": "Update", "apiVersion": "v1", "time": "2026-01-02T03:04:05Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}},
            }],
        },
        "spec": {
            "containers": [{
                "name": "app", "image": "busybox", "command": ["sleep", "3600"],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "0.1"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [
                {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
            ],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "nodeName": "n1",
            "securityContext": {},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        },
        "status": {
            "phase": "Running", "podIP": "10.0.0.5", "startTime": "2026-01-02T03:04:06Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:07Z"}],
            "containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "sha256:1",
                "state": {"running": {"startedAt": "2026-01-02T03:04:06Z"}},
            }],
        },
    })
}

#[test]
fn a_pod_round_trips() {
    let pod = pod();
    assert_eq!(round_trip(&pod), pod);
    let (api_version, kind, typed) = typed::<core::Pod>(&object(&pod).expect("encodes"));
    assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Pod"));
    assert_eq!(typed.metadata.name(), "web-1");
    assert_eq!(typed.metadata.creationTimestamp.seconds(), 1_767_323_045);
    let container = &typed.spec.containers[0];
    assert_eq!(container.resources.limits.get("memory").map(|q| q.string()), Some("64Mi"));
    assert_eq!(container.readinessProbe.handler.httpGet.port.strVal(), "http");
    assert_eq!(container.livenessProbe.handler.tcpSocket.port.intVal(), 8080);
    assert_eq!(typed.spec.volumes[0].volumeSource.emptyDir.sizeLimit.string(), "1Gi");
}

#[test]
fn a_deployment_round_trips() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 2, "creationTimestamp": "2026-01-02T03:04:05Z"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
            "conditions": [{
                "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                "lastUpdateTime": "2026-01-02T03:04:05Z", "lastTransitionTime": "2026-01-02T03:04:05Z",
            }],
        },
    });
    assert_eq!(round_trip(&deployment), deployment);
    let (_, kind, typed) = typed::<apps::Deployment>(&object(&deployment).expect("encodes"));
    assert_eq!(kind, "Deployment");
    assert_eq!(typed.spec.replicas, Some(0), "a zero pointer field is sent");
    assert_eq!(typed.spec.strategy.rollingUpdate.maxSurge.strVal(), "25%");
    assert_eq!(typed.spec.strategy.rollingUpdate.maxUnavailable.type_(), 0);
}

#[test]
fn a_service_round_trips() {
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080},
                {"name": "named", "port": 81, "targetPort": "http", "protocol": "TCP", "nodePort": 30081},
            ],
        },
        "status": {"loadBalancer": {}},
    });
    assert_eq!(round_trip(&service), service);
}

#[test]
fn a_configmap_keeps_its_binary_data() {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "bin", "namespace": "default"},
        "data": {"a": "b"},
        "binaryData": {"blob": "AAEC/w=="},
        "immutable": false,
    });
    assert_eq!(round_trip(&cm), cm);
    let (_, _, typed) = typed::<core::ConfigMap>(&object(&cm).expect("encodes"));
    assert_eq!(typed.binaryData.get("blob").map(Vec::as_slice), Some(&[0u8, 1, 2, 255][..]));
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "djE="}});
    assert_eq!(round_trip(&secret), secret);
}

#[test]
fn a_crd_keeps_its_schema() {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "size": {"type": "integer", "minimum": 1.0, "maximum": 10.0, "default": 3},
                                "color": {"type": "string", "enum": ["red", "blue"]},
                                "tags": {"type": "array", "items": {"type": "string"}},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                            },
                            "x-kubernetes-validations": [{"rule": "self.size <= 10", "message": "too big"}],
                        },
                        "status": {"type": "object", "additionalProperties": false},
                    },
                }},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
            }],
        },
        "status": {"acceptedNames": {"plural": "widgets", "kind": "Widget"}, "storedVersions": ["v1"]},
    });
    assert_eq!(round_trip(&crd), crd);
}

#[test]
fn lists_and_metadata_and_status_have_their_messages() {
    let mut item = pod();
    let list = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 3},
        "items": [item.clone()],
    });
    // Items of a typed list carry no type in protobuf.
    if let Some(map) = item.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    let expected = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 3},
        "items": [item],
    });
    assert_eq!(round_trip(&list), expected);
    let (_, kind, pods) = typed::<core::PodList>(&object(&list).expect("encodes"));
    assert_eq!((kind.as_str(), pods.items.len(), pods.metadata.resourceVersion()), ("PodList", 1, "7"));

    let partial = json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
        "metadata": {"resourceVersion": "9"},
        "items": [{"metadata": {"name": "a", "labels": {"x": "y"}}}],
    });
    assert_eq!(round_trip(&partial), partial);

    let status = crate::api::error::ApiError::not_found("", "configmaps", "nope").status();
    let (api_version, kind, typed) = typed::<meta::Status>(&object(&status).expect("encodes"));
    assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Status"));
    assert_eq!((typed.code(), typed.reason(), typed.details.name()), (404, "NotFound", "nope"));
    assert_eq!(typed.message(), "configmaps \"nope\" not found");
}

#[test]
fn objects_without_a_message_are_refused() {
    let custom = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    assert!(matches!(object(&custom), Err(EncodeError::NoSchema { .. })));
    assert!(matches!(object(&json!({"metadata": {}})), Err(EncodeError::Untyped)));
    let wrong = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 5}});
    match object(&wrong) {
        Err(EncodeError::Field { source, .. }) => assert_eq!(source.path, "metadata.name"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn watch_events_are_length_prefixed_and_carry_the_enveloped_object() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "3"}});
    let frame = watch_frame("ADDED", &cm).expect("encodes");
    let (len, body) = frame.split_first_chunk::<4>().expect("a length");
    assert_eq!(u32::from_be_bytes(*len) as usize, body.len());
    let event = WatchEvent::parse_from_bytes(body).expect("a bare WatchEvent");
    assert_eq!(event.type_(), "ADDED");
    assert_eq!(event.object.raw(), object(&cm).expect("encodes").as_slice());
    assert_eq!(decode(event.object.raw()).expect("decodes"), cm);
}

/// A list sent piece by piece (head, each item, tail) is byte for byte the list encoded whole,
/// for objects and for metadata-only lists.
#[test]
fn a_list_in_pieces_is_the_list_encoded_whole() {
    let mut second = pod();
    second["metadata"]["name"] = json!("web-2");
    let items: Vec<Value> = [pod(), second]
        .into_iter()
        .map(|mut p| {
            p["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
            p
        })
        .collect();
    let meta = json!({"resourceVersion": "77"});
    for (api_version, kind) in [("v1", "PodList"), ("meta.k8s.io/v1", "PartialObjectMetadataList")] {
        let whole = object(&json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "items": items}))
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let encoder = ListEncoder::new(api_version, kind).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let encoded: Vec<Vec<u8>> = items.iter().map(|i| encoder.item(i).unwrap_or_else(|e| panic!("{e}"))).collect();
        let mut pieces = encoder.head(&meta, encoded.iter().map(Vec::len).sum()).unwrap_or_else(|e| panic!("{e}"));
        encoded.iter().for_each(|e| pieces.extend_from_slice(e));
        pieces.extend(encoder.tail().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(pieces, whole, "{kind}");
    }
    let (_, _, list) = typed::<core::PodList>(
        &[
            ListEncoder::new("v1", "PodList").and_then(|e| e.head(&meta, 0)).unwrap_or_default(),
            ListEncoder::new("v1", "PodList").and_then(|e| e.tail()).unwrap_or_default(),
        ]
        .concat(),
    );
    assert_eq!((list.items.len(), list.metadata.resourceVersion()), (0, "77"), "an empty list");
    assert!(ListEncoder::new("v1", "Pod").is_err(), "not a list");
}

/// `wire::to_bytes` against `write_to_bytes_dyn` on one dynamic message: the same message when
/// read back (the bytes differ only in the order of map entries, which the library writes in hash
/// order), and the same length.
fn same_bytes_as_the_library(obj: &Value) {
    let (api_version, kind) =
        (obj["apiVersion"].as_str().unwrap_or_default(), obj["kind"].as_str().unwrap_or_default());
    let descriptor = crate::api::http::protobuf::descriptor_for(api_version, kind).expect("a message");
    let message = from_json::message(descriptor, obj).unwrap_or_else(|e| panic!("{e}"));
    let library = message.write_to_bytes_dyn().unwrap_or_else(|e| panic!("{e}"));
    let ours = wire::to_bytes(&*message).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ours.len(), library.len(), "{kind}");
    let read = |bytes: &[u8]| {
        let parsed = descriptor.parse_from_bytes(bytes).unwrap_or_else(|e| panic!("{kind}: {e}"));
        crate::api::http::protobuf::to_json(&*parsed)
    };
    assert_eq!(read(&ours), read(&library), "{kind}");
}

/// Map entries come sorted by key, as Go's generated marshallers write them, so a list encoded
/// in pieces and whole are the same bytes.
#[test]
fn map_entries_are_written_in_key_order() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                    "data": {"zeta": "1", "alpha": "2", "mid": "3", "beta": "4"}});
    let bytes = object(&cm).unwrap_or_else(|e| panic!("{e}"));
    let at = |key: &str| bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap_or(usize::MAX);
    let order = [at("alpha"), at("beta"), at("mid"), at("zeta")];
    assert!(order.windows(2).all(|w| w[0] < w[1] && w[1] != usize::MAX), "{order:?}");
    assert_eq!(object(&cm).ok(), Some(bytes), "the same bytes every time");
}

/// A pod with a running status, probes, a projected volume and maps of messages (the informer's
/// packing dictionary), and a node's quantities.
#[test]
fn the_bottom_up_writer_writes_what_the_library_writes() {
    let pod: Value = serde_json::from_str(include_str!("../../../../controllers/runtime/pod_dictionary.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    same_bytes_as_the_library(&pod);
    assert_eq!(round_trip(&pod)["status"]["containerStatuses"], pod["status"]["containerStatuses"]);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"a": "1", "b": "2", "c": "3"}},
                      "status": {"capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
                                 "allocatable": {"cpu": "1500m", "memory": "7Gi", "pods": "110"},
                                 "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    same_bytes_as_the_library(&node);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "d"},
                        "type": "Opaque", "data": {"a": "eA==", "b": "eQ==", "c": ""}});
    same_bytes_as_the_library(&secret);
}
