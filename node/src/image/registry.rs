//! The registry connection: an oci-client per (registry, credentials), and registry errors in user words.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::Client;

use super::error::{error_chain, ImageError};
use super::reference::{uses_plain_http, ImageRef};

/// Builds an oci-client for `registry`: plain HTTP for loopback and insecure registries, HTTPS otherwise.
/// Index platform selection is done by the caller (wasi/wasm), so the client keeps no resolver.
/// `skip_verify` accepts any TLS certificate (a registry configured with `insecure_skip_verify`).
pub(crate) fn client_for(registry: &str, insecure: &[String], skip_verify: bool) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if uses_plain_http(registry, insecure) {
        ClientProtocol::HttpsExcept(vec![registry.to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        accept_invalid_certificates: skip_verify,
        ..ClientConfig::default()
    })
}

/// Turns an oci-client error for `image` into an [`ImageError`] a user can act on.
pub(crate) fn map_oci_error(image: &ImageRef, err: OciDistributionError) -> ImageError {
    let reference = image.normalized.clone();
    let registry = image.registry().to_string();
    match &err {
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            return ImageError::Unauthorized { reference, registry }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                return ImageError::Unauthorized { reference, registry };
            }
            if codes.iter().any(|c| {
                matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown)
            }) {
                return ImageError::NotFound { reference, registry };
            }
            let detail = envelope.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
            return ImageError::Registry { reference, registry, detail };
        }
        OciDistributionError::ServerError { code: 404, .. } => return ImageError::NotFound { reference, registry },
        OciDistributionError::ServerError { code: 401 | 403, .. } => {
            return ImageError::Unauthorized { reference, registry }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let detail = format!("HTTP {code}: {}", message.trim());
            return ImageError::Registry { reference, registry, detail };
        }
        OciDistributionError::RequestError(e) if e.status().is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403) => {
            return ImageError::Unauthorized { reference, registry }
        }
        OciDistributionError::RequestError(e) if e.status().is_some_and(|s| s.as_u16() == 404) => {
            return ImageError::NotFound { reference, registry }
        }
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            let detail = format!("cannot reach the registry: {}", error_chain(e));
            return ImageError::Registry { reference, registry, detail };
        }
        _ => {}
    }
    ImageError::Registry { reference, registry, detail: error_chain(&err) }
}
