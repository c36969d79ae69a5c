//! Durability: acknowledged writes survive a SIGKILL of the server.
//!
//! Eight concurrent writers create ConfigMaps over HTTPS as fast as the server takes them and
//! record every create the server acknowledged (HTTP 201) with the resourceVersion it returned.
//! The server is killed with SIGKILL mid-stream, restarted on the same data directory, and then
//! every acknowledged ConfigMap must be there, unchanged, and a new write must get a
//! resourceVersion greater than every acknowledged one.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{tail, Cluster};
use serde_json::{json, Value};

const WRITERS: usize = 8;
const NAMESPACE: &str = "durability";

/// What one writer saw.
#[derive(Default)]
struct Outcome {
    /// name -> (resourceVersion, uid) of every create answered 201.
    acknowledged: BTreeMap<String, (u64, String)>,
    /// Every name a create was sent for (acknowledged or not).
    attempted: Vec<String>,
    /// HTTP answers other than 201 (status, body): none are expected.
    unexpected: Vec<(u16, String)>,
    /// Requests that failed without an HTTP answer (expected once the server is killed).
    transport_errors: usize,
}

fn parse_rv(object: &Value) -> u64 {
    let rv = object["metadata"]["resourceVersion"].as_str().unwrap_or_else(|| panic!("no resourceVersion in {object}"));
    rv.parse().unwrap_or_else(|_| panic!("resourceVersion {rv:?} is not a decimal revision"))
}

fn http_client(cluster: &Cluster) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(cluster.data_dir().join("ca.crt")).expect("read ca.crt");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca.crt is PEM"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

