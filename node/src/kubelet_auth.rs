//! Who may use the kubelet endpoint, decided the way the kubelet decides with webhook authentication
//! and authorization: the API server's own client certificate passes; any other client proves who it
//! is with a client certificate signed by the cluster CA or a bearer token the API server vouches for
//! (`TokenReview`), and the API server then says whether that user may do the request to this Node
//! (`SubjectAccessReview` for `nodes/<subresource>`). Both answers are cached for a short time.
//!
//! The API server itself still never sends a bearer token here: it presents its client certificate,
//! so a Node address that points elsewhere gets no credential to replay.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::kubelet_tls::API_SERVER_CLIENT_CN;

/// An authenticated user other than the API server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubeletUser {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: Vec<(String, Vec<String>)>,
}

/// Who a verified client certificate names (attached to each request of its connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// `CN=kube-apiserver-kubelet-client`: admitted to everything, as kubeadm binds it to
    /// `system:kubelet-api-admin`.
    ApiServer,
    /// Anyone else with a certificate of the cluster CA: `CN` the user, each `O` a group.
    User(KubeletUser),
}

/// The identity in a verified client certificate (DER).
pub fn peer_from_certificate(der: &[u8]) -> Option<Peer> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    if name == API_SERVER_CLIENT_CN {
        return Some(Peer::ApiServer);
    }
    let mut groups: Vec<String> =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    groups.push("system:authenticated".into());
    Some(Peer::User(KubeletUser { name, uid: String::new(), groups, extra: Vec::new() }))
}

/// What a request asks of the Node, as the kubelet names it: the verb from the method and the
/// `nodes` subresources that may allow it, the fine-grained one first and `proxy` as the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestAttributes {
    pub verb: &'static str,
    pub subresources: &'static [&'static str],
}

/// The kubelet's mapping of a request to its authorization attributes.
pub fn request_attributes(method: &Method, path: &str) -> RequestAttributes {
    let verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let under = |prefix: &str| path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'));
    let subresources: &'static [&'static str] = if under("/stats") {
        &["stats"]
    } else if under("/metrics") {
        &["metrics"]
    } else if under("/logs") {
        &["log"]
    } else if under("/spec") {
        &["spec"]
    } else if under("/checkpoint") {
        &["checkpoint"]
    } else if under("/pods") || under("/runningpods") {
        &["pods", "proxy"]
    } else if under("/healthz") {
        &["healthz", "proxy"]
    } else if under("/configz") {
        &["configz", "proxy"]
    } else {
        &["proxy"]
    };
    RequestAttributes { verb, subresources }
}

/// A review the API server could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(pub String);

/// The API server's answers, asked by the node with its own credentials.
#[async_trait::async_trait]
pub trait Reviews: Send + Sync {
    /// The user a bearer token belongs to (none: the API server does not know it).
    async fn authenticate(&self, token: &str) -> Result<Option<KubeletUser>, ReviewError>;

    /// Whether `user` may `verb` the subresource of this Node.
    async fn authorize(&self, user: &KubeletUser, verb: &str, subresource: &str) -> Result<bool, ReviewError>;
}

/// The reviews of an endpoint that admits the API server only: no token is known and nobody is
/// authorized (for endpoints without a client of the API server, such as tests').
pub struct NoReviews;

#[async_trait::async_trait]
impl Reviews for NoReviews {
    async fn authenticate(&self, _token: &str) -> Result<Option<KubeletUser>, ReviewError> {
        Ok(None)
    }

    async fn authorize(&self, _user: &KubeletUser, _verb: &str, _subresource: &str) -> Result<bool, ReviewError> {
        Ok(false)
    }
}

/// How long answers are reused: the kubelet's defaults (`authentication.webhook.cacheTTL` 2 min;
/// `authorization.webhook.cacheAuthorizedTTL` 5 min, `cacheUnauthorizedTTL` 30 s), and 10 s for a
/// token the API server did not recognise.
const TOKEN_TTL: Duration = Duration::from_secs(120);
const UNKNOWN_TOKEN_TTL: Duration = Duration::from_secs(10);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries kept at most per cache; past it, expired entries go and then everything does.
const CACHE_CAPACITY: usize = 4096;

/// Answers that expire.
struct Expiring<K, V>(parking_lot::Mutex<HashMap<K, (Instant, V)>>);

