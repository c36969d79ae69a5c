//! Authentication: the admin bearer token, x509 client certificates verified by the TLS layer
//! against the cluster CA, and ServiceAccount JWTs. Secrets are compared in constant time.

use std::sync::Arc;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::service_account::{looks_like_jwt, Claims, TokenIssuer};
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
}

/// The admin user.
pub fn admin() -> UserInfo {
    UserInfo { name: "admin".into(), groups: vec![MASTERS.into(), AUTHENTICATED.into()], ..UserInfo::default() }
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl Authenticator {
    pub fn new(admin_token: String, issuer: Arc<TokenIssuer>, registry: Arc<Registry>) -> Self {
        Self { admin_token, issuer, registry }
    }

    /// Who made the request: `Ok(None)` when it carries no credential (anonymous), 401 when a
    /// credential is presented and not valid.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
    ) -> Result<Option<UserInfo>, ApiError> {
        if let Some(token) = bearer(headers) {
            return self.token(token, None).await.map(|(user, _)| Some(user)).map_err(|_| ApiError::Unauthorized);
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
        let claims = self.issuer.verify(token, audiences)?;
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
