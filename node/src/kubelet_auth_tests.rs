//! Tests of the kubelet endpoint's gate over a fake API server's reviews.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Tokens `alice` and `broken`; alice may `get` `nodes/metrics` and `nodes/proxy`, nothing else.
/// `broken` authenticates, but every access review of its user fails.
#[derive(Default)]
pub(crate) struct FakeReviews {
    pub token_reviews: AtomicUsize,
    pub access_reviews: AtomicUsize,
}

pub(crate) fn user(name: &str) -> KubeletUser {
    KubeletUser {
        name: name.into(),
        uid: String::new(),
        groups: vec!["system:authenticated".into()],
        extra: Vec::new(),
    }
}

#[async_trait::async_trait]
impl Reviews for FakeReviews {
    async fn authenticate(&self, token: &str) -> Result<Option<KubeletUser>, ReviewError> {
        self.token_reviews.fetch_add(1, Ordering::SeqCst);
        match token {
            "alice-token" => Ok(Some(user("alice"))),
            "broken-token" => Ok(Some(user("broken"))),
            "unreachable" => Err(ReviewError("connection refused".into())),
            _ => Ok(None),
        }
    }

    async fn authorize(&self, who: &KubeletUser, verb: &str, subresource: &str) -> Result<bool, ReviewError> {
        self.access_reviews.fetch_add(1, Ordering::SeqCst);
        match who.name.as_str() {
            "broken" => Err(ReviewError("the API server is away".into())),
            "alice" => Ok(verb == "get" && matches!(subresource, "metrics" | "proxy")),
            _ => Ok(false),
        }
    }
}

fn gate() -> (Gate, Arc<FakeReviews>) {
    let reviews = Arc::new(FakeReviews::default());
    (Gate::new(reviews.clone()), reviews)
}

fn get(path: &str) -> RequestAttributes {
    request_attributes(&Method::GET, path)
}

#[test]
fn requests_map_to_the_kubelets_verbs_and_subresources() {
    let cases: [(Method, &str, &str, &[&str]); 12] = [
        (Method::GET, "/stats/summary", "get", &["stats"]),
        (Method::GET, "/stats", "get", &["stats"]),
        (Method::GET, "/metrics", "get", &["metrics"]),
        (Method::GET, "/metrics/cadvisor", "get", &["metrics"]),
        (Method::GET, "/logs/syslog", "get", &["log"]),
        (Method::GET, "/pods", "get", &["pods", "proxy"]),
        (Method::GET, "/healthz", "get", &["healthz", "proxy"]),
        (Method::POST, "/exec/ns/pod/c", "create", &["proxy"]),
        (Method::GET, "/exec/ns/pod/c", "get", &["proxy"]),
        (Method::GET, "/containerLogs/ns/pod/c", "get", &["proxy"]),
        // A prefix that only looks like one: not the stats API.
        (Method::GET, "/statsfoo", "get", &["proxy"]),
        (Method::DELETE, "/spec/", "delete", &["spec"]),
    ];
    for (method, path, verb, subresources) in cases {
        let attrs = request_attributes(&method, path);
        assert_eq!((attrs.verb, attrs.subresources), (verb, subresources), "{method} {path}");
    }
    assert_eq!(request_attributes(&Method::PUT, "/x").verb, "update");
    assert_eq!(request_attributes(&Method::PATCH, "/x").verb, "patch");
    assert_eq!(request_attributes(&Method::HEAD, "/x").verb, "get");
}

