//! OpenAPI v3: one document per group-version whose PATCH operations carry
//! `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, so kubectl validates on
//! the server (`fieldValidation=Strict`), and whose `components/schemas` hold the kinds' schemas
//! (what `kubectl explain` reads). The strategic-merge content type is deliberately not listed:
//! kubectl then builds its apply patches from its compiled-in types, which carry the right merge
//! keys.

use serde_json::{json, Map, Value};

use super::schemas::{self, Flavor};
use super::{gv_path, item_path, KUBERNETES_VERSION};
use crate::api::resources::Resources;

/// `/openapi/v3`: the index of group-version documents, each URL with the hash of its content.
pub fn index(resources: &Resources) -> Value {
    let mut paths = Map::new();
    for (g, v) in resources.group_versions() {
        let path = gv_path(g, v);
        let hash = super::group_version_hash(resources, g, v);
        paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api|apis/group>/<version>`: the document of one group-version.
pub fn document(resources: &Resources, path: &str) -> Option<Value> {
    let (g, v) = resources.group_versions().into_iter().find(|(g, v)| gv_path(g, v) == path)?;
    let served: Vec<_> = resources.iter().filter(|r| r.group == g && r.version == v).collect();
    let schemas = schemas::build(served.iter().copied(), Flavor::V3);
    let mut paths = Map::new();
    for ri in &served {
        let gvk = json!({"group": ri.group, "version": ri.version, "kind": ri.kind});
        let schema = json!({"$ref": format!("{}{}", Flavor::V3.ref_prefix(), schemas.name_of(ri))});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let body = json!({"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        }});
        paths.insert(
            item_path(ri),
            json!({
                "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk,
                        "responses": {"200": {"content": {"application/json": {"schema": schema}}}}},
                "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": params,
                        "requestBody": {"content": {"application/json": {"schema": schema}}}, "responses": {}},
                "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "parameters": params,
                          "requestBody": body, "responses": {"200": {"content": {"application/json": {"schema": schema}}}}},
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas.definitions},
    }))
}
