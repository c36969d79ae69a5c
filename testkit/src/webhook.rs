//! A test admission webhook host: HTTPS (rustls, a certificate from a test CA made with rcgen)
//! on a loopback or network-namespace address, answering AdmissionReviews by path:
//!
//! - `/allow`: allowed.
//! - `/deny`: denied with code 403 and the message `the test webhook refuses <name>`.
//! - `/label`: allowed with a JSON Patch adding the label `webhook.skiff.dev/mutated: "yes"`.
//! - `/annotate`: allowed with a JSON Patch setting the annotation [`ANNOTATION`] (`"yes"`).
//! - `/slow`: answers (allowed) after [`SLOW`], past any timeout a test sets.
//! - `/garbage`: a body that is not JSON.
//! - `/wrong-uid`: allowed, for a uid that is not the request's.
//!
//! Every review received is recorded ([`WebhookHost::reviews`]). The server runs on its own
//! thread and stops when the host is dropped.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// How long `/slow` waits before answering.
pub const SLOW: Duration = Duration::from_secs(4);
/// The label `/label` adds.
pub const LABEL: &str = "webhook.skiff.dev/mutated";
/// The annotation `/annotate` sets.
pub const ANNOTATION: &str = "webhook.skiff.dev/annotated";

/// See the module documentation.
pub struct WebhookHost {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// The PEM of the CA that signed the server's certificate.
    pub ca_pem: String,
    reviews: Arc<Mutex<Vec<Value>>>,
    /// The server; stopped when the host is dropped.
    _host: TlsHost,
}

type Reviews = Arc<Mutex<Vec<Value>>>;

fn pki(names: &[String]) -> Result<(String, String, String), String> {
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "skiff test webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_pem = ca.self_signed(&ca_key).map_err(|e| e.to_string())?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut leaf = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    leaf.distinguished_name.push(DnType::CommonName, "skiff test webhook");
    let cert = leaf.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    Ok((ca_pem, cert.pem(), key.serialize_pem()))
}

fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    let certs =
        rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).map_err(|e| e.to_string())?.ok_or("no key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn answer(uid: &str, allowed: bool) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": uid, "allowed": allowed}})
}

fn uid_of(review: &Value) -> String {
    review.pointer("/request/uid").and_then(Value::as_str).unwrap_or("").to_string()
}

fn record(reviews: &Reviews, review: &Value) {
    if let Ok(mut r) = reviews.lock() {
        r.push(review.clone());
    }
}

async fn allow(State(reviews): State<Reviews>, Json(review): Json<Value>) -> Json<Value> {
    record(&reviews, &review);
    Json(answer(&uid_of(&review), true))
}

async fn deny(State(reviews): State<Reviews>, Json(review): Json<Value>) -> Json<Value> {
    record(&reviews, &review);
    let name = review.pointer("/request/name").and_then(Value::as_str).unwrap_or("");
    let mut out = answer(&uid_of(&review), false);
    out["response"]["status"] =
        json!({"code": 403, "reason": "Forbidden", "message": format!("the test webhook refuses {name}")});
    Json(out)
}

