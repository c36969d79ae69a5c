//! `hello-http` (wasm32-wasip2 component exporting `wasi:http/incoming-handler`): a tiny HTTP
//! service for the Wasm HTTP serving tests and benchmarks. `routes` decides the reply; this file
//! adapts it to `wasi:http` with as few host calls and allocations as possible. `/fetch/<host>/<path>`
//! makes an outgoing request (`fetch`), for the cluster DNS tests.

mod fetch;
mod routes;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};


struct Handler;

wasip2::http::proxy::export!(Handler);

impl Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_and_query = request.path_with_query();
        drop(request);
        let full = path_and_query.as_deref().unwrap_or("/");
        let path = full.split_once('?').map_or(full, |(p, _)| p);
        if let Some(target) = path.strip_prefix("/fetch/") {
            let (status, body) = fetch::get(target);
            respond(response_out, status, &body);
            return;
        }
        let reply = routes::route(path);
        respond(response_out, reply.status, &reply.body);
    }
}

/// Sends `status` and `body` with a `content-length` header. Failures past `set` can only mean
/// the client went away, so they end the response early and are otherwise ignored.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let length = body.len().to_string();
    let headers = match Fields::from_list(&[("content-length".to_string(), length.into_bytes())]) {
        Ok(h) => h,
        Err(_) => Fields::new(),
    };
    let response = OutgoingResponse::new(headers);
    // Status codes in 100..=999 are always accepted; routes produce only those.
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    {
        let Ok(stream) = outgoing.write() else {
            return;
        };
        // Write as much as the host takes at a time (`check-write`) and flush once at the end: a
        // flush per 4 KiB (`blocking-write-and-flush`'s limit) waits for every chunk to be sent.
        let pollable = stream.subscribe();
        let mut rest = body;
        while !rest.is_empty() {
            let allowed = match stream.check_write() {
                Ok(0) => {
                    pollable.block();
                    continue;
                }
                Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Err(_) => return,
            };
            let (now, later) = rest.split_at(allowed.min(rest.len()));
            if stream.write(now).is_err() {
                return;
            }
            rest = later;
        }
        if stream.blocking_flush().is_err() {
            return;
        }
        drop(pollable);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
