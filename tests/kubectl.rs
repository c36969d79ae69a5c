//! The real kubectl against a real `skiff server`, on SQLite and on a real etcd.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, Cluster, Etcd, KUBECTL};

const APP: &str = include_str!("fixtures/app.yaml");

/// Everything a user does in issue 3's walkthrough, checking printed output and stored objects.
fn user_walkthrough(c: &Cluster) {
    assert!(c.kubectl(&["create", "namespace", "tools"]).contains("namespace/tools created"));
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(APP));
    for line in [
        "namespace/shop created",
        "configmap/web-config created",
        "secret/web-secret created",
        "deployment.apps/web created",
        "service/web created",
        "job.batch/migrate created",
    ] {
        assert!(out.contains(line), "apply printed {out}");
    }

    let all = c.kubectl(&["get", "all", "-n", "shop"]);
    assert!(all.contains("service/web") && all.contains("ClusterIP") && all.contains("80/TCP"), "{all}");
    assert!(all.contains("deployment.apps/web") && all.contains("0/2"), "{all}");
    assert!(all.contains("job.batch/migrate") && all.contains("0/1"), "{all}");

    c.kubectl(&["run", "solo", "-n", "shop", "--image=127.0.0.1:5000/hello:1", "--labels=app=solo,tier=edge"]);
    let wide = c.kubectl(&["get", "po", "-A", "-o", "wide", "--show-labels"]);
    let header: Vec<&str> = wide.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header[..5], ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"], "{wide}");
    assert!(wide.contains("NODE") && wide.contains("LABELS"), "{wide}");
    assert!(
        wide.lines().any(|l| l.starts_with("shop")
            && l.contains("solo")
            && l.contains("Pending")
            && l.contains("app=solo,tier=edge")),
        "{wide}"
    );

    let yaml = c.kubectl(&["get", "deploy", "web", "-n", "shop", "-o", "yaml"]);
    let deploy: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("deployment yaml");
    assert_eq!(deploy["metadata"]["generation"].as_i64(), Some(1));
    assert_eq!(deploy["spec"]["strategy"]["type"].as_str(), Some("RollingUpdate"), "defaults applied");
    assert!(deploy["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(deploy["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().is_some());

    // Second apply after editing the image: a strategic merge patch.
    let edited = APP.replace("hello-http:1", "hello-http:2");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&edited));
    assert!(out.contains("deployment.apps/web configured") && out.contains("configmap/web-config unchanged"), "{out}");
    let d = c.get_json(&["deploy", "web", "-n", "shop"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "127.0.0.1:5000/hello-http:2");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][1]["name"], "sidecar", "merge by name keeps the sidecar");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"], "GREETING");
    assert_eq!(d["metadata"]["generation"], 2);

    // Server-side apply: create and update through field managers.
    let out = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&edited));
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: shop\ndata:\n  a: '1'\n";
    c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(cm));
    let other = cm.replace("'1'", "'2'");
    let err = c.kubectl_fails(&["apply", "--server-side", "--field-manager=other", "-f", "-"], Some(&other));
    assert!(err.contains("conflict") && err.contains(".data.a"), "{err}");
    c.kubectl_stdin(&["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-"], Some(&other));
    assert_eq!(c.get_json(&["cm", "ssa", "-n", "shop"])["data"]["a"], "2");

    let describe = c.kubectl(&["describe", "pod", "solo", "-n", "shop"]);
    assert!(
        describe.contains("Name:") && describe.contains("solo") && describe.contains("127.0.0.1:5000/hello:1"),
        "{describe}"
    );
    c.kubectl(&["get", "events", "-A"]);

    assert!(c
        .kubectl(&["scale", "deploy", "web", "-n", "shop", "--replicas=5"])
        .contains("deployment.apps/web scaled"));
    assert_eq!(c.get_json(&["deploy", "web", "-n", "shop"])["spec"]["replicas"], 5);

    // kubectl deletes in file order, the namespace first; the namespace controller may remove the objects in
    // it before kubectl gets to them (as Kubernetes' can), which is no error here.
    let out = c.kubectl_stdin(&["delete", "-f", "-", "--ignore-not-found"], Some(&edited));
    assert!(out.contains("namespace \"shop\" deleted"), "{out}");
    eventually("namespace shop and its objects to go", Duration::from_secs(20), || {
        !c.kubectl(&["get", "ns"]).contains("shop")
    });
    let leftovers = c.kubectl_output(&["get", "pods", "-n", "shop"], None);
    assert!(String::from_utf8_lossy(&leftovers.stderr).contains("No resources found"), "pods left behind");
}

