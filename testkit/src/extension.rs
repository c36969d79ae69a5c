//! A test extension API server (what an APIService points at): HTTPS on loopback with a
//! certificate from a fresh test CA, serving one group-version with one namespaced resource,
//! `widgets` (kind `Widget`):
//!
//! - `GET /apis/<group>/<version>`: its `APIResourceList`;
//! - `GET /apis/<group>/<version>/namespaces/<ns>/widgets`: a `WidgetList` of one widget whose
//!   annotations say who the request came from (the `X-Remote-User` and `X-Remote-Group`
//!   headers) and whether it carried an `Authorization` header.
//!
//! The server runs on its own thread and stops when dropped (a dead backend).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

use crate::webhook::TlsHost;

/// The annotation of the served widget naming the user the request came from.
pub const SEEN_USER: &str = "extension.skiff.dev/user";
/// The annotation of the served widget listing the request's groups (comma-separated).
pub const SEEN_GROUPS: &str = "extension.skiff.dev/groups";
/// The annotation of the served widget saying whether a credential reached the server.
pub const SEEN_AUTHORIZATION: &str = "extension.skiff.dev/authorization";

/// See the module documentation.
pub struct ExtensionServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    _host: TlsHost,
}

#[derive(Clone)]
struct GroupVersion {
    group: String,
    version: String,
}

async fn resources(State(gv): State<GroupVersion>) -> Json<Value> {
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{}/{}", gv.group, gv.version),
        "resources": [{"name": "widgets", "singularName": "widget", "namespaced": true, "kind": "Widget",
                       "verbs": ["get", "list"], "shortNames": ["wd"]}]
    }))
}

async fn widgets(State(gv): State<GroupVersion>, Path(ns): Path<String>, headers: HeaderMap) -> Json<Value> {
    let text = |name: &str| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let api_version = format!("{}/{}", gv.group, gv.version);
    Json(json!({
        "kind": "WidgetList", "apiVersion": api_version, "metadata": {"resourceVersion": "1"},
        "items": [{"kind": "Widget", "apiVersion": api_version, "metadata": {"name": "w1", "namespace": ns,
            "annotations": {SEEN_USER: text("x-remote-user"), SEEN_GROUPS: text("x-remote-group"),
                            SEEN_AUTHORIZATION: headers.contains_key("authorization").to_string()}}}]
    }))
}

impl ExtensionServer {
    /// Serves `group`/`version` on `ip` (a free port), with a certificate for `ip` and `names`.
    pub fn start(ip: IpAddr, names: &[&str], group: &str, version: &str) -> Result<Self, String> {
        let gv = GroupVersion { group: group.to_string(), version: version.to_string() };
        let app = Router::new()
            .route(&format!("/apis/{group}/{version}"), get(resources))
            .route(&format!("/apis/{group}/{version}/namespaces/{{ns}}/widgets"), get(widgets))
            .with_state(gv);
        let host = TlsHost::start(None, ip, names, app)?;
        Ok(Self { addr: host.addr, ca_pem: host.ca_pem.clone(), _host: host })
    }

    /// The CA as a `caBundle` (base64 of the PEM).
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }
}
