//! OpenAPI documents for clients: v3 per group-version ([`v3`]) and one Swagger 2.0 document
//! ([`v2`], as JSON or as protobuf, [`v2_proto`]), with the built-in kinds' schemas from
//! `k8s-openapi` and the custom resources' from their CRDs ([`schemas`]).
//!
//! Documents are built on first request and kept, as the bytes sent, in a [`Cache`] tied to the
//! served resource table: a CRD change makes a new table, and the next request rebuilds. An
//! idle server holds none of them.

pub mod schemas;
pub mod v2;
pub mod v2_proto;
pub mod v3;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

use super::resources::{ResourceInfo, Resources};

pub use v3::{document, index};

/// The `info.version` of every document.
const KUBERNETES_VERSION: &str = "v1.32.0-skiff";

/// `api/v1` or `apis/<group>/<version>`: a group-version's path, without the leading slash.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The path of one object of a resource, as the documents list it.
fn item_path(ri: &ResourceInfo) -> String {
    let path = gv_path(ri.group, ri.version);
    if ri.namespaced {
        format!("/{path}/namespaces/{{namespace}}/{}/{{name}}", ri.plural)
    } else {
        format!("/{path}/{}/{{name}}", ri.plural)
    }
}

/// A hash of what a group-version's document is built from (its kinds and their CRD schemas),
/// for the `hash` of the v3 index's URLs.
fn group_version_hash(resources: &Resources, group: &str, version: &str) -> String {
    let mut hasher = DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    for ri in resources.iter().filter(|r| r.group == group && r.version == version) {
        (ri.kind, ri.plural, ri.namespaced).hash(&mut hasher);
        if let Some(schema) = ri.custom.as_ref().and_then(|c| c.schema.as_ref()) {
            schema.to_string().hash(&mut hasher);
        }
    }
    format!("{:016X}", hasher.finish())
}

/// One of the documents the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Doc {
    /// `/openapi/v2` as JSON.
    V2Json,
    /// `/openapi/v2` as the protobuf `openapi.v2.Document`.
    V2Protobuf,
    /// `/openapi/v3/<path>`.
    V3(String),
}

/// A document as sent: its body and entity tag.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub body: Bytes,
    /// The quoted `ETag`, a hash of the body.
    pub etag: String,
}

/// The documents built so far for the current resource table.
#[derive(Debug, Default)]
pub struct Cache {
    inner: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    /// The table the documents were built from.
    served: Weak<Resources>,
    documents: HashMap<Doc, Rendered>,
}

/// Why a document could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No such group-version.
    #[error("no OpenAPI document at {0}")]
    NotFound(String),
    /// The protobuf encoder failed.
    #[error("encoding the OpenAPI v2 document: {0}")]
    Encode(#[from] protobuf::Error),
}

impl Cache {
    /// The document `doc` of `served`, from the cache or built now (a CPU-heavy step the caller
    /// should keep off the async workers).
    pub fn get(&self, served: &Arc<Resources>, doc: &Doc) -> Result<Rendered, RenderError> {
        {
            let mut inner = self.inner.lock();
            if !Weak::ptr_eq(&inner.served, &Arc::downgrade(served)) {
                inner.documents.clear();
                inner.served = Arc::downgrade(served);
            }
            if let Some(found) = inner.documents.get(doc) {
                return Ok(found.clone());
            }
        }
        let body = render(served, doc)?;
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        let rendered = Rendered { body: Bytes::from(body), etag: format!("\"{:016X}\"", hasher.finish()) };
        let mut inner = self.inner.lock();
        if Weak::ptr_eq(&inner.served, &Arc::downgrade(served)) {
            inner.documents.insert(doc.clone(), rendered.clone());
        }
        Ok(rendered)
    }
}

fn render(served: &Resources, doc: &Doc) -> Result<Vec<u8>, RenderError> {
    Ok(match doc {
        Doc::V2Json => v2::document(served).to_string().into_bytes(),
        Doc::V2Protobuf => v2_proto::encode(&v2::document(served))?,
        Doc::V3(path) => {
            v3::document(served, path).ok_or_else(|| RenderError::NotFound(path.clone()))?.to_string().into_bytes()
        }
    })
}
