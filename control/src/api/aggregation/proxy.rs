//! A request for a remote group-version passed to its extension API server: the Service
//! resolved through its EndpointSlices (as for webhooks, [`resolve`]), HTTPS verified with the
//! APIService's `caBundle` (or not at all under `insecureSkipTLSVerify`), the caller's identity
//! in `X-Remote-User`/`X-Remote-Group`/`X-Remote-Extra-*` (never its credentials), and the
//! answer streamed back as it comes (watches included).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Backend, Remote};
use crate::api::error::{chain, ApiError};
use crate::api::webhooks::resolve;
use crate::auth::UserInfo;
use crate::store::Store;

/// How long connecting to an extension server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body passed on (the API server's own bound).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Why a remote could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("service unavailable: {0}")]
    Unresolved(String),
    #[error("error trying to reach service: {0}")]
    Unreachable(String),
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        ApiError::ServiceUnavailable(e.to_string())
    }
}

/// Accepts any server certificate (`insecureSkipTLSVerify: true`), still checking signatures
/// of the handshake itself.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(backend: &Backend) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if backend.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &backend.ca_bundle[..]) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// A client for `backend`, its Service name resolved to `addr`.
pub fn client(backend: &Backend, host: &str, addr: SocketAddr) -> Result<reqwest::Client, ProxyError> {
    let tls = tls_config(backend).map_err(ProxyError::Unreachable)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, addr)
        .build()
        .map_err(|e| ProxyError::Unreachable(chain(&e)))
}

/// The URL of `path_and_query` on `backend` and a client for it.
pub async fn connect(
    store: &Arc<dyn Store>,
    backend: &Backend,
    path_and_query: &str,
) -> Result<(reqwest::Client, String), ProxyError> {
    let target =
        resolve::service(store, &backend.namespace, &backend.name, path_and_query, backend.port).await.map_err(
            |e| ProxyError::Unresolved(e.to_string().trim_start_matches("failed to call webhook: ").to_string()),
        )?;
    let Some((host, addr)) = target.resolved else {
        return Err(ProxyError::Unresolved(format!("service {}/{} has no address", backend.namespace, backend.name)));
    };
    Ok((client(backend, &host, addr)?, target.url))
}

/// The headers passed on: content negotiation, and who asks (as kube-aggregator's
/// request-header authentication).
fn forwarded_headers(headers: &HeaderMap, user: Option<&UserInfo>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [http::header::ACCEPT, http::header::CONTENT_TYPE, http::header::USER_AGENT] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    if let Some(user) = user {
        if let Ok(v) = HeaderValue::from_str(&user.name) {
            out.insert("x-remote-user", v);
        }
        for group in &user.groups {
            if let Ok(v) = HeaderValue::from_str(group) {
                out.append("x-remote-group", v);
            }
        }
        for (key, values) in &user.extra {
            let name = format!("x-remote-extra-{}", key.to_ascii_lowercase());
            let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else { continue };
            for value in values {
                if let Ok(v) = HeaderValue::from_str(value) {
                    out.append(name.clone(), v);
                }
            }
        }
    }
    out
}

/// Passes one request to `remote` and its answer back.
pub async fn forward(
    store: &Arc<dyn Store>,
    remote: &Remote,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    user: Option<&UserInfo>,
    body: Body,
) -> Response {
    match try_forward(store, remote, method, path_and_query, headers, user, body).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(apiservice = %remote.name, error = %e, "extension API server not reached");
            ApiError::from(e).into_response()
        }
    }
}

async fn try_forward(
    store: &Arc<dyn Store>,
    remote: &Remote,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    user: Option<&UserInfo>,
    body: Body,
) -> Result<Response, ProxyError> {
    let (client, url) = connect(store, &remote.backend, path_and_query).await?;
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| ProxyError::Unreachable(e.to_string()))?;
    let method =
        reqwest::Method::from_bytes(method.as_str().as_bytes()).map_err(|e| ProxyError::Unreachable(e.to_string()))?;
    let answer = client
        .request(method, &url)
        .headers(forwarded_headers(headers, user))
        .body(bytes)
        .send()
        .await
        .map_err(|e| ProxyError::Unreachable(chain(&e)))?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(http::header::CONTENT_TYPE).cloned();
    let mut response = (status, Body::from_stream(answer.bytes_stream())).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_identity_is_passed_and_its_credentials_are_not() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert("x-remote-user", HeaderValue::from_static("forged"));
        let mut user = UserInfo {
            name: "alice".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            ..Default::default()
        };
        user.extra.insert("scopes".into(), vec!["a".into(), "b".into()]);
        let out = forwarded_headers(&headers, Some(&user));
        assert!(out.get(http::header::AUTHORIZATION).is_none());
        assert_eq!(out.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()), Some("application/json"));
        let all = |name: &str| out.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        assert_eq!(all("x-remote-user"), ["alice"]);
        assert_eq!(all("x-remote-group"), ["devs", "system:authenticated"]);
        assert_eq!(all("x-remote-extra-scopes"), ["a", "b"]);
        // Nobody: no identity headers at all, forged ones included.
        assert!(forwarded_headers(&headers, None).get("x-remote-user").is_none());
    }

    #[test]
    fn insecure_backends_skip_verification_and_others_need_their_bundle() {
        let backend = |insecure: bool, ca_bundle: &[u8]| Backend {
            namespace: "a".into(),
            name: "b".into(),
            port: 443,
            ca_bundle: ca_bundle.to_vec(),
            insecure,
        };
        assert!(tls_config(&backend(true, b"")).is_ok());
        assert!(tls_config(&backend(false, b"")).is_ok(), "an empty bundle trusts nothing, but is no error");
        assert!(tls_config(&backend(false, b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"))
            .is_err());
    }
}
