//! `api-crd` (issue 18): how long a new CustomResourceDefinition takes to be `Established` and
//! its kind served, and custom-object creates/s (a structural schema with two CEL rules) side by
//! side with ConfigMap creates in the same run, alternating so both meet the same server state.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cluster::{Backend, Server};
use crate::create::{create_objects, CreateRun, MakeBody};
use crate::stats::{count, ms, Latencies};

const GROUP: &str = "bench.skiff.io";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// What one `api-crd` run measures.
pub struct CrdArgs {
    /// CRDs created one after another for the `Established` timing.
    pub definitions: usize,
    /// Objects created per round and kind.
    pub count: usize,
    pub clients: usize,
    /// Rounds of (ConfigMaps, custom objects).
    pub rounds: usize,
    pub limit: Duration,
}

/// A namespaced CRD `<plural>.bench.skiff.io` whose schema has typed, bounded fields, a pattern
/// and two CEL rules (one on the spec, one on a nested list).
fn definition(plural: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["schedule", "replicas"],
                            "x-kubernetes-validations": [
                                {"rule": "self.replicas <= self.maxReplicas", "message": "replicas above maxReplicas"}
                            ],
                            "properties": {
                                "schedule": {"type": "string", "pattern": "^[0-9*/ ,-]+$", "maxLength": 64},
                                "image": {"type": "string"},
                                "replicas": {"type": "integer", "minimum": 0},
                                "maxReplicas": {"type": "integer", "minimum": 0, "default": 10},
                                "ports": {
                                    "type": "array", "maxItems": 16,
                                    "x-kubernetes-validations": [
                                        {"rule": "self.all(p, p.port > 0 && p.port < 65536)", "message": "ports must be 1-65535"}
                                    ],
                                    "items": {"type": "object", "properties": {
                                        "name": {"type": "string"}, "port": {"type": "integer"}
                                    }}
                                }
                            }
                        },
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }}
            }]
        }
    })
}

/// The `i`-th custom object of kind `kind` (in `default`), about the size of [`config_map`].
fn custom_object(kind: &str, prefix: &str, i: usize) -> Vec<u8> {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": kind,
        "metadata": {"name": format!("{prefix}-{i}"), "namespace": "default", "labels": {"app": "skiff-bench"}},
        "spec": {
            "schedule": "*/5 * * * *",
            "image": "registry.example/app:1",
            "replicas": 3,
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
        },
    })
    .to_string()
    .into_bytes()
}

/// The `i`-th ConfigMap, with data of about the custom object's size.
fn config_map(prefix: &str, i: usize) -> Vec<u8> {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{prefix}-{i}"), "namespace": "default", "labels": {"app": "skiff-bench"}},
        "data": {"schedule": "*/5 * * * *", "image": "registry.example/app:1", "replicas": "3", "ports": "http=8080,metrics=9090"},
    })
    .to_string()
    .into_bytes()
}

/// Whether the CRD's `Established` condition is `True`.
fn established(crd: &Value) -> bool {
    crd["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"))
}

