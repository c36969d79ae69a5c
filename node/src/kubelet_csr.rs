//! How a remote agent gets its kubelet serving certificate without the CA key: it makes a key pair,
//! posts a `certificates.k8s.io/v1` CertificateSigningRequest for `kubernetes.io/kubelet-serving`
//! (`CN=system:node:<name>`, `O=system:nodes`, its address and name as SANs), and waits for the API
//! server's signer to approve and issue it, as a kubelet with `serverTLSBootstrap` does.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::kubelet_tls::ServingCert;

/// The signer of kubelet serving certificates.
pub const SIGNER: &str = "kubernetes.io/kubelet-serving";
/// How long the agent waits for its certificate.
const WAIT: Duration = Duration::from_secs(60);

fn csr_error(e: impl std::fmt::Display) -> AgentError {
    AgentError::Client(format!("certificate request: {e}"))
}

/// A key and a PKCS#10 request (PEM) for the kubelet of `config`.
fn request(config: &AgentConfig) -> Result<(KeyPair, String), AgentError> {
    let key = KeyPair::generate().map_err(csr_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(csr_error)?;
    params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(DnType::CommonName, format!("system:node:{}", config.node_name));
    params.subject_alt_names.push(SanType::IpAddress(config.node_ip));
    if let Ok(name) = config.node_name.clone().try_into() {
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    let pem = params.serialize_request(&key).map_err(csr_error)?.pem().map_err(csr_error)?;
    Ok((key, pem))
}

/// Requests a serving certificate through the API and waits until it is issued (or refused).
#[tracing::instrument(skip_all, fields(node = %config.node_name))]
pub async fn obtain(client: &kube::Client, config: &AgentConfig) -> Result<ServingCert, AgentError> {
    let (key, pem) = request(config)?;
    let usages = ["digital signature", "key encipherment", "server auth"];
    let cert = issue(client, &config.node_name, SIGNER, pem, &usages).await?;
    Ok(ServingCert { cert_pem: cert, key_pem: key.serialize_pem() })
}

/// The signer of nodes' client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// A client certificate for `system:node:<node>` (`O=system:nodes`, no SANs), requested with
/// whatever credential `client` has (a bootstrap token when joining): (certificate, key), PEM.
#[tracing::instrument(skip_all, fields(node))]
pub async fn obtain_client(client: &kube::Client, node: &str) -> Result<(String, String), AgentError> {
    let key = KeyPair::generate().map_err(csr_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(csr_error)?;
    params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(DnType::CommonName, format!("system:node:{node}"));
    let pem = params.serialize_request(&key).map_err(csr_error)?.pem().map_err(csr_error)?;
    let usages = ["digital signature", "key encipherment", "client auth"];
    let cert = issue(client, node, CLIENT_SIGNER, pem, &usages).await?;
    Ok((cert, key.serialize_pem()))
}

/// Posts a CSR for `signer` and waits until it is issued (or refused); the certificate, PEM.
async fn issue(
    client: &kube::Client,
    node: &str,
    signer: &str,
    pem: String,
    usages: &[&str],
) -> Result<String, AgentError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = format!("csr-{node}-{stamp:x}");
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    api.create(&PostParams::default(), &csr)
        .await
        .map_err(AgentError::api("creating a certificate signing request"))?;
    tracing::info!(csr = %name, signer, "requested a certificate");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut delay = Duration::from_millis(50);
    let cert = loop {
        let current = api.get(&name).await.map_err(AgentError::api("reading the certificate signing request"))?;
        let status = current.status.unwrap_or_default();
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            break String::from_utf8(cert.0).map_err(csr_error)?;
        }
        if let Some(c) = status.conditions.iter().flatten().find(|c| c.type_ == "Denied" || c.type_ == "Failed") {
            return Err(csr_error(format!("{} {}: {}", name, c.type_, c.message.clone().unwrap_or_default())));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(csr_error(format!("{name} was not signed within {}s", WAIT.as_secs())));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    };
    // The certificate is the agent's now; the request need not stay (Kubernetes' cleaner removes them).
    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
        tracing::debug!(error = %e, "removing the signed CSR");
    }
    Ok(cert)
}
