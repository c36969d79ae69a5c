//! A TLS acceptor that names the peer: after the rustls handshake, the verified client certificate
//! (the first of the chain the verifier accepted) is turned into an identity once per connection,
//! and that identity is attached to every request of the connection as an extension. The API server
//! and the kubelet endpoint both authenticate client certificates this way, each with its own
//! identity type.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::RustlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Wraps the rustls acceptor (with `TCP_NODELAY`): `identify` maps the DER of the verified client
/// certificate to the identity requests carry (none without a certificate or when it maps to none).
pub struct PeerAcceptor<T> {
    tls: RustlsAcceptor<NoDelayAcceptor>,
    identify: fn(&[u8]) -> Option<T>,
}

impl<T> Clone for PeerAcceptor<T> {
    fn clone(&self) -> Self {
        Self { tls: self.tls.clone(), identify: self.identify }
    }
}

impl<T> PeerAcceptor<T> {
    pub fn new(tls: RustlsAcceptor<NoDelayAcceptor>, identify: fn(&[u8]) -> Option<T>) -> Self {
        Self { tls, identify }
    }
}

/// A connection's service that adds the peer identity to each request.
#[derive(Clone)]
pub struct WithPeer<S, T> {
    inner: S,
    peer: Option<T>,
}

impl<S, T, B> tower_service::Service<http::Request<B>> for WithPeer<S, T>
where
    S: tower_service::Service<http::Request<B>>,
    T: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(peer.clone());
        }
        self.inner.call(request)
    }
}

impl<S, T> Accept<tokio::net::TcpStream, S> for PeerAcceptor<T>
where
    S: Send + 'static,
    T: Send + 'static,
{
    type Stream = TlsStream<tokio::net::TcpStream>;
    type Service = WithPeer<S, T>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let (tls, identify) = (self.tls.clone(), self.identify);
        Box::pin(async move {
            let (stream, service) = tls.accept(stream, service).await?;
            let leaf = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
            let peer = leaf.and_then(|cert| identify(cert.as_ref()));
            Ok((stream, WithPeer { inner: service, peer }))
        })
    }
}
