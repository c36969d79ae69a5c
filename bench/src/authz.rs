//! `authz`: authorization decision latency with many Roles and RoleBindings, in process (the
//! decision is a pure function of the RBAC index the server keeps; no network in the timing).
//! The Node authorizer's graph lookup is timed beside it.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_control::auth::node_graph::{NodeGraph, RefKind};
use skiff_control::auth::rbac::{authorize, Index, PolicyObjects};
use skiff_control::auth::request_info::Attributes;
use skiff_control::auth::UserInfo;

use crate::stats::Latencies;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo { name: name.into(), groups: groups.iter().map(|s| (*s).to_string()).collect(), ..UserInfo::default() }
}

/// `roles` Roles and as many RoleBindings over 100 namespaces, plus the default cluster policy.
fn policy(roles: usize) -> PolicyObjects {
    let mut objs = PolicyObjects::default();
    for i in 0..roles {
        let ns = format!("ns-{}", i % 100);
        objs.objects.insert(
            format!("/registry/rbac.authorization.k8s.io/roles/{ns}/role-{i}"),
            json!({"metadata": {"name": format!("role-{i}"), "namespace": ns}, "rules": [
                {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "pods/log"]},
                {"verbs": ["update"], "apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": [format!("d{i}")]}]}),
        );
        objs.objects.insert(
            format!("/registry/rbac.authorization.k8s.io/rolebindings/{ns}/binding-{i}"),
            json!({"metadata": {"name": format!("binding-{i}"), "namespace": ns},
                   "roleRef": {"kind": "Role", "name": format!("role-{i}")},
                   "subjects": [{"kind": "ServiceAccount", "name": format!("sa-{i}"), "namespace": ns},
                                {"kind": "Group", "name": format!("group-{}", i % 10)}]}),
        );
    }
    let name = |o: &Value| o["metadata"]["name"].as_str().unwrap_or_default().to_string();
    for role in skiff_control::auth::bootstrap_policy::cluster_roles() {
        objs.objects.insert(format!("/registry/rbac.authorization.k8s.io/clusterroles/{}", name(&role)), role);
    }
    for b in skiff_control::auth::bootstrap_policy::cluster_role_bindings() {
        objs.objects.insert(format!("/registry/rbac.authorization.k8s.io/clusterrolebindings/{}", name(&b)), b);
    }
    objs
}

/// The `n`th request of the mix: service accounts reading pods (allowed in their namespace,
/// denied elsewhere), deleting them (denied), scaling one named deployment (allowed for one name).
fn request(n: usize, roles: usize) -> Attributes {
    let i = n % roles;
    let ns = format!("ns-{}", (i + n / roles) % 100);
    let group = format!("group-{}", n % 13);
    let u = user(
        &format!("system:serviceaccount:ns-{}:sa-{i}", i % 100),
        &["system:serviceaccounts", "system:authenticated", group.as_str()],
    );
    let verb = ["get", "list", "delete", "update"][n % 4];
    let (api_group, resource, sub) = if verb == "update" { ("apps", "deployments", "scale") } else { ("", "pods", "") };
    Attributes {
        user: u,
        verb: verb.into(),
        resource_request: true,
        api_group: api_group.into(),
        namespace: ns,
        resource: resource.into(),
        subresource: sub.into(),
        name: format!("d{i}"),
        ..Attributes::default()
    }
}

fn row(what: &str, samples: Vec<Duration>, note: &str) -> String {
    let l = Latencies::from_durations(samples);
    let us = |ms: f64| format!("{:.2}", ms * 1e3);
    format!("| {what} | {} | {} | **{}** | {} | {note} |", l.len(), us(l.p(50.0)), us(l.p(99.0)), us(l.max()))
}

/// Runs `decisions` RBAC decisions over `roles` Roles and RoleBindings, and as many Node
/// authorizer graph lookups over `roles` pods on 100 nodes.
pub fn run(roles: usize, decisions: usize) -> Result<()> {
    if roles == 0 || decisions == 0 {
        bail!("--roles and --decisions must be positive");
    }
    let objs = policy(roles);
    let started = Instant::now();
    let index = Index::build(&objs);
    let build = started.elapsed();
    let mut samples = Vec::with_capacity(decisions);
    let mut allowed = 0usize;
    for n in 0..decisions {
        let a = request(n, roles);
        let t = Instant::now();
        let decision = std::hint::black_box(authorize(&index, std::hint::black_box(&a)));
        samples.push(t.elapsed());
        allowed += usize::from(decision);
    }
    let rbac = row(
        "RBAC decision",
        samples,
        &format!(
            "{allowed} allowed; index built in {:.1} ms from {} objects",
            build.as_secs_f64() * 1e3,
            objs.objects.len()
        ),
    );

    let graph = NodeGraph::default();
    for i in 0..roles {
        graph.insert_pod(&json!({
            "metadata": {"name": format!("pod-{i}"), "namespace": format!("ns-{}", i % 100)},
            "spec": {"nodeName": format!("node-{}", i % 100), "volumes": [{"name": "s", "secret": {"secretName": format!("secret-{i}")}}]}
        }));
    }
    let mut samples = Vec::with_capacity(decisions);
    let mut related = 0usize;
    for n in 0..decisions {
        let i = n % roles;
        let (node, ns, secret) =
            (format!("node-{}", (i + n / roles) % 100), format!("ns-{}", i % 100), format!("secret-{i}"));
        let t = Instant::now();
        let r = std::hint::black_box(graph.related(&node, RefKind::Secret, &ns, &secret));
        samples.push(t.elapsed());
        related += usize::from(r);
    }
    let node = row("Node authorizer graph lookup", samples, &format!("{related} related; {roles} pods on 100 nodes"));
    println!("| decision | samples | p50 µs | p99 µs | max µs | notes |");
    println!("|---|---:|---:|---:|---:|---|");
    println!("{rbac}");
    println!("{node}");
    Ok(())
}
