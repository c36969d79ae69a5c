//! The identities of the API server to kubelet channel, issued by the cluster CA (`ca.crt`/`ca.key` in
//! the data directory): the API server's kubelet client certificate (what kubelets accept, and the
//! only thing they accept), and kubelets' serving certificates, given to the in-process agent directly
//! and to remote agents through `certificates.k8s.io/v1` CertificateSigningRequests
//! ([`crate::controllers::csr_signer`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The common name of the API server's kubelet client certificate (kube-apiserver's own name for it);
/// kubelets refuse any other client.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The signer of nodes' client certificates (their identity towards the API server).
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// The signer of client certificates for the API server (any subject, once approved).
pub const API_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// The shortest validity a request may ask for (`spec.expirationSeconds`), as Kubernetes.
const MIN_EXPIRATION_SECONDS: u64 = 600;

/// Days a kubelet or client certificate is valid (kube-controller-manager signs for a year).
const VALIDITY_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A CSR the signer will not sign; the message says why.
    #[error("{0}")]
    Refused(String),
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA, able to sign.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the CA certificate.
    pub ca_pem: String,
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io { path: path.to_path_buf(), source })
}

/// Writes `contents` readable by its owner only (0600).
fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| CertError::Io { path: path.to_path_buf(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

/// From an hour ago to `VALIDITY_DAYS` from now.
fn validity(params: &mut CertificateParams) {
    let now = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC);
    let at = |z: Option<jiff::Zoned>| {
        z.map(|z| rcgen::date_time_ymd(i32::from(z.year()), z.month().unsigned_abs(), z.day().unsigned_abs()))
    };
    if let Some(t) = at(now.checked_sub(jiff::Span::new().days(1)).ok()) {
        params.not_before = t;
    }
    if let Some(t) = at(now.checked_add(jiff::Span::new().days(VALIDITY_DAYS)).ok()) {
        params.not_after = t;
    }
}

fn dn(cn: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf(cn: &str, org: &str, usage: ExtendedKeyUsagePurpose) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(cn, org);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    Ok(params)
}

fn text(value: &DnValue) -> Option<String> {
    match value {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

impl CertAuthority {
    /// The CA kept in `dir` (`ca.crt`, `ca.key`, written by [`super::tls::ensure`]).
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let ca_pem = read(&dir.join("ca.crt"))?;
        let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)?;
        Ok(Self { issuer, ca_pem })
    }

    /// A new client certificate for the API server's calls to kubelets (`CN=kube-apiserver-kubelet-client`,
    /// `O=system:masters`), also written to `kubelet-client.crt`/`.key` (0600) in `dir` for operators.
    pub fn kubelet_client(&self, dir: &Path) -> Result<CertAndKey, CertError> {
        let key = KeyPair::generate()?;
        let params = leaf(KUBELET_CLIENT_CN, "system:masters", ExtendedKeyUsagePurpose::ClientAuth)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let out = CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        write_private(&dir.join("kubelet-client.key"), &out.key_pem)?;
        write_private(&dir.join("kubelet-client.crt"), &out.cert_pem)?;
        Ok(out)
    }

    /// A serving certificate for the kubelet of `node` (`CN=system:node:<node>`, `O=system:nodes`),
    /// valid for the given addresses and names.
    pub fn kubelet_serving(&self, node: &str, ips: &[IpAddr], dns: &[String]) -> Result<CertAndKey, CertError> {
        let key = KeyPair::generate()?;
        let mut params = leaf(&format!("system:node:{node}"), "system:nodes", ExtendedKeyUsagePurpose::ServerAuth)?;
        params.subject_alt_names = sans(ips, dns)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a kubelet-serving CSR (PKCS#10 PEM) for `node` whose addresses are `node_ips` and names
    /// `node_names`, as kube-controller-manager's kubelet-serving approver checks it: subject
    /// `CN=system:node:<node>, O=system:nodes`, at least one SAN, every IP and DNS SAN one of the node's
    /// own, no other SAN kind. Only the subject, SANs and key are taken from the request; usages,
    /// validity and constraints are the signer's.
    pub fn sign_kubelet_csr(
        &self,
        csr_pem: &str,
        node: &str,
        node_ips: &[IpAddr],
        node_names: &[String],
    ) -> Result<String, CertError> {
        let (csr, want) = node_request(csr_pem, node)?;
        if csr.params.subject_alt_names.is_empty() {
            return Err(CertError::Refused("a kubelet serving certificate needs at least one DNS or IP SAN".into()));
        }
        for san in &csr.params.subject_alt_names {
            let ok = match san {
                SanType::IpAddress(ip) => node_ips.contains(ip),
                SanType::DnsName(name) => node_names.iter().any(|n| n == name.as_str()),
                _ => false,
            };
            if !ok {
                return Err(CertError::Refused(format!("SAN {san:?} is not an address or name of node {node}")));
            }
        }
        let mut params = leaf(&want, "system:nodes", ExtendedKeyUsagePurpose::ServerAuth)?;
        params.subject_alt_names = csr.params.subject_alt_names.clone();
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(cert.pem())
    }
}

impl CertAuthority {
    /// Signs a node's client CSR (`kubernetes.io/kube-apiserver-client-kubelet`): subject
    /// `CN=system:node:<node>, O=system:nodes` and no SANs, as Kubernetes' signer requires; the
    /// certificate is for client authentication only.
    pub fn sign_node_client_csr(&self, csr_pem: &str, node: &str) -> Result<String, CertError> {
        let (csr, want) = node_request(csr_pem, node)?;
        if !csr.params.subject_alt_names.is_empty() {
            return Err(CertError::Refused("a node client certificate may not have SANs".into()));
        }
        let params = leaf(&want, "system:nodes", ExtendedKeyUsagePurpose::ClientAuth)?;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }
}

impl CertAuthority {
    /// Signs an approved `kubernetes.io/kube-apiserver-client` request, as kube-controller-manager's
    /// signer: the request's subject (common name and organizations) and SANs, for client
    /// authentication only, valid for `expiration_seconds` (at least ten minutes) or a year,
    /// whichever is shorter.
    pub fn sign_api_client_csr(&self, csr_pem: &str, expiration_seconds: Option<u64>) -> Result<String, CertError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CertError::Refused(format!("the request is not a PKCS#10 CSR: {e}")))?;
        let subject = &csr.params.distinguished_name;
        let cn = subject.get(&DnType::CommonName).and_then(text).unwrap_or_default();
        if cn.is_empty() {
            return Err(CertError::Refused("the request's subject has no common name".into()));
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        for (_, org) in subject.iter().filter(|(t, _)| **t == DnType::OrganizationName) {
            if let Some(org) = text(org) {
                dn.push(DnType::OrganizationName, org);
            }
        }
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = csr.params.subject_alt_names.clone();
        validity(&mut params);
        if let Some(seconds) = expiration_seconds {
            let year = u64::try_from(VALIDITY_DAYS).unwrap_or(365).saturating_mul(86_400);
            let seconds = seconds.clamp(MIN_EXPIRATION_SECONDS, year);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            params.not_after = rcgen::date_time_ymd(1970, 1, 1) + (now + std::time::Duration::from_secs(seconds));
        }
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }
}

/// A PKCS#10 request whose subject is exactly `CN=system:node:<node>, O=system:nodes`, and that CN.
fn node_request(csr_pem: &str, node: &str) -> Result<(CertificateSigningRequestParams, String), CertError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CertError::Refused(format!("the request is not a PKCS#10 CSR: {e}")))?;
    let subject = &csr.params.distinguished_name;
    let cn = subject.get(&DnType::CommonName).and_then(text);
    let orgs: Vec<String> =
        subject.iter().filter(|(t, _)| **t == DnType::OrganizationName).filter_map(|(_, v)| text(v)).collect();
    let want = format!("system:node:{node}");
    if cn.as_deref() != Some(want.as_str()) || orgs != ["system:nodes"] {
        return Err(CertError::Refused(format!(
            "subject must be CN={want}, O=system:nodes (got CN={}, O={})",
            cn.unwrap_or_default(),
            orgs.join(",")
        )));
    }
    Ok((csr, want))
}