#[test]
fn kubectl_walkthrough_on_sqlite() {
    let c = Cluster::start();
    let ns = c.kubectl(&["get", "ns"]);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(name), "{ns}");
    }
    user_walkthrough(&c);
}

#[test]
fn kubectl_walkthrough_on_etcd() {
    let etcd = Etcd::start();
    let c = Cluster::start_with(&format!("etcd://{}", etcd.endpoint));
    user_walkthrough(&c);
    let keys = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoint, "get", "--prefix", "--keys-only", "/registry/core/namespaces/"])
        .output()
        .expect("etcdctl");
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(keys.contains("/registry/core/namespaces/tools"), "objects are in etcd: {keys}");
}

#[test]
fn get_pods_watch_prints_changes() {
    let c = Cluster::start();
    let watch = c.kubectl_stream(&["get", "pods", "-w", "--request-timeout=20s"]);
    std::thread::sleep(Duration::from_millis(800));
    c.kubectl(&["run", "watched", "--image=x:1"]);
    c.kubectl(&["label", "pod", "watched", "stage=two"]);
    c.kubectl(&["delete", "pod", "watched"]);
    let mut lines = Vec::new();
    while lines.iter().filter(|l: &&String| l.starts_with("watched")).count() < 3 {
        match watch.next_line(Duration::from_secs(10)) {
            Some(line) => lines.push(line),
            None => break,
        }
    }
    drop(watch);
    assert!(lines.iter().filter(|l| l.starts_with("watched")).count() >= 3, "added, modified, deleted: {lines:?}");
}

