//! `Upgrade` pass-through (WebSocket, and any other HTTP/1.1 protocol switch): the request goes to
//! an endpoint on a connection of its own, with its `Connection: upgrade` and `Upgrade` headers
//! kept; when the endpoint answers `101 Switching Protocols`, the client's and the endpoint's
//! connections are spliced byte for byte until either side closes. Any other answer is relayed
//! as an ordinary response.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use super::server::{backend_request, connect, strip_hop_by_hop, text, timed_out, Body};

/// Whether `req` asks to switch protocols (HTTP/1.1 with `Upgrade` named in `Connection`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Forwards the upgrade request `req` to an endpoint (round robin from `start`) and, on `101`,
/// splices the two connections.
pub async fn forward(
    mut req: Request<Incoming>,
    endpoints: &[SocketAddr],
    start: usize,
    host: &str,
    peer: SocketAddr,
    scheme: &'static str,
    response_timeout: Duration,
) -> Response<Body> {
    let Some(protocol) = req.headers().get(header::UPGRADE).cloned() else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request: no Upgrade header\n".into());
    };
    let client_side = hyper::upgrade::on(&mut req);
    let mut request = backend_request(req, host, peer, scheme);
    request.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    request.headers_mut().insert(header::UPGRADE, protocol);
    let Some((stream, addr)) = connect(endpoints, start).await else {
        return text(StatusCode::BAD_GATEWAY, "502 Bad Gateway: no endpoint accepted a connection\n".into());
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return text(StatusCode::BAD_GATEWAY, format!("502 Bad Gateway: {e}\n")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upgraded backend connection");
        }
    });
    let mut resp = match tokio::time::timeout(response_timeout, sender.send_request(request)).await {
        Err(_) => return timed_out(),
        Ok(Err(e)) => return text(StatusCode::BAD_GATEWAY, format!("502 Bad Gateway: {e}\n")),
        Ok(Ok(resp)) => resp,
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, body.boxed());
    }
    let backend_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(
        async move {
            let (client, backend) = match tokio::join!(client_side, backend_side) {
                (Ok(client), Ok(backend)) => (client, backend),
                (Err(e), _) | (_, Err(e)) => return tracing::debug!(error = %e, "an upgrade did not complete"),
            };
            let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
            match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                Ok((up, down)) => tracing::debug!(up, down, "upgraded connection ended"),
                Err(e) => tracing::debug!(error = %e, "upgraded connection ended"),
            }
        }
        .instrument(tracing::debug_span!("ingress_upgrade", %addr)),
    );
    // The 101 keeps `Connection: upgrade`, `Upgrade` and the protocol's own headers.
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Empty::<Bytes>::new().map_err(|never| match never {}).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_are_http11_requests_naming_upgrade_in_connection() {
        let req = |version: Version, connection: &str, upgrade: Option<&str>| {
            let mut b = Request::builder().version(version).header(header::CONNECTION, connection);
            if let Some(u) = upgrade {
                b = b.header(header::UPGRADE, u);
            }
            b.body(()).unwrap_or_default()
        };
        assert!(is_upgrade(&req(Version::HTTP_11, "Upgrade", Some("websocket"))));
        assert!(is_upgrade(&req(Version::HTTP_11, "keep-alive, upgrade", Some("websocket"))));
        assert!(!is_upgrade(&req(Version::HTTP_11, "keep-alive", Some("websocket"))));
        assert!(!is_upgrade(&req(Version::HTTP_11, "upgrade", None)));
        assert!(!is_upgrade(&req(Version::HTTP_2, "upgrade", Some("websocket"))));
    }
}
