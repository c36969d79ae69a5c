//! Daily kubectl commands with every kubectl from 1.27 to 1.33 against one `skiff server`: each
//! version works in its own namespace, all at once, and the test prints the matrix of cells
//! (command × version) before failing on any that failed. kubectl 1.27 and 1.28 fetch
//! `/openapi/v2` (protobuf) before every `apply` and `diff`; `explain` reads the OpenAPI v3
//! schemas of built-in kinds and of a CRD, and with `--output=plaintext-openapiv2` the v2
//! document (so kubectl's own parser accepts the protobuf form).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, Cluster};

const VERSIONS: [&str; 7] = ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"];

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cronSpec: {type: string, description: The schedule in cron format.}
              replicas: {type: integer}
              tags: {type: array, items: {type: string}}
"#;

/// A ConfigMap for `create -f`.
fn config_map(ns: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\ndata:\n  mode: fast\n")
}

/// A Deployment whose pod template has two containers; `image` is the first one's.
fn deployment(ns: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\n  labels:\n    app: web\n\
         spec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      \
         labels:\n        app: web\n    spec:\n      containers:\n      - name: app\n        image: {image}\n        \
         env:\n        - name: GREETING\n          value: hi\n      - name: sidecar\n        image: 127.0.0.1:5000/sidecar:1\n"
    )
}

fn crontab(ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: nightly\n  namespace: {ns}\n\
         spec:\n  cronSpec: '{spec}'\n  replicas: 1\n"
    )
}

