//! One webhook call: an `admission.k8s.io/v1` AdmissionReview POSTed as JSON over HTTPS
//! (verified with the configuration's `caBundle`), `timeoutSeconds` enforced, and the answer
//! checked (kind, uid, patch type) into a [`Verdict`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::config::Hook;
use super::matching::{user_info, Attributes};
use crate::api::error::chain;

/// Where to send one call: the URL, and for a service reference the address its host name
/// stands for (the API server resolves services itself, see [`super::resolve`]).
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub resolved: Option<(String, SocketAddr)>,
}

/// Why a call produced no verdict. The text follows kube-apiserver's (`ErrCallingWebhook`).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("failed to call webhook: {0}")]
    Call(String),
    #[error("received invalid webhook response: {0}")]
    InvalidResponse(String),
}

/// A denial as the webhook worded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

/// What a webhook answered.
#[derive(Debug, Default)]
pub struct Verdict {
    /// `None` when allowed.
    pub denied: Option<Denial>,
    /// JSON Patch operations (mutating webhooks only).
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
}

/// The AdmissionReview for one request. `version` is the one the hook's rules matched
/// (`object`/`oldObject` are sent in it).
pub fn review(a: &Attributes<'_>, version: &str, uid: &str) -> Value {
    let in_version = |o: &Value| {
        let mut o = crate::api::conversion::between(a.group, a.kind, a.version, version, o.clone());
        if let Some(map) = o.as_object_mut() {
            let api_version = if a.group.is_empty() { version.to_string() } else { format!("{}/{version}", a.group) };
            map.insert("apiVersion".into(), json!(api_version));
        }
        o
    };
    let kind = json!({"group": a.group, "version": version, "kind": a.kind});
    let resource = json!({"group": a.group, "version": version, "resource": a.resource});
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": {"group": a.group, "version": a.version, "kind": a.kind},
        "requestResource": {"group": a.group, "version": a.version, "resource": a.resource},
        "name": a.name,
        "operation": a.operation.as_str(),
        "userInfo": user_info(a.user),
        "object": a.object.map(in_version).unwrap_or(Value::Null),
        "oldObject": a.old_object.map(in_version).unwrap_or(Value::Null),
        "dryRun": a.dry_run,
    });
    if !a.subresource.is_empty() {
        request["subResource"] = json!(a.subresource);
        request["requestSubResource"] = json!(a.subresource);
    }
    if let Some(ns) = a.namespace {
        request["namespace"] = json!(ns);
    }
    let options_kind = a.operation.options_kind();
    if !options_kind.is_empty() {
        let mut options = json!({"kind": options_kind, "apiVersion": "meta.k8s.io/v1"});
        if a.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        request["options"] = options;
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

fn tls_config(ca_bundle: &[u8]) -> Result<rustls::ClientConfig, CallError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_bundle[..]) {
        let cert = cert.map_err(|e| CallError::Call(format!("caBundle: {e}")))?;
        roots.add(cert).map_err(|e| CallError::Call(format!("caBundle: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CallError::Call(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Calls `hook` at `target` with `review`; `uid` is the request's.
pub async fn call(hook: &Hook, target: &Target, review: &Value, uid: &str) -> Result<Verdict, CallError> {
    let timeout = hook.timeout;
    // As kube-apiserver: the timeout is also told to the webhook.
    let sep = if target.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}timeout={}s", target.url, timeout.as_secs());
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(&hook.ca_bundle)?)
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if let Some((host, addr)) = &target.resolved {
        builder = builder.resolve(host, *addr);
    }
    let client = builder.build().map_err(|e| CallError::Call(chain(&e)))?;
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            CallError::Call(format!("Post \"{url}\": context deadline exceeded"))
        } else {
            CallError::Call(format!("Post \"{url}\": {}", chain(&e)))
        }
    };
    let body = serde_json::to_vec(review).map_err(|e| CallError::Call(e.to_string()))?;
    let sent = async {
        let response = client
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(failed)?;
        Ok::<_, CallError>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(timeout + Duration::from_millis(100), sent)
        .await
        .map_err(|_| CallError::Call(format!("Post \"{url}\": context deadline exceeded")))??;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(CallError::Call(format!(
            "the server responded with the status code {} but did not return more information ({})",
            status.as_u16(),
            text.chars().take(200).collect::<String>()
        )));
    }
    verify(&bytes, uid, hook.name.as_str())
}

