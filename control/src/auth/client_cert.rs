//! x509 client certificates: the TLS layer asks for a certificate signed by the cluster CA but
//! lets clients without one through (bearer tokens still work); a verified certificate's user
//! (CN, O groups) is attached to every request of its connection as a [`PeerIdentity`].

use std::io;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;

use super::authn::{user_from_certificate, PeerIdentity};
use crate::server::tls::Certificates;

/// The API server's rustls configuration: its serving certificate, HTTP/2 and HTTP/1.1 by ALPN,
/// and client certificates verified against the cluster CA when a client offers one.
pub fn server_config(certs: &Certificates) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<_> =
        rustls_pemfile::certs(&mut certs.cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut certs.key_pem.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("no private key in server.key")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut certs.ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The identity a verified client certificate gives every request of its connection
/// ([`skiff_tls::peer::PeerAcceptor`] attaches it).
pub fn peer_identity(der: &[u8]) -> Option<PeerIdentity> {
    user_from_certificate(der).map(PeerIdentity)
}

/// Writes a client certificate and key signed by the cluster CA for `user` in `groups`
/// (`<dir>/<file>.crt`, `.key`, 0600) unless present; returns their PEM.
pub fn ensure_client_certificate(
    dir: &std::path::Path,
    file: &str,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), String> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
    let (crt, key) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
    if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
        return Ok((c, k));
    }
    let ca_key = std::fs::read_to_string(dir.join("ca.key")).map_err(|e| e.to_string())?;
    let ca_crt = std::fs::read_to_string(dir.join("ca.crt")).map_err(|e| e.to_string())?;
    let ca_key = KeyPair::from_pem(&ca_key).map_err(|e| e.to_string())?;
    let issuer = Issuer::from_ca_cert_pem(&ca_crt, ca_key).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        params.distinguished_name.push(DnType::OrganizationName, *g);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let pair = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&pair, &issuer).map_err(|e| e.to_string())?;
    let (cert_pem, key_pem) = (cert.pem(), pair.serialize_pem());
    for (path, contents) in [(&key, &key_pem), (&crt, &cert_pem)] {
        write_private(path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok((cert_pem, key_pem))
}

fn write_private(path: &std::path::Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}