fn sans(ips: &[IpAddr], dns: &[String]) -> Result<Vec<SanType>, CertError> {
    let mut out: Vec<SanType> = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    for name in dns {
        let san = SanType::DnsName(name.clone().try_into()?);
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (tempfile::TempDir, CertAuthority) {
        let dir = tempfile::tempdir().expect("tempdir");
        super::super::tls::ensure(dir.path(), &[]).expect("CA");
        let ca = CertAuthority::load(dir.path()).expect("load");
        (dir, ca)
    }

    fn csr(cn: &str, org: &str, sans: Vec<SanType>) -> String {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = dn(cn, org);
        params.subject_alt_names = sans;
        params.serialize_request(&key).expect("csr").pem().expect("pem")
    }

    #[test]
    fn the_client_certificate_is_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, ca) = ca();
        let pem = ca.kubelet_client(dir.path()).expect("client cert");
        assert!(pem.cert_pem.contains("BEGIN CERTIFICATE"));
        for f in ["kubelet-client.key", "kubelet-client.crt"] {
            let mode = std::fs::metadata(dir.path().join(f)).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    #[test]
    fn kubelet_csrs_are_signed_only_for_the_node_they_name() {
        let (_dir, ca) = ca();
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let (ips, names) = (vec![ip], vec!["n1".to_string()]);
        let good = csr("system:node:n1", "system:nodes", vec![SanType::IpAddress(ip)]);
        let cert = ca.sign_kubelet_csr(&good, "n1", &ips, &names).expect("signed");
        assert!(cert.contains("BEGIN CERTIFICATE"));
        let other_ip = csr("system:node:n1", "system:nodes", vec![SanType::IpAddress("10.9.9.9".parse().expect("ip"))]);
        let other_node = csr("system:node:n2", "system:nodes", vec![SanType::IpAddress(ip)]);
        let masters = csr("system:node:n1", "system:masters", vec![SanType::IpAddress(ip)]);
        let no_san = csr("system:node:n1", "system:nodes", vec![]);
        for bad in [other_ip, other_node, masters, no_san, "garbage".to_string()] {
            assert!(matches!(ca.sign_kubelet_csr(&bad, "n1", &ips, &names), Err(CertError::Refused(_))));
        }
    }
}
