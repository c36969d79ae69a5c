//! Authentication and RBAC with the real kubectl: issue 17's user story (a ServiceAccount with a
//! Role, `kubectl create token`, allowed and forbidden requests, `auth can-i --list`,
//! `auth whoami`), bad tokens, escalation and impersonation.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, Cluster};

/// A raw request with a bearer token: (status code, body).
fn request(c: &Cluster, token: &str, method: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}{path}", c.url()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn story_setup(c: &Cluster) -> String {
    assert!(c.kubectl(&["create", "namespace", "team-a"]).contains("namespace/team-a created"));
    assert!(c.kubectl(&["create", "serviceaccount", "ci", "-n", "team-a"]).contains("serviceaccount/ci created"));
    let out = c.kubectl(&["create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods", "-n", "team-a"]);
    assert!(out.contains("role.rbac.authorization.k8s.io/pod-reader created"), "{out}");
    let out = c.kubectl(&[
        "create",
        "rolebinding",
        "ci-reads",
        "--role=pod-reader",
        "--serviceaccount=team-a:ci",
        "-n",
        "team-a",
    ]);
    assert!(out.contains("rolebinding.rbac.authorization.k8s.io/ci-reads created"), "{out}");
    let token = c.kubectl(&["create", "token", "ci", "-n", "team-a", "--duration=10m"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    token
}

#[test]
fn service_account_user_story() {
    let c = Cluster::start();
    let token = story_setup(&c);

    // The default ServiceAccount appears in every namespace.
    eventually("default service account in team-a", Duration::from_secs(10), || {
        c.kubectl_output(&["get", "serviceaccount", "default", "-n", "team-a"], None).status.success()
    });

    let pods = c.kubectl_output(&["--token", &token, "get", "pods", "-n", "team-a"], None);
    assert!(pods.status.success(), "allowed: {}", String::from_utf8_lossy(&pods.stderr));
    assert!(String::from_utf8_lossy(&pods.stderr).contains("No resources found in team-a namespace"));

    let err = c.kubectl_fails(&["--token", &token, "delete", "pod", "x", "-n", "team-a"], None);
    assert!(
        err.contains(
            "Error from server (Forbidden): pods \"x\" is forbidden: User \"system:serviceaccount:team-a:ci\" cannot delete resource \"pods\" in API group \"\" in the namespace \"team-a\""
        ),
        "{err}"
    );
    // Outside its namespace the token grants nothing.
    let err = c.kubectl_fails(&["--token", &token, "get", "pods", "-n", "default"], None);
    assert!(err.contains("cannot list resource \"pods\" in API group \"\" in the namespace \"default\""), "{err}");

    // can-i, as the admin impersonating the ServiceAccount.
    let list = c.kubectl(&["auth", "can-i", "--list", "--as=system:serviceaccount:team-a:ci", "-n", "team-a"]);
    let pods_line = list.lines().find(|l| l.starts_with("pods ")).unwrap_or_else(|| panic!("pods rule in {list}"));
    assert!(pods_line.contains("[get list watch]"), "{list}");
    assert!(list.contains("selfsubjectaccessreviews.authorization.k8s.io"), "basic-user rules: {list}");
    let yes = c.kubectl_output(
        &["auth", "can-i", "get", "pods", "-n", "team-a", "--as=system:serviceaccount:team-a:ci"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&yes.stdout).trim(), "yes");
    let no = c.kubectl_output(
        &["auth", "can-i", "delete", "pods", "-n", "team-a", "--as=system:serviceaccount:team-a:ci"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    assert!(!no.status.success());

    let whoami = c.kubectl(&["auth", "whoami"]);
    assert!(whoami.contains("admin") && whoami.contains("system:masters"), "{whoami}");
    let whoami = c.kubectl(&["--token", &token, "auth", "whoami"]);
    assert!(whoami.contains("system:serviceaccount:team-a:ci"), "{whoami}");
    assert!(whoami.contains("system:serviceaccounts:team-a"), "{whoami}");

    // A TokenReview of the same token.
    let review =
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    // Posted directly: kubectl's `create -f` needs the group's OpenAPI schema, which skiff does not serve yet.
    let (code, out) = c.curl(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "application/json",
        Some(review.to_string().as_bytes()),
    );
    assert_eq!(code, 201, "{out}");
    let reviewed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(reviewed["status"]["authenticated"], true, "{out}");
    assert_eq!(reviewed["status"]["user"]["username"], "system:serviceaccount:team-a:ci");

    // Discovery documents of the issuer.
    let (code, body) = c.curl("GET", "/.well-known/openid-configuration", "application/json", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("/openid/v1/jwks"), "{body}");
    let (code, body) = c.curl("GET", "/openid/v1/jwks", "application/json", None);
    assert_eq!(code, 200);
    assert!(body.contains("\"kty\":\"EC\""), "{body}");

    // Deleting the ServiceAccount invalidates its tokens (within the 10 s for which a successful
    // token authentication is reused, as kube-apiserver caches it).
    c.kubectl(&["delete", "serviceaccount", "ci", "-n", "team-a"]);
    eventually("the deleted account's token refused", std::time::Duration::from_secs(30), || {
        request(&c, &token, "GET", "/api/v1/namespaces/team-a/pods").0 == 401
    });
}

#[test]
fn bad_tokens_are_unauthorized() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let c = Cluster::start();
    let token = story_setup(&c);
    let sa = c.get_json(&["serviceaccount", "ci", "-n", "team-a"]);
    let uid = sa["metadata"]["uid"].as_str().expect("uid").to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() as i64;
    let claims = |aud: &str, nbf: i64, exp: i64| {
        serde_json::json!({
            "iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:team-a:ci",
            "aud": [aud], "iat": nbf, "nbf": nbf, "exp": exp, "jti": "t",
            "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "ci", "uid": uid}},
        })
    };
    let key = std::fs::read(c.data_dir().join("sa.key")).expect("sa.key");
    let signer = EncodingKey::from_ec_pem(&key).expect("key");
    let sign = |claims: &serde_json::Value, key: &EncodingKey| {
        encode(&Header::new(Algorithm::ES256), claims, key).expect("sign")
    };
    let aud = "https://kubernetes.default.svc.cluster.local";

    // The forged token with the right key and claims is accepted: the checks below fail for their reason.
    let good = sign(&claims(aud, now - 10, now + 600), &signer);
    assert_eq!(request(&c, &good, "GET", "/api/v1/namespaces/team-a/pods").0, 200);

    let expired = sign(&claims(aud, now - 7200, now - 3600), &signer);
    let future = sign(&claims(aud, now + 3600, now + 7200), &signer);
    let wrong_audience = sign(&claims("https://elsewhere.example", now - 10, now + 600), &signer);
    let other_key = EncodingKey::from_ec_pem(rcgen_key().as_bytes()).expect("other key");
    let wrong_signature = sign(&claims(aud, now - 10, now + 600), &other_key);
    let mut tampered = token.clone();
    tampered.push('A');
    for (what, bad) in [
        ("expired", expired),
        ("not yet valid", future),
        ("wrong audience", wrong_audience),
        ("wrong signature", wrong_signature),
        ("tampered", tampered),
        ("garbage", "not-a-token".to_string()),
    ] {
        let (code, body) = request(&c, &bad, "GET", "/api/v1/namespaces/team-a/pods");
        assert_eq!(code, 401, "{what}: {body}");
        assert!(body.contains("\"reason\":\"Unauthorized\""), "{what}: {body}");
    }
    // kubectl create token --audience gives a token the API server does not accept.
    let other = c.kubectl(&["create", "token", "ci", "-n", "team-a", "--audience=vault"]).trim().to_string();
    assert_eq!(request(&c, &other, "GET", "/api/v1/namespaces/team-a/pods").0, 401);
    // Too short a duration is refused as Kubernetes does.
    let err = c.kubectl_fails(&["create", "token", "ci", "-n", "team-a", "--duration=1m"], None);
    assert!(err.contains("may not specify a duration less than 10 minutes"), "{err}");
}

/// A P-256 key that is not the cluster's (openssl is on every test machine).
fn rcgen_key() -> String {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .output()
        .expect("openssl");
    String::from_utf8(out.stdout).expect("pem")
}

#[test]
fn escalation_and_impersonation_are_checked() {
    let c = Cluster::start();
    let token = story_setup(&c);
    // ci may manage Roles in team-a, but holds only pod-reader's permissions.
    c.kubectl(&[
        "create",
        "role",
        "role-admin",
        "--verb=get,list,create,update,patch",
        "--resource=roles,rolebindings",
        "-n",
        "team-a",
    ]);
    c.kubectl(&[
        "create",
        "rolebinding",
        "ci-roles",
        "--role=role-admin",
        "--serviceaccount=team-a:ci",
        "-n",
        "team-a",
    ]);

    let within = c.kubectl_output(
        &["--token", &token, "create", "role", "reader-too", "--verb=get", "--resource=pods", "-n", "team-a"],
        None,
    );
    assert!(within.status.success(), "{}", String::from_utf8_lossy(&within.stderr));
    let err = c.kubectl_fails(
        &["--token", &token, "create", "role", "deleter", "--verb=delete", "--resource=pods", "-n", "team-a"],
        None,
    );
    assert!(
        err.contains("Error from server (Forbidden): roles.rbac.authorization.k8s.io \"deleter\" is forbidden: user \"system:serviceaccount:team-a:ci\""),
        "{err}"
    );
    assert!(err.contains("is attempting to grant RBAC permissions not currently held"), "{err}");
    assert!(err.contains("{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"), "{err}");
    // Binding cluster-admin is an escalation too (no `bind` on it).
    let err = c.kubectl_fails(
        &[
            "--token",
            &token,
            "create",
            "rolebinding",
            "grab",
            "--clusterrole=cluster-admin",
            "--serviceaccount=team-a:ci",
            "-n",
            "team-a",
        ],
        None,
    );
    assert!(
        // kubectl's `create rolebinding` prints "error: failed to create rolebinding: <message>".
        err.contains("rolebindings.rbac.authorization.k8s.io \"grab\" is forbidden")
            && err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );

    // Impersonation without the impersonate verb is refused; the admin may impersonate.
    let err = c.kubectl_fails(&["--token", &token, "get", "pods", "-n", "team-a", "--as=bob"], None);
    assert!(
        err.contains("users \"bob\" is forbidden: User \"system:serviceaccount:team-a:ci\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    let err = c.kubectl_fails(&["get", "pods", "-n", "team-a", "--as=bob"], None);
    assert!(err.contains("User \"bob\" cannot list resource \"pods\""), "{err}");
    let ok = c.kubectl_output(&["get", "pods", "-n", "team-a", "--as=bob", "--as-group=system:masters"], None);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn default_roles_and_client_certificates() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "team-b"]);
    // The default roles exist, with view aggregated from system:aggregate-to-view.
    eventually("aggregated view rules", Duration::from_secs(10), || {
        let view = c.get_json(&["clusterrole", "view"]);
        view["rules"].as_array().is_some_and(|r| !r.is_empty())
    });
    for role in ["cluster-admin", "admin", "edit", "system:basic-user", "system:discovery", "system:public-info-viewer"]
    {
        c.get_json(&["clusterrole", role]);
    }
    c.kubectl(&["create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", "team-b"]);
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&c.kubectl_output(&all, None).stdout).trim().to_string()
    };
    assert_eq!(can(&["get", "configmaps", "-n", "team-b", "--as=alice"]), "yes");
    assert_eq!(can(&["get", "pods/log", "-n", "team-b", "--as=alice"]), "yes");
    assert_eq!(can(&["get", "secrets", "-n", "team-b", "--as=alice"]), "no");
    assert_eq!(can(&["create", "configmaps", "-n", "team-b", "--as=alice"]), "no");
    assert_eq!(can(&["get", "configmaps", "-n", "default", "--as=alice"]), "no");

    // Pod Security admission from the namespace's labels.
    c.kubectl(&[
        "label",
        "namespace",
        "team-b",
        "pod-security.kubernetes.io/enforce=baseline",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let privileged = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root", "namespace": "team-b"},
        "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}}"#;
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(privileged));
    assert!(
        err.contains("pods \"root\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true), privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{err}"
    );
    let plain = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": "team-b"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}"#;
    let out = c.kubectl_output(&["apply", "-f", "-"], Some(plain));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"),
        "{stderr}"
    );
    // An update cannot turn an admitted pod into a privileged one.
    let err =
        c.kubectl_fails(&["-n", "team-b", "patch", "pod", "plain", "-p", r#"{"spec":{"hostNetwork":true}}"#], None);
    assert!(err.contains("forbidden") || err.contains("Forbidden") || err.contains("Invalid"), "{err}");
    assert_ne!(c.get_json(&["-n", "team-b", "pod", "plain"])["spec"]["hostNetwork"], true);
    // A workload's pod template is warned about, not refused (its pods are, when created).
    let deployment = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hostnet", "namespace": "team-b"},
        "spec": {"selector": {"matchLabels": {"app": "h"}}, "template": {"metadata": {"labels": {"app": "h"}},
        "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}}}}"#;
    let out = c.kubectl_output(&["apply", "-f", "-"], Some(deployment));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("would violate PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true)"),
        "{stderr}"
    );
    c.kubectl(&["-n", "team-b", "delete", "deployment", "hostnet"]);

    // Anonymous requests reach health and version only.
    let out = Command::new("curl")
        .args(["-sk", "-w", "%{http_code}", &format!("{}/api/v1/pods", c.url())])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("401"));
    let out = Command::new("curl").args(["-sk", &format!("{}/version", c.url())]).output().expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"minor\""));

    // The admin client certificate alone authenticates as admin in system:masters.
    let kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(c.kubeconfig()).expect("kubeconfig")).expect("yaml");
    let user = &kubeconfig["users"][0]["user"];
    let cluster = &kubeconfig["clusters"][0]["cluster"];
    let cert_only = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
        cluster["server"].as_str().expect("server"),
        cluster["certificate-authority-data"].as_str().expect("ca"),
        user["client-certificate-data"].as_str().expect("cert"),
        user["client-key-data"].as_str().expect("key"),
    );
    let path = c.data_dir().join("cert-only.kubeconfig");
    std::fs::write(&path, cert_only).expect("write");
    let out = Command::new(common::KUBECTL)
        .arg("--kubeconfig")
        .arg(&path)
        .args(["auth", "whoami", "-o", "json"])
        .env("HOME", c.data_dir())
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"username\": \"admin\"") && text.contains("system:masters"), "{text}");
}

