//! Authentication: the admin bearer token, x509 client certificates verified by the TLS layer
//! against the cluster CA, and ServiceAccount JWTs. Secrets are compared in constant time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::service_account::{looks_like_jwt, Claims, LegacyClaims, TokenIssuer};

/// The Secret type of legacy ServiceAccount tokens.
pub const LEGACY_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
use super::{service_account_groups, service_account_user, UserInfo, AUTHENTICATED, MASTERS};
use crate::api::error::ApiError;
use crate::api::registry::Registry;

/// The identity of a verified client certificate, attached to every request of its connection.
#[derive(Clone, Debug)]
pub struct PeerIdentity(pub UserInfo);

/// The user of a verified client certificate: CN is the name, each O a group.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let mut groups: Vec<String> =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    groups.push(AUTHENTICATED.into());
    Some(UserInfo { name, groups, ..UserInfo::default() })
}

/// Authenticates requests.
pub struct Authenticator {
    admin_token: String,
    pub issuer: Arc<TokenIssuer>,
    registry: Arc<Registry>,
    cache: TokenCache,
}

/// How long a bearer token's successful authentication is reused, as kube-apiserver caches
/// token authentication: a deleted ServiceAccount or token Secret takes effect within this time.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// Tokens remembered at most; past it, expired entries go and then everything does.
const TOKEN_CACHE_CAPACITY: usize = 8192;

/// Successful authentications by the SHA-256 of the token (never the token itself).
#[derive(Default)]
struct TokenCache(parking_lot::Mutex<HashMap<[u8; 32], (Instant, UserInfo)>>);

fn token_digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

impl TokenCache {
    fn get(&self, digest: &[u8; 32]) -> Option<UserInfo> {
        let map = self.0.lock();
        map.get(digest).filter(|(until, _)| Instant::now() < *until).map(|(_, user)| user.clone())
    }

    fn put(&self, digest: [u8; 32], user: UserInfo, until: Instant) {
        let mut map = self.0.lock();
        if map.len() >= TOKEN_CACHE_CAPACITY {
            let now = Instant::now();
            map.retain(|_, (until, _)| now < *until);
            if map.len() >= TOKEN_CACHE_CAPACITY {
                map.clear();
            }
        }
        map.insert(digest, (until, user));
    }
}

/// The admin user.
pub fn admin() -> UserInfo {
    UserInfo { name: "admin".into(), groups: vec![MASTERS.into(), AUTHENTICATED.into()], ..UserInfo::default() }
}

