//! TLS for the ingress: certificates from `kubernetes.io/tls` Secrets chosen by SNI over the
//! current snapshot's TLS hosts, and a self-signed default certificate for every other name
//! (and for a host whose Secret is missing or invalid).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::source::SecretKey;
use super::Snapshot;

/// Why a Secret gives no certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("secret \"{0}/{1}\" not found")]
    Missing(String, String),
    #[error("secret \"{0}/{1}\" has no {2}")]
    NoField(String, String, &'static str),
    #[error("secret \"{0}/{1}\": {2}")]
    Invalid(String, String, String),
    #[error("generating the default certificate: {0}")]
    Generate(String),
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificate and key of a `tls.crt`/`tls.key` Secret, checked to belong together.
pub fn certified_key(key: &SecretKey, secret: Option<&Secret>) -> Result<Arc<CertifiedKey>, CertError> {
    let (ns, name) = key.clone();
    let Some(secret) = secret else { return Err(CertError::Missing(ns, name)) };
    let data = secret.data.as_ref();
    let field = |f: &'static str| data.and_then(|d| d.get(f)).map(|b| b.0.as_slice()).filter(|b| !b.is_empty());
    let Some(crt) = field("tls.crt") else { return Err(CertError::NoField(ns, name, "tls.crt")) };
    let Some(pem_key) = field("tls.key") else { return Err(CertError::NoField(ns, name, "tls.key")) };
    let invalid = |e: String| CertError::Invalid(key.0.clone(), key.1.clone(), e);
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut &crt[..]).collect::<Result<_, _>>().map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no certificate in tls.crt".into()));
    }
    let private = rustls_pemfile::private_key(&mut &pem_key[..])
        .map_err(|e| invalid(e.to_string()))?
        .ok_or_else(|| invalid("no private key in tls.key".into()))?;
    let certified = CertifiedKey::from_der(certs, private, &provider()).map_err(|e| invalid(e.to_string()))?;
    Ok(Arc::new(certified))
}

/// A self-signed certificate for names no Secret covers.
pub fn default_cert() -> Result<Arc<CertifiedKey>, CertError> {
    let generated = rcgen::generate_simple_self_signed(vec!["skiff-ingress-default".to_string()])
        .map_err(|e| CertError::Generate(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let certified = CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider())
        .map_err(|e| CertError::Generate(e.to_string()))?;
    Ok(Arc::new(certified))
}

/// The certificates of every Secret the TLS hosts name: a Secret that gives none is left out
/// (its hosts get the default certificate), with the reason.
pub fn load(
    snapshot_tls: &super::route::TlsHosts<SecretKey>,
    secrets: &HashMap<SecretKey, Secret>,
) -> (HashMap<SecretKey, Arc<CertifiedKey>>, Vec<CertError>) {
    let mut certs = HashMap::new();
    let mut problems = Vec::new();
    for key in snapshot_tls.values() {
        if certs.contains_key(key) {
            continue;
        }
        match certified_key(key, secrets.get(key)) {
            Ok(c) => {
                certs.insert(key.clone(), c);
            }
            Err(e) => problems.push(e),
        }
    }
    (certs, problems)
}

/// Picks the certificate by SNI from the current snapshot.
#[derive(Debug)]
pub struct Resolver {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = Arc::clone(&self.snapshot.borrow());
        let chosen = hello.server_name().and_then(|n| snapshot.routes.tls.get(n)).and_then(|k| snapshot.certs.get(k));
        Some(chosen.cloned().unwrap_or_else(|| Arc::clone(&self.default)))
    }
}

/// The TLS server configuration (HTTP/2 and HTTP/1.1 by ALPN) over `resolver`.
pub fn server_config(resolver: Resolver) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(crt: &str, key: &str) -> Secret {
        let mut data = std::collections::BTreeMap::new();
        data.insert("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec()));
        data.insert("tls.key".to_string(), ByteString(key.as_bytes().to_vec()));
        Secret { data: Some(data), ..Default::default() }
    }

    #[test]
    fn secrets_give_certificates_or_clear_reasons() {
        let key = ("d".to_string(), "tls".to_string());
        let a = rcgen::generate_simple_self_signed(vec!["a.local".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.local".to_string()]).unwrap();
        assert!(certified_key(&key, Some(&secret(&a.cert.pem(), &a.signing_key.serialize_pem()))).is_ok());
        let mismatched = certified_key(&key, Some(&secret(&a.cert.pem(), &b.signing_key.serialize_pem())));
        assert!(matches!(mismatched, Err(CertError::Invalid(..))), "{mismatched:?}");
        let missing = certified_key(&key, None).unwrap_err();
        assert_eq!(missing.to_string(), "secret \"d/tls\" not found");
        let empty = certified_key(&key, Some(&secret("", "x"))).unwrap_err();
        assert_eq!(empty.to_string(), "secret \"d/tls\" has no tls.crt");
        assert!(matches!(certified_key(&key, Some(&secret("garbage", "garbage"))), Err(CertError::Invalid(..))));
        assert!(default_cert().is_ok());
    }
}
