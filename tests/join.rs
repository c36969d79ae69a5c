//! End to end: joining a node with a join token, k3s-style. `skiff token create` prints
//! `K10<sha256 of the CA>::<id>.<secret>`; `skiff agent --token` checks the server's CA against the
//! hash, trades the bootstrap token for a client certificate of its own (`system:node:<name>`),
//! runs pods with it, and comes back after a restart without the token. A wrong CA hash, an expired
//! token and a malformed one are refused with a clear message; the bootstrap token itself can do
//! nothing but ask for a certificate.
//!
//! Needs root (the agent's pod network), the CNI plugins and docker-registry.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::node::{AgentProcess, Registry};
use common::{eventually, Cluster, KUBECTL};

const WAIT: Duration = Duration::from_secs(90);

/// kubectl as the joined node, with the certificate it keeps.
fn kubectl_as_node(c: &Cluster, agent: &AgentProcess, args: &[&str]) -> std::process::Output {
    kubectl_as_node_with_stdin(c, agent, args, b"")
}

/// [`kubectl_as_node`] with `stdin` fed to kubectl.
fn kubectl_as_node_with_stdin(c: &Cluster, agent: &AgentProcess, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let identity = agent.dir.path().join("data/identity");
    let mut child = Command::new(KUBECTL)
        .arg("--kubeconfig=/dev/null")
        .args(["--server", &c.url()])
        .arg(format!("--certificate-authority={}", identity.join("ca.crt").display()))
        .arg(format!("--client-certificate={}", identity.join("node-client.crt").display()))
        .arg(format!("--client-key={}", identity.join("node-client.key").display()))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    child.stdin.take().expect("stdin").write_all(stdin).expect("kubectl stdin");
    child.wait_with_output().expect("kubectl")
}

