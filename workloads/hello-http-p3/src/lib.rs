//! A WASI 0.3 HTTP service (`wasi:http/handler@0.3.0`, through the `wasip3` bindings).
//!
//! `GET /`: `hello from p3\n`, the body written by a task of the guest after `handle` returned.
//! `GET /healthz`: `ok`.
//! `GET /chunks/N`: N lines `chunk <i>\n`, written one by one after `handle` returned.
//! `GET /env/NAME`: the variable's value (404 when unset).
//! `POST /echo`: the request body back.
//! `GET /spin`: never answers (a busy loop; the host's deadline must end it).
//! `GET /grow/MB`: allocates and touches MB MiB, then answers `grew MB MiB`.
//! Anything else: 404.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(HelloHttpP3);

struct HelloHttpP3;

/// A response with `status` whose body is `chunks`, written by a guest task after the response went out.
fn streamed(status: u16, chunks: Vec<Vec<u8>>) -> Result<Response, ErrorCode> {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let headers = Fields::new();
    headers.set("content-type", &[b"text/plain".to_vec()]).map_err(|_| ErrorCode::InternalError(None))?;
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    response.set_status_code(status).map_err(|()| ErrorCode::InternalError(None))?;
    wit_bindgen::spawn_local(async move {
        for chunk in chunks {
            if !body_tx.write_all(chunk).await.is_empty() {
                return;
            }
        }
    });
    Ok(response)
}

fn text(status: u16, body: &str) -> Result<Response, ErrorCode> {
    streamed(status, vec![body.as_bytes().to_vec()])
}

impl wasip3::exports::http::handler::Guest for HelloHttpP3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let method = request.get_method();
        let path = request.get_path_with_query().unwrap_or_default();
        match (method, path.as_str()) {
            (Method::Get, "/") => text(200, "hello from p3\n"),
            (Method::Get, "/healthz") => text(200, "ok"),
            (Method::Get, p) if p.starts_with("/chunks/") => {
                let n: usize = p["/chunks/".len()..].parse().unwrap_or(0);
                streamed(200, (0..n.min(10_000)).map(|i| format!("chunk {i}\n").into_bytes()).collect())
            }
            (Method::Get, p) if p.starts_with("/env/") => {
                let name = &p["/env/".len()..];
                let env = wasip3::cli::environment::get_environment();
                match env.into_iter().find(|(k, _)| k == name) {
                    Some((_, value)) => text(200, &value),
                    None => text(404, "unset\n"),
                }
            }
            (Method::Get, "/spin") => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            (Method::Get, p) if p.starts_with("/grow/") => {
                let mb: usize = p["/grow/".len()..].parse().unwrap_or(0);
                let held = vec![1u8; mb.saturating_mul(1 << 20)];
                text(200, &format!("grew {} MiB\n", std::hint::black_box(held).len() >> 20))
            }
            (Method::Post, "/echo") => {
                let (_result_tx, result_rx) = wit_future::new(|| Ok(()));
                let (body, _trailers) = Request::consume_body(request, result_rx);
                let received = body.collect().await;
                streamed(200, vec![received])
            }
            _ => text(404, "not found\n"),
        }
    }
}
