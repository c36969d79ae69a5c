//! The DNS server (hickory-server) answering from the [`Zone`] and forwarding other names to the
//! node's upstream resolvers (hickory-resolver, which caches).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use parking_lot::RwLock;

use super::records::{normalize, Answer, Zone};

/// How long a TCP connection may stay idle.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Names the forwarder's cache keeps.
const CACHE_SIZE: usize = 4096;

/// The zone, shared between the watch that fills it and the server that reads it.
pub type SharedZone = Arc<RwLock<Zone>>;

/// A resolver for names outside the cluster domain, from resolv.conf text (`None` when it names
/// no nameserver: such names then get SERVFAIL).
pub fn upstream(resolv_conf: &str) -> Option<TokioResolver> {
    let (config, mut opts) = match hickory_resolver::system_conf::parse_resolv_conf(resolv_conf) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::warn!(error = %e, "reading the upstream resolvers; names outside the cluster fail");
            return None;
        }
    };
    if config.name_servers().is_empty() {
        return None;
    }
    opts.cache_size = CACHE_SIZE;
    // Queries arrive fully qualified: no search list, no hosts file of the node.
    opts.ndots = 0;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    Some(
        hickory_resolver::Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build(),
    )
}

/// Answers queries: the cluster domain from the zone, the rest through the upstream resolver.
pub struct Handler {
    zone: SharedZone,
    upstream: Option<TokioResolver>,
}

impl Handler {
    /// A handler over `zone`, forwarding to `upstream`.
    pub fn new(zone: SharedZone, upstream: Option<TokioResolver>) -> Self {
        Handler { zone, upstream }
    }
}

async fn send<R: ResponseHandler>(
    request: &Request,
    mut response: R,
    header: Header,
    answers: &[Record],
    soa: &[Record],
) -> ResponseInfo {
    let builder = MessageResponseBuilder::from_message_request(request);
    let message = builder.build(header, answers.iter(), std::iter::empty(), soa.iter(), std::iter::empty());
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "sending a DNS response");
            let mut header = header;
            header.set_response_code(ResponseCode::ServFail);
            header.into()
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, response: R) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            header.set_response_code(ResponseCode::NotImp);
            return send(request, response, header, &[], &[]).await;
        }
        let Ok(info) = request.request_info() else {
            header.set_response_code(ResponseCode::FormErr);
            return send(request, response, header, &[], &[]).await;
        };
        let query = info.query.original();
        let name = normalize(&query.name().to_ascii());
        let qtype = query.query_type();
        let (answer, soa) = {
            let zone = self.zone.read();
            (zone.answer(&name, query.name(), qtype), zone.soa().clone())
        };
        match answer {
            Answer::Found(records) => {
                header.set_authoritative(true);
                let soa = if records.is_empty() { vec![soa] } else { Vec::new() };
                send(request, response, header, &records, &soa).await
            }
            Answer::NxDomain => {
                header.set_authoritative(true);
                header.set_response_code(ResponseCode::NXDomain);
                send(request, response, header, &[], &[soa]).await
            }
            Answer::NotOurs => {
                let Some(upstream) = &self.upstream else {
                    header.set_response_code(ResponseCode::ServFail);
                    return send(request, response, header, &[], &[]).await;
                };
                match upstream.lookup(query.name().clone(), qtype).await {
                    Ok(lookup) => send(request, response, header, lookup.records(), &[]).await,
                    Err(e) if e.is_nx_domain() => {
                        header.set_response_code(ResponseCode::NXDomain);
                        send(request, response, header, &[], &[]).await
                    }
                    Err(e) if e.is_no_records_found() => send(request, response, header, &[], &[]).await,
                    Err(e) => {
                        tracing::debug!(name = %name, error = %e, "forwarding a DNS query");
                        header.set_response_code(ResponseCode::ServFail);
                        send(request, response, header, &[], &[]).await
                    }
                }
            }
        }
    }
}

/// A UDP socket and a TCP listener on `addr`, bound before the address exists (`IP_FREEBIND`: the
/// bridge gets its gateway address with the first pod).
pub fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(addr);
    let freebind = |s: &Socket| if addr.is_ipv4() { s.set_freebind_v4(true) } else { s.set_freebind_v6(true) };
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    freebind(&udp)?;
    udp.set_nonblocking(true)?;
    udp.bind(&addr.into())?;
    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    freebind(&tcp)?;
    tcp.set_reuse_address(true)?;
    tcp.set_nonblocking(true)?;
    tcp.bind(&addr.into())?;
    tcp.listen(1024)?;
    let udp = tokio::net::UdpSocket::from_std(udp.into())?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into())?;
    Ok((udp, tcp))
}

/// Serves `handler` on the sockets until the returned server is shut down.
pub fn serve(handler: Handler, udp: tokio::net::UdpSocket, tcp: tokio::net::TcpListener) -> ServerFuture<Handler> {
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE);
    server
}
