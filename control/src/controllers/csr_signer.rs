//! The kubelet-serving CSR approver and signer (kube-controller-manager's `csrapproving` and
//! `csrsigning` for `kubernetes.io/kubelet-serving`, in one): a CertificateSigningRequest for that
//! signer is approved and signed when its subject is `system:node:<name>`/`system:nodes`, the Node
//! exists, and every SAN is one of that Node's addresses or names; otherwise it is marked `Failed`
//! with the reason. The requester's identity is checked when the request records one
//! (`spec.username`): the node itself or a `system:masters` member.
//!
//! It also signs `kubernetes.io/kube-apiserver-client` requests once someone approved them
//! (`kubectl certificate approve`, through the `approval` subresource): the request's subject
//! and SANs, for client authentication, valid for `spec.expirationSeconds` or a year.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::{ApiError, ApiResult};
use crate::api::registry::{Registry, WriteOptions};
use crate::server::kubelet_certs::{
    CertAuthority, CertError, API_CLIENT_SIGNER, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER,
};

const NAME: &str = "controller-csr-signing";

struct Ctx {
    registry: Arc<Registry>,
    csrs: Arc<Informer>,
    ca: Arc<CertAuthority>,
}

/// Starts the signer on the CSR informer; a Node change looks again at the requests still
/// pending (a serving certificate waits for its Node and the Node's addresses).
pub fn start(informers: &Arc<Informers>, ca: Arc<CertAuthority>) {
    let csrs = informers.get("certificates.k8s.io", "CertificateSigningRequest");
    let nodes = informers.get("", "Node");
    let ctx = Arc::new(Ctx { registry: Arc::clone(informers.registry()), csrs: Arc::clone(&csrs), ca });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        let pending = Arc::clone(&csrs);
        Controller::new(NAME, Arc::clone(&csrs))
            .watches(Arc::clone(&nodes), move |_node| pending_requests(&pending))
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

/// A request for one of the kubelet signers that has no outcome yet. Read from the object as
/// cached (no typed decode): the Node mapper asks it of every request on every Node change.
fn pending(csr: &Value) -> bool {
    let signer = csr.pointer("/spec/signerName").and_then(Value::as_str).unwrap_or("");
    let issued = csr.pointer("/status/certificate").and_then(Value::as_str).is_some_and(|c| !c.is_empty());
    let has = |types: &[&str]| {
        csr.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|conditions| {
            conditions.iter().any(|c| c.get("type").and_then(Value::as_str).is_some_and(|t| types.contains(&t)))
        })
    };
    let ours = match signer {
        KUBELET_SERVING_SIGNER | KUBELET_CLIENT_SIGNER => true,
        // Signed once someone approved it (`kubectl certificate approve`).
        API_CLIENT_SIGNER => has(&["Approved"]),
        _ => false,
    };
    ours && !issued && !has(&["Denied", "Failed"])
}

fn pending_requests(csrs: &Informer) -> Vec<ObjectKey> {
    csrs.list_all().iter().filter(|o| pending(o)).map(|o| ObjectKey::of(o)).collect()
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(obj) = ctx.csrs.get(&key) else { return Ok(Action::Done) };
    if !pending(&obj) {
        return Ok(Action::Done);
    }
    let Ok(csr) = serde_json::from_value::<CertificateSigningRequest>((*obj).clone()) else { return Ok(Action::Done) };
    let ri = ctx.registry.resource("certificates.k8s.io", "CertificateSigningRequest")?;
    sign_one(&ctx.registry, &ctx.ca, ri, &key.name, &csr).await?;
    Ok(Action::Done)
}

/// What became of one request.
enum Outcome {
    Issued(String),
    Failed(String),
    /// Not decidable yet (the Node is not registered): looked at again when a Node changes.
    Wait,
}

