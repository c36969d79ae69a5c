//! A minimal OpenAPI v3, enough for kubectl: one document per group-version whose PATCH
//! operations carry `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, so
//! kubectl validates on the server (`fieldValidation=Strict`). The strategic-merge content type
//! is deliberately not listed: kubectl then builds its apply patches from its compiled-in types,
//! which carry the right merge keys.

use serde_json::{json, Map, Value};

use super::resources::Resources;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group-version documents.
pub fn index(resources: &Resources) -> Value {
    let mut paths = Map::new();
    for (g, v) in resources.group_versions() {
        let path = gv_path(g, v);
        paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=skiff0")}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api|apis/group>/<version>`: the document of one group-version.
pub fn document(resources: &Resources, path: &str) -> Option<Value> {
    let (g, v) = resources.group_versions().into_iter().find(|(g, v)| gv_path(g, v) == path)?;
    let mut paths = Map::new();
    for ri in resources.iter().filter(|r| r.group == g && r.version == v) {
        let gvk = json!({"group": ri.group, "version": ri.version, "kind": ri.kind});
        let item_path = if ri.namespaced {
            format!("/{path}/namespaces/{{namespace}}/{}/{{name}}", ri.plural)
        } else {
            format!("/{path}/{}/{{name}}", ri.plural)
        };
        let schema = json!({"$ref": format!("#/components/schemas/{}", schema_name(ri.group, ri.version, ri.kind))});
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
            item_path,
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
    let mut schemas = Map::new();
    for ri in resources.iter().filter(|r| r.group == g && r.version == v) {
        // A custom resource's schema is its CRD's (what `kubectl explain` reads).
        let mut schema = ri.custom.as_ref().and_then(|c| c.schema.clone()).unwrap_or_else(|| json!({"type": "object"}));
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": ri.group, "version": ri.version, "kind": ri.kind}]);
        schemas.insert(schema_name(ri.group, ri.version, ri.kind), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-skiff"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let group = if group.is_empty() { "core".to_string() } else { group.replace('.', "_") };
    format!("io.k8s.api.{group}.{version}.{kind}")
}
