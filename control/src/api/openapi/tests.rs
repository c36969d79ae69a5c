use protobuf::Message;
use serde_json::{json, Value};

use super::schemas::{collect_refs, Flavor};
use super::v2_proto::generated::openapi_v2 as pb;
use super::*;
use crate::api::crd::definition;

/// The built-in resources plus a CRD whose schema has an array without `items` and an
/// OpenAPI 3-only keyword.
fn with_crd() -> Resources {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "kind": "CronTab"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {
                    "cronSpec": {"type": "string", "description": "When to run."},
                    "tags": {"type": "array"},
                    "replicas": {"type": "integer", "nullable": true},
                }}},
            }}}],
        },
    });
    let mut crd = crd;
    definition::default(&mut crd);
    let mut list = crate::api::resources::all();
    list.extend(definition::resource_infos(&crd));
    Resources::from_list(list)
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// Every `$ref` in `doc` names a schema in `defs`.
fn assert_refs_resolve(doc: &Value, defs: &Value, flavor: Flavor) {
    let mut refs = Vec::new();
    collect_refs(doc, flavor.ref_prefix(), &mut refs);
    assert!(!refs.is_empty());
    for name in refs {
        assert!(defs.get(&name).is_some(), "dangling reference to {name}");
    }
    let text = doc.to_string();
    let other = if flavor == Flavor::V2 { Flavor::V3 } else { Flavor::V2 };
    assert!(!text.contains(other.ref_prefix()), "references of the other flavor");
}