#[test]
fn bad_input_gets_the_right_status() {
    let c = Cluster::start();
    // Malformed YAML never reaches the server through kubectl; send it raw.
    let (code, body) =
        c.curl("POST", "/api/v1/namespaces/default/configmaps", "application/yaml", Some(b"metadata: [\n"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"kind\":\"Status\"") && body.contains("YAML"), "{body}");
    let (code, body) =
        c.curl("POST", "/api/v1/namespaces/default/configmaps", "application/json", Some(b"{\"metadata\":"));
    assert_eq!(code, 400, "{body}");

    let (code, body) = c.curl(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        Some(br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"}}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("does not match the expected API version"), "{body}");

    let err = c.kubectl_fails(&["create", "configmap", "Not_DNS"], None);
    assert!(err.contains("Invalid value: \"Not_DNS\""), "{err}");

    let big = vec![b'x'; 3 * 1024 * 1024 + 10];
    let (code, body) = c.curl("POST", "/api/v1/namespaces/default/configmaps", "application/json", Some(&big));
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("RequestEntityTooLarge"), "{body}");

    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"strict"},"spec":{"bogus":1,"containers":[{"name":"c","image":"i","nope":2}]}}"#;
    let err = c.kubectl_fails(&["create", "-f", "-"], Some(pod));
    assert!(err.contains("unknown field \"spec.bogus\"") && err.contains("spec.containers[0].nope"), "{err}");
    // Warn (the default for raw clients) stores the object without the unknown fields.
    let (code, body) = c.curl(
        "POST",
        "/api/v1/namespaces/default/pods?fieldValidation=Warn",
        "application/json",
        Some(pod.as_bytes()),
    );
    assert_eq!(code, 201, "{body}");
    assert!(!body.contains("bogus"), "{body}");

    let err = c.kubectl_fails(&["get", "pods", "-l", "a in ("], None);
    assert!(err.contains("unable to parse requirement"), "{err}");
    let err = c.kubectl_fails(&["get", "pods", "--field-selector", "spec.bogus=1"], None);
    assert!(err.contains("field label not supported"), "{err}");

    let err = c.kubectl_fails(&["patch", "cm", "missing", "-p", "{}"], None);
    assert!(err.contains("NotFound"), "{err}");
    // Error bodies are kube-apiserver's bytes: its field order and a trailing newline.
    let (code, body) = c.curl_accept("/api/v1/namespaces/default/configmaps/missing", "application/json");
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        body,
        concat!(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
            r#""message":"configmaps \"missing\" not found","reason":"NotFound","#,
            r#""details":{"name":"missing","kind":"configmaps"},"code":404}"#,
            "\n"
        )
    );
    c.kubectl(&["create", "configmap", "patched", "--from-literal=a=1"]);
    let err = c.kubectl_fails(
        &["patch", "cm", "patched", "--type=json", "-p", r#"[{"op":"replace","path":"/data/zzz/q","value":1}]"#],
        None,
    );
    assert!(err.contains("Invalid") || err.contains("invalid"), "{err}");
    let (code, body) = c.curl(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/patched",
        "application/json-patch+json",
        Some(b"[{\"op\":\"explode\"}]"),
    );
    assert_eq!(code, 400, "{body}");

    let err = c.kubectl_fails(&["create", "configmap", "patched"], None);
    assert!(err.contains("already exists"), "{err}");

    // A stale resourceVersion is a 409 Conflict.
    let cm = c.get_json(&["cm", "patched"]);
    let mut stale = cm.clone();
    stale["metadata"]["resourceVersion"] = serde_json::json!("1");
    let (code, body) = c.curl(
        "PUT",
        "/api/v1/namespaces/default/configmaps/patched",
        "application/json",
        Some(stale.to_string().as_bytes()),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("the object has been modified"), "{body}");

    // Unauthenticated requests get 401, health stays open.
    let out = Command::new("curl")
        .args(["-sk", "-w", "%{http_code}", &format!("{}/api/v1/pods", c.url())])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("401"));
    let out = Command::new("curl").args(["-sk", &format!("{}/version", c.url())]).output().expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"minor\":\"32\""));

    // The server survived all of it.
    assert!(c.kubectl(&["get", "cm"]).contains("patched"));
    assert!(!c.server_log().contains("panicked"), "{}", c.server_log());
}

