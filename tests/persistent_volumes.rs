//! End to end: PersistentVolumeClaims through skiff's default StorageClass `local-path`
//! (WaitForFirstConsumer): a StatefulSet's `volumeClaimTemplates` become claims, the scheduler
//! picks the node, the provisioner makes each claim a volume pinned there, busybox containers
//! (runc through a real containerd) write into it, and what they wrote outlives the pod.
//!
//! Needs root, containerd, runc, the CNI plugins, docker-registry, umoci, skopeo and busybox-static.

mod common;

use std::time::Duration;

use common::eventually;
use common::linux::LinuxCluster as Setup;

const WAIT: Duration = Duration::from_secs(90);

const STATEFUL_SET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: busybox
        command: ["sh", "-c", "echo started-$HOSTNAME >> /data/log; sleep 3600"]
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 64Mi}
"#;

fn get(s: &Setup, args: &[&str]) -> String {
    let out = s.cluster.kubectl_output(args, None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn running(s: &Setup, pod: &str) -> bool {
    get(s, &["get", "pod", pod, "-o", "jsonpath={.status.phase}"]) == "Running"
}

#[test]
fn stateful_set_claims_are_provisioned_on_the_node_and_outlive_their_pods() {
    let s = Setup::start_linux("skiff-pv");
    let node = s.cluster.node_name();
    // The default class is there from the start, and a claim without a class gets it.
    eventually("the default StorageClass", WAIT, || get(&s, &["get", "storageclass"]).contains("local-path (default)"));
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(STATEFUL_SET));
    for pod in ["db-0", "db-1"] {
        eventually(&format!("{pod} Running"), WAIT, || running(&s, pod));
    }
    let claim = s.cluster.get_json(&["pvc", "data-db-0"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(claim["spec"]["storageClassName"], "local-path", "{claim}");
    assert_eq!(claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"], node.as_str(), "{claim}");
    let volume = claim["spec"]["volumeName"].as_str().expect("bound to a volume").to_string();
    let pv = s.cluster.get_json(&["pv", &volume]);
    let dir = pv["spec"]["hostPath"]["path"].as_str().expect("a hostPath volume").to_string();
    assert!(dir.starts_with(&s.cluster.data_dir().display().to_string()), "under the node's data dir: {dir}");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0],
        node.as_str(),
        "{pv}"
    );
    assert_eq!(std::fs::read_to_string(format!("{dir}/log")).unwrap_or_default(), "started-db-0\n");

    // The pod goes; its replacement gets the same claim and finds what the first wrote.
    s.cluster.kubectl(&["delete", "pod", "db-0", "--wait=true"]);
    eventually("db-0 back", WAIT, || running(&s, "db-0"));
    eventually("the second start logged", WAIT, || {
        std::fs::read_to_string(format!("{dir}/log")).unwrap_or_default() == "started-db-0\nstarted-db-0\n"
    });
    assert_eq!(s.cluster.get_json(&["pvc", "data-db-0"])["spec"]["volumeName"], volume.as_str());

    // A pod whose claim does not exist waits with the reason.
    let orphan = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: orphan\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n    volumeMounts:\n    - {name: v, mountPath: /v}\n  volumes:\n  - name: v\n    persistentVolumeClaim: {claimName: missing}\n";
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(orphan));
    eventually("the FailedScheduling reason", WAIT, || {
        get(
            &s,
            &["get", "events", "--field-selector", "involvedObject.name=orphan", "-o", "jsonpath={.items[*].message}"],
        )
        .contains("persistentvolumeclaim \"missing\" not found")
    });
    // Once the claim exists, the pod is scheduled and its volume made.
    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: missing\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {storage: 8Mi}\n";
    s.cluster.kubectl_stdin(&["apply", "-f", "-"], Some(claim));
    eventually("orphan Running", WAIT, || running(&s, "orphan"));

    // Deleting a claim deletes its volume (reclaim policy Delete).
    s.cluster.kubectl(&["delete", "pod", "orphan", "--wait=true"]);
    let orphan_volume =
        s.cluster.get_json(&["pvc", "missing"])["spec"]["volumeName"].as_str().unwrap_or("").to_string();
    s.cluster.kubectl(&["delete", "pvc", "missing", "--wait=true"]);
    eventually("its volume deleted", WAIT, || {
        !get(&s, &["get", "pv", "-o", "name"]).contains(&format!("persistentvolume/{orphan_volume}"))
    });
    s.cluster.kubectl(&["delete", "statefulset", "db", "--wait=true"]);
    s.cluster.kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"]);
}
