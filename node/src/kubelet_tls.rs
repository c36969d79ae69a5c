//! The kubelet endpoint's TLS: a serving certificate signed by the cluster CA, and mutual TLS that
//! admits one client only, the API server (a certificate signed by the cluster CA with
//! `CN=kube-apiserver-kubelet-client`). No bearer token is accepted: a Node object's address can
//! point anywhere, so the API server never sends a credential a listener could replay.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// The common name of the API server's kubelet client certificate (kube-apiserver's name for it).
pub const API_SERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// The kubelet's serving certificate and key (PEM), signed by the cluster CA.
#[derive(Clone)]
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServingCert { .. }")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletTlsError {
    #[error("kubelet TLS: {0}")]
    Pem(String),
    #[error("kubelet TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("kubelet TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM bundle.
pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, KubeletTlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| KubeletTlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(KubeletTlsError::Pem("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// The private key in a PEM bundle.
pub fn key(pem: &str) -> Result<PrivateKeyDer<'static>, KubeletTlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| KubeletTlsError::Pem(e.to_string()))?
        .ok_or_else(|| KubeletTlsError::Pem("no private key in PEM".into()))
}

/// The trust anchors of a CA bundle.
pub fn roots(ca_pem: &str) -> Result<RootCertStore, KubeletTlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The endpoint's server configuration: `serving` for its identity, client certificates required,
/// signed by `ca_pem`, with the API server's common name.
pub fn server_config(ca_pem: &str, serving: &ServingCert) -> Result<Arc<rustls::ServerConfig>, KubeletTlsError> {
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider()).build()?;
    let verifier = Arc::new(OnlyApiServer { inner: webpki });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&serving.cert_pem)?, key(&serving.key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The common name of a certificate's subject.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// The CA's chain check (and clientAuth usage), then the API server's name: nothing else gets in.
#[derive(Debug)]
struct OnlyApiServer {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for OnlyApiServer {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match common_name(end_entity) {
            Some(cn) if cn == API_SERVER_CLIENT_CN => Ok(ClientCertVerified::assertion()),
            cn => {
                tracing::warn!(
                    cn = cn.as_deref().unwrap_or(""),
                    "kubelet endpoint: a client other than the API server"
                );
                Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A throwaway CA and certificates for tests of the endpoint and its clients.
#[cfg(test)]
pub(crate) mod test_pki {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    /// A CA able to sign.
    pub struct Ca {
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        pub fn new(name: &str) -> Self {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
            let pem = params.self_signed(&key).expect("self-signed").pem();
            Self { pem, issuer: Issuer::new(params, key) }
        }

        fn leaf(&self, cn: &str, usage: ExtendedKeyUsagePurpose, sans: Vec<String>) -> ServingCert {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &self.issuer).expect("signed");
            ServingCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
        }

        /// A kubelet serving certificate for 127.0.0.1.
        pub fn serving(&self) -> ServingCert {
            self.leaf("system:node:test", ExtendedKeyUsagePurpose::ServerAuth, vec!["127.0.0.1".into()])
        }

        /// A client certificate with common name `cn`.
        pub fn client(&self, cn: &str) -> ServingCert {
            self.leaf(cn, ExtendedKeyUsagePurpose::ClientAuth, Vec::new())
        }
    }

    /// An HTTPS client trusting `ca_pem`, presenting `identity` when given.
    pub fn client(ca_pem: &str, identity: Option<&ServingCert>) -> reqwest::Client {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots(ca_pem).expect("roots"));
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(certs(&id.cert_pem).expect("certs"), key(&id.key_pem).expect("key"))
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        reqwest::Client::builder().use_preconfigured_tls(config).build().expect("client")
    }
}
