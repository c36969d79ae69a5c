//! The cluster CA and the serving certificate, generated on first start and kept in the data
//! directory (`ca.crt`, `ca.key`, `server.crt`, `server.key`, all 0600), shaped as RFC 5280 asks
//! so strict verifiers (OpenSSL's `X509_V_FLAG_X509_STRICT`, Python 3.13's default) accept them:
//! the CA has a Subject Key Identifier, critical `basicConstraints` `CA:TRUE` and
//! `keyCertSign`/`cRLSign`; the serving certificate has Authority and Subject Key Identifiers,
//! `CA:FALSE`, `digitalSignature`/`keyEncipherment`, the `serverAuth` extended key usage and the
//! API server's names. Certificates an earlier version wrote without these are replaced on start:
//! the serving certificate always; the CA only when it itself lacks them (it then changes, and
//! clients need the new `ca.crt`/kubeconfig; a log line says so).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::files;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    File(#[from] files::FileError),
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    Ok(files::write_private(path, contents.as_bytes())?)
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "skiff-ca");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

/// The names every serving certificate carries besides the listen host: what clients inside and
/// outside the cluster dial (`kubernetes.default.svc` and its longer and shorter forms).
pub const SERVING_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The serving certificate's subject alternative names, deduplicated, in order.
fn serving_sans(hosts: &[String]) -> Result<Vec<SanType>, rcgen::Error> {
    let mut sans = Vec::new();
    for name in SERVING_NAMES.iter().map(|s| s.to_string()).chain(hosts.iter().cloned()) {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => continue,
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.try_into()?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn serving_params(hosts: &[String]) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = serving_sans(hosts)?;
    params.distinguished_name.push(DnType::CommonName, "skiff-apiserver");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

/// What a certificate says about itself, as far as these checks need.
#[derive(Debug, Default)]
struct Shape {
    ski: Option<Vec<u8>>,
    aki: Option<Vec<u8>>,
    ca: bool,
    ca_critical: bool,
    key_cert_sign: bool,
    server_auth: bool,
    dns: Vec<String>,
    ips: Vec<Vec<u8>>,
}

fn shape(pem_text: &str) -> Option<Shape> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let mut s = Shape::default();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => s.ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => s.aki = a.key_identifier.as_ref().map(|k| k.0.to_vec()),
            ParsedExtension::BasicConstraints(bc) => {
                s.ca = bc.ca;
                s.ca_critical = ext.critical;
            }
            ParsedExtension::KeyUsage(ku) => s.key_cert_sign = ku.key_cert_sign(),
            ParsedExtension::ExtendedKeyUsage(eku) => s.server_auth = eku.server_auth,
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => s.dns.push(d.to_string()),
                        GeneralName::IPAddress(ip) => s.ips.push(ip.to_vec()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(s)
}

/// A CA certificate strict verifiers accept as an issuer.
fn ca_is_usable(ca_pem: &str) -> bool {
    shape(ca_pem).is_some_and(|s| s.ski.is_some() && s.ca && s.ca_critical && s.key_cert_sign)
}

/// A serving certificate with every extension and name this version writes, issued by this CA.
fn serving_is_current(cert_pem: &str, ca_pem: &str, hosts: &[String]) -> bool {
    let (Some(cert), Some(ca)) = (shape(cert_pem), shape(ca_pem)) else { return false };
    let Ok(wanted) = serving_sans(hosts) else { return false };
    let names_present = wanted.iter().all(|san| match san {
        SanType::DnsName(d) => cert.dns.iter().any(|n| n == d.as_str()),
        SanType::IpAddress(IpAddr::V4(ip)) => cert.ips.iter().any(|b| b[..] == ip.octets()[..]),
        SanType::IpAddress(IpAddr::V6(ip)) => cert.ips.iter().any(|b| b[..] == ip.octets()[..]),
        _ => true,
    });
    cert.ski.is_some() && cert.aki.is_some() && cert.aki == ca.ski && cert.server_auth && !cert.ca && names_present
}

/// PEM files of the cluster's certificates.
pub struct Certificates {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Loads the certificates from `dir`, generating what is missing or outdated. `hosts` go into the
/// serving certificate's subject alternative names besides [`SERVING_NAMES`].
pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Certificates, TlsError> {
    files::private_dir(dir)?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (srv_crt, srv_key) = (dir.join("server.crt"), dir.join("server.key"));
    let existing_ca = if ca_crt.exists() && ca_key.exists() { Some(read(&ca_crt)?) } else { None };
    let ca_ok = match &existing_ca {
        None => false,
        Some(pem) if ca_is_usable(pem) => true,
        Some(_) => {
            tracing::warn!(
                path = %ca_crt.display(),
                "the cluster CA lacks a Subject Key Identifier or CA constraints; generating a new CA \
                 (clients must use the new ca.crt or kubeconfig)"
            );
            false
        }
    };
    if !ca_ok {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_private(&ca_key, &key.serialize_pem())?;
        write_private(&ca_crt, &cert.pem())?;
        let _ = std::fs::remove_file(&srv_crt);
    }
    for path in [&ca_crt, &ca_key, &srv_crt, &srv_key] {
        files::restrict(path)?;
    }
    let ca_pem = read(&ca_crt)?;
    let current = srv_crt.exists() && srv_key.exists() && serving_is_current(&read(&srv_crt)?, &ca_pem, hosts);
    if !current {
        if srv_crt.exists() {
            tracing::info!(path = %srv_crt.display(), "renewing the serving certificate (missing extensions or names)");
        }
        let ca_key_pair = KeyPair::from_pem(&read(&ca_key)?)?;
        // The stored CA's subject and key identifier: what the signature and AKI must name.
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key_pair)?;
        let key = KeyPair::generate()?;
        let cert = serving_params(hosts)?.signed_by(&key, &issuer)?;
        write_private(&srv_key, &key.serialize_pem())?;
        write_private(&srv_crt, &cert.pem())?;
    }
    Ok(Certificates { ca_pem, cert_pem: read(&srv_crt)?, key_pem: read(&srv_key)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_carry_rfc5280_extensions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = vec!["10.1.2.3".to_string(), "edge.example".to_string()];
        let certs = ensure(dir.path(), &hosts).expect("ensure");
        let ca = shape(&certs.ca_pem).expect("ca parses");
        assert!(ca.ski.is_some() && ca.ca && ca.ca_critical && ca.key_cert_sign, "{ca:?}");
        let srv = shape(&certs.cert_pem).expect("serving parses");
        assert_eq!(srv.aki, ca.ski, "AKI names the CA's key");
        assert!(srv.ski.is_some() && srv.server_auth && !srv.ca, "{srv:?}");
        for name in
            ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc.cluster.local", "edge.example"]
        {
            assert!(srv.dns.iter().any(|d| d == name), "{name} in {:?}", srv.dns);
        }
        assert!(srv.ips.contains(&vec![10, 1, 2, 3]) && srv.ips.contains(&vec![127, 0, 0, 1]));
        for f in ["ca.crt", "ca.key", "server.crt", "server.key"] {
            assert_eq!(files::mode(&dir.path().join(f)).expect("mode"), 0o600, "{f}");
        }

        // Unchanged on a second start; a new listen host renews only the serving certificate.
        let again = ensure(dir.path(), &hosts).expect("again");
        assert_eq!(again.cert_pem, certs.cert_pem);
        let moved = ensure(dir.path(), &["10.9.9.9".to_string()]).expect("moved");
        assert_eq!(moved.ca_pem, certs.ca_pem);
        assert_ne!(moved.cert_pem, certs.cert_pem);
        assert!(shape(&moved.cert_pem).expect("parses").ips.contains(&vec![10, 9, 9, 9]));
    }

    #[test]
    fn an_old_serving_certificate_is_renewed_and_an_old_ca_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        // What earlier versions wrote: a serving certificate without AKI, EKU or basicConstraints.
        let ca_key = KeyPair::generate().expect("key");
        let ca_cert = ca_params().expect("params").self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca_params().expect("params"), KeyPair::from_pem(&ca_key.serialize_pem()).expect("k"));
        let key = KeyPair::generate().expect("key");
        let mut old = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        old.distinguished_name.push(DnType::CommonName, "skiff-apiserver");
        let old_cert = old.signed_by(&key, &issuer).expect("old");
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).expect("w");
        std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).expect("w");
        std::fs::write(dir.path().join("server.crt"), old_cert.pem()).expect("w");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("w");
        assert!(!serving_is_current(&old_cert.pem(), &ca_cert.pem(), &[]));

        let certs = ensure(dir.path(), &[]).expect("ensure");
        assert_eq!(certs.ca_pem, ca_cert.pem(), "a usable CA is kept");
        assert!(serving_is_current(&certs.cert_pem, &certs.ca_pem, &[]));

        // A CA without a Subject Key Identifier (not CA-shaped) is replaced.
        let mut plain = CertificateParams::new(Vec::<String>::new()).expect("params");
        plain.distinguished_name.push(DnType::CommonName, "skiff-ca");
        let not_ca = plain.self_signed(&ca_key).expect("plain");
        std::fs::write(dir.path().join("ca.crt"), not_ca.pem()).expect("w");
        let certs = ensure(dir.path(), &[]).expect("ensure");
        assert_ne!(certs.ca_pem, not_ca.pem());
        assert!(ca_is_usable(&certs.ca_pem));
        assert!(serving_is_current(&certs.cert_pem, &certs.ca_pem, &[]));
    }
}