#[test]
fn api_machinery_semantics() {
    let c = Cluster::start();
    // generateName, dry run, pagination, label selectors, graceful pod deletion, finalizers.
    // A zero generation (what a typed client may send) is left out, as Go's omitempty does.
    let gen = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"gen-","generation":0}}"#;
    let (code, body) =
        c.curl("POST", "/api/v1/namespaces/default/configmaps", "application/json", Some(gen.as_bytes()));
    assert_eq!(code, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(created["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("gen-") && n.len() == 9));
    assert!(created["metadata"].get("generation").is_none(), "{body}");

    let out = c.kubectl(&["create", "configmap", "dry", "--dry-run=server", "-o", "name"]);
    assert!(out.contains("configmap/dry"));
    assert!(c.kubectl_output(&["get", "cm", "dry"], None).status.code() != Some(0), "dry run stored nothing");

    for i in 0..7 {
        c.kubectl(&["create", "configmap", &format!("page-{i}"), &format!("--from-literal=i={i}")]);
    }
    c.kubectl(&["label", "cm", "page-3", "page-5", "pick=yes"]);
    let (_, body) = c.curl("GET", "/api/v1/namespaces/default/configmaps?limit=3", "application/json", None);
    let first: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(3));
    let token = first["metadata"]["continue"].as_str().expect("continue token").to_string();
    let (_, body) = c.curl(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?limit=3&continue={token}"),
        "application/json",
        None,
    );
    let second: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(second["items"].as_array().map(Vec::len), Some(3));
    assert_ne!(first["items"][0]["metadata"]["name"], second["items"][0]["metadata"]["name"]);
    // As kube-apiserver: a built-in list's items carry no kind or apiVersion, paged or whole; kubectl
    // fills them in from the list.
    let (_, body) = c.curl("GET", "/api/v1/namespaces/default/configmaps", "application/json", None);
    let whole: serde_json::Value = serde_json::from_str(&body).expect("json");
    for item in [&first, &second, &whole].into_iter().flat_map(|l| l["items"].as_array().expect("items")) {
        assert!(item.get("kind").is_none() && item.get("apiVersion").is_none(), "{item}");
    }
    let printed: serde_json::Value =
        serde_json::from_str(&c.kubectl(&["get", "cm", "page-1", "page-2", "-o", "json"])).expect("json");
    assert!(printed["items"].as_array().expect("items").iter().all(|i| i["kind"] == "ConfigMap"), "{printed}");
    // A delete that removes the object answers with a success Status (kube-apiserver returns the
    // object itself only for pods, services, service accounts and storage classes).
    let (code, body) = c.curl("DELETE", "/api/v1/namespaces/default/configmaps/page-6", "application/json", None);
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!((status["kind"].as_str(), status["status"].as_str()), (Some("Status"), Some("Success")), "{body}");
    assert_eq!(status["details"]["name"], "page-6", "{body}");
    assert_eq!(status["details"]["kind"], "configmaps", "{body}");
    assert!(status["details"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{body}");
    c.kubectl(&["create", "serviceaccount", "gone-sa"]);
    let (code, body) = c.curl("DELETE", "/api/v1/namespaces/default/serviceaccounts/gone-sa", "application/json", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""kind":"ServiceAccount""#), "{body}");
    let picked = c.kubectl(&["get", "cm", "-l", "pick in (yes),!absent", "-o", "name"]);
    assert_eq!(picked.lines().collect::<Vec<_>>(), vec!["configmap/page-3", "configmap/page-5"]);

    // A finalizer holds the object until it is removed.
    c.kubectl(&["patch", "cm", "page-0", "--type=merge", "-p", r#"{"metadata":{"finalizers":["example.com/hold"]}}"#]);
    c.kubectl(&["delete", "cm", "page-0", "--wait=false"]);
    let held = c.get_json(&["cm", "page-0"]);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    c.kubectl(&["patch", "cm", "page-0", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    assert!(
        c.kubectl_output(&["get", "cm", "page-0"], None).status.code() != Some(0),
        "gone once the finalizer is removed"
    );

    // A pod bound to a node waits for its kubelet; an unbound one goes at once.
    c.kubectl(&["run", "bound", "--image=x:1"]);
    let binding =
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"bound"},"target":{"kind":"Node","name":"n1"}}"#;
    let (code, body) =
        c.curl("POST", "/api/v1/namespaces/default/pods/bound/binding", "application/json", Some(binding.as_bytes()));
    assert_eq!(code, 201, "{body}");
    c.kubectl(&["delete", "pod", "bound", "--wait=false"]);
    let pod = c.get_json(&["pod", "bound"]);
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(pod["spec"]["nodeName"], "n1");
    c.kubectl(&["delete", "pod", "bound", "--grace-period=0", "--force"]);
    assert!(c.kubectl_output(&["get", "pod", "bound"], None).status.code() != Some(0));
    c.kubectl(&["run", "unbound", "--image=x:1"]);
    c.kubectl(&["delete", "pod", "unbound", "--wait=false"]);
    assert!(c.kubectl_output(&["get", "pod", "unbound"], None).status.code() != Some(0));

    // Metrics count requests per verb and resource.
    let (code, metrics) = c.curl("GET", "/metrics", "text/plain", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("apiserver_request_total{verb=\"POST\",resource=\"configmaps\",code=\"201\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("apiserver_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("skiff_store_operation_duration_seconds_bucket{le="), "{metrics}");
    assert!(metrics.contains("operation=\"create\""), "{metrics}");
}

#[test]
fn owner_references_cascade() {
    let c = Cluster::start();
    let dependent = |name: &str, owner: &serde_json::Value| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"{}","uid":"{}"}}]}}}}"#,
            owner["metadata"]["name"].as_str().unwrap_or(""),
            owner["metadata"]["uid"].as_str().unwrap_or("")
        )
    };
    c.kubectl(&["create", "configmap", "owner"]);
    let owner = c.get_json(&["cm", "owner"]);
    c.kubectl_stdin(&["create", "-f", "-"], Some(&dependent("child", &owner)));
    c.kubectl(&["delete", "cm", "owner"]);
    eventually("the dependent to be collected", Duration::from_secs(10), || {
        c.kubectl_output(&["get", "cm", "child"], None).status.code() != Some(0)
    });

    c.kubectl(&["create", "configmap", "parent"]);
    let parent = c.get_json(&["cm", "parent"]);
    c.kubectl_stdin(&["create", "-f", "-"], Some(&dependent("orphan", &parent)));
    c.kubectl(&["delete", "cm", "parent", "--cascade=orphan"]);
    eventually("the parent to go", Duration::from_secs(10), || {
        c.kubectl_output(&["get", "cm", "parent"], None).status.code() != Some(0)
    });
    let orphan = c.get_json(&["cm", "orphan"]);
    assert!(orphan["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty), "{orphan}");
}

#[test]
fn pending_pods_are_bound_to_a_node_that_fits() {
    let c = Cluster::start();
    let node = |name: &str, extra: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"zone":"{name}"}}}},{extra}"status":{{"allocatable":{{"cpu":"2","memory":"4Gi","pods":"110"}},"capacity":{{"cpu":"2","memory":"4Gi","pods":"110"}},"conditions":[{{"type":"Ready","status":"True"}}],"runtimeHandlers":[{{"name":"skiff-wasm"}}]}}}}"#
        )
    };
    // Status is not written on create through the main resource; nodes report it via /status.
    for (name, extra) in
        [("edge-a", ""), ("edge-b", r#""spec":{"taints":[{"key":"dedicated","value":"gpu","effect":"NoSchedule"}]},"#)]
    {
        c.kubectl_stdin(&["create", "-f", "-"], Some(&node(name, extra)));
        let (code, body) = c.curl(
            "PUT",
            &format!("/api/v1/nodes/{name}/status"),
            "application/json",
            Some(node(name, extra).as_bytes()),
        );
        assert_eq!(code, 200, "{body}");
    }
    c.kubectl(&["run", "anywhere", "--image=x:1"]);
    c.kubectl(&["run", "picky", "--image=x:1", "--overrides", r#"{"spec":{"nodeSelector":{"zone":"edge-b"}}}"#]);
    c.kubectl(&[
        "run",
        "huge",
        "--image=x:1",
        "--overrides",
        r#"{"spec":{"containers":[{"name":"huge","image":"x:1","resources":{"requests":{"cpu":"64"}}}]}}"#,
    ]);
    eventually("the schedulable pod to be bound", Duration::from_secs(10), || {
        c.get_json(&["pod", "anywhere"])["spec"]["nodeName"] == "edge-a"
    });
    eventually("FailedScheduling events", Duration::from_secs(10), || {
        let events = c.kubectl(&["get", "events"]);
        events.contains("FailedScheduling")
            && events.contains("Insufficient cpu")
            && events.contains("untolerated taint")
    });
    assert!(c.get_json(&["pod", "picky"])["spec"]["nodeName"].is_null(), "the taint keeps picky off edge-b");
    let describe = c.kubectl(&["describe", "pod", "anywhere"]);
    assert!(
        describe.contains("Scheduled") && describe.contains("Successfully assigned default/anywhere to edge-a"),
        "{describe}"
    );
}

#[test]
fn cron_schedules_and_time_zones_are_checked_at_admission() {
    let c = Cluster::start();
    let cronjob = |schedule: &str, tz: &str| {
        format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: tick}}\nspec:\n  schedule: \"{schedule}\"\n{tz}  \
             jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          \
             containers: [{{name: c, image: 127.0.0.1:5000/hello:1}}]\n"
        )
    };
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&cronjob("61 * * * *", "")));
    assert!(err.contains("spec.schedule: Invalid value: \"61 * * * *\""), "{err}");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&cronjob("*/5 * * * *", "  timeZone: Mars/Olympus\n")));
    assert!(err.contains("spec.timeZone: Invalid value: \"Mars/Olympus\""), "{err}");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&cronjob("@hourly", "  timeZone: Europe/Berlin\n")));
    let stored = c.get_json(&["cronjob", "tick"]);
    assert_eq!(stored["spec"]["schedule"], "@hourly");
}