async fn writer(client: reqwest::Client, url: String, token: String, id: usize, stop: Arc<AtomicBool>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut seq = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("w{id}-{seq:06}");
        seq += 1;
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"writer": id.to_string()}},
            "data": {"writer": id.to_string(), "seq": seq.to_string()},
        });
        outcome.attempted.push(name.clone());
        let sent = client
            .post(format!("{url}/api/v1/namespaces/{NAMESPACE}/configmaps"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(_) => {
                outcome.transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let status = response.status().as_u16();
        // The acknowledgement is the full answer: a 201 whose body was cut off is not one.
        let Ok(text) = response.text().await else {
            outcome.transport_errors += 1;
            continue;
        };
        if status != 201 {
            outcome.unexpected.push((status, text));
            continue;
        }
        let object: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("201 body is not JSON ({e}): {text}"));
        assert_eq!(object["metadata"]["name"], name, "201 answer names another object: {text}");
        let uid = object["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        outcome.acknowledged.insert(name, (parse_rv(&object), uid));
    }
    outcome
}

#[test]
fn acknowledged_writes_survive_kill9_sqlite() {
    let mut cluster = Cluster::start();
    let (code, body) = cluster.curl(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}).to_string().as_bytes()),
    );
    assert_eq!(code, 201, "create namespace: {body}");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
    let client = http_client(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let (url, token) = (cluster.url(), cluster.token());
    let handles: Vec<_> = (0..WRITERS)
        .map(|id| runtime.spawn(writer(client.clone(), url.clone(), token.clone(), id, Arc::clone(&stop))))
        .collect();

    // Let the writers run, then pull the plug while they are still writing.
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill9();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> =
        runtime.block_on(async { join_writers(handles).await }).into_iter().collect::<Vec<_>>();
    drop(runtime);

    let mut acknowledged = BTreeMap::new();
    let mut attempted = HashSet::new();
    let mut unexpected = Vec::new();
    let mut transport_errors = 0;
    for outcome in outcomes {
        acknowledged.extend(outcome.acknowledged);
        attempted.extend(outcome.attempted);
        unexpected.extend(outcome.unexpected);
        transport_errors += outcome.transport_errors;
    }
    eprintln!(
        "durability: {} creates acknowledged, {} attempted, {transport_errors} transport errors after the kill",
        acknowledged.len(),
        attempted.len()
    );
    assert!(
        unexpected.is_empty(),
        "the server answered creates with something other than 201: {:?}\nserver log tail:\n{}",
        &unexpected[..unexpected.len().min(5)],
        tail(&cluster.server_log())
    );
    assert!(acknowledged.len() >= 50, "too few creates acknowledged ({}) for a meaningful test", acknowledged.len());
    assert!(transport_errors > 0, "no writer noticed the kill: the server was not killed mid-stream");
    let max_rv = acknowledged.values().map(|(rv, _)| *rv).max().expect("some acknowledged");
    let distinct: HashSet<u64> = acknowledged.values().map(|(rv, _)| *rv).collect();
    assert_eq!(distinct.len(), acknowledged.len(), "two acknowledged creates share a resourceVersion");

    // Restart on the same data directory.
    cluster.spawn();

    let (code, body) =
        cluster.curl("GET", &format!("/api/v1/namespaces/{NAMESPACE}/configmaps"), "application/json", None);
    assert_eq!(code, 200, "list configmaps after restart: {body}");
    let list: Value = serde_json::from_str(&body).expect("list JSON");
    let list_rv: u64 =
        list["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("list resourceVersion");
    let mut stored = BTreeMap::new();
    for item in list["items"].as_array().expect("items") {
        let name = item["metadata"]["name"].as_str().expect("name").to_string();
        let uid = item["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        stored.insert(name, (parse_rv(item), uid, item["data"].clone()));
    }

    let missing: Vec<&String> = acknowledged.keys().filter(|n| !stored.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged ConfigMaps are gone after kill -9 and restart, e.g. {:?}\nserver log tail:\n{}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)],
        tail(&cluster.server_log())
    );
    for (name, (rv, uid)) in &acknowledged {
        let (stored_rv, stored_uid, data) = &stored[name];
        assert_eq!(stored_rv, rv, "{name}: resourceVersion changed across the restart");
        assert_eq!(stored_uid, uid, "{name}: uid changed across the restart");
        let writer = name[1..].split('-').next().expect("writer id");
        assert_eq!(data["writer"], writer, "{name}: data changed across the restart: {data}");
    }
    // (Controllers may add their own ConfigMaps, e.g. kube-root-ca.crt: only writer names count.)
    let strangers: Vec<&String> = stored.keys().filter(|n| n.starts_with('w') && !attempted.contains(*n)).collect();
    assert!(strangers.is_empty(), "ConfigMaps no writer sent appeared: {strangers:?}");
    assert!(list_rv >= max_rv, "list resourceVersion {list_rv} is behind acknowledged resourceVersion {max_rv}");

    // A new write must be ordered after everything acknowledged before the crash.
    let (code, body) = cluster.curl(
        "POST",
        &format!("/api/v1/namespaces/{NAMESPACE}/configmaps"),
        "application/json",
        Some(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-restart"}, "data": {"k": "v"}})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(code, 201, "create after restart: {body}");
    let new_rv = parse_rv(&serde_json::from_str(&body).expect("create JSON"));
    assert!(new_rv > max_rv, "write after restart got resourceVersion {new_rv}, not above acknowledged {max_rv}");
    assert!(
        new_rv > list_rv,
        "write after restart got resourceVersion {new_rv}, not above list resourceVersion {list_rv}"
    );

    // And the restarted server also sees the acknowledged objects through kubectl.
    let via_kubectl = cluster.get_json(&["configmaps", "-n", NAMESPACE]);
    let count = via_kubectl["items"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        count > acknowledged.len(),
        "kubectl lists {count} ConfigMaps, fewer than the {} acknowledged plus one",
        acknowledged.len()
    );
}

/// Awaits every writer task (a panic in a writer fails the test with its message).
async fn join_writers(handles: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("writer task failed: {e}"),
        }
    }
    outcomes
}
