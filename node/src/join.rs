//! Joining a cluster with a k3s-style token `K10<sha256 of the CA>::<id>.<secret>`: the agent
//! fetches the server's CA from `/cacerts` (before it can trust anything), accepts it only if its
//! SHA-256 is the token's, then uses the bootstrap token `<id>.<secret>` once, to have its own client
//! certificate (`system:node:<name>`) signed through a CertificateSigningRequest. The CA, the
//! certificate and its key are kept (0600) in the agent's data directory, so a restarted agent
//! comes back with its own identity and never needs the token again.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the join token is malformed (want K10<sha256 of the CA>::<id>.<secret>): {0}")]
    Malformed(&'static str),
    #[error("fetching the cluster CA from {url}: {detail}")]
    FetchCa { url: String, detail: String },
    #[error("the server's CA does not match the join token: its SHA-256 is {got}, the token pins {want}")]
    CaMismatch { want: String, got: String },
    #[error("getting this node's client certificate with the join token: {0}")]
    Credentials(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex SHA-256 of the CA bundle the server serves at `/cacerts`.
    pub ca_hash: String,
    /// The bootstrap token, `<id>.<secret>`.
    pub bootstrap: String,
}

impl std::str::FromStr for JoinToken {
    type Err = JoinError;

    fn from_str(s: &str) -> Result<Self, JoinError> {
        let rest = s.trim().strip_prefix("K10").ok_or(JoinError::Malformed("no K10 prefix"))?;
        let (hash, bootstrap) = rest.split_once("::").ok_or(JoinError::Malformed("no :: separator"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JoinError::Malformed("the CA hash is not 64 hex digits"));
        }
        let (id, secret) = bootstrap.split_once('.').ok_or(JoinError::Malformed("the token is not <id>.<secret>"))?;
        let shaped =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !shaped(id, 6) || !shaped(secret, 16) {
            return Err(JoinError::Malformed("the token is not [a-z0-9]{6}.[a-z0-9]{16}"));
        }
        Ok(Self { ca_hash: hash.to_ascii_lowercase(), bootstrap: bootstrap.to_string() })
    }
}

/// The token string for a CA bundle and a bootstrap token.
pub fn format_token(ca_pem: &str, bootstrap: &str) -> String {
    format!("K10{}::{bootstrap}", ca_hash(ca_pem))
}

/// Lower-case hex SHA-256 of a CA bundle's bytes.
pub fn ca_hash(ca_pem: &str) -> String {
    Sha256::digest(ca_pem.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a joined node keeps in its data directory.
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "node-client.crt";
const KEY_FILE: &str = "node-client.key";

impl Identity {
    /// The identity kept in `dir` by an earlier join, if there is one.
    pub fn load(dir: &Path) -> Option<Self> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        Some(Self { ca_pem: read(CA_FILE)?, cert_pem: read(CERT_FILE)?, key_pem: read(KEY_FILE)? })
    }

    fn save(&self, dir: &Path) -> Result<(), JoinError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir).map_err(|source| JoinError::Io { path: dir.into(), source })?;
        for (file, contents) in [(CA_FILE, &self.ca_pem), (CERT_FILE, &self.cert_pem), (KEY_FILE, &self.key_pem)] {
            let path = dir.join(file);
            let staged = dir.join(format!(".{file}.new"));
            let io = |source| JoinError::Io { path: path.clone(), source };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&staged)
                .map_err(io)?;
            f.write_all(contents.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&staged, &path).map_err(io)?;
        }
        Ok(())
    }
}

/// Joins: the CA checked against the token, then a client certificate for `node`, kept in `dir`.
#[tracing::instrument(skip_all, fields(server = server_url, node))]
pub async fn join(server_url: &str, token: &JoinToken, node: &str, dir: &Path) -> Result<Identity, JoinError> {
    let ca_pem = fetch_ca(server_url).await?;
    let got = ca_hash(&ca_pem);
    if got != token.ca_hash {
        return Err(JoinError::CaMismatch { want: token.ca_hash.clone(), got });
    }
    let config = crate::config::AgentConfig::new(node, server_url, &ca_pem, &token.bootstrap, dir.to_path_buf());
    let client = crate::client::connect(&config).await.map_err(|e| JoinError::Credentials(e.to_string()))?;
    let (cert_pem, key_pem) =
        crate::kubelet_csr::obtain_client(&client, node).await.map_err(|e| JoinError::Credentials(e.to_string()))?;
    let identity = Identity { ca_pem, cert_pem, key_pem };
    identity.save(dir)?;
    tracing::info!("joined the cluster with a node client certificate");
    Ok(identity)
}

