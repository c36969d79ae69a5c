//! API discovery: the legacy documents (`/api`, `/apis`, resource lists) and aggregated
//! discovery (`apidiscovery.k8s.io/v2`), both built from the resource table.

use serde_json::{json, Value};

use super::resources::{ResourceInfo, Resources};

/// Content type kubectl expects for aggregated discovery.
pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the `Accept` header asks for aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept
        .split(',')
        .any(|part| part.contains("as=APIGroupDiscoveryList") && part.contains("v=v2") && !part.contains("v=v2beta1"))
}

const ALL_VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The verbs of a resource: all, but for the read-only `componentstatuses`.
fn verbs(ri: &ResourceInfo) -> &'static [&'static str] {
    if ri.group.is_empty() && ri.kind == "ComponentStatus" {
        &["get", "list"]
    } else {
        &ALL_VERBS
    }
}

fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "binding" | "eviction" => &["create"],
        "log" => &["get"],
        "finalize" => &["update"],
        _ => &["get", "patch", "update"],
    }
}

fn subresource_kind(ri: &ResourceInfo, sub: &str) -> (&'static str, &'static str, &'static str) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "binding" => ("", "v1", "Binding"),
        "eviction" => ("policy", "v1", "Eviction"),
        _ => (ri.group, ri.version, ri.kind),
    }
}

fn categories(ri: &ResourceInfo) -> Vec<String> {
    if let Some(custom) = &ri.custom {
        return custom.categories.clone();
    }
    if ri.in_category_all {
        vec!["all".to_string()]
    } else {
        vec![]
    }
}

/// `/api`: the legacy versions document.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Kubernetes' version priority (`v1` > `v1beta2` > `v1beta1` > `v1alpha1` > anything else):
/// the first of a group's versions is its preferred one.
fn version_rank(v: &str) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    let parse = |rest: &str| -> Option<(u64, u8, u64)> {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        let (stage, n) = if tail.is_empty() {
            (0, "0")
        } else if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (2, n)
        } else {
            return None;
        };
        Some((major, stage, n.parse().ok()?))
    };
    match v.strip_prefix('v').and_then(parse) {
        Some((major, stage, minor)) => (stage, std::cmp::Reverse(major), std::cmp::Reverse(minor), String::new()),
        None => (3, std::cmp::Reverse(0), std::cmp::Reverse(0), v.to_string()),
    }
}

/// The served groups (core first) with their versions, preferred first.
fn groups(resources: &Resources) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (g, v) in resources.group_versions() {
        match out.iter_mut().find(|(group, _)| *group == g) {
            Some((_, versions)) => versions.push(v),
            None => out.push((g, vec![v])),
        }
    }
    for (_, versions) in &mut out {
        versions.sort_by_key(|v| version_rank(v));
    }
    out
}

fn group_entry(group: &str, versions: &[&str]) -> Value {
    let entries: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    let preferred = entries.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": entries, "preferredVersion": preferred})
}

/// `/apis`: the legacy group list.
pub fn api_group_list(resources: &Resources) -> Value {
    let groups: Vec<Value> =
        groups(resources).into_iter().filter(|(g, _)| !g.is_empty()).map(|(g, v)| group_entry(g, &v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn api_group(resources: &Resources, group: &str) -> Option<Value> {
    let (g, v) = groups(resources).into_iter().find(|(g, _)| *g == group)?;
    let mut entry = group_entry(g, &v);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

/// `/api/v1` or `/apis/<group>/<version>`: the legacy resource list.
pub fn api_resource_list(resources: &Resources, group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for ri in resources.iter().filter(|r| r.group == group && r.version == version) {
        list.push(json!({
            "name": ri.plural,
            "singularName": ri.singular(),
            "namespaced": ri.namespaced,
            "kind": ri.kind,
            "verbs": verbs(ri),
            "shortNames": ri.short_names,
            "categories": categories(ri),
            "storageVersionHash": "",
        }));
        for sub in ri.subresources {
            let (g, v, k) = subresource_kind(ri, sub);
            let mut entry = json!({"name": format!("{}/{sub}", ri.plural), "singularName": "", "namespaced": ri.namespaced, "kind": k, "verbs": subresource_verbs(sub)});
            if g != group {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            list.push(entry);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

fn aggregated_resource(ri: &ResourceInfo) -> Value {
    let subresources: Vec<Value> = ri
        .subresources
        .iter()
        .map(|sub| {
            let (g, v, k) = subresource_kind(ri, sub);
            json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": subresource_verbs(sub)})
        })
        .collect();
    json!({
        "resource": ri.plural,
        "responseKind": {"group": ri.group, "version": ri.version, "kind": ri.kind},
        "scope": if ri.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": ri.singular(),
        "verbs": verbs(ri),
        "shortNames": ri.short_names,
        "categories": categories(ri),
        "subresources": subresources,
    })
}

/// Aggregated discovery for the core group (`legacy`) or for all named groups.
pub fn aggregated(resources: &Resources, legacy: bool) -> Value {
    let items: Vec<Value> = groups(resources)
        .into_iter()
        .filter(|(g, _)| g.is_empty() == legacy)
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let res: Vec<Value> =
                        resources.iter().filter(|r| r.group == g && r.version == *v).map(aggregated_resource).collect();
                    json!({"version": v, "resources": res, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_by_kubernetes_priority() {
        let mut v = vec!["v1alpha1", "v2", "v1beta1", "v1", "foo", "v1beta2"];
        v.sort_by_key(|v| version_rank(v));
        assert_eq!(v, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }
}