/// The Node authorizer and NodeRestriction, seen with the node's own credential.
fn node_reaches_only_its_own_objects(c: &Cluster, agent: &AgentProcess, node: &str) {
    let as_node = |args: &[&str]| kubectl_as_node(c, agent, args);
    let ok = |args: &[&str]| {
        let out = as_node(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let forbidden = |args: &[&str], why: &str| {
        let out = as_node(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains("Forbidden") && err.contains(why), "{args:?}: {err}");
    };
    ok(&["get", "secret", "web-secret"]);
    ok(&["get", "configmap", "kube-root-ca.crt"]);
    forbidden(
        &["get", "secret", "not-for-nodes"],
        &format!("no relationship found between node '{node}' and this object"),
    );
    forbidden(&["get", "secrets"], "can only get individual resources of this type");
    // Its ingress proxy's one list: every namespace's TLS Secrets, and only with that selector.
    ok(&["get", "secrets", "-A", "--field-selector", "type=kubernetes.io/tls"]);
    forbidden(
        &["get", "secrets", "-A", "--field-selector", "type=Opaque"],
        "can only get individual resources of this type",
    );
    forbidden(&["-n", "kube-system", "get", "configmap", "kube-root-ca.crt"], "no relationship found");
    // PersistentVolumes: only the one a claim of its pods is bound to.
    let volumes = format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: pv-web}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: /tmp/pv-web}}\n---\n\
         apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: pv-other}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: /tmp/pv-other}}\n---\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data}}\nspec:\n  volumeName: pv-web\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: claims}}\nspec:\n  nodeName: {node}\n  containers:\n  - {{name: c, image: 127.0.0.1:1/none:1}}\n  volumes:\n  - {{name: d, persistentVolumeClaim: {{claimName: data}}}}\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&volumes));
    ok(&["get", "pv", "pv-web"]);
    forbidden(&["get", "pv", "pv-other"], &format!("no relationship found between node '{node}' and this object"));
    forbidden(&["get", "pv"], "can only get individual resources of this type");
    c.kubectl(&["delete", "pod", "claims", "--grace-period=0", "--force"]);
    // Its own Node only.
    ok(&["label", "node", node, "joined=yes", "--overwrite"]);
    // NodeRestriction: not the labels administrators use to steer workloads, nor its taints.
    forbidden(
        &["label", "node", node, "node-restriction.kubernetes.io/trusted=yes"],
        &format!(
            "nodes \"{node}\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/trusted"
        ),
    );
    forbidden(&["label", "node", node, "node-role.kubernetes.io/control-plane="], "is not allowed to modify labels");
    forbidden(&["taint", "node", node, "k=v:NoSchedule"], "is not allowed to modify taints");
    // An administrator may set them, and the node may keep them when it writes its Node.
    c.kubectl(&["label", "node", node, "node-restriction.kubernetes.io/trusted=yes"]);
    ok(&["label", "node", node, "joined=again", "--overwrite"]);
    c.kubectl_stdin(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Node\nmetadata: {name: someone-else}\n"));
    forbidden(
        &["label", "node", "someone-else", "taken=yes"],
        &format!("node \"{node}\" is not allowed to modify node \"someone-else\""),
    );
    forbidden(&["delete", "node", "someone-else"], "is not allowed to modify node");
    let impostor = b"apiVersion: v1\nkind: Node\nmetadata: {name: impostor}\n";
    let out = kubectl_as_node_with_stdin(c, agent, &["create", "-f", "-"], impostor);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is not allowed to modify node \"impostor\""), "{err}");
    // Pods: no creating them, and only its own pods' status.
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: elsewhere}\nspec: {nodeName: someone-else, containers: [{name: c, image: x}]}\n"),
    );
    // (kubectl patch --subresource=status reads pods/status first, which no node may; a kubelet
    // patches directly.)
    let identity = agent.dir.path().join("data/identity");
    let out = Command::new("curl")
        .args(["-s", "-X", "PATCH", "-H", "Content-Type: application/merge-patch+json"])
        .arg("--cacert")
        .arg(identity.join("ca.crt"))
        .arg("--cert")
        .arg(identity.join("node-client.crt"))
        .arg("--key")
        .arg(identity.join("node-client.key"))
        .args(["-d", r#"{"status":{"message":"x"}}"#])
        .arg(format!("{}/api/v1/namespaces/default/pods/elsewhere/status", c.url()))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"code\":403")
            && body.contains("can only update pod status for pods with spec.nodeName set to itself"),
        "{body}"
    );
    forbidden(&["delete", "pod", "elsewhere"], "can only delete pods with spec.nodeName set to itself");
    // Tokens: only bound to a pod of its own (kubectl prints only the message here).
    let refused_token = |args: &[&str], why: &str| {
        let out = as_node(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains("is forbidden") && err.contains(why), "{args:?}: {err}");
    };
    refused_token(&["create", "token", "default"], "node requested token not bound to a pod");
    let uid = c.kubectl(&["get", "pod", "elsewhere", "-o", "jsonpath={.metadata.uid}"]);
    refused_token(
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=elsewhere",
            &format!("--bound-object-uid={uid}"),
        ],
        "node requested token bound to a pod scheduled on a different node",
    );
    c.kubectl(&["delete", "pod", "elsewhere", "--grace-period=0", "--force"]);
    c.kubectl(&["delete", "node", "someone-else"]);
}

fn refused(c: &Cluster, token: &str, why: &str) {
    let mut agent = AgentProcess::join(c, token);
    eventually("the agent gives up", WAIT, || agent.exited().is_some());
    let status = agent.exited().expect("exited");
    assert!(!status.success(), "{status:?}");
    let log = agent.log();
    assert!(log.contains(why), "wanted {why:?} in:\n{log}");
}