impl<K: Hash + Eq, V: Clone> Expiring<K, V> {
    fn new() -> Self {
        Self(parking_lot::Mutex::new(HashMap::new()))
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.0.lock();
        entries.get(key).filter(|(until, _)| *until > Instant::now()).map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.0.lock();
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }
}

/// Why a request was turned away, answered as the kubelet answers (plain text).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or one the API server does not vouch for.
    Unauthorized,
    /// A known user without the right.
    Forbidden { user: String, verb: &'static str, subresource: &'static str },
    /// The API server could not say.
    AuthorizationError { user: String, verb: &'static str, subresource: &'static str },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (code, message) = match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized".to_string()),
            Self::Forbidden { user, verb, subresource } => (
                StatusCode::FORBIDDEN,
                format!("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={subresource})"),
            ),
            Self::AuthorizationError { user, verb, subresource } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization error (user={user}, verb={verb}, resource=nodes, subresource={subresource})"),
            ),
        };
        (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
    }
}

/// The endpoint's gate: authentication and authorization with cached answers.
pub struct Gate {
    reviews: Arc<dyn Reviews>,
    tokens: Expiring<[u8; 32], Option<KubeletUser>>,
    decisions: Expiring<(KubeletUser, &'static str, &'static str), bool>,
}

impl Gate {
    pub fn new(reviews: Arc<dyn Reviews>) -> Self {
        Self { reviews, tokens: Expiring::new(), decisions: Expiring::new() }
    }

    /// Admits a request from `peer` (its certificate) or with `token` (its bearer token), or says why not.
    pub async fn admit(
        &self,
        peer: Option<&Peer>,
        token: Option<&str>,
        attributes: RequestAttributes,
    ) -> Result<(), Refusal> {
        let user = match (peer, token) {
            (Some(Peer::ApiServer), _) => return Ok(()),
            (Some(Peer::User(user)), _) => user.clone(),
            (None, Some(token)) => self.authenticate(token).await.ok_or(Refusal::Unauthorized)?,
            (None, None) => return Err(Refusal::Unauthorized),
        };
        let RequestAttributes { verb, subresources } = attributes;
        let mut last = "proxy";
        for &subresource in subresources {
            last = subresource;
            if self.authorize(&user, verb, subresource).await? {
                return Ok(());
            }
        }
        Err(Refusal::Forbidden { user: user.name, verb, subresource: last })
    }

    /// The token's user; an API server that cannot be asked authenticates nobody.
    async fn authenticate(&self, token: &str) -> Option<KubeletUser> {
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        if let Some(known) = self.tokens.get(&digest) {
            return known;
        }
        match self.reviews.authenticate(token).await {
            Ok(user) => {
                let ttl = if user.is_some() { TOKEN_TTL } else { UNKNOWN_TOKEN_TTL };
                self.tokens.put(digest, user.clone(), ttl);
                user
            }
            Err(e) => {
                tracing::warn!(error = %e, "kubelet endpoint: token review failed");
                None
            }
        }
    }

    async fn authorize(
        &self,
        user: &KubeletUser,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<bool, Refusal> {
        let key = (user.clone(), verb, subresource);
        if let Some(allowed) = self.decisions.get(&key) {
            return Ok(allowed);
        }
        match self.reviews.authorize(user, verb, subresource).await {
            Ok(allowed) => {
                self.decisions.put(key, allowed, if allowed { ALLOWED_TTL } else { DENIED_TTL });
                Ok(allowed)
            }
            Err(e) => {
                tracing::warn!(error = %e, user = %user.name, verb, subresource, "kubelet endpoint: access review failed");
                Err(Refusal::AuthorizationError { user: user.name.clone(), verb, subresource })
            }
        }
    }
}

/// The bearer token of a request, if any.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The middleware in front of every route of the endpoint.
pub async fn guard(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let attributes = request_attributes(request.method(), request.uri().path());
    let span = tracing::debug_span!("kubelet_admit", verb = attributes.verb, path = %request.uri().path());
    let admitted = gate.admit(request.extensions().get::<Peer>(), bearer(&request), attributes).instrument(span).await;
    match admitted {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(?refusal, "kubelet endpoint: request refused");
            refusal.into_response()
        }
    }
}

#[cfg(test)]
#[path = "kubelet_auth_tests.rs"]
pub(crate) mod tests;
