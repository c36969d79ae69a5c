//! `/fetch/<host>/<path>`: an outgoing `GET http://<host>/<path>` through `wasi:http/outgoing-handler`;
//! replies 200 with the upstream's status line and body, or 502 with the error.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

/// The status and body to answer with for `target` (`<host>/<path>`).
pub fn get(target: &str) -> (u16, Vec<u8>) {
    match fetch(target) {
        Ok((status, body)) => {
            let mut out = format!("{status} ").into_bytes();
            out.extend(body);
            (200, out)
        }
        Err(e) => (502, format!("fetch {target}: {e}\n").into_bytes()),
    }
}

fn fetch(target: &str) -> Result<(u16, Vec<u8>), String> {
    let (host, path) = target.split_once('/').unwrap_or((target, ""));
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "scheme")?;
    request.set_authority(Some(host)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(&format!("/{path}"))).map_err(|()| "path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        _ => return Err("no response".into()),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "body")?;
    let stream = body.stream().map_err(|()| "stream")?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend(chunk),
            Err(_) => break, // closed
        }
    }
    Ok((status, out))
}