#[test]
fn a_node_joins_with_a_token_and_keeps_its_own_identity() {
    let c = Cluster::start();
    let registry = Registry::start();
    let image = registry.push("hello-http", "1");
    let token = c.join_token("1h");
    let ca = std::fs::read(c.data_dir().join("ca.crt")).expect("ca.crt");
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&ca).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert!(token.starts_with(&format!("K10{hash}::")), "{token}");

    let mut agent = AgentProcess::join(&c, &token);
    let node = agent.net.node.clone();
    eventually("the joined node Ready", WAIT, || c.node_ready(&node));

    // Its own identity, kept private.
    let key = agent.dir.path().join("data/identity/node-client.key");
    assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
    let out = kubectl_as_node(&c, &agent, &["auth", "whoami", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).expect("whoami");
    assert_eq!(me["status"]["userInfo"]["username"], format!("system:node:{node}"));
    assert!(me["status"]["userInfo"]["groups"].as_array().is_some_and(|g| g.iter().any(|g| g == "system:nodes")));

    // It runs pods with that identity (status, a projected token, a Secret volume, logs through
    // its kubelet): the Node authorizer lets it read what its own pods use.
    c.kubectl(&["create", "secret", "generic", "web-secret", "--from-literal=k=v"]);
    c.kubectl(&["create", "secret", "generic", "not-for-nodes", "--from-literal=k=v"]);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - {{name: web, image: \"{image}\"}}\n  volumes:\n  - {{name: s, secret: {{secretName: web-secret}}}}\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&pod));
    eventually("the pod Running on the joined node", WAIT, || {
        let p = c.get_json(&["pod", "web"]);
        p["spec"]["nodeName"] == node.as_str() && p["status"]["phase"] == "Running"
    });
    node_reaches_only_its_own_objects(&c, &agent, &node);

    // The bootstrap token asks for certificates and nothing else.
    let bootstrap = token.split_once("::").map(|(_, t)| t.to_string()).expect("bootstrap part");
    c.kubectl(&["--token", &bootstrap, "get", "csr"]);
    let err = c.kubectl_fails(&["--token", &bootstrap, "get", "pods"], None);
    assert!(err.contains("system:bootstrap:") && err.contains("cannot list resource \"pods\""), "{err}");

    // A restart needs no token: the token is gone, the node comes back with its certificate.
    let id = bootstrap.split('.').next().expect("id");
    c.kubectl(&["-n", "kube-system", "delete", "secret", &format!("bootstrap-token-{id}")]);
    c.kubectl_fails(&["--token", &bootstrap, "get", "csr"], None);
    agent.kill9();
    c.kubectl(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    agent.respawn(&c);
    let again = pod.replace("name: web}", "name: web2}");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&again));
    eventually("a new pod Running on the restarted node", WAIT, || {
        c.get_json(&["pod", "web2"])["status"]["phase"] == "Running"
    });
    c.kubectl(&["delete", "pod", "web2", "--wait=true", "--timeout=60s"]);
}

#[test]
fn bad_join_tokens_are_refused_with_a_reason() {
    let c = Cluster::start();
    let token = c.join_token("1h");
    // The CA hash of another cluster.
    let (hash, rest) = token.split_once("::").expect("token");
    let other = format!("K10{}::{rest}", hash[3..].chars().rev().collect::<String>());
    refused(&c, &other, "does not match the join token");
    refused(&c, "K10abc::nope", "malformed");
    // An expired token.
    let short = c.join_token("1s");
    let bootstrap = short.split_once("::").map(|(_, t)| t.to_string()).expect("bootstrap part");
    eventually("the short token expired", WAIT, || {
        !c.kubectl_output(&["--token", &bootstrap, "get", "csr"], None).status.success()
    });
    refused(&c, &short, "Unauthorized");
}

#[test]
fn the_serving_certificate_names_every_tls_san() {
    let c = Cluster::start_with_args(&["--tls-san", "skiff.example", "--tls-san", "10.9.9.9"]);
    let ca = c.data_dir().join("ca.crt");
    let readyz = |name: &str| {
        Command::new("curl")
            .args(["-s", "--max-time", "5", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("{name}:{}:127.0.0.1", c.port)])
            .arg(format!("https://{name}:{}/readyz", c.port))
            .output()
            .expect("curl")
    };
    let named = readyz("skiff.example");
    assert!(named.status.success(), "{named:?}");
    assert_eq!(String::from_utf8_lossy(&named.stdout), "ok");
    // A name the certificate does not carry is refused by the client's check (curl exit 60).
    assert_eq!(readyz("other.example").status.code(), Some(60));
    let cert = std::fs::read_to_string(c.data_dir().join("server.crt")).expect("server.crt");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(cert.as_bytes())?;
            child.wait_with_output()
        })
        .expect("openssl");
    assert!(String::from_utf8_lossy(&text.stdout).contains("IP Address:10.9.9.9"), "{text:?}");
    // A name no certificate can carry is refused before the server starts.
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--no-agent", "--tls-san", "bad name!", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("skiff server");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("`bad name!` is neither an IP address nor a DNS name"),
        "{refused:?}"
    );
}