#[test]
fn v2_lists_every_kind_with_its_gvk_parameters_and_schema() {
    let doc = v2::document(&with_crd());
    assert_eq!(doc["swagger"], "2.0");
    let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"], gvk("apps", "v1", "Deployment"));
    assert_eq!(patch["x-kubernetes-action"], "patch");
    let names: Vec<&str> =
        patch["parameters"].as_array().expect("params").iter().filter_map(|p| p["name"].as_str()).collect();
    for want in ["body", "fieldValidation", "fieldManager", "dryRun"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let consumes = patch["consumes"].as_array().expect("consumes");
    assert!(!consumes.contains(&json!("application/strategic-merge-patch+json")), "kubectl must use its own types");
    assert_eq!(item["get"]["responses"]["200"]["schema"]["$ref"], "#/definitions/io.k8s.api.apps.v1.Deployment");
    assert!(doc["paths"].get("/api/v1/nodes/{name}").is_some(), "cluster-scoped path");

    let defs = &doc["definitions"];
    let deployment = &defs["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(deployment["x-kubernetes-group-version-kind"], json!([gvk("apps", "v1", "Deployment")]));
    assert_eq!(deployment["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.apps.v1.DeploymentSpec");
    let replicas = &defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"];
    assert_eq!(replicas["type"], "integer");
    assert!(replicas["description"].as_str().is_some_and(|d| d.contains("desired pods")), "{replicas}");
    assert_refs_resolve(&doc, defs, Flavor::V2);

    let crontab = &defs["com.example.stable.v1.CronTab"];
    assert_eq!(crontab["x-kubernetes-group-version-kind"], json!([gvk("stable.example.com", "v1", "CronTab")]));
    assert_eq!(crontab["properties"]["spec"]["properties"]["tags"]["items"], json!({}), "arrays get items");
    assert!(crontab["properties"]["spec"]["properties"]["replicas"].get("nullable").is_none());
    assert_eq!(
        crontab["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
}

#[test]
fn v3_documents_carry_the_schemas_of_their_group_version() {
    let resources = with_crd();
    let doc = document(&resources, "apis/apps/v1").expect("apps/v1");
    let schemas = &doc["components"]["schemas"];
    let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(deployment["x-kubernetes-group-version-kind"], json!([gvk("apps", "v1", "Deployment")]));
    // A reference with a description beside it is wrapped in allOf, as kube-apiserver does.
    let spec = &deployment["properties"]["spec"];
    assert_eq!(spec["allOf"], json!([{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}]));
    assert!(spec["description"].is_string());
    assert!(schemas.get("io.k8s.api.core.v1.PodSpec").is_some(), "types the kinds use come along");
    assert!(schemas.get("io.k8s.api.core.v1.Node").is_none(), "other groups' kinds stay out");
    assert_refs_resolve(&doc, schemas, Flavor::V3);
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_none());

    let custom = document(&resources, "apis/stable.example.com/v1").expect("crontab document");
    let schemas = &custom["components"]["schemas"];
    let crontab = &schemas["com.example.stable.v1.CronTab"];
    assert_eq!(crontab["properties"]["spec"]["properties"]["cronSpec"]["description"], "When to run.");
    assert_eq!(
        crontab["properties"]["metadata"]["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}])
    );
    assert_refs_resolve(&custom, schemas, Flavor::V3);
    assert!(document(&resources, "apis/nope/v1").is_none());
}

#[test]
fn v3_index_hash_changes_with_a_crd_schema() {
    let plain = index(&Resources::default());
    let url = plain["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("url").to_string();
    assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    assert_eq!(index(&Resources::default())["paths"]["apis/apps/v1"]["serverRelativeURL"], url.as_str(), "stable");
    let crd = index(&with_crd());
    assert!(crd["paths"]["apis/stable.example.com/v1"]["serverRelativeURL"].is_string());
}

#[test]
fn v2_protobuf_decodes_to_the_same_document() {
    let json_doc = v2::document(&with_crd());
    let bytes = v2_proto::encode(&json_doc).expect("encodes");
    let doc = pb::Document::parse_from_bytes(&bytes).expect("decodes");
    assert_eq!(doc.swagger, "2.0");
    let paths = doc.paths.as_ref().expect("paths");
    assert_eq!(paths.path.len(), json_doc["paths"].as_object().map_or(0, |p| p.len()));
    let item = paths
        .path
        .iter()
        .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .and_then(|p| p.value.as_ref())
        .expect("deployment path");
    let patch = item.patch.as_ref().expect("patch");
    let ext = patch.vendor_extension.iter().find(|e| e.name == "x-kubernetes-group-version-kind").expect("gvk");
    let yaml: Value = serde_yaml::from_str(&ext.value.yaml).expect("YAML text");
    assert_eq!(yaml, gvk("apps", "v1", "Deployment"));
    assert!(patch.consumes.iter().any(|c| c == "application/merge-patch+json"));
    let query_names: Vec<&str> = patch
        .parameters
        .iter()
        .filter_map(|p| match &p.oneof {
            Some(pb::parameters_item::Oneof::Parameter(param)) => match &param.oneof {
                Some(pb::parameter::Oneof::NonBodyParameter(nb)) => match &nb.oneof {
                    Some(pb::non_body_parameter::Oneof::QueryParameterSubSchema(q)) => Some(q.name.as_str()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(query_names.contains(&"fieldValidation"), "{query_names:?}");

    let defs = doc.definitions.as_ref().expect("definitions");
    let find =
        |name: &str| defs.additional_properties.iter().find(|d| d.name == name).and_then(|d| d.value.as_ref()).cloned();
    let spec = find("io.k8s.api.apps.v1.DeploymentSpec").expect("DeploymentSpec");
    let props = spec.properties.as_ref().expect("properties");
    let replicas = props
        .additional_properties
        .iter()
        .find(|p| p.name == "replicas")
        .and_then(|p| p.value.as_ref())
        .expect("replicas");
    assert_eq!(replicas.type_.as_ref().map(|t| t.value.clone()), Some(vec!["integer".to_string()]));
    assert!(replicas.description.contains("desired pods"));
    let selector = props.additional_properties.iter().find(|p| p.name == "selector").and_then(|p| p.value.as_ref());
    assert_eq!(
        selector.map(|s| s._ref.as_str()),
        Some("#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
    );
    let deployment = find("io.k8s.api.apps.v1.Deployment").expect("Deployment");
    assert!(deployment.vendor_extension.iter().any(|e| e.name == "x-kubernetes-group-version-kind"));
    assert!(defs.additional_properties.len() == json_doc["definitions"].as_object().map_or(0, |d| d.len()));
}

#[test]
fn the_cache_rebuilds_for_a_new_resource_table() {
    let cache = Cache::default();
    let first = Arc::new(Resources::default());
    let a = cache.get(&first, &Doc::V3("apis/apps/v1".into())).expect("built");
    let b = cache.get(&first, &Doc::V3("apis/apps/v1".into())).expect("cached");
    assert!(a.body.as_ptr() == b.body.as_ptr(), "the second request is served from the cache");
    assert!(matches!(cache.get(&first, &Doc::V3("apis/nope/v1".into())), Err(RenderError::NotFound(_))));
    let second = Arc::new(with_crd());
    assert!(cache.get(&second, &Doc::V3("apis/stable.example.com/v1".into())).is_ok());
    let c = cache.get(&second, &Doc::V3("apis/apps/v1".into())).expect("rebuilt");
    assert!(c.body.as_ptr() != a.body.as_ptr());
    assert_eq!(c.etag, a.etag, "same content, same tag");
}

#[test]
fn protobuf_is_chosen_by_accept() {
    assert!(v2_proto::wanted("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"));
    assert!(v2_proto::wanted("application/json;q=0.9, application/com.github.proto-openapi.spec.v2.v1.0+protobuf"));
    assert!(!v2_proto::wanted("application/json"));
    assert!(!v2_proto::wanted(""));
}
