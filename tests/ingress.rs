//! The ingress end to end: real kubectl, two Deployments of the Wasm `hello-http` pod behind two
//! Services, one Ingress with host and path rules, and the node agent's ingress proxy on free
//! ports of the node's address (127.0.0.1), reached with curl: routing by host and path, 404 for
//! an unknown host, 503 for a missing Service, TLS by SNI from a Secret made here, HTTP/2, the
//! ADDRESS column, and an update taking effect without a restart.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::node::Registry;
use common::{eventually, free_port, Cluster};

fn deployment(name: &str, image: &str, env: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: {image}\n        env: {env}\n        ports:\n        - {{name: http, containerPort: 8080}}\n        readinessProbe:\n          httpGet: {{path: /healthz, port: 8080}}\n          periodSeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: 80, targetPort: http}}\n"
    )
}

/// `shop.local`: `/` to web-a (by port name), `/env` to web-b (by number), Exact `/env/NAME_A`
/// to web-a; `ghost.local` to a Service that does not exist; TLS for `shop.local`.
fn ingress(ghost_backend: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
spec:
  tls:
  - hosts: [shop.local]
    secretName: shop-tls
  rules:
  - host: shop.local
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web-a, port: {{name: http}}}}}}}}
      - {{path: /env, pathType: Prefix, backend: {{service: {{name: web-b, port: {{number: 80}}}}}}}}
      - {{path: /env/NAME_A, pathType: Exact, backend: {{service: {{name: web-a, port: {{number: 80}}}}}}}}
  - host: ghost.local
    http:
      paths:
      - {{path: /, pathType: ImplementationSpecific, backend: {{service: {{name: {ghost_backend}, port: {{number: 80}}}}}}}}
  - host: flaky.local
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: flaky, port: {{number: 80}}}}}}}}
"#
    )
}

/// A Service without a selector whose endpoints are `dead` (refuses connections) and `live`.
fn flaky_service(dead: &str, dead_port: u16, live: &str) -> String {
    let slice = |name: &str, ip: &str, port: u16| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/service-name: flaky}}\naddressType: IPv4\nports:\n- {{name: http, port: {port}, protocol: TCP}}\nendpoints:\n- addresses: [{ip}]\n  conditions: {{ready: true}}\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: flaky\nspec:\n  ports:\n  - {{name: http, port: 80}}\n---\n{}---\n{}",
        slice("flaky-dead", dead, dead_port),
        slice("flaky-live", live, 8080)
    )
}

/// curl's answer: (status, body, HTTP version), or the curl exit code.
fn curl(args: &[&str]) -> Result<(u16, String, String), i32> {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("curl");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, version) = trailer.split_once(' ').unwrap_or((trailer, ""));
    Ok((code.parse().unwrap_or(0), body.to_string(), version.to_string()))
}

/// A plain HTTP request for `host` and `path` to the ingress.
fn get(port: u16, host: &str, path: &str) -> Result<(u16, String, String), i32> {
    curl(&["-H", &format!("Host: {host}"), &format!("http://127.0.0.1:{port}{path}")])
}

