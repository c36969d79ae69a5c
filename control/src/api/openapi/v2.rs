//! OpenAPI v2 (Swagger 2.0): one document for every served group-version, which kubectl 1.27
//! and 1.28 fetch before each `apply` (and newer ones when v3 lacks what they look for). Each
//! resource's item path has `get`, `put` and `patch` operations with
//! `x-kubernetes-group-version-kind`, `x-kubernetes-action` and the `fieldValidation`,
//! `fieldManager` and `dryRun` parameters, as in v3; `definitions` holds the same schemas with
//! `#/definitions/` references.
//!
//! As in v3, PATCH does not list the strategic-merge content type, so kubectl builds apply
//! patches from its compiled-in types (built-in kinds) or as merge patches (custom resources).

use serde_json::{json, Map, Value};

use super::schemas::{self, Flavor};
use super::{item_path, KUBERNETES_VERSION};
use crate::api::resources::{ResourceInfo, Resources};

/// Content types PATCH accepts (the strategic-merge one left out on purpose, see above).
pub const PATCH_CONSUMES: [&str; 3] =
    ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"];

/// The Swagger 2.0 document of everything `resources` serves.
pub fn document(resources: &Resources) -> Value {
    let schemas = schemas::build(resources.iter(), Flavor::V2);
    let mut paths = Map::new();
    for ri in resources.iter() {
        let reference = json!({"$ref": format!("{}{}", Flavor::V2.ref_prefix(), schemas.name_of(ri))});
        paths.insert(item_path(ri), path_item(ri, &reference));
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": schemas.definitions,
    })
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "type": "string", "uniqueItems": true, "description": description})
}

fn path_item(ri: &ResourceInfo, reference: &Value) -> Value {
    let gvk = json!({"group": ri.group, "version": ri.version, "kind": ri.kind});
    let write_params = [
        query("dryRun", "When present, indicates that modifications should not be persisted."),
        query(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query("fieldValidation", "How the server handles unknown or duplicate fields: Ignore, Warn or Strict."),
    ];
    let body = |schema: Value| json!({"name": "body", "in": "body", "required": true, "schema": schema});
    let mut put_params = vec![body(reference.clone())];
    put_params.extend(write_params.iter().cloned());
    let mut patch_params = vec![body(json!({"type": "object"}))];
    patch_params.extend(write_params.iter().cloned());
    let id = |verb: &str| operation_id(verb, ri);
    let ok = json!({"200": {"description": "OK", "schema": reference}});
    let mut params =
        vec![json!({"name": "name", "in": "path", "required": true, "type": "string", "uniqueItems": true,
                                 "description": format!("name of the {}", ri.kind)})];
    if ri.namespaced {
        params.push(json!({"name": "namespace", "in": "path", "required": true, "type": "string", "uniqueItems": true,
                           "description": "object name and auth scope, such as for teams and projects"}));
    }
    json!({
        "get": {"operationId": id("read"), "produces": ["application/json", "application/yaml"],
                "responses": ok, "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
        "put": {"operationId": id("replace"), "consumes": ["application/json", "application/yaml"],
                "produces": ["application/json", "application/yaml"], "parameters": put_params,
                "responses": ok, "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk},
        "patch": {"operationId": id("patch"), "consumes": PATCH_CONSUMES,
                  "produces": ["application/json", "application/yaml"], "parameters": patch_params,
                  "responses": ok, "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk},
        "parameters": params,
    })
}

/// kube-apiserver's operation id: `readAppsV1NamespacedDeployment`, `patchCoreV1Node`.
fn operation_id(verb: &str, ri: &ResourceInfo) -> String {
    let group: String = match ri.group {
        "" => "Core".to_string(),
        g => g.trim_end_matches(".k8s.io").split(['.', '-']).map(capitalize).collect(),
    };
    let scope = if ri.namespaced { "Namespaced" } else { "" };
    format!("{verb}{group}{}{scope}{}", capitalize(ri.version), ri.kind)
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
