//! Leader election: two servers on one etcd, sharing one cluster identity (CA, admin token,
//! service-account and secrets keys). One holds the `kube-scheduler` and
//! `kube-controller-manager` Leases and runs those components; the other runs neither until the
//! leader dies, then takes both Leases over and acts.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, Etcd};

/// Short timings so that a takeover happens within seconds.
const TIMING: [&str; 6] =
    ["--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "1s"];
const LEASES: [&str; 2] = ["kube-scheduler", "kube-controller-manager"];

fn holder(c: &Cluster, lease: &str) -> String {
    let out =
        c.kubectl_output(&["get", "lease", "-n", "kube-system", lease, "-o", "jsonpath={.spec.holderIdentity}"], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn server_id(c: &Cluster) -> String {
    std::fs::read_to_string(c.data_dir().join("server-id")).expect("server-id").trim().to_string()
}

fn leading(c: &Cluster, lease: &str) -> bool {
    let (_, metrics) = c.curl_accept("/metrics", "text/plain");
    metrics.contains(&format!("leader_election_master_status{{name=\"{lease}\"}} 1"))
}

/// A Deployment created through `via` gets `replicas` pods, all bound to a node.
fn deployment_runs(via: &Cluster, name: &str, replicas: usize) {
    via.kubectl(&["create", "deployment", name, "--image=127.0.0.1:5000/none:1", &format!("--replicas={replicas}")]);
    eventually(&format!("{name}'s pods bound"), Duration::from_secs(60), || {
        let pods = via.get_json(&["pods", "-l", &format!("app={name}")]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == replicas && items.iter().all(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()))
    });
}

#[test]
fn one_server_leads_and_the_other_takes_over_when_it_dies() {
    let etcd = Etcd::start();
    let store = format!("etcd://{}", etcd.endpoint);
    let mut a = Cluster::start_in(tempfile::tempdir().expect("tempdir"), &store, &TIMING);
    for lease in LEASES {
        eventually(&format!("{lease} held by the first server"), Duration::from_secs(30), || {
            holder(&a, lease).ends_with(&server_id(&a))
        });
    }
    // The second server joins the same cluster: the same CA and keys, its own data directory.
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["ca.crt", "ca.key", "admin.token", "sa.key", "secrets-encryption.json"] {
        std::fs::copy(a.data_dir().join(file), dir.path().join(file)).expect(file);
    }
    let b = Cluster::start_in(dir, &store, &TIMING);
    assert_ne!(server_id(&a), server_id(&b));
    // Nodes that outlive the first server: hollow, registered through the second.
    let _nodes = b.hollow(2, "le");
    eventually("2 hollow nodes Ready", Duration::from_secs(60), || b.ready_nodes() == 2);

    // The first server leads: a Deployment made through the second is acted on (by the first).
    deployment_runs(&b, "before", 2);
    for lease in LEASES {
        assert!(holder(&b, lease).ends_with(&server_id(&a)), "{lease}: {}", holder(&b, lease));
        assert!(leading(&a, lease), "the first server reports leading {lease}");
        assert!(!leading(&b, lease), "the second server reports following {lease}");
    }
    let (_, ready) = b.curl_accept("/readyz?verbose", "text/plain");
    assert!(ready.contains("leader-election-kube-controller-manager ok"), "{ready}");
    assert!(!ready.contains("controller-deployment"), "a follower runs no controllers: {ready}");

    // The leader dies: the second server takes both Leases over and acts.
    a.kill9();
    for lease in LEASES {
        eventually(&format!("{lease} taken over"), Duration::from_secs(30), || {
            holder(&b, lease).ends_with(&server_id(&b))
        });
        let transitions =
            b.kubectl(&["get", "lease", "-n", "kube-system", lease, "-o", "jsonpath={.spec.leaseTransitions}"]);
        assert_eq!(transitions.trim(), "1", "{lease}");
        eventually(&format!("{lease} leading metric"), Duration::from_secs(10), || leading(&b, lease));
    }
    deployment_runs(&b, "after", 2);
    let events = b.kubectl(&["get", "events", "-n", "kube-system", "--field-selector", "reason=LeaderElection"]);
    assert!(events.contains(&format!("{} became leader", holder(&b, "kube-controller-manager"))), "{events}");
}

#[test]
fn a_restarted_server_takes_its_own_lease_back_at_once() {
    // The default timings: a new identity would wait 15 s for the old Lease to run out.
    let mut c = Cluster::start();
    let before = holder(&c, "kube-controller-manager");
    assert!(before.ends_with(&server_id(&c)), "{before}");
    c.kill9();
    c.spawn();
    eventually("the Lease renewed by the restarted server", Duration::from_secs(5), || {
        leading(&c, "kube-controller-manager")
    });
    assert_eq!(holder(&c, "kube-controller-manager"), before);
}

#[test]
fn without_leader_election_no_lease_is_taken() {
    let c = Cluster::start_with_args(&["--leader-elect=false"]);
    deployment_controllers_act(&c);
    let out = c.kubectl_output(&["get", "lease", "-n", "kube-system", "kube-controller-manager"], None);
    assert!(!out.status.success(), "no Lease without election");
}

/// The controller manager runs: a Deployment gets its ReplicaSet.
fn deployment_controllers_act(c: &Cluster) {
    c.kubectl(&["create", "deployment", "web", "--image=127.0.0.1:5000/none:1"]);
    eventually("web's ReplicaSet", Duration::from_secs(30), || {
        let rs = c.get_json(&["rs", "-l", "app=web"]);
        rs["items"].as_array().is_some_and(|items| items.len() == 1)
    });
}