/// Creates the CRD and polls (every millisecond) until it is `Established` and a list of its kind
/// answers 200; returns the time from the create request to both.
async fn time_to_served(server: &Server, client: &reqwest::Client, plural: &str, kind: &str) -> Result<Duration> {
    let name = format!("{plural}.{GROUP}");
    let started = Instant::now();
    let resp = client.post(format!("{}{CRDS}", server.url)).json(&definition(plural, kind)).send().await?;
    if resp.status() != reqwest::StatusCode::CREATED {
        bail!("creating CRD {name}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let deadline = started + Duration::from_secs(10);
    let (mut is_established, mut is_served) = (false, false);
    while !(is_established && is_served) {
        if Instant::now() > deadline {
            bail!(
                "CRD {name} not established and served within 10 s (established {is_established}, served {is_served})"
            );
        }
        if !is_established {
            let crd: Value = client.get(format!("{}{CRDS}/{name}", server.url)).send().await?.json().await?;
            is_established = established(&crd);
        }
        if !is_served {
            let url = format!("{}/apis/{GROUP}/v1/namespaces/default/{plural}?limit=1", server.url);
            is_served = client.get(url).send().await?.status() == reqwest::StatusCode::OK;
        }
        if !(is_established && is_served) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(started.elapsed())
}

fn row(what: &str, run: &CreateRun) -> String {
    format!(
        "| {what} | {} | {} | {:.2} | **{:.0}** | {} | {} |",
        count(run.created),
        run.errors,
        run.elapsed.as_secs_f64(),
        run.rate(),
        ms(run.latencies.p(50.0)),
        ms(run.latencies.p(99.0)),
    )
}

/// `api-crd`: the two measurements, printed as Markdown tables.
pub async fn run(bin: &Path, backend: Backend, args: &CrdArgs, server_args: &[String]) -> Result<()> {
    let mut server = Server::start_with(bin, backend, false, server_args).await?;
    let client = server.client()?;

    eprintln!("api-crd: {} CRDs, create to Established and served …", args.definitions);
    let mut served = Vec::with_capacity(args.definitions);
    for d in 0..args.definitions {
        served.push(time_to_served(&server, &client, &format!("widgets{d}"), &format!("Widget{d}")).await?);
    }
    let served = Latencies::from_durations(served);

    // The kind the creates use: the first CRD above.
    let kind = "Widget0";
    let path = format!("/apis/{GROUP}/v1/namespaces/default/widgets0");
    let mut rows = Vec::new();
    let (mut cm_total, mut cr_total) = ((0usize, 0f64), (0usize, 0f64));
    for round in 0..args.rounds {
        let prefix = format!("r{round}");
        eprintln!(
            "api-crd: round {round}: {} ConfigMaps, then {} custom objects, {} clients …",
            args.count, args.count, args.clients
        );
        let p = prefix.clone();
        let body: MakeBody = Arc::new(move |i| config_map(&p, i));
        let cm = create_objects(&server, CONFIGMAPS, body, args.count, args.clients, args.limit, None).await?;
        server.check_alive()?;
        let p = prefix.clone();
        let body: MakeBody = Arc::new(move |i| custom_object(kind, &p, i));
        let cr = create_objects(&server, &path, body, args.count, args.clients, args.limit, None).await?;
        server.check_alive()?;
        for (what, run) in [("ConfigMap", &cm), ("custom object", &cr)] {
            if let Some(e) = &run.first_error {
                eprintln!("api-crd: {what}: {} errors; first: {e}", run.errors);
            }
            if run.created == 0 {
                bail!("no {what} was created in round {round}");
            }
        }
        cm_total = (cm_total.0 + cm.created, cm_total.1 + cm.elapsed.as_secs_f64());
        cr_total = (cr_total.0 + cr.created, cr_total.1 + cr.elapsed.as_secs_f64());
        rows.push(row(&format!("{round}: ConfigMap"), &cm));
        rows.push(row(&format!("{round}: custom object (schema + 2 CEL rules)"), &cr));
    }
    // A custom object breaking a rule is refused: the rules ran on every create above.
    let bad = json!({"apiVersion": format!("{GROUP}/v1"), "kind": kind, "metadata": {"name": "bad"},
                     "spec": {"schedule": "* * * * *", "replicas": 11}});
    let resp = client.post(format!("{}{path}", server.url)).json(&bad).send().await.context("posting a bad object")?;
    if resp.status() != reqwest::StatusCode::UNPROCESSABLE_ENTITY {
        bail!("an object breaking a CEL rule got {} instead of 422", resp.status());
    }
    server.report_log();

    println!("#### CRD create to `Established` and its kind served ({} CRDs, one at a time, {backend})", served.len());
    println!();
    println!("| CRDs | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|");
    println!("| {} | {} | **{}** | {} |", served.len(), ms(served.p(50.0)), ms(served.p(99.0)), ms(served.max()));
    println!();
    println!("#### Creates, {} clients, {backend}", args.clients);
    println!();
    println!("| round: kind | created | errors | seconds | creates/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    let cm_rate = cm_total.0 as f64 / cm_total.1;
    let cr_rate = cr_total.0 as f64 / cr_total.1;
    println!();
    println!(
        "All rounds: ConfigMaps {cm_rate:.0}/s, custom objects {cr_rate:.0}/s: **{:.0} %** of the ConfigMap rate.",
        cr_rate / cm_rate * 100.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_valid_json_of_their_kind() {
        let cr: Value = serde_json::from_slice(&custom_object("Widget0", "r0", 7)).expect("json");
        assert_eq!(cr["metadata"]["name"], "r0-7");
        assert_eq!(cr["apiVersion"], "bench.skiff.io/v1");
        let cm: Value = serde_json::from_slice(&config_map("r0", 7)).expect("json");
        assert_eq!(cm["kind"], "ConfigMap");
        assert!(!established(&json!({"status": {"conditions": [{"type": "Established", "status": "False"}]}})));
        assert!(established(&json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}})));
        assert_eq!(definition("widgets3", "Widget3")["metadata"]["name"], "widgets3.bench.skiff.io");
    }
}
