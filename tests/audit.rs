//! The audit log end to end: a real `skiff server` with `--audit-log-path` and a policy, driven
//! by the real kubectl 1.32 and curl; the JSON lines are read back from the file.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Cluster};
use serde_json::Value;

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: None
  namespaces: ["silent"]
- level: Request
  resources: [{group: "", resources: ["configmaps"]}]
  namespaces: ["req"]
- level: Metadata
"#;

/// The log's events (lines still being written are skipped).
fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Waits for an event matching `pred` and returns it.
fn wait_event(path: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = events(path);
        if let Some(found) = all.iter().find(|e| pred(e)) {
            return found.clone();
        }
        if Instant::now() > deadline {
            let tail: Vec<String> = all.iter().rev().take(8).map(Value::to_string).collect();
            panic!("timed out waiting for the audit event of {what}; last events:\n{}", tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is(e: &Value, verb: &str, resource: &str, namespace: &str, name: &str) -> bool {
    e["stage"] == "ResponseComplete"
        && e["verb"] == verb
        && e["objectRef"]["resource"] == resource
        && e["objectRef"]["namespace"].as_str().unwrap_or("") == namespace
        && e["objectRef"]["name"].as_str().unwrap_or("") == name
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn audited_cluster(logs: &Path, extra: &[&str]) -> (Cluster, PathBuf) {
    let policy = logs.join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let log = logs.join("audit/audit.log");
    let mut args =
        vec!["--audit-log-path", log.to_str().expect("utf-8"), "--audit-policy-file", policy.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    (Cluster::start_with_args(&args), log)
}

#[test]
fn audit_log_records_who_did_what() {
    let logs = tempfile::tempdir().expect("tempdir");
    let (mut c, log) = audited_cluster(logs.path(), &[]);
    assert_eq!(mode(&log), 0o600, "the log is private");
    assert_eq!(mode(log.parent().expect("dir")), 0o700, "a directory the server made is private");

    // Admin creates, gets and deletes a ConfigMap.
    c.kubectl(&["create", "configmap", "cm1", "--from-literal=k=v"]);
    c.kubectl(&["get", "configmap", "cm1"]);
    c.kubectl(&["delete", "configmap", "cm1"]);
    let create = wait_event(&log, "create cm1", |e| is(e, "create", "configmaps", "default", "cm1"));
    assert_eq!(create["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(create["kind"], "Event");
    assert_eq!(create["level"], "Metadata");
    assert_eq!(create["user"]["username"], "admin");
    assert!(create["user"]["groups"].as_array().expect("groups").iter().any(|g| g == "system:masters"));
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(create["objectRef"]["apiVersion"], "v1");
    assert_eq!(create["annotations"]["authorization.k8s.io/decision"], "allow");
    assert_eq!(create["sourceIPs"], serde_json::json!(["127.0.0.1"]));
    assert!(create["userAgent"].as_str().expect("ua").starts_with("kubectl"), "{create}");
    assert!(create.get("requestObject").is_none(), "no body at Metadata: {create}");
    let id = create["auditID"].as_str().expect("id");
    let dashes: Vec<usize> = id.char_indices().filter(|(_, c)| *c == '-').map(|(i, _)| i).collect();
    assert_eq!((id.len(), dashes), (36, vec![8, 13, 18, 23]), "a UUID: {id}");
    let ts = create["stageTimestamp"].as_str().expect("ts");
    assert_eq!(ts.len(), "2026-12-06T05:52:38.123456Z".len(), "microseconds: {ts}");
    let get = wait_event(&log, "get cm1", |e| is(e, "get", "configmaps", "default", "cm1"));
    assert_eq!(get["responseStatus"]["code"], 200);
    let del = wait_event(&log, "delete cm1", |e| is(e, "delete", "configmaps", "default", "cm1"));
    assert_eq!(del["responseStatus"]["code"], 200);
    assert!(create["requestURI"].as_str().expect("uri").starts_with("/api/v1/namespaces/default/configmaps"));

    // A Request-level rule carries the request body as the client sent it.
    c.kubectl(&["create", "namespace", "req"]);
    c.kubectl(&["create", "configmap", "cm2", "-n", "req", "--from-literal=color=blue"]);
    let req = wait_event(&log, "create cm2", |e| is(e, "create", "configmaps", "req", "cm2"));
    assert_eq!(req["level"], "Request");
    assert_eq!(req["requestObject"]["data"]["color"], "blue", "{req}");
    assert!(req.get("responseObject").is_none());

    // A None rule: nothing about the namespace is logged.
    c.kubectl(&["create", "namespace", "silent"]);
    c.kubectl(&["create", "configmap", "hush", "-n", "silent", "--from-literal=a=b"]);
    // A Secret at Metadata: its value never reaches the log.
    c.kubectl(&["create", "secret", "generic", "s1", "--from-literal=password=hunter2-audit-value"]);
    wait_event(&log, "create s1", |e| is(e, "create", "secrets", "default", "s1"));

    // A ServiceAccount token is forbidden to list secrets: audited with its user and the decision.
    c.kubectl(&["create", "serviceaccount", "ci"]);
    let token = c.kubectl(&["create", "token", "ci", "--duration=10m"]).trim().to_string();
    let err = c.kubectl_fails(&["--token", &token, "get", "secrets"], None);
    assert!(err.contains("Forbidden"), "{err}");
    let forbidden = wait_event(&log, "forbidden list", |e| {
        is(e, "list", "secrets", "default", "") && e["user"]["username"] == "system:serviceaccount:default:ci"
    });
    assert_eq!(forbidden["responseStatus"]["code"], 403);
    assert_eq!(forbidden["responseStatus"]["reason"], "Forbidden");
    assert_eq!(forbidden["responseStatus"]["status"], "Failure");
    assert!(forbidden["responseStatus"]["message"].as_str().expect("msg").contains("cannot list resource"));
    assert_eq!(forbidden["annotations"]["authorization.k8s.io/decision"], "forbid");
    // Allowed through a RoleBinding: the annotation names it, as kube-apiserver's does.
    c.kubectl(&["create", "role", "pod-lister", "--verb=list", "--resource=pods"]);
    c.kubectl(&["create", "rolebinding", "ci-lists", "--role=pod-lister", "--serviceaccount=default:ci"]);
    c.kubectl(&["--token", &token, "get", "pods"]);
    let allowed = wait_event(&log, "allowed list", |e| {
        is(e, "list", "pods", "default", "") && e["user"]["username"] == "system:serviceaccount:default:ci"
    });
    assert_eq!(allowed["annotations"]["authorization.k8s.io/decision"], "allow");
    assert_eq!(
        allowed["annotations"]["authorization.k8s.io/reason"],
        "RBAC: allowed by RoleBinding \"ci-lists/default\" of Role \"pod-lister\" to ServiceAccount \"ci/default\""
    );
    // The TokenRequest itself: a create of serviceaccounts/token, without the token.
    let token_request = wait_event(&log, "token request", |e| e["objectRef"]["subresource"] == "token");
    assert_eq!(token_request["verb"], "create");
    assert_eq!(token_request["objectRef"]["name"], "ci");

    // Impersonation: the authenticated user, and the user acted as.
    c.kubectl_fails(&["get", "configmaps", "--as=system:serviceaccount:default:ci"], None);
    let imp = wait_event(&log, "impersonated list", |e| {
        is(e, "list", "configmaps", "default", "") && e.get("impersonatedUser").is_some()
    });
    assert_eq!(imp["user"]["username"], "admin");
    assert_eq!(imp["impersonatedUser"]["username"], "system:serviceaccount:default:ci");
    assert_eq!(imp["responseStatus"]["code"], 403, "the account may not list configmaps");

    // An unauthenticated request is audited too; every response carries its Audit-Id.
    let out = Command::new("curl")
        .args(["-sk", "-D", "-", "-o", "/dev/null", "-H", "Audit-ID: e2e-audit-401"])
        .arg(format!("{}/api/v1/namespaces/default/pods", c.url()))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.starts_with("http/") && headers.contains(" 401"), "{headers}");
    assert!(headers.contains("audit-id: e2e-audit-401"), "{headers}");
    let unauth = wait_event(&log, "401", |e| e["auditID"] == "e2e-audit-401");
    assert_eq!(unauth["responseStatus"]["code"], 401);
    assert_eq!(unauth["user"], serde_json::json!({}));
    assert!(unauth.get("annotations").is_none(), "no authorization happened: {unauth}");
    let out = Command::new("curl")
        .args(["-sk", "-D", "-", "-o", "/dev/null", "-H", &format!("Authorization: Bearer {}", c.token())])
        .arg(format!("{}/api/v1/namespaces", c.url()))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let id = headers.lines().find_map(|l| l.strip_prefix("audit-id: ")).expect("Audit-Id header").trim().to_string();
    wait_event(&log, "the header's ID in the log", |e| e["auditID"] == id.as_str() && e["verb"] == "list");

    // Health checks (a None rule) and the silent namespace are not logged; the secret's value
    // (plain or base64) never is.
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("hush") && !text.contains("\"namespace\":\"silent\""), "None rules omit");
    assert!(!text.contains("/readyz"), "health checks are not logged");
    assert!(!text.contains("hunter2-audit-value"));
    assert!(!text.contains("aHVudGVyMi1hdWRpdC12YWx1ZQ"), "nor its base64");
    assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "JSON lines");

    // The writer is supervised like the controllers.
    let (code, body) = c.curl("GET", "/readyz?verbose", "text/plain", None);
    assert_eq!(code, 200);
    assert!(body.contains("[+]audit-log ok"), "{body}");

    // A restart appends to the same file.
    let before = events(&log).len();
    c.kill9();
    c.spawn();
    c.kubectl(&["get", "configmap", "cm2", "-n", "req"]);
    wait_event(&log, "get after restart", |e| is(e, "get", "configmaps", "req", "cm2"));
    assert!(events(&log).len() > before, "appended");
    assert!(events(&log).iter().any(|e| is(e, "create", "configmaps", "default", "cm1")), "old lines kept");
}

#[test]
fn audit_log_rotates_by_size_and_keeps_maxbackup() {
    let logs = tempfile::tempdir().expect("tempdir");
    let (c, log) = audited_cluster(logs.path(), &["--audit-log-maxsize", "1", "--audit-log-maxbackup", "1"]);
    c.kubectl(&["create", "namespace", "req"]);
    // Request level: each create logs its ~600 KB body, so the 1 MB file rotates.
    let big = "x".repeat(600 * 1024);
    for i in 0..4 {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("big{i}")}, "data": {"blob": big}});
        let (code, out) =
            c.curl("POST", "/api/v1/namespaces/req/configmaps", "application/json", Some(body.to_string().as_bytes()));
        assert_eq!(code, 201, "{out}");
    }
    let dir = log.parent().expect("dir").to_path_buf();
    let backups = || -> Vec<PathBuf> {
        std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("audit-")))
            .collect()
    };
    wait_event(&log, "the last create", |e| is(e, "create", "configmaps", "req", "big3"));
    let found = backups();
    assert_eq!(found.len(), 1, "--audit-log-maxbackup 1: {found:?}");
    let name = found[0].file_name().expect("name").to_string_lossy().into_owned();
    // audit-2026-12-06T05-52-38.123.log, as kube-apiserver's lumberjack names it.
    assert_eq!(name.len(), "audit-2026-12-06T05-52-38.123.log".len(), "{name}");
    assert!(name.ends_with(".log") && name.as_bytes()[16] == b'T', "{name}");
    assert_eq!(mode(&found[0]), 0o600);
    assert!(std::fs::metadata(&log).expect("log").len() <= 1024 * 1024, "the live file stays under 1 MB");
    for path in [log.clone(), found[0].clone()] {
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "whole lines in {path:?}");
    }
}

#[test]
fn a_bad_policy_file_fails_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--no-agent", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--audit-log-path")
        .arg(dir.path().join("audit.log"))
        .arg("--audit-policy-file")
        .arg(&policy)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server started with a bad audit policy");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(!status.success());
    assert!(stderr.contains("audit policy") && stderr.contains("policy.yaml") && stderr.contains("Loud"), "{stderr}");
}
