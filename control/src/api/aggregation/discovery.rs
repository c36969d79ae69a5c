//! The remote group-versions in the server's own discovery documents: `/apis` (legacy and
//! aggregated) and `/apis/<group>`, built from the extension servers' `APIResourceList`s the
//! controller fetched. A group the server serves itself is never taken from a remote.

use serde_json::{json, Value};

use super::Remote;
use crate::api::resources::Resources;

/// The remote groups (not served locally), each with its versions by descending
/// `versionPriority`; groups by descending `groupPriorityMinimum`, then name.
pub fn groups<'a>(remotes: &'a [Remote], served: &Resources) -> Vec<(&'a str, Vec<&'a Remote>)> {
    let local: Vec<&str> = served.group_versions().into_iter().map(|(g, _)| g).collect();
    let mut out: Vec<(&str, Vec<&Remote>)> = Vec::new();
    for r in remotes.iter().filter(|r| !r.group.is_empty() && !local.contains(&r.group.as_str())) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => versions.push(r),
            None => out.push((&r.group, vec![r])),
        }
    }
    for (_, versions) in &mut out {
        versions.sort_by(|a, b| b.version_priority.cmp(&a.version_priority).then(a.version.cmp(&b.version)));
    }
    let top = |versions: &[&Remote]| versions.iter().map(|r| r.group_priority).max().unwrap_or(0);
    out.sort_by(|(ga, va), (gb, vb)| top(vb).cmp(&top(va)).then(ga.cmp(gb)));
    out
}

/// An `APIGroup` entry (as in `/apis`) of one remote group.
pub fn group_entry(group: &str, versions: &[&Remote]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|r| json!({"groupVersion": format!("{group}/{}", r.version), "version": r.version}))
        .collect();
    let preferred = entries.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": entries, "preferredVersion": preferred})
}

/// `/apis/<group>` of a remote group.
pub fn api_group(remotes: &[Remote], served: &Resources, group: &str) -> Option<Value> {
    let (g, versions) = groups(remotes, served).into_iter().find(|(g, _)| *g == group)?;
    let mut doc = group_entry(g, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// One `APIResourceList` in the aggregated (`apidiscovery.k8s.io/v2`) form.
fn aggregated_resources(remote: &Remote, list: &Value) -> Vec<Value> {
    let all: Vec<&Value> = list.get("resources").and_then(Value::as_array).into_iter().flatten().collect();
    let text = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let kind_of = |r: &Value| {
        let group = r.get("group").and_then(Value::as_str).unwrap_or(&remote.group);
        let version = r.get("version").and_then(Value::as_str).unwrap_or(&remote.version);
        json!({"group": group, "version": version, "kind": text(r, "kind")})
    };
    all.iter()
        .filter(|r| !text(r, "name").contains('/'))
        .map(|r| {
            let name = text(r, "name");
            let subresources: Vec<Value> = all
                .iter()
                .filter_map(|s| {
                    let full = text(s, "name");
                    let sub = full.strip_prefix(&format!("{name}/"))?.to_string();
                    Some(json!({"subresource": sub, "responseKind": kind_of(s), "verbs": s.get("verbs").cloned().unwrap_or(json!([]))}))
                })
                .collect();
            let namespaced = r.get("namespaced").and_then(Value::as_bool).unwrap_or(false);
            json!({
                "resource": name,
                "responseKind": kind_of(r),
                "scope": if namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": text(r, "singularName"),
                "verbs": r.get("verbs").cloned().unwrap_or(json!([])),
                "shortNames": r.get("shortNames").cloned().unwrap_or(json!([])),
                "categories": r.get("categories").cloned().unwrap_or(json!([])),
                "subresources": subresources,
            })
        })
        .collect()
}

/// The aggregated discovery items of the remote groups whose resources are known.
pub fn aggregated_items(remotes: &[Remote], served: &Resources) -> Vec<Value> {
    groups(remotes, served)
        .into_iter()
        .filter_map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .filter_map(|r| {
                    let list = r.resources.as_ref()?;
                    let freshness = if r.available.is_ok() { "Current" } else { "Stale" };
                    Some(json!({"version": r.version, "resources": aggregated_resources(r, list), "freshness": freshness}))
                })
                .collect();
            (!versions.is_empty()).then(|| json!({"metadata": {"name": g}, "versions": versions}))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::aggregation::Backend;

    fn remote(group: &str, version: &str, priority: i64) -> Remote {
        Remote {
            name: format!("{version}.{group}"),
            group: group.into(),
            version: version.into(),
            group_priority: 1000,
            version_priority: priority,
            backend: Backend { namespace: "x".into(), name: "y".into(), port: 443, ca_bundle: vec![], insecure: false },
            available: Ok(()),
            resources: Some(json!({"resources": [
                {"name": "widgets", "singularName": "widget", "namespaced": true, "kind": "Widget", "verbs": ["get", "list"]},
                {"name": "widgets/status", "singularName": "", "namespaced": true, "kind": "Widget", "verbs": ["get"]}
            ]})),
        }
    }

    #[test]
    fn remote_groups_join_discovery_but_never_shadow_local_ones() {
        let served = Resources::default();
        let remotes = vec![
            remote("wid.example.com", "v1beta1", 10),
            remote("wid.example.com", "v1", 20),
            remote("apps", "v9", 1),
        ];
        let gs = groups(&remotes, &served);
        assert_eq!(gs.len(), 1, "apps is local");
        let doc = api_group(&remotes, &served, "wid.example.com").expect("group");
        assert_eq!(doc["preferredVersion"]["version"], "v1");
        let items = aggregated_items(&remotes, &served);
        let widgets = &items[0]["versions"][0]["resources"][0];
        assert_eq!(widgets["resource"], "widgets");
        assert_eq!(widgets["scope"], "Namespaced");
        assert_eq!(widgets["responseKind"]["group"], "wid.example.com");
        assert_eq!(widgets["subresources"][0]["subresource"], "status");
    }
}