/// The CA bundle the server serves at `/cacerts`, fetched without verifying the server (there is
/// nothing to verify it with yet); the caller pins it by hash.
async fn fetch_ca(server_url: &str) -> Result<String, JoinError> {
    let url = format!("{}/cacerts", server_url.trim_end_matches('/'));
    let fail = |detail: String| JoinError::FetchCa { url: url.clone(), detail };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let uri: http::Uri = server_url.parse().map_err(|e| fail(format!("{e}")))?;
    let mut config = kube::Config::new(uri);
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config).map_err(|e| fail(e.to_string()))?;
    let request = http::Request::get("/cacerts").body(Vec::new()).map_err(|e| fail(e.to_string()))?;
    let pem = client.request_text(request).await.map_err(|e| fail(e.to_string()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(fail("the answer is not a PEM certificate".into()));
    }
    Ok(pem)
}

/// Creates a bootstrap token (the Secret `bootstrap-token-<id>` in `kube-system`, usable for
/// authentication until `ttl` from now) with the admin `kubeconfig`, and returns the join token
/// that pins `ca_pem`.
pub async fn create_token(kubeconfig: &Path, ca_pem: &str, ttl: std::time::Duration) -> Result<String, JoinError> {
    use k8s_openapi::api::core::v1::Secret;
    use rand::Rng;
    let fail = |e: &dyn std::fmt::Display| JoinError::Credentials(e.to_string());
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut pick =
        |n: usize| -> String { (0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect() };
    let (id, secret) = (pick(6), pick(16));
    let ttl = jiff::SignedDuration::try_from(ttl).map_err(|e| fail(&e))?;
    let expiration = jiff::Timestamp::now().checked_add(ttl).map_err(|e| fail(&e))?;
    let client = crate::client::from_kubeconfig(kubeconfig).await.map_err(|e| fail(&e))?;
    let data = [
        ("token-id", id.clone()),
        ("token-secret", secret.clone()),
        ("expiration", expiration.to_string()),
        ("usage-bootstrap-authentication", "true".into()),
        ("usage-bootstrap-signing", "true".into()),
        ("auth-extra-groups", "system:bootstrappers:skiff:nodes".into()),
        ("description", "a skiff node join token (skiff token create)".into()),
    ];
    let token_secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(format!("bootstrap-token-{id}")), ..Default::default() },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(data.into_iter().map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    };
    let api: kube::Api<Secret> = kube::Api::namespaced(client, "kube-system");
    api.create(&Default::default(), &token_secret).await.map_err(|e| fail(&e))?;
    Ok(format_token(ca_pem, &format!("{id}.{secret}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_format() {
        let pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let token = format_token(pem, "abcdef.0123456789abcdef");
        let parsed: JoinToken = token.parse().expect("parses");
        assert_eq!(parsed.ca_hash, ca_hash(pem));
        assert_eq!(parsed.bootstrap, "abcdef.0123456789abcdef");
        for bad in [
            "abcdef.0123456789abcdef",
            "K10abc::abcdef.0123456789abcdef",
            &format!("K10{}::abcdef", ca_hash(pem)),
            &format!("K10{}::ABCDEF.0123456789abcdef", ca_hash(pem)),
            &format!("K10{}abcdef.0123456789abcdef", ca_hash(pem)),
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_identity_is_kept_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Identity { ca_pem: "ca".into(), cert_pem: "cert".into(), key_pem: "key".into() };
        id.save(dir.path()).expect("save");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Identity::load(dir.path()).expect("load");
        assert_eq!((loaded.ca_pem.as_str(), loaded.key_pem.as_str()), ("ca", "key"));
    }
}