#[tokio::test]
async fn the_api_server_passes_without_a_review() {
    let (gate, reviews) = gate();
    assert_eq!(gate.admit(Some(&Peer::ApiServer), None, get("/exec/a/b/c")).await, Ok(()));
    // Its certificate counts even when a token comes along.
    assert_eq!(gate.admit(Some(&Peer::ApiServer), Some("nobody"), get("/pods")).await, Ok(()));
    assert_eq!(reviews.token_reviews.load(Ordering::SeqCst) + reviews.access_reviews.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_credential_or_an_unknown_token_is_unauthorized() {
    let (gate, _) = gate();
    assert_eq!(gate.admit(None, None, get("/healthz")).await, Err(Refusal::Unauthorized));
    assert_eq!(gate.admit(None, Some("forged"), get("/healthz")).await, Err(Refusal::Unauthorized));
    // An API server that cannot be asked authenticates nobody.
    assert_eq!(gate.admit(None, Some("unreachable"), get("/healthz")).await, Err(Refusal::Unauthorized));
}

#[tokio::test]
async fn a_token_users_rights_come_from_the_access_review() {
    let (gate, reviews) = gate();
    assert_eq!(gate.admit(None, Some("alice-token"), get("/metrics")).await, Ok(()));
    // `/pods` is allowed through the `proxy` fallback once `pods` is refused.
    assert_eq!(gate.admit(None, Some("alice-token"), get("/pods")).await, Ok(()));
    let exec = request_attributes(&Method::POST, "/exec/ns/pod/c");
    let forbidden = Refusal::Forbidden { user: "alice".into(), verb: "create", subresource: "proxy" };
    assert_eq!(gate.admit(None, Some("alice-token"), exec).await, Err(forbidden));
    let stats = Refusal::Forbidden { user: "alice".into(), verb: "get", subresource: "stats" };
    assert_eq!(gate.admit(None, Some("alice-token"), get("/stats/summary")).await, Err(stats));

    // Answers are cached: the same requests again ask the API server nothing more.
    let asked = (reviews.token_reviews.load(Ordering::SeqCst), reviews.access_reviews.load(Ordering::SeqCst));
    assert_eq!(asked, (1, 5), "one token review; metrics, pods, proxy, exec, stats");
    assert_eq!(gate.admit(None, Some("alice-token"), get("/metrics")).await, Ok(()));
    assert!(gate.admit(None, Some("alice-token"), exec).await.is_err());
    assert_eq!((reviews.token_reviews.load(Ordering::SeqCst), reviews.access_reviews.load(Ordering::SeqCst)), asked);
}

#[tokio::test]
async fn a_certificate_user_is_reviewed_like_a_token_user() {
    let (gate, reviews) = gate();
    let mallory = Peer::User(user("system:node:other"));
    let refused = Refusal::Forbidden { user: "system:node:other".into(), verb: "get", subresource: "metrics" };
    assert_eq!(gate.admit(Some(&mallory), None, get("/metrics")).await, Err(refused));
    assert_eq!(reviews.token_reviews.load(Ordering::SeqCst), 0, "a certificate needs no token review");
    let alice = Peer::User(user("alice"));
    assert_eq!(gate.admit(Some(&alice), Some("forged"), get("/metrics")).await, Ok(()));
}

#[tokio::test]
async fn a_failed_access_review_is_an_authorization_error_and_not_cached() {
    let (gate, reviews) = gate();
    let error = Refusal::AuthorizationError { user: "broken".into(), verb: "get", subresource: "metrics" };
    assert_eq!(gate.admit(None, Some("broken-token"), get("/metrics")).await, Err(error));
    assert!(gate.admit(None, Some("broken-token"), get("/metrics")).await.is_err());
    assert_eq!(reviews.access_reviews.load(Ordering::SeqCst), 2, "an error is asked again");
}

#[test]
fn refusals_answer_as_the_kubelet_does() {
    let forbidden = Refusal::Forbidden { user: "bob".into(), verb: "get", subresource: "proxy" }.into_response();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert_eq!(Refusal::Unauthorized.into_response().status(), StatusCode::UNAUTHORIZED);
    let error = Refusal::AuthorizationError { user: "bob".into(), verb: "get", subresource: "proxy" };
    assert_eq!(error.into_response().status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn certificates_name_the_api_server_or_a_user_with_groups() {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let der = |cn: &str, orgs: &[&str]| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.self_signed(&key).expect("cert").der().to_vec()
    };
    assert_eq!(peer_from_certificate(&der(API_SERVER_CLIENT_CN, &["system:masters"])), Some(Peer::ApiServer));
    let Some(Peer::User(user)) = peer_from_certificate(&der("jane", &["dev"])) else { panic!("a user") };
    assert_eq!((user.name.as_str(), user.groups), ("jane", vec!["dev".to_string(), "system:authenticated".into()]));
    assert_eq!(peer_from_certificate(b"not a certificate"), None);
}