/// One kubectl version against the shared server, with its own discovery cache.
struct Kubectl<'c> {
    cluster: &'c Cluster,
    version: &'static str,
    ns: String,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.{}", self.version);
        let mut cmd = Command::new(bin);
        cmd.arg("--kubeconfig")
            .arg(self.cluster.kubeconfig())
            .arg("--cache-dir")
            .arg(self.cluster.dir.path().join(format!("cache-{}", self.version)))
            .args(args)
            .env("HOME", self.cluster.dir.path())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs a command and checks it: `Ok` or a description of what went wrong.
    fn check(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        want_code: i32,
        want: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        let out = self.run(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        if code == want_code && want(&stdout) {
            Ok(())
        } else {
            Err(format!("kubectl {args:?} exited {code} (want {want_code})\nstdout: {stdout}\nstderr: {stderr}"))
        }
    }

    fn deployment_json(&self) -> Result<serde_json::Value, String> {
        let out = self.run(&["get", "deploy", "web", "-n", &self.ns, "-o", "json"], None);
        serde_json::from_slice(&out.stdout).map_err(|e| format!("get deploy -o json: {e}"))
    }

    /// Every command of the matrix, in order: (cell name, outcome).
    fn cells(&self) -> Vec<(&'static str, Result<(), String>)> {
        let ns = self.ns.as_str();
        let n = ["-n", ns];
        let mut cells = Vec::new();
        cells.push(("create ns", self.check(&["create", "namespace", ns], None, 0, |o| o.contains("created"))));
        cells.push((
            "create -f",
            self.check(&["create", "-f", "-"], Some(&config_map(ns)), 0, |o| o.contains("configmap/settings created")),
        ));
        let v1 = deployment(ns, "127.0.0.1:5000/app:1", 1);
        cells.push((
            "apply -f",
            self.check(&["apply", "-f", "-"], Some(&v1), 0, |o| o.contains("deployment.apps/web created")),
        ));
        cells.push((
            "apply again",
            self.check(&["apply", "-f", "-"], Some(&v1), 0, |o| o.contains("deployment.apps/web unchanged")),
        ));
        let v2 = deployment(ns, "127.0.0.1:5000/app:2", 1);
        let changed = self.check(&["apply", "-f", "-"], Some(&v2), 0, |o| o.contains("deployment.apps/web configured"));
        cells.push((
            "apply image",
            changed.and_then(|()| {
                let d = self.deployment_json()?;
                let containers = &d["spec"]["template"]["spec"]["containers"];
                let ok = containers[0]["image"] == "127.0.0.1:5000/app:2"
                    && containers[0]["env"][0]["name"] == "GREETING"
                    && containers[1]["name"] == "sidecar"
                    && containers[1]["image"] == "127.0.0.1:5000/sidecar:1"
                    && containers.as_array().map(Vec::len) == Some(2);
                if ok {
                    Ok(())
                } else {
                    Err(format!("containers after apply: {containers}"))
                }
            }),
        ));
        cells.push((
            "get -o wide",
            self.check(&["get", "deploy", "-o", "wide", "-n", ns], None, 0, |o| {
                o.contains("CONTAINERS") && o.contains("app,sidecar") && o.contains("127.0.0.1:5000/app:2")
            }),
        ));
        cells.push((
            "explain built-in",
            self.check(&["explain", "deployment.spec.replicas"], None, 0, |o| {
                o.contains("replicas") && o.contains("integer") && o.contains("desired pods")
            }),
        ));
        cells.push((
            "explain from v2",
            self.check(&["explain", "deployment.spec.replicas", "--output=plaintext-openapiv2"], None, 0, |o| {
                o.contains("replicas <integer>") && o.contains("desired pods")
            }),
        ));
        cells.push((
            "explain CRD",
            self.check(&["explain", "crontab.spec"], None, 0, |o| o.contains("cronSpec") && o.contains("tags")),
        ));
        let ct = crontab(ns, "* * * * */5");
        cells.push((
            "apply CR twice",
            self.check(&["apply", "-f", "-"], Some(&ct), 0, |o| {
                o.contains("crontab.stable.example.com/nightly created")
            })
            .and_then(|()| {
                self.check(&["apply", "-f", "-"], Some(&ct), 0, |o| {
                    o.contains("crontab.stable.example.com/nightly unchanged")
                })
            }),
        ));
        let v3 = deployment(ns, "127.0.0.1:5000/app:2", 4);
        cells.push(("diff", self.check(&["diff", "-f", "-"], Some(&v3), 1, |o| o.contains("replicas: 4"))));
        cells.push((
            "patch",
            self.check(
                &[&["patch", "deploy", "web", "-p", r#"{"spec":{"replicas":2}}"#][..], &n[..]].concat(),
                None,
                0,
                |o| o.contains("deployment.apps/web patched"),
            ),
        ));
        cells.push((
            "scale",
            self.check(&[&["scale", "deploy", "web", "--replicas=3"][..], &n[..]].concat(), None, 0, |o| {
                o.contains("deployment.apps/web scaled")
            })
            .and_then(|()| match self.deployment_json()?["spec"]["replicas"].as_i64() {
                Some(3) => Ok(()),
                other => Err(format!("replicas after scale: {other:?}")),
            }),
        ));
        cells.push((
            "label",
            self.check(&[&["label", "deploy", "web", "tier=front"][..], &n[..]].concat(), None, 0, |o| {
                o.contains("deployment.apps/web labeled")
            }),
        ));
        cells.push((
            "delete",
            self.check(&["delete", "-f", "-"], Some(&v3), 0, |o| o.contains("deployment.apps \"web\" deleted")),
        ));
        cells
    }
}

#[test]
fn daily_commands_work_with_kubectl_1_27_to_1_33() {
    let cluster = Cluster::start();
    cluster.kubectl_stdin(&["apply", "-f", "-"], Some(CRD));
    eventually("the CronTab kind to be served", Duration::from_secs(20), || {
        cluster.kubectl_output(&["get", "crontabs", "-A"], None).status.success()
    });
    let results: Vec<(&str, Vec<(&str, Result<(), String>)>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = VERSIONS
            .iter()
            .map(|version| {
                let cluster = &cluster;
                scope.spawn(move || {
                    let k = Kubectl { cluster, version, ns: format!("v{}", version.replace('.', "-")) };
                    (*version, k.cells())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a version's thread")).collect()
    });

    let mut table = format!("{:<18}", "command");
    for (version, _) in &results {
        table.push_str(&format!("{version:<6}"));
    }
    table.push('\n');
    let rows: Vec<&str> = results[0].1.iter().map(|(name, _)| *name).collect();
    let mut failures = Vec::new();
    for (row, name) in rows.iter().enumerate() {
        table.push_str(&format!("{name:<18}"));
        for (version, cells) in &results {
            let mark = match &cells[row].1 {
                Ok(()) => "ok",
                Err(e) => {
                    failures.push(format!("[{version} {name}] {e}"));
                    "FAIL"
                }
            };
            table.push_str(&format!("{mark:<6}"));
        }
        table.push('\n');
    }
    let cells = rows.len() * results.len();
    println!("{table}{} of {cells} cells pass", cells - failures.len());
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n\n"));
}

/// A GET as the admin with extra headers: (status, response headers, body).
fn fetch(c: &Cluster, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
    let head = c.dir.path().join("fetch-headers");
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-D"]).arg(&head).args(["-H", &format!("Authorization: Bearer {}", c.token())]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(format!("{}{path}", c.url())).output().expect("curl");
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_ascii_lowercase(), out.stdout)
}

#[test]
fn openapi_v2_is_negotiated_and_documents_follow_crds() {
    let c = Cluster::start();
    let (code, head, body) = fetch(&c, "/openapi/v2", &["Accept: application/json"]);
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("JSON document");
    assert_eq!(doc["swagger"], "2.0");
    assert!(doc["definitions"].get("com.example.stable.v1.CronTab").is_none());

    let pb = "Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let (code, head, body) = fetch(&c, "/openapi/v2", &[pb]);
    assert_eq!(code, 200);
    // The dotted form: Go's MIME parser (kubectl's) rejects the `@` of the asked-for form.
    assert!(head.contains("content-type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf"), "{head}");
    assert!(body.len() > 1000 && !body.starts_with(b"{"), "a protobuf body");

    let (code, head, _) = fetch(&c, "/openapi/v3/apis/apps/v1", &[]);
    assert_eq!(code, 200);
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).map(|t| t.trim().to_uppercase()).expect("an ETag");
    let (code, _, body) = fetch(&c, "/openapi/v3/apis/apps/v1", &[&format!("If-None-Match: {etag}")]);
    assert_eq!(code, 304, "unchanged document revalidates");
    assert!(body.is_empty());
    assert_eq!(fetch(&c, "/openapi/v3/apis/nope/v1", &[]).0, 404);

    // A new CRD: its group-version appears in the v3 index and its schema in v2.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(CRD));
    eventually("the CRD in the OpenAPI documents", Duration::from_secs(20), || {
        let (_, _, index) = fetch(&c, "/openapi/v3", &[]);
        let (_, _, v2) = fetch(&c, "/openapi/v2", &["Accept: application/json"]);
        String::from_utf8_lossy(&index).contains("apis/stable.example.com/v1")
            && String::from_utf8_lossy(&v2).contains("com.example.stable.v1.CronTab")
    });
    let (_, _, body) = fetch(&c, "/openapi/v3/apis/stable.example.com/v1", &[]);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("JSON document");
    let crontab = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(crontab["properties"]["spec"]["properties"]["cronSpec"]["type"], "string");
}