async fn label(State(reviews): State<Reviews>, Json(review): Json<Value>) -> Json<Value> {
    record(&reviews, &review);
    let has_labels = review.pointer("/request/object/metadata/labels").is_some_and(Value::is_object);
    let key = LABEL.replace('~', "~0").replace('/', "~1");
    let ops = if has_labels {
        json!([{"op": "add", "path": format!("/metadata/labels/{key}"), "value": "yes"}])
    } else {
        json!([{"op": "add", "path": "/metadata/labels", "value": {LABEL: "yes"}}])
    };
    let mut out = answer(&uid_of(&review), true);
    out["response"]["patchType"] = json!("JSONPatch");
    out["response"]["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(ops.to_string()));
    out["response"]["warnings"] = json!(["the test webhook added a label"]);
    Json(out)
}

async fn annotate(State(reviews): State<Reviews>, Json(review): Json<Value>) -> Json<Value> {
    record(&reviews, &review);
    let has = review.pointer("/request/object/metadata/annotations").is_some_and(Value::is_object);
    let key = ANNOTATION.replace('~', "~0").replace('/', "~1");
    let ops = if has {
        json!([{"op": "add", "path": format!("/metadata/annotations/{key}"), "value": "yes"}])
    } else {
        json!([{"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION: "yes"}}])
    };
    let mut out = answer(&uid_of(&review), true);
    out["response"]["patchType"] = json!("JSONPatch");
    out["response"]["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(ops.to_string()));
    Json(out)
}

async fn slow(State(reviews): State<Reviews>, Json(review): Json<Value>) -> Json<Value> {
    record(&reviews, &review);
    tokio::time::sleep(SLOW).await;
    Json(answer(&uid_of(&review), true))
}

async fn garbage(State(reviews): State<Reviews>, Json(review): Json<Value>) -> &'static str {
    record(&reviews, &review);
    "this is not an AdmissionReview"
}

async fn wrong_uid(State(reviews): State<Reviews>, Json(review): Json<Value>) -> Json<Value> {
    record(&reviews, &review);
    Json(answer("not-the-request-uid", true))
}

impl WebhookHost {
    /// Serves on `ip` (a free port) with a certificate for `ip` and the DNS `names` given.
    pub fn start(ip: IpAddr, names: &[&str]) -> Result<Self, String> {
        Self::start_in(None, ip, names)
    }

    /// As [`WebhookHost::start`], inside the network namespace `/var/run/netns/<netns>`.
    pub fn start_in_netns(netns: &str, ip: IpAddr, names: &[&str]) -> Result<Self, String> {
        Self::start_in(Some(netns.to_string()), ip, names)
    }

    fn start_in(netns: Option<String>, ip: IpAddr, names: &[&str]) -> Result<Self, String> {
        let reviews: Reviews = Arc::default();
        let app = Router::new()
            .route("/allow", post(allow))
            .route("/deny", post(deny))
            .route("/label", post(label))
            .route("/annotate", post(annotate))
            .route("/slow", post(slow))
            .route("/garbage", post(garbage))
            .route("/wrong-uid", post(wrong_uid))
            .with_state(Arc::clone(&reviews));
        let served = TlsHost::start(netns, ip, names, app)?;
        Ok(Self { addr: served.addr, ca_pem: served.ca_pem.clone(), reviews, _host: served })
    }

    /// `https://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The CA as a `caBundle` (base64 of the PEM).
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// The AdmissionReviews received so far.
    pub fn reviews(&self) -> Vec<Value> {
        self.reviews.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// An HTTPS server (a certificate from a fresh test CA) on its own thread, in a network
/// namespace or not; stopped when dropped.
pub(crate) struct TlsHost {
    pub addr: SocketAddr,
    pub ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsHost {
    /// Serves `app` on `ip` (a free port) with a certificate for `ip` and the DNS `names`.
    pub(crate) fn start(netns: Option<String>, ip: IpAddr, names: &[&str], app: Router) -> Result<Self, String> {
        let mut sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        sans.push(ip.to_string());
        let (ca_pem, cert_pem, key_pem) = pki(&sans)?;
        let config = server_config(&cert_pem, &key_pem)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let thread = std::thread::spawn(move || {
            // The namespace is entered by this thread only; its sockets live there.
            if let Some(ns) = netns {
                let entered =
                    std::fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| e.to_string()).and_then(|f| {
                        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
                    });
                if let Err(e) = entered {
                    let _ = ready_tx.send(Err(format!("entering netns {ns}: {e}")));
                    return;
                }
            }
            let listener = match TcpListener::bind((ip, 0)).and_then(|l| l.set_nonblocking(true).map(|_| l)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("bind {ip}: {e}")));
                    return;
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let addr = match listener.local_addr() {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
                let server = match axum_server::from_tcp_rustls(listener, tls) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(addr));
                tokio::select! {
                    _ = server.serve(app.into_make_service()) => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(10)).map_err(|e| e.to_string())??;
        Ok(Self { addr, ca_pem, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for TlsHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