/// Decides one pending request and records the outcome in its status.
async fn sign_one(
    registry: &Registry,
    ca: &CertAuthority,
    ri: &crate::api::resources::ResourceInfo,
    name: &str,
    csr: &CertificateSigningRequest,
) -> ApiResult<()> {
    if csr.spec.signer_name == API_CLIENT_SIGNER {
        return sign_approved(registry, ca, ri, name, csr).await;
    }
    let client = csr.spec.signer_name == KUBELET_CLIENT_SIGNER;
    let outcome = if client { decide_client(ca, csr) } else { decide(registry, ca, csr).await? };
    let now = jiff::Timestamp::now().to_string();
    let status = match outcome {
        Outcome::Wait => return Ok(()),
        Outcome::Issued(pem) => {
            use base64::Engine;
            tracing::info!(client, "approved and signed a node certificate");
            let message = if client {
                "Auto approving kubelet client certificate after SubjectAccessReview."
            } else {
                "Auto approving kubelet serving certificate: subject and SANs match the Node."
            };
            json!({
                "conditions": [{
                    "type": "Approved", "status": "True", "reason": "AutoApproved",
                    "message": message,
                    "lastUpdateTime": now, "lastTransitionTime": now,
                }],
                "certificate": base64::engine::general_purpose::STANDARD.encode(pem),
            })
        }
        Outcome::Failed(reason) => {
            tracing::warn!(%reason, "refused a kubelet serving certificate request");
            json!({"conditions": [{
                "type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": reason,
                "lastUpdateTime": now, "lastTransitionTime": now,
            }]})
        }
    };
    let write = registry
        .update_with(ri, None, name, Some("status"), &WriteOptions::default(), |current: &Value| {
            let mut next = current.clone();
            next["status"] = status.clone();
            Ok(next)
        })
        .await;
    match write {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Signs an approved `kubernetes.io/kube-apiserver-client` request with the cluster CA
/// (`status.certificate`), or marks it `Failed` with the reason; its conditions are kept.
async fn sign_approved(
    registry: &Registry,
    ca: &CertAuthority,
    ri: &crate::api::resources::ResourceInfo,
    name: &str,
    csr: &CertificateSigningRequest,
) -> ApiResult<()> {
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let usages = csr.spec.usages.as_deref().unwrap_or_default();
    let outcome = if !usages.iter().any(|u| u == "client auth") {
        Err("the kube-apiserver-client signer issues certificates for \"client auth\" only; the request lacks it"
            .into())
    } else {
        let seconds = csr.spec.expiration_seconds.and_then(|s| u64::try_from(s).ok());
        ca.sign_api_client_csr(&pem, seconds).map_err(|e| e.to_string())
    };
    let now = jiff::Timestamp::now().to_string();
    let write = registry
        .update_with(ri, None, name, Some("status"), &WriteOptions::default(), |current: &Value| {
            let mut next = current.clone();
            if !next.get("status").is_some_and(Value::is_object) {
                next["status"] = json!({});
            }
            match &outcome {
                Ok(cert) => {
                    use base64::Engine;
                    next["status"]["certificate"] = json!(base64::engine::general_purpose::STANDARD.encode(cert));
                }
                Err(reason) => {
                    let mut conditions =
                        next.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                    conditions.push(json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                        "message": reason, "lastUpdateTime": now, "lastTransitionTime": now}));
                    next["status"]["conditions"] = Value::Array(conditions);
                }
            }
            Ok(next)
        })
        .await;
    match &outcome {
        Ok(_) => tracing::info!(csr = name, "signed an approved client certificate"),
        Err(reason) => tracing::warn!(csr = name, %reason, "refused an approved client certificate request"),
    }
    match write {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn decide(registry: &Registry, ca: &CertAuthority, csr: &CertificateSigningRequest) -> ApiResult<Outcome> {
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    // The node the request is for, from its subject (verified again by the signing below).
    let Some(node) = subject_node(&pem) else {
        return Ok(Outcome::Failed("subject must be CN=system:node:<name>, O=system:nodes".into()));
    };
    let username = csr.spec.username.as_deref().unwrap_or_default();
    let masters = csr.spec.groups.iter().flatten().any(|g| g == "system:masters");
    if !username.is_empty() && username != format!("system:node:{node}") && !masters {
        return Ok(Outcome::Failed(format!("{username} may not request a serving certificate for node {node}")));
    }
    let node_ri = registry.resource("", "Node")?;
    let node_obj = match registry.get(node_ri, None, &node).await {
        Ok(v) => v,
        Err(ApiError::NotFound { .. }) => return Ok(Outcome::Wait),
        Err(e) => return Err(e),
    };
    let Ok(node_obj) = serde_json::from_value::<Node>(node_obj) else {
        return Ok(Outcome::Failed(format!("node {node} does not decode")));
    };
    let addresses = node_obj.status.and_then(|s| s.addresses).unwrap_or_default();
    let ips: Vec<IpAddr> = addresses.iter().filter_map(|a| a.address.parse().ok()).collect();
    let mut names = vec![node.clone()];
    names.extend(addresses.iter().filter(|a| a.address.parse::<IpAddr>().is_err()).map(|a| a.address.clone()));
    if ips.is_empty() {
        return Ok(Outcome::Wait);
    }
    match ca.sign_kubelet_csr(&pem, &node, &ips, &names) {
        Ok(cert) => Ok(Outcome::Issued(cert)),
        Err(CertError::Refused(reason)) => Ok(Outcome::Failed(reason)),
        Err(e) => Ok(Outcome::Failed(e.to_string())),
    }
}

/// A node client certificate is approved for a bootstrap token (`system:bootstrappers`), for the
/// node renewing its own, or for a `system:masters` member; the subject must be that node's.
fn decide_client(ca: &CertAuthority, csr: &CertificateSigningRequest) -> Outcome {
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let Some(node) = subject_node(&pem) else {
        return Outcome::Failed("subject must be CN=system:node:<name>, O=system:nodes".into());
    };
    let username = csr.spec.username.as_deref().unwrap_or_default();
    let groups = csr.spec.groups.as_deref().unwrap_or_default();
    let allowed = username == format!("system:node:{node}")
        || groups.iter().any(|g| g == crate::auth::bootstrap_token::BOOTSTRAPPERS || g == "system:masters");
    if !allowed {
        return Outcome::Failed(format!("{username} may not request a client certificate for node {node}"));
    }
    match ca.sign_node_client_csr(&pem, &node) {
        Ok(cert) => Outcome::Issued(cert),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// `<name>` of a request whose subject common name is `system:node:<name>`.
fn subject_node(pem: &str) -> Option<String> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem).ok()?;
    let cn = match csr.params.distinguished_name.get(&rcgen::DnType::CommonName)? {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        _ => return None,
    };
    cn.strip_prefix("system:node:").filter(|n| !n.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubelet_requests_without_an_outcome_are_pending() {
        let csr = |signer: &str, status: Value| json!({"spec": {"signerName": signer}, "status": status});
        assert!(pending(&csr(KUBELET_SERVING_SIGNER, json!({}))));
        assert!(pending(&csr(KUBELET_CLIENT_SIGNER, json!({"conditions": [{"type": "Approved"}]}))));
        assert!(!pending(&csr("example.com/other", json!({}))));
        assert!(!pending(&csr(KUBELET_SERVING_SIGNER, json!({"certificate": "LS0t"}))));
        assert!(!pending(&csr(KUBELET_SERVING_SIGNER, json!({"conditions": [{"type": "Failed"}]}))));
        assert!(!pending(&csr(KUBELET_CLIENT_SIGNER, json!({"conditions": [{"type": "Denied"}]}))));
        // The API client signer waits for an approval.
        assert!(!pending(&csr(API_CLIENT_SIGNER, json!({}))));
        assert!(pending(&csr(API_CLIENT_SIGNER, json!({"conditions": [{"type": "Approved"}]}))));
        assert!(!pending(&csr(
            API_CLIENT_SIGNER,
            json!({"conditions": [{"type": "Approved"}], "certificate": "LS0t"})
        )));
    }
}