/// Checks an answer: an AdmissionReview v1 with a response for `uid`.
pub fn verify(bytes: &[u8], uid: &str, _hook: &str) -> Result<Verdict, CallError> {
    let answer: Value = serde_json::from_slice(bytes).map_err(|e| {
        let preview: String = String::from_utf8_lossy(bytes).chars().take(80).collect();
        CallError::Call(format!("couldn't decode the response {preview:?}: {e}"))
    })?;
    let api_version = answer.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = answer.get("kind").and_then(Value::as_str).unwrap_or("");
    if (api_version, kind) != ("admission.k8s.io/v1", "AdmissionReview") {
        return Err(CallError::InvalidResponse(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {api_version}, Kind={kind}"
        )));
    }
    let Some(response) = answer.get("response").filter(|r| r.is_object()) else {
        return Err(CallError::InvalidResponse("webhook response was absent".into()));
    };
    let got = response.get("uid").and_then(Value::as_str).unwrap_or("");
    if got != uid {
        return Err(CallError::InvalidResponse(format!("expected response.uid=\"{uid}\", got \"{got}\"")));
    }
    let allowed = response.get("allowed").and_then(Value::as_bool).unwrap_or(false);
    let warnings = response
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    let patch = match (response.get("patch").and_then(Value::as_str), response.get("patchType").and_then(Value::as_str))
    {
        (None, _) => None,
        (Some(_), None) => {
            return Err(CallError::InvalidResponse("webhook returned response.patch but not response.patchType".into()))
        }
        (Some(_), Some(other)) if other != "JSONPatch" => {
            return Err(CallError::InvalidResponse(format!("webhook returned invalid response.patchType of {other:?}")))
        }
        (Some(encoded), Some(_)) => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| CallError::InvalidResponse(format!("response.patch is not base64: {e}")))?;
            Some(
                serde_json::from_slice::<json_patch::Patch>(&raw)
                    .map_err(|e| CallError::InvalidResponse(format!("response.patch is not a JSON patch: {e}")))?,
            )
        }
    };
    let denied = (!allowed).then(|| {
        let status = response.get("status");
        let field = |f: &str| status.and_then(|s| s.get(f)).and_then(Value::as_str).unwrap_or("").to_string();
        let code = status.and_then(|s| s.get("code")).and_then(Value::as_u64).unwrap_or(0);
        Denial {
            // As kube-apiserver: a denial is never answered with a code below 400.
            code: u16::try_from(code).ok().filter(|c| (400..600).contains(c)).unwrap_or(400),
            reason: field("reason"),
            message: field("message"),
        }
    });
    Ok(Verdict { denied, patch, warnings })
}

/// The message of a denial by `hook`, as kube-apiserver words it.
pub fn denial_message(hook: &str, denial: &Denial) -> String {
    let denied_by = format!("admission webhook \"{hook}\" denied the request");
    if !denial.message.is_empty() {
        format!("{denied_by}: {}", denial.message)
    } else if !denial.reason.is_empty() {
        format!("{denied_by}: {}", denial.reason)
    } else {
        format!("{denied_by} without explanation")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(response: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
        )
        .expect("json")
    }

    #[test]
    fn answers_are_checked() {
        let ok = verify(&answer(json!({"uid": "u1", "allowed": true, "warnings": ["careful"]})), "u1", "h")
            .expect("allowed");
        assert!(ok.denied.is_none());
        assert_eq!(ok.warnings, ["careful"]);

        let err = verify(&answer(json!({"uid": "u2", "allowed": true})), "u1", "h").expect_err("wrong uid");
        assert_eq!(err.to_string(), "received invalid webhook response: expected response.uid=\"u1\", got \"u2\"");
        let err = verify(b"not json at all", "u1", "h").expect_err("garbage");
        assert!(err.to_string().starts_with("failed to call webhook: couldn't decode the response"), "{err}");
        let err = verify(b"{\"kind\": \"Pod\"}", "u1", "h").expect_err("not a review");
        assert!(err.to_string().contains("expected webhook response of admission.k8s.io/v1"), "{err}");

        let denied = verify(
            &answer(json!({"uid": "u1", "allowed": false, "status": {"code": 200, "message": "no pods named bad"}})),
            "u1",
            "h",
        )
        .expect("a verdict");
        let d = denied.denied.expect("denied");
        assert_eq!(d.code, 400, "codes below 400 become 400");
        assert_eq!(
            denial_message("x.example.com", &d),
            "admission webhook \"x.example.com\" denied the request: no pods named bad"
        );
        let bare = Denial { code: 403, reason: String::new(), message: String::new() };
        assert_eq!(denial_message("x", &bare), "admission webhook \"x\" denied the request without explanation");
    }

    #[test]
    fn patches_must_be_json_patch_in_base64() {
        use base64::Engine;
        let ops = base64::engine::general_purpose::STANDARD.encode(br#"[{"op":"add","path":"/a","value":1}]"#);
        let v = verify(&answer(json!({"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": ops})), "u", "h")
            .expect("patch");
        assert_eq!(v.patch.map(|p| p.0.len()), Some(1));
        let err = verify(&answer(json!({"uid": "u", "allowed": true, "patch": ops})), "u", "h").expect_err("no type");
        assert!(err.to_string().contains("patchType"), "{err}");
        let err =
            verify(&answer(json!({"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": "!!"})), "u", "h")
                .expect_err("not base64");
        assert!(err.to_string().contains("base64"), "{err}");
    }

    #[test]
    fn reviews_carry_the_request() {
        let obj = json!({"apiVersion": "stable.example.com/v2", "kind": "CronTab", "metadata": {"name": "c"}});
        let a = Attributes {
            operation: super::super::matching::Operation::Create,
            group: "stable.example.com",
            version: "v2",
            kind: "CronTab",
            resource: "crontabs",
            subresource: "",
            namespaced: true,
            namespace: Some("default"),
            name: "c",
            object: Some(&obj),
            old_object: None,
            dry_run: true,
            user: None,
            other_versions: &["v1"],
        };
        let r = review(&a, "v1", "uid-1");
        assert_eq!(r["request"]["uid"], "uid-1");
        assert_eq!(r["request"]["kind"], json!({"group": "stable.example.com", "version": "v1", "kind": "CronTab"}));
        assert_eq!(r["request"]["requestKind"]["version"], "v2");
        assert_eq!(r["request"]["object"]["apiVersion"], "stable.example.com/v1");
        assert_eq!(r["request"]["oldObject"], Value::Null);
        assert_eq!(r["request"]["dryRun"], true);
        assert_eq!(
            r["request"]["options"],
            json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]})
        );
        assert_eq!(r["request"]["namespace"], "default");
    }
}
