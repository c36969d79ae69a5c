use super::*;
use k8s_rs_pb::api::apps::v1 as apps;
use k8s_rs_pb::api::core::v1 as core;
use k8s_rs_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_rs_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_rs_pb::apimachinery::pkg::runtime::TypeMeta;
use k8s_rs_pb::apimachinery::pkg::util::intstr::IntOrString;

/// A request body as kubectl's typed client sends it.
/// (Typed `write_to_bytes` only: the generated types' reflection deadlocks, see build.rs.)
fn body<M: Message>(api_version: &str, kind: &str, object: &M) -> Vec<u8> {
    let mut envelope = Unknown::new();
    let mut type_meta = TypeMeta::new();
    type_meta.set_apiVersion(api_version.into());
    type_meta.set_kind(kind.into());
    envelope.typeMeta = Some(type_meta).into();
    envelope.set_raw(object.write_to_bytes().expect("encodes"));
    [MAGIC.to_vec(), envelope.write_to_bytes().expect("encodes")].concat()
}

fn meta(name: &str) -> meta::ObjectMeta {
    let mut m = meta::ObjectMeta::new();
    m.set_name(name.into());
    m.labels.insert("app".into(), name.into());
    m
}

/// What `kubectl create deployment web --image=busybox --port=8080 --replicas=0` sends, plus an
/// emptyDir, a resource limit and a named probe port: the shapes whose JSON is not their message.
fn deployment() -> apps::Deployment {
    let mut port = core::ContainerPort::new();
    port.set_containerPort(8080);
    let mut limits = Quantity::new();
    limits.set_string("64Mi".into());
    let mut probe_port = IntOrString::new();
    probe_port.set_type(1);
    probe_port.set_strVal("http".into());
    let mut http_get = core::HTTPGetAction::new();
    http_get.port = Some(probe_port).into();
    let mut handler = core::ProbeHandler::new();
    handler.httpGet = Some(http_get).into();
    let mut probe = core::Probe::new();
    probe.handler = Some(handler).into();
    let mut container = core::Container::new();
    container.set_name("busybox".into());
    container.set_image("busybox".into());
    container.ports.push(port);
    container.resources.mut_or_insert_default().limits.insert("memory".into(), limits);
    container.readinessProbe = Some(probe).into();
    let mut reference = core::LocalObjectReference::new();
    reference.set_name("cfg".into());
    let mut key_ref = core::ConfigMapKeySelector::new();
    key_ref.localObjectReference = Some(reference).into();
    key_ref.set_key("k".into());
    let mut source = core::EnvVarSource::new();
    source.configMapKeyRef = Some(key_ref).into();
    let mut env = core::EnvVar::new();
    env.set_name("K".into());
    env.valueFrom = Some(source).into();
    container.env.push(env);
    let mut volume_source = core::VolumeSource::new();
    volume_source.emptyDir = Some(core::EmptyDirVolumeSource::new()).into();
    let mut volume = core::Volume::new();
    volume.set_name("scratch".into());
    volume.volumeSource = Some(volume_source).into();
    let mut pod_spec = core::PodSpec::new();
    pod_spec.containers.push(container);
    pod_spec.volumes.push(volume);
    let mut template = core::PodTemplateSpec::new();
    template.metadata = Some(meta("web")).into();
    template.spec = Some(pod_spec).into();
    let mut selector = meta::LabelSelector::new();
    selector.matchLabels.insert("app".into(), "web".into());
    let mut spec = apps::DeploymentSpec::new();
    spec.set_replicas(0);
    spec.selector = Some(selector).into();
    spec.template = Some(template).into();
    let mut d = apps::Deployment::new();
    d.metadata = Some(meta("web")).into();
    d.spec = Some(spec).into();
    d
}

