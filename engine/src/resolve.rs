//! Name lookups of a guest's outgoing HTTP requests through the pod's DNS settings instead of the
//! host's resolver: a [`NameResolver`] the kubelet gives ([`RunSpec::resolver`]), used by the
//! `wasi:http` send hook ([`PodHttpHooks`]) before it connects.
//!
//! Only plain `http` requests are pinned to the resolved address (the `Host` header keeps the name);
//! `https` ones keep the name for certificate checks and resolve through the host. Guests'
//! `wasi:sockets/ip-name-lookup` has no hook in wasmtime-wasi 48 (it calls `getaddrinfo` itself).
//!
//! [`RunSpec::resolver`]: super::spec::RunSpec::resolver

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// A future of a lookup's addresses.
pub type Lookup = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves host names as a pod would (its nameservers, search list and `ndots`).
pub trait NameResolver: Send + Sync + std::fmt::Debug {
    /// The addresses of `host` (a name, never an IP literal).
    fn resolve(&self, host: &str) -> Lookup;
}

/// The `wasi:http` hooks of one guest store.
#[derive(Default)]
pub(super) struct PodHttpHooks {
    pub(super) resolver: Option<Arc<dyn NameResolver>>,
}

/// `request` with its authority replaced by the first address `resolver` gives for its host.
async fn pin_address(
    mut request: http::Request<WasiBody>,
    resolver: &dyn NameResolver,
) -> Result<http::Request<WasiBody>, Error> {
    let uri = request.uri();
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Ok(request);
    }
    let Some(authority) = uri.authority() else { return Ok(request) };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_ok() {
        return Ok(request);
    }
    let port = authority.port_u16().unwrap_or(80);
    let addrs = resolver.resolve(host).await.map_err(|e| {
        tracing::debug!(%host, error = %e, "resolving an outgoing request's host");
        Error::DnsError { rcode: Some("NXDOMAIN".into()), info_code: None }
    })?;
    let Some(ip) = addrs.iter().copied().find(IpAddr::is_ipv4).or_else(|| addrs.first().copied()) else {
        return Err(Error::DnsError { rcode: Some("NXDOMAIN".into()), info_code: None });
    };
    let pinned = match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    let authority: Authority = pinned.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    let mut parts = request.uri().clone().into_parts();
    parts.authority = Some(authority);
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(request)
}

type SendResult = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>;

impl WasiHttpHooks for PodHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let resolver = self.resolver.clone();
        Box::new(async move {
            let request = match &resolver {
                Some(resolver) => pin_address(request, resolver.as_ref()).await?,
                None => request,
            };
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty};

    use super::*;

    /// Knows `web` only.
    #[derive(Debug)]
    struct Fake;

    impl NameResolver for Fake {
        fn resolve(&self, host: &str) -> Lookup {
            let found = (host == "web").then(|| vec![IpAddr::from([10, 43, 0, 20])]);
            Box::pin(async move { found.ok_or_else(|| std::io::Error::other("NXDOMAIN")) })
        }
    }

    fn request(uri: &str) -> http::Request<WasiBody> {
        let body: WasiBody = Empty::<bytes::Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        http::Request::builder().uri(uri).body(body).expect("request")
    }

    #[tokio::test]
    async fn plain_http_goes_to_the_resolved_address() {
        let pinned = pin_address(request("http://web:8080/x?y=1"), &Fake).await.expect("resolved");
        assert_eq!(pinned.uri().to_string(), "http://10.43.0.20:8080/x?y=1");
        let pinned = pin_address(request("http://web/"), &Fake).await.expect("resolved");
        assert_eq!(pinned.uri().to_string(), "http://10.43.0.20:80/");
    }

    #[tokio::test]
    async fn https_and_addresses_are_left_alone_and_unknown_names_fail() {
        let kept = pin_address(request("https://web/"), &Fake).await.expect("kept");
        assert_eq!(kept.uri().to_string(), "https://web/");
        let kept = pin_address(request("http://10.1.2.3:81/"), &Fake).await.expect("kept");
        assert_eq!(kept.uri().to_string(), "http://10.1.2.3:81/");
        let failed = pin_address(request("http://nope/"), &Fake).await;
        let error = failed.err();
        assert!(matches!(error, Some(Error::DnsError { .. })), "{error:?}");
    }
}