/// One HTTP/1.1 exchange on an open keep-alive connection: (status, body).
fn exchange(conn: &mut BufReader<TcpStream>, host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).expect("send a request");
    let mut status_line = String::new();
    conn.read_line(&mut status_line).expect("a status line");
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).expect("a header");
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a content length");
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).expect("the body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn ingress_routes_by_host_and_path_over_http1_http2_and_tls() {
    let (http_port, https_port) = (free_port(), free_port());
    let c = Cluster::with_node_args(vec![
        "--ingress-http-port".into(),
        http_port.to_string(),
        "--ingress-https-port".into(),
        https_port.to_string(),
    ]);
    let registry = Registry::start();
    let image = registry.push("hello-http", "1");
    let timeout = Duration::from_secs(120);

    // skiff's IngressClass exists and is the default.
    eventually("the IngressClass skiff", timeout, || {
        c.kubectl_output(&["get", "ingressclass", "skiff"], None).status.success()
    });
    let class = c.get_json(&["ingressclass", "skiff"]);
    assert_eq!(class["spec"]["controller"], "skiff.io/ingress");
    assert_eq!(class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"], "true");

    // Validation, with kube-apiserver's messages.
    let bad = ingress("ghost").replace("pathType: Exact, ", "");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&bad));
    assert!(err.contains("spec.rules[0].http.paths[2].pathType: Required value: pathType must be specified"), "{err}");

    let a = deployment("web-a", &image, "[{name: WHO, value: a}, {name: NAME_A, value: a-exact}]");
    let b = deployment("web-b", &image, "[{name: WHO, value: b}]");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&format!("{a}---\n{b}")));
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&ingress("ghost")));
    for d in ["web-a", "web-b"] {
        let out = c.kubectl(&["rollout", "status", &format!("deploy/{d}"), "--timeout=180s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
    }

    // Host and path routing: the longest prefix, Exact before Prefix, element-wise prefixes. Each
    // backend is reached once its Service's endpoints have come to the node (a rollout's end does
    // not wait for them).
    eventually("shop.local/env/WHO through web-b", timeout, || {
        get(http_port, "shop.local", "/env/WHO").is_ok_and(|(s, body, _)| s == 200 && body == "b")
    });
    eventually("shop.local/env/NAME_A through web-a", timeout, || {
        get(http_port, "shop.local", "/env/NAME_A").is_ok_and(|(s, body, _)| s == 200 && body == "a-exact")
    });
    assert_eq!(get(http_port, "shop.local", "/healthz").map(|r| (r.0, r.1)), Ok((200, "ok".to_string())));
    // `/envx` is not under `/env`: it goes to web-a, whose app answers 404 itself.
    assert_eq!(get(http_port, "shop.local", "/envx").map(|r| (r.0, r.1)), Ok((404, "not found\n".to_string())));
    let (status, body, _) = get(http_port, "unknown.local", "/").expect("an answer");
    assert_eq!(status, 404, "unknown host: {body}");
    let (status, body, _) = get(http_port, "ghost.local", "/").expect("an answer");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("service \"default/ghost\" not found"), "{body}");

    // A refused connect is retried on another endpoint: every request through a Service with one
    // dead and one live endpoint succeeds, whichever endpoint round robin tries first.
    let pods = c.get_json(&["pods", "-l", "app=web-b"]);
    let live = pods["items"][0]["status"]["podIP"].as_str().expect("web-b's pod IP").to_string();
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&flaky_service("127.0.0.1", free_port(), &live)));
    eventually("flaky.local answering", timeout, || {
        get(http_port, "flaky.local", "/env/WHO").is_ok_and(|(s, body, _)| s == 200 && body == "b")
    });
    for i in 0..6 {
        assert_eq!(
            get(http_port, "flaky.local", "/env/WHO").map(|r| (r.0, r.1)),
            Ok((200, "b".to_string())),
            "request {i}"
        );
    }

    // HTTP/2 with prior knowledge on the plain port.
    let (status, body, version) =
        curl(&["--http2-prior-knowledge", "-H", "Host: shop.local", &format!("http://127.0.0.1:{http_port}/env/WHO")])
            .expect("an h2 answer");
    assert_eq!((status, body.as_str(), version.as_str()), (200, "b", "2"));

    // TLS by SNI from a Secret made here; HTTP/2 by ALPN.
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["shop.local".to_string()]).expect("a certificate");
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).expect("write cert");
    std::fs::write(&key, cert.signing_key.serialize_pem()).expect("write key");
    let resolve = format!("shop.local:{https_port}:127.0.0.1");
    let url = format!("https://shop.local:{https_port}/env/WHO");
    let cacert = crt.display().to_string();
    // Before the Secret exists the host gets the default certificate, which the client rejects.
    assert_eq!(curl(&["--cacert", &cacert, "--resolve", &resolve, &url]), Err(60), "not yet trusted");
    eventually("a Warning event about the missing Secret", timeout, || {
        let events = c.get_json(&["events", "--field-selector", "reason=InvalidTLSSecret,involvedObject.name=shop"]);
        events["items"][0]["message"].as_str().is_some_and(|m| m.contains("secret \"default/shop-tls\" not found"))
    });
    c.kubectl(&[
        "create",
        "secret",
        "tls",
        "shop-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);
    eventually("shop.local over TLS with the Secret's certificate", timeout, || {
        curl(&["--cacert", &cacert, "--resolve", &resolve, &url]).is_ok_and(|(s, body, _)| s == 200 && body == "b")
    });
    let (_, _, version) = curl(&["--http2", "--cacert", &cacert, "--resolve", &resolve, &url]).expect("TLS answer");
    assert_eq!(version, "2", "ALPN picks HTTP/2");
    let (_, _, version) = curl(&["--http1.1", "--cacert", &cacert, "--resolve", &resolve, &url]).expect("TLS answer");
    assert_eq!(version, "1.1");

    // The ADDRESS column: the node's address.
    eventually("the ingress's address", timeout, || {
        c.get_json(&["ingress", "shop"])["status"]["loadBalancer"]["ingress"][0]["ip"] == "127.0.0.1"
    });
    let table = c.kubectl(&["get", "ingress", "shop"]);
    assert!(
        table.contains("127.0.0.1") && table.contains("shop.local,ghost.local") && table.contains("80, 443"),
        "{table}"
    );

    // An update takes effect without a restart, and a connection open across it keeps working.
    let stream = TcpStream::connect(("127.0.0.1", http_port)).expect("connect to the ingress");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let mut kept = BufReader::new(stream);
    assert_eq!(exchange(&mut kept, "shop.local", "/env/WHO"), (200, "b".to_string()));
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&ingress("web-b")));
    eventually("ghost.local now routed to web-b", timeout, || {
        get(http_port, "ghost.local", "/env/WHO").is_ok_and(|(s, body, _)| s == 200 && body == "b")
    });
    assert_eq!(exchange(&mut kept, "ghost.local", "/env/WHO"), (200, "b".to_string()), "the kept connection");
    c.kubectl(&["delete", "ingress", "shop"]);
    eventually("the deleted ingress's hosts unknown again", timeout, || {
        get(http_port, "shop.local", "/env/WHO").is_ok_and(|(s, _, _)| s == 404)
    });
}