/// kubectl's imperative commands send typed protobuf bodies (no JSON fallback); each must arrive
/// with every field kubectl set, through the same admission as a JSON body.
#[test]
fn imperative_creates_send_protobuf_bodies_that_decode() {
    let c = Cluster::start();
    let image = "127.0.0.1:5000/hello-http:1";
    c.kubectl(&["create", "deployment", "web", &format!("--image={image}"), "--replicas=3", "--port=8080"]);
    let d = c.get_json(&["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image);
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate", "defaults applied after decoding");

    c.kubectl(&["create", "job", "pi", &format!("--image={image}"), "--", "compute", "--digits=5"]);
    let job = c.get_json(&["job", "pi"]);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["compute", "--digits=5"])
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");

    c.kubectl(&["create", "cronjob", "tick", &format!("--image={image}"), "--schedule=*/1 * * * *"]);
    assert_eq!(c.get_json(&["cronjob", "tick"])["spec"]["schedule"], "*/1 * * * *");
    let err =
        c.kubectl_fails(&["create", "cronjob", "bad", &format!("--image={image}"), "--schedule=61 * * * *"], None);
    assert!(err.contains("spec.schedule: Invalid value"), "admission still checks decoded bodies: {err}");

    c.kubectl(&["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    let svc = c.get_json(&["service", "np"]);
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "an IntOrString arrives as a number");

    c.kubectl(&["expose", "deployment", "web", "--name=web-svc", "--port=80", "--target-port=8080"]);
    let exposed = c.get_json(&["service", "web-svc"]);
    assert_eq!(exposed["spec"]["selector"]["app"], "web", "expose copies the Deployment's selector");
    assert_eq!(exposed["spec"]["ports"][0]["targetPort"], 8080);

    c.kubectl(&["run", "one", &format!("--image={image}"), "--env=K=v", "--labels=tier=x", "--restart=Never"]);
    let pod = c.get_json(&["pod", "one"]);
    assert_eq!(pod["metadata"]["labels"]["tier"], "x");
    assert_eq!(pod["spec"]["containers"][0]["env"][0], serde_json::json!({"name": "K", "value": "v"}));

    c.kubectl(&["create", "ingress", "shop", "--rule=shop.local/api*=web:80"]);
    let ing = c.get_json(&["ingress", "shop"]);
    let path = &ing["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(ing["spec"]["rules"][0]["host"], "shop.local", "an inline-embedded struct lands in its parent");
    assert_eq!(path["pathType"], "Prefix");
    assert_eq!(path["backend"]["service"]["port"]["number"], 80);

    c.kubectl(&["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=50%"]);
    assert_eq!(c.get_json(&["pdb", "web"])["spec"]["minAvailable"], "50%");
    c.kubectl(&["create", "priorityclass", "high", "--value=1000"]);
    assert_eq!(c.get_json(&["priorityclass", "high"])["value"], 1000);
    c.kubectl(&["create", "quota", "q", "--hard=pods=10,requests.memory=1Gi"]);
    assert_eq!(c.get_json(&["resourcequota", "q"])["spec"]["hard"]["requests.memory"], "1Gi");
}

#[test]
fn metadata_only_requests_get_partial_object_metadata() {
    let c = Cluster::start();
    c.kubectl(&["create", "configmap", "meta-a", "--from-literal=secretish=value-a"]);
    c.kubectl(&["create", "configmap", "meta-b", "--from-literal=secretish=value-b"]);
    c.kubectl(&["label", "configmap", "meta-a", "team=x"]);
    const META: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    const META_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let (code, body) = c.curl_accept("/api/v1/namespaces/default/configmaps/meta-a", META);
    assert_eq!(code, 200, "{body}");
    let obj: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(obj["kind"], "PartialObjectMetadata");
    assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(obj["metadata"]["labels"]["team"], "x");
    assert!(obj.get("data").is_none() && !body.contains("value-a"), "{body}");
    // Lists, paged and streamed whole.
    for path in ["/api/v1/namespaces/default/configmaps?limit=1", "/api/v1/namespaces/default/configmaps"] {
        let (code, body) = c.curl_accept(path, META_LIST);
        assert_eq!(code, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(list["kind"], "PartialObjectMetadataList", "{path}");
        let items = list["items"].as_array().expect("items");
        assert!(!items.is_empty() && items.iter().all(|i| i["kind"] == "PartialObjectMetadata"), "{path}: {body}");
        assert!(!body.contains("value-a") && !body.contains("value-b"), "{path}: {body}");
    }
    // A watch's events carry metadata only.
    let (code, body) = c.curl_accept(
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dmeta-b",
        META,
    );
    assert_eq!(code, 200, "{body}");
    let first: serde_json::Value = serde_json::from_str(body.lines().next().expect("an event")).expect("json");
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(first["object"]["metadata"]["name"], "meta-b");
    // Plain JSON still gets the whole object; a Service gets its status as kube-apiserver writes it.
    let (_, body) = c.curl_accept("/api/v1/namespaces/default/configmaps/meta-a", "application/json");
    assert!(body.contains("value-a"), "{body}");
    c.kubectl(&["create", "service", "clusterip", "meta-svc", "--tcp=80:8080"]);
    assert_eq!(c.get_json(&["service", "meta-svc"])["status"], serde_json::json!({"loadBalancer": {}}));
    // componentstatuses: computed, read-only.
    let out = c.kubectl(&["get", "componentstatuses"]);
    for name in ["controller-manager", "scheduler", "etcd-0"] {
        assert!(out.lines().any(|l| l.starts_with(name) && l.contains("Healthy")), "{out}");
    }
    assert_eq!(c.get_json(&["cs", "etcd-0"])["conditions"][0]["status"], "True");
    let err = c.kubectl_fails(&["delete", "cs", "etcd-0"], None);
    assert!(err.contains("MethodNotAllowed") || err.contains("not allowed") || err.contains("405"), "{err}");
}

#[test]
fn flow_control_objects_are_bootstrapped_and_stored() {
    let c = Cluster::start();
    let fs = c.get_json(&["flowschema", "exempt"]);
    assert_eq!(fs["spec"]["priorityLevelConfiguration"]["name"], "exempt", "{fs}");
    assert_eq!(fs["status"]["conditions"][0]["type"], "Dangling", "{fs}");
    assert_eq!(c.get_json(&["flowschema", "catch-all"])["spec"]["matchingPrecedence"], 10000);
    assert_eq!(c.get_json(&["prioritylevelconfiguration", "exempt"])["spec"]["type"], "Exempt");
    assert_eq!(
        c.get_json(&["prioritylevelconfiguration", "catch-all"])["spec"]["limited"]["nominalConcurrencyShares"],
        5
    );
    let mine = "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: PriorityLevelConfiguration\nmetadata: {name: batch}\nspec:\n  type: Limited\n  limited:\n    limitResponse: {type: Queue}\n---\napiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: FlowSchema\nmetadata: {name: batch}\nspec:\n  priorityLevelConfiguration: {name: batch}\n  rules:\n  - subjects: [{kind: Group, group: {name: batchers}}]\n    resourceRules: [{verbs: [list], apiGroups: [\"\"], resources: [pods], namespaces: [\"*\"]}]\n";
    c.kubectl_stdin(&["apply", "-f", "-"], Some(mine));
    let level = c.get_json(&["prioritylevelconfiguration", "batch"]);
    assert_eq!(level["spec"]["limited"]["nominalConcurrencyShares"], 30, "{level}");
    assert_eq!(level["spec"]["limited"]["limitResponse"]["queuing"]["queues"], 64, "{level}");
    assert_eq!(c.get_json(&["flowschema", "batch"])["spec"]["matchingPrecedence"], 1000);
    let bad = "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: PriorityLevelConfiguration\nmetadata: {name: bad}\nspec: {type: Sometimes}\n";
    let err = c.kubectl_fails(&["create", "-f", "-"], Some(bad));
    assert!(err.contains("spec.type: Unsupported value: \"Sometimes\""), "{err}");
    let listed = c.kubectl(&["get", "flowschemas"]);
    assert!(listed.contains("exempt") && listed.contains("catch-all") && listed.contains("batch"), "{listed}");
}

/// A PKCS#10 request (PEM) and its private key (PEM) for `CN=<cn>, O=<org>`.
fn client_request(cn: &str, org: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name.push(rcgen::DnType::OrganizationName, org);
    let csr = params.serialize_request(&key).expect("csr").pem().expect("pem");
    (csr, key.serialize_pem())
}

fn csr_manifest(name: &str, request_pem: &str) -> String {
    use base64::Engine;
    let request = base64::engine::general_purpose::STANDARD.encode(request_pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages: [client auth]\n  username: system:admin-wannabe\n  groups: [system:masters]\n"
    )
}

#[test]
fn certificate_approve_signs_a_client_certificate_with_the_cluster_ca() {
    use base64::Engine;
    let c = Cluster::start();
    let (request, key) = client_request("alice", "devs");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&csr_manifest("alice", &request)));
    // Who asked is the authenticated user, whatever the body claimed.
    let stored = c.get_json(&["csr", "alice"]);
    assert_ne!(stored["spec"]["username"], "system:admin-wannabe", "{stored}");
    assert!(stored.pointer("/status/certificate").is_none(), "not signed before approval: {stored}");
    let out = c.kubectl(&["certificate", "approve", "alice"]);
    assert!(out.contains("certificatesigningrequest.certificates.k8s.io/alice approved"), "{out}");
    let mut cert = String::new();
    eventually("the certificate", Duration::from_secs(30), || {
        let csr = c.get_json(&["csr", "alice"]);
        cert = csr["status"]["certificate"].as_str().unwrap_or("").to_string();
        !cert.is_empty()
    });
    let csr = c.get_json(&["csr", "alice"]);
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved", "{csr}");
    assert_eq!(csr["status"]["conditions"][0]["reason"], "KubectlApprove", "{csr}");
    assert!(c.kubectl(&["get", "csr", "alice"]).contains("Approved,Issued"));
    // The certificate authenticates alice to this very server: the cluster CA signed it.
    let pem = base64::engine::general_purpose::STANDARD.decode(&cert).expect("base64");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("alice.crt"), &pem).expect("write cert");
    std::fs::write(dir.path().join("alice.key"), &key).expect("write key");
    let whoami = Command::new(KUBECTL)
        .args(["--server", &c.url(), "--insecure-skip-tls-verify"])
        .arg("--client-certificate")
        .arg(dir.path().join("alice.crt"))
        .arg("--client-key")
        .arg(dir.path().join("alice.key"))
        .args(["auth", "whoami", "-o", "json"])
        .env("HOME", dir.path())
        .output()
        .expect("kubectl auth whoami");
    let text = String::from_utf8_lossy(&whoami.stdout);
    assert!(whoami.status.success(), "{text} {}", String::from_utf8_lossy(&whoami.stderr));
    let review: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(review["status"]["userInfo"]["username"], "alice", "{review}");
    assert!(
        review["status"]["userInfo"]["groups"].as_array().is_some_and(|g| g.iter().any(|g| g == "devs")),
        "{review}"
    );

    // Denied: never signed; approving a denied request is refused.
    let (request, _) = client_request("mallory", "devs");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&csr_manifest("mallory", &request)));
    c.kubectl(&["certificate", "deny", "mallory"]);
    let csr = c.get_json(&["csr", "mallory"]);
    assert_eq!(csr["status"]["conditions"][0]["type"], "Denied", "{csr}");
    // kubectl refuses to approve it; the server too, to a client that tries.
    let err = c.kubectl_fails(&["certificate", "approve", "mallory"], None);
    assert!(err.contains("already Denied"), "{err}");
    let mut both = csr.clone();
    both["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
        .push(serde_json::json!({"type": "Approved", "status": "True", "reason": "Sneaky"}));
    let (code, body) = c.curl(
        "PUT",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/mallory/approval",
        "application/json",
        Some(both.to_string().as_bytes()),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("Approved and Denied conditions are mutually exclusive"), "{body}");
    assert!(c.get_json(&["csr", "mallory"]).pointer("/status/certificate").is_none());
}