#[test]
fn a_deployment_decodes_to_what_the_typed_struct_accepts() {
    let obj = decode(&body("apps/v1", "Deployment", &deployment())).expect("decodes");
    assert_eq!(obj["apiVersion"], "apps/v1");
    assert_eq!(obj["kind"], "Deployment");
    assert_eq!(obj["metadata"]["name"], "web");
    assert_eq!(obj["spec"]["replicas"], 0, "a set zero is kept");
    let pod = &obj["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 8080);
    assert_eq!(pod["containers"][0]["resources"]["limits"]["memory"], "64Mi");
    assert_eq!(pod["containers"][0]["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(pod["volumes"][0]["emptyDir"], json!({}), "a present empty message is kept");
    assert!(pod.get("initContainers").is_none(), "empty lists are omitted");
    assert!(pod["volumes"][0].get("volumeSource").is_none(), "embedded structs are inline");
    assert_eq!(pod["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"], json!({"name": "cfg", "key": "k"}));
    let typed: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(obj).expect("the typed struct accepts it");
    assert_eq!(typed.spec.and_then(|s| s.replicas), Some(0));
}

#[test]
fn secrets_keep_bytes_and_configmaps_strings() {
    let mut secret = core::Secret::new();
    secret.metadata = Some(meta("s")).into();
    secret.data.insert("key".into(), vec![0, 159, 146, 150]);
    secret.set_type("Opaque".into());
    let obj = decode(&body("v1", "Secret", &secret)).expect("decodes");
    assert_eq!(obj["data"]["key"], "AJ+Slg==");
    assert_eq!(obj["type"], "Opaque");
    let mut cm = core::ConfigMap::new();
    cm.metadata = Some(meta("c")).into();
    cm.data.insert("k".into(), "v".into());
    let obj = decode(&body("v1", "ConfigMap", &cm)).expect("decodes");
    assert_eq!(obj["data"]["k"], "v");
    assert_eq!(obj["metadata"]["labels"]["app"], "c");
}

#[test]
fn groups_map_to_their_packages() {
    for (api_version, kind) in [
        ("v1", "Service"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("networking.k8s.io/v1", "Ingress"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("policy/v1", "PodDisruptionBudget"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ] {
        assert!(descriptor_for(api_version, kind).is_some(), "{api_version} {kind}");
    }
    assert!(descriptor_for("v1", "Deployment").is_none());
    assert!(descriptor_for("apps/v1", "Pod").is_none());
}

#[test]
fn bad_bodies_are_client_errors() {
    assert!(matches!(decode(b"garbage"), Err(ApiError::BadRequest(_))));
    assert!(matches!(decode(b"k8s\0\xff\xff\xff"), Err(ApiError::BadRequest(_))));
    let unknown_kind = body("example.com/v1", "Widget", &core::ConfigMap::new());
    assert!(matches!(decode(&unknown_kind), Err(ApiError::UnsupportedMediaType(_))));
    // A raw object that is not a valid message of its kind.
    let mut envelope = Unknown::new();
    let mut type_meta = TypeMeta::new();
    type_meta.set_apiVersion("v1".into());
    type_meta.set_kind("ConfigMap".into());
    envelope.typeMeta = Some(type_meta).into();
    envelope.set_raw(vec![0x0f, 0x01]); // field 1 with the invalid wire type 7
    let truncated = [MAGIC.to_vec(), envelope.write_to_bytes().expect("encodes")].concat();
    let result = decode(&truncated);
    assert!(matches!(result, Err(ApiError::BadRequest(_))), "{result:?}");
}

/// The JSON of a generated message, through the dynamic descriptor of its type (the generated
/// types' own reflection is not used: see build.rs).
fn json_of<M: Message>(package: &str, name: &str, message: &M) -> Value {
    let descriptor = messages().get(&(package.to_string(), name.to_string())).expect("a known message");
    let bytes = message.write_to_bytes().expect("encodes");
    to_json(&*descriptor.parse_from_bytes(&bytes).expect("parses"))
}

#[test]
fn special_shapes() {
    let meta_pkg = "meta.v1";
    let mut t = meta::Time::new();
    t.set_seconds(1_704_067_200);
    assert_eq!(json_of(meta_pkg, "Time", &t), json!("2024-01-01T00:00:00Z"));
    let mut mt = meta::MicroTime::new();
    mt.set_seconds(1_704_067_200);
    mt.set_nanos(123_456_789);
    assert_eq!(json_of(meta_pkg, "MicroTime", &mt), json!("2024-01-01T00:00:00.123456Z"));
    let mut port = IntOrString::new();
    port.set_type(0);
    port.set_intVal(80);
    assert_eq!(json_of("util.intstr", "IntOrString", &port), json!(80));
    for (nanos, text) in [
        (0, "0s"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (150_000_000, "150ms"),
        (-2_000_000_000, "-2s"),
    ] {
        assert_eq!(go_duration(nanos), text);
    }
    assert_eq!(schema_field_name("xKubernetesPreserveUnknownFields"), "x-kubernetes-preserve-unknown-fields");
    assert_eq!(schema_field_name("ref"), "$ref");
}

/// What `kubectl create token --bound-object-uid` sends: the proto field `uID` is JSON `uid`.
#[test]
fn a_token_request_keeps_its_bound_uid() {
    use k8s_rs_pb::api::authentication::v1 as authn;
    let mut bound = authn::BoundObjectReference::new();
    bound.set_kind("Pod".into());
    bound.set_name("web".into());
    bound.set_uID("u-1".into());
    let mut spec = authn::TokenRequestSpec::new();
    spec.boundObjectRef = Some(bound).into();
    let mut request = authn::TokenRequest::new();
    request.spec = Some(spec).into();
    let obj = decode(&body("authentication.k8s.io/v1", "TokenRequest", &request)).expect("decodes");
    assert_eq!(obj["spec"]["boundObjectRef"], serde_json::json!({"kind": "Pod", "name": "web", "uid": "u-1"}));
}
