//! The errors of image handling, worded for `kubectl describe pod` (they become ErrImagePull messages).

use std::path::PathBuf;
use std::sync::Arc;

/// Why an image could not be pulled, pushed, cached or read.
///
/// Cloneable so that every caller waiting on one shared pull receives the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// The reference is not a valid image reference.
    #[error("invalid image reference {reference:?}: {detail}")]
    BadReference { reference: String, detail: String },
    /// The registry has no such repository, tag or digest.
    #[error("image {reference} not found in registry {registry}")]
    NotFound { reference: String, registry: String },
    /// The registry refused the credentials (or their absence).
    #[error("registry {registry} denied access to {reference}: missing or wrong credentials (check imagePullSecrets)")]
    Unauthorized { reference: String, registry: String },
    /// The image exists but holds no WebAssembly this node can run.
    #[error("image {reference} is not a Wasm image: {detail}")]
    NotWasm { reference: String, detail: String },
    /// The image is malformed (bad layer, unsafe path, missing entrypoint file...).
    #[error("image {reference} is invalid: {detail}")]
    InvalidImage { reference: String, detail: String },
    /// `imagePullPolicy: Never` and the image is not on this node.
    #[error("image {reference} is not present on this node and imagePullPolicy is Never")]
    NotPresent { reference: String },
    /// Any other registry failure (unreachable, protocol error, server error).
    #[error("pulling {reference} from registry {registry} failed: {detail}")]
    Registry { reference: String, registry: String, detail: String },
    /// A local file operation in the image cache failed.
    #[error("image cache: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Credentials could not be decoded (e.g. a malformed `.dockerconfigjson`).
    #[error("invalid registry credentials: {detail}")]
    BadCredentials { detail: String },
}

impl ImageError {
    /// Wraps an I/O error with the operation and path it concerns.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io { op, path: path.into(), source: Arc::new(source) }
    }
}

/// Joins an error and its chain of sources into one line, e.g. "error sending request: connection refused".
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
