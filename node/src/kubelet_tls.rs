//! The kubelet endpoint's TLS: a serving certificate signed by the cluster CA, and client
//! certificates verified against the cluster CA when a client offers one (a certificate of any other
//! CA fails the handshake). Who may do what is decided per request by [`crate::kubelet_auth`]: the
//! API server's certificate (`CN=kube-apiserver-kubelet-client`) passes, other users are reviewed.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

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

/// The endpoint's server configuration: `serving` for its identity; a client certificate is optional
/// but, when offered, must be signed by `ca_pem` for client use.
pub fn server_config(ca_pem: &str, serving: &ServingCert) -> Result<Arc<rustls::ServerConfig>, KubeletTlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&serving.cert_pem)?, key(&serving.key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