#[test]
fn legacy_token_secrets_are_filled_but_never_created() {
    let c = Cluster::start();
    c.kubectl(&["create", "serviceaccount", "old"]);
    // A Secret of the legacy type, made by the user, is filled with a token, the CA and the namespace.
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: old-token\n  annotations: {kubernetes.io/service-account.name: old}\ntype: kubernetes.io/service-account-token\n";
    c.kubectl_stdin(&["apply", "-f", "-"], Some(secret));
    eventually("the token Secret filled", Duration::from_secs(30), || {
        c.get_json(&["secret", "old-token"])["data"]["token"].as_str().is_some_and(|t| !t.is_empty())
    });
    let filled = c.get_json(&["secret", "old-token"]);
    let decode = |field: &str| {
        use base64::Engine;
        let b64 = filled["data"][field].as_str().unwrap_or_default();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("utf-8")
    };
    assert_eq!(decode("namespace"), "default");
    assert!(decode("ca.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    let uid = c.get_json(&["serviceaccount", "old"])["metadata"]["uid"].clone();
    assert_eq!(filled["metadata"]["annotations"]["kubernetes.io/service-account.uid"], uid);
    let token = decode("token");
    let out = c.kubectl(&["--token", &token, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(out.trim(), "system:serviceaccount:default:old");
    // No Secret was made for the ServiceAccount itself.
    let secrets = c.get_json(&["secrets"]);
    let legacy: Vec<&str> = secrets["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["type"] == "kubernetes.io/service-account-token")
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    assert_eq!(legacy, vec!["old-token"]);
    // The token lives as long as its Secret (within the 10 s authentication cache).
    c.kubectl(&["delete", "secret", "old-token"]);
    eventually("the deleted Secret's token refused", Duration::from_secs(30), || {
        request(&c, &token, "GET", "/api/v1/namespaces/default/pods").0 == 401
    });
}