/// The `exp` claim of a JWT, read without verification (only ever used to shorten a cache entry
/// of a token that was verified).
fn token_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("exp")?.as_i64()
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl Authenticator {
    pub fn new(admin_token: String, issuer: Arc<TokenIssuer>, registry: Arc<Registry>) -> Self {
        Self { admin_token, issuer, registry, cache: TokenCache::default() }
    }

    /// Who made the request: `Ok(None)` when it carries no credential (anonymous), 401 when a
    /// credential is presented and not valid.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
    ) -> Result<Option<UserInfo>, ApiError> {
        if let Some(token) = bearer(headers) {
            let digest = token_digest(token);
            if let Some(user) = self.cache.get(&digest) {
                return Ok(Some(user));
            }
            let (user, _) = self.token(token, None).await.map_err(|_| ApiError::Unauthorized)?;
            let mut until = Instant::now() + TOKEN_CACHE_TTL;
            // A token that expires sooner is never reused past its expiry.
            if let Some(exp) = token_expiry(token) {
                let left = exp.saturating_sub(jiff::Timestamp::now().as_second());
                until = until.min(Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0)));
            }
            // Only ServiceAccount JWTs are worth it (a signature check and reads per request);
            // a deleted bootstrap token stops working at once.
            if looks_like_jwt(token) {
                self.cache.put(digest, user.clone(), until);
            }
            return Ok(Some(user));
        }
        Ok(peer.map(|p| p.0.clone()))
    }

    /// Authenticates a bearer token against `audiences` (the API audiences when `None`):
    /// the user and the audiences it is valid for, or why not.
    pub async fn token(&self, token: &str, audiences: Option<&[String]>) -> Result<(UserInfo, Vec<String>), String> {
        if bool::from(token.as_bytes().ct_eq(self.admin_token.as_bytes())) {
            return Ok((
                admin(),
                audiences.map(<[String]>::to_vec).unwrap_or_else(|| self.issuer.api_audiences.clone()),
            ));
        }
        if let Some((id, secret)) = super::bootstrap_token::parse(token) {
            return self.bootstrap_token(id, secret).await.map(|user| (user, self.issuer.api_audiences.clone()));
        }
        if !looks_like_jwt(token) {
            return Err("invalid bearer token".into());
        }
        let claims = match self.issuer.verify(token, audiences) {
            Ok(claims) => claims,
            Err(bound_error) => {
                // A legacy Secret-based token is valid for the API audiences only.
                let for_api = audiences.is_none_or(|a| a.iter().any(|a| self.issuer.api_audiences.contains(a)));
                return match self.issuer.verify_legacy(token) {
                    Ok(legacy) if for_api => self.legacy_token(token, &legacy).await,
                    _ => Err(bound_error),
                };
            }
        };
        self.check_bound_objects(&claims).await?;
        let k = &claims.kubernetes;
        let wanted = audiences.map(<[String]>::to_vec).unwrap_or_else(|| self.issuer.api_audiences.clone());
        let matched: Vec<String> = claims.aud.iter().filter(|a| wanted.contains(a)).cloned().collect();
        let mut extra = std::collections::BTreeMap::new();
        if let Some(pod) = &k.pod {
            extra.insert("authentication.kubernetes.io/pod-name".into(), vec![pod.name.clone()]);
            extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![pod.uid.clone()]);
        }
        if !claims.jti.is_empty() {
            extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("JTI={}", claims.jti)]);
        }
        let user = UserInfo {
            name: service_account_user(&k.namespace, &k.serviceaccount.name),
            uid: k.serviceaccount.uid.clone(),
            groups: service_account_groups(&k.namespace),
            extra,
        };
        Ok((user, matched))
    }

    /// A legacy token is valid while its Secret (of type `kubernetes.io/service-account-token`)
    /// still holds it and its ServiceAccount exists with the uid it names.
    async fn legacy_token(&self, token: &str, claims: &LegacyClaims) -> Result<(UserInfo, Vec<String>), String> {
        let ns = Some(claims.namespace.as_str());
        let secret_ri = self.registry.resource("", "Secret").map_err(|e| e.to_string())?;
        let gone = || format!("token secret {}/{} has been deleted", claims.namespace, claims.secret_name);
        let secret = self.registry.get(secret_ri, ns, &claims.secret_name).await.map_err(|_| gone())?;
        let held = secret
            .pointer("/data/token")
            .and_then(serde_json::Value::as_str)
            .and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok())
            .unwrap_or_default();
        let of_type = secret.get("type").and_then(serde_json::Value::as_str) == Some(LEGACY_TOKEN_TYPE);
        if !of_type || !bool::from(held.ct_eq(token.as_bytes())) {
            return Err(gone());
        }
        let sa_ri = self.registry.resource("", "ServiceAccount").map_err(|e| e.to_string())?;
        let sa = self.registry.get(sa_ri, ns, &claims.service_account_name).await.map_err(|_| {
            format!("service account {}/{} has been deleted", claims.namespace, claims.service_account_name)
        })?;
        let uid = sa.pointer("/metadata/uid").and_then(serde_json::Value::as_str).unwrap_or_default();
        if !claims.service_account_uid.is_empty() && uid != claims.service_account_uid {
            return Err(format!("service account UID ({}) does not match claim", claims.service_account_uid));
        }
        let user = UserInfo {
            name: service_account_user(&claims.namespace, &claims.service_account_name),
            uid: uid.to_string(),
            groups: service_account_groups(&claims.namespace),
            ..UserInfo::default()
        };
        Ok((user, self.issuer.api_audiences.clone()))
    }

    /// A bootstrap token checked against its Secret in `kube-system`.
    async fn bootstrap_token(&self, id: &str, secret: &str) -> Result<UserInfo, String> {
        use super::bootstrap_token as bt;
        let ri = self.registry.resource("", "Secret").map_err(|e| e.to_string())?;
        let stored = self
            .registry
            .get(ri, Some(bt::NAMESPACE), &bt::secret_name(id))
            .await
            .map_err(|_| format!("bootstrap token {id} not found"))?;
        bt::verify(&stored, id, secret, jiff::Timestamp::now().as_second())
    }

    /// A token is valid only while its ServiceAccount (and bound pod or secret) exist with the
    /// uid it names, as Kubernetes checks.
    async fn check_bound_objects(&self, claims: &Claims) -> Result<(), String> {
        let k = &claims.kubernetes;
        let ns = Some(k.namespace.as_str());
        let uid_of = |obj: &serde_json::Value| obj.pointer("/metadata/uid").and_then(|v| v.as_str()).map(String::from);
        let sa_ri = self.registry.resource("", "ServiceAccount").map_err(|e| e.to_string())?;
        let sa = self
            .registry
            .get(sa_ri, ns, &k.serviceaccount.name)
            .await
            .map_err(|_| format!("service account {}/{} has been deleted", k.namespace, k.serviceaccount.name))?;
        if uid_of(&sa).as_deref() != Some(k.serviceaccount.uid.as_str()) {
            return Err(format!("service account UID ({}) does not match claim", k.serviceaccount.uid));
        }
        for (kind, bound) in [("Pod", &k.pod), ("Secret", &k.secret)] {
            let Some(bound) = bound else { continue };
            let ri = self.registry.resource("", kind).map_err(|e| e.to_string())?;
            let obj = self
                .registry
                .get(ri, ns, &bound.name)
                .await
                .map_err(|_| format!("{kind} {}/{} has been deleted", k.namespace, bound.name))?;
            if uid_of(&obj).as_deref() != Some(bound.uid.as_str()) {
                return Err(format!("{kind} UID ({}) does not match claim", bound.uid));
            }
        }
        Ok(())
    }
}
