//! Routing for `hello-http`: maps a request path to a status code and a body, without touching
//! the HTTP types, so the handler stays a thin adapter.

use std::borrow::Cow;

/// A response: status code and body.
pub struct Reply {
    pub status: u16,
    pub body: Cow<'static, [u8]>,
}

impl Reply {
    fn fixed(status: u16, body: &'static [u8]) -> Self {
        Reply { status, body: Cow::Borrowed(body) }
    }

    fn owned(status: u16, body: Vec<u8>) -> Self {
        Reply { status, body: Cow::Owned(body) }
    }

    fn not_found() -> Self {
        Reply::fixed(404, b"not found\n")
    }
}

/// Routes `path` (query string already removed).
///
/// `GET /` -> 200 `hello from skiff\n`; `/healthz` -> 200 `ok`; `/status/<code>` -> that status
/// with body `status <code>`; `/env/<NAME>` -> the variable's value (404 if unset);
/// `/file/<path...>` -> the contents of `/<path...>` (404 if missing); anything else 404.
pub fn route(path: &str) -> Reply {
    match path {
        "/" => return Reply::fixed(200, b"hello from skiff\n"),
        "/healthz" => return Reply::fixed(200, b"ok"),
        _ => {}
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code.parse::<u16>() {
            Ok(status) if (100..=999).contains(&status) => {
                Reply::owned(status, format!("status {status}").into_bytes())
            }
            _ => Reply::fixed(400, b"bad status code\n"),
        };
    }
    if let Some(name) = path.strip_prefix("/env/") {
        return match std::env::var_os(name) {
            Some(value) => Reply::owned(200, value.into_encoded_bytes()),
            None => Reply::not_found(),
        };
    }
    if let Some(file) = path.strip_prefix("/file") {
        if file.len() > 1 {
            return match std::fs::read(file) {
                Ok(data) => Reply::owned(200, data),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Reply::not_found(),
                Err(e) => Reply::owned(500, format!("{e}\n").into_bytes()),
            };
        }
    }
    Reply::not_found()
}
