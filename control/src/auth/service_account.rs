//! ServiceAccount tokens: ES256 JWTs signed with a key kept in the data directory (`sa.key`,
//! 0600), with Kubernetes' claims (issuer, audiences, expiry, `kubernetes.io` bound objects),
//! and the issuer discovery documents (`/.well-known/openid-configuration`, JWKS).

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The issuer skiff writes into tokens (kubeadm's default).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("service account key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("service account key: {0}")]
    Key(String),
}

/// A name and uid of an object a token is bound to.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
}

/// The claims of a bound ServiceAccount token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// The issuer of legacy Secret-based ServiceAccount tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The claims of a legacy token, kept in a `kubernetes.io/service-account-token` Secret: no
/// audience and no expiry, valid while the Secret holds it and its ServiceAccount exists.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacyClaims {
    pub iss: String,
    pub sub: String,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    pub namespace: String,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name")]
    pub secret_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    pub service_account_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid")]
    pub service_account_uid: String,
}

/// Signs and verifies ServiceAccount tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    x: String,
    y: String,
    /// The audiences the API server accepts (default: the issuer).
    pub api_audiences: Vec<String>,
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenIssuer {
    /// Loads `sa.key` from `dir`, creating a new P-256 key on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join("sa.key");
        let io = |source| KeyError::Io { path: path.display().to_string(), source };
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate().map_err(|e| KeyError::Key(e.to_string()))?;
                let pem = key.serialize_pem();
                write_private(&path, &pem).map_err(io)?;
                pem
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_pem(&pem)
    }

    /// A signer from a PKCS#8 P-256 private key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| KeyError::Key(e.to_string()))?;
        let point = key.public_key_raw();
        if point.len() != 65 || point[0] != 4 {
            return Err(KeyError::Key("not an uncompressed P-256 public key".into()));
        }
        let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
        let kid =
            b64(ring::digest::digest(&ring::digest::SHA256, &rcgen::PublicKeyData::subject_public_key_info(&key))
                .as_ref());
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| KeyError::Key(e.to_string()))?;
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| KeyError::Key(e.to_string()))?;
        Ok(Self { encoding, decoding, kid, x, y, api_audiences: vec![ISSUER.to_string()] })
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Verifies signature, issuer, expiry, not-before and that one of `audiences` is in the
    /// token (the API audiences when `None`). Errors carry the reason for a TokenReview.
    pub fn verify(&self, token: &str, audiences: Option<&[String]>) -> Result<Claims, String> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(audiences.unwrap_or(&self.api_audiences));
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    /// Signs a legacy Secret-based token (see [`LegacyClaims`]).
    pub fn sign_legacy(&self, claims: &LegacyClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Verifies a legacy token's signature and issuer (it has no audience or expiry); whether
    /// its Secret and ServiceAccount still exist is the caller's check.
    pub fn verify_legacy(&self, token: &str) -> Result<LegacyClaims, String> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[LEGACY_ISSUER]);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["iss", "sub"]);
        jsonwebtoken::decode::<LegacyClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    /// `/.well-known/openid-configuration`.
    pub fn discovery(&self, base_url: &str) -> Value {
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{base_url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256", "x": self.x, "y": self.y}]})
    }
}

/// Whether a bearer token looks like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64, aud: &str) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:a:ci".into(),
            aud: vec![aud.into()],
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "a".into(),
                serviceaccount: ObjectRef { name: "ci".into(), uid: "u".into() },
                ..KubernetesClaims::default()
            },
        }
    }

    #[test]
    fn signs_and_verifies_with_the_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = TokenIssuer::load_or_create(dir.path()).expect("key");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("sa.key")).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = TokenIssuer::load_or_create(dir.path()).expect("reload");
        let now = jiff::Timestamp::now().as_second();
        let token = issuer.sign(&claims(now, ISSUER)).expect("sign");
        assert_eq!(again.verify(&token, None).expect("valid").kubernetes.serviceaccount.name, "ci");
        let wrong_aud = issuer.sign(&claims(now, "other")).expect("sign");
        assert!(issuer.verify(&wrong_aud, None).is_err());
        let mut expired = claims(now - 7200, ISSUER);
        expired.exp = now - 3600;
        assert!(issuer.verify(&issuer.sign(&expired).expect("sign"), None).is_err());
        let mut future = claims(now, ISSUER);
        future.nbf = now + 3600;
        assert!(issuer.verify(&issuer.sign(&future).expect("sign"), None).is_err());
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = TokenIssuer::load_or_create(other_dir.path()).expect("key");
        assert!(issuer.verify(&other.sign(&claims(now, ISSUER)).expect("sign"), None).is_err());
        assert_eq!(issuer.jwks()["keys"][0]["kty"], "EC");
    }

    #[test]
    fn legacy_tokens_verify_without_audience_or_expiry_and_never_as_bound_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = TokenIssuer::load_or_create(dir.path()).expect("key");
        let legacy = LegacyClaims {
            iss: LEGACY_ISSUER.into(),
            sub: "system:serviceaccount:a:old".into(),
            namespace: "a".into(),
            secret_name: "old-token".into(),
            service_account_name: "old".into(),
            service_account_uid: "u".into(),
        };
        let token = issuer.sign_legacy(&legacy).expect("sign");
        assert_eq!(issuer.verify_legacy(&token).expect("valid"), legacy);
        assert!(issuer.verify(&token, None).is_err(), "a legacy token is not a bound token");
        let now = jiff::Timestamp::now().as_second();
        let bound = issuer.sign(&claims(now, ISSUER)).expect("sign");
        assert!(issuer.verify_legacy(&bound).is_err(), "a bound token is not a legacy token");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = TokenIssuer::load_or_create(other_dir.path()).expect("key");
        assert!(issuer.verify_legacy(&other.sign_legacy(&legacy).expect("sign")).is_err());
    }
}
