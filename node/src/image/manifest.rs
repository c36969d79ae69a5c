//! Fetching and reading manifests: the top-level manifest a reference names, and, for an index,
//! the entry for platform `wasi/wasm`, else the one for `linux/<this node's architecture>`.

use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::Client;
use serde::Deserialize;

use super::error::ImageError;
use super::reference::ImageRef;
use super::registry::map_oci_error;

const ACCEPTED: &[&str] =
    &[OCI_IMAGE_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE];

/// A content descriptor (config or layer).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    digest: String,
    platform: Option<Platform>,
}

/// Either kind of manifest, read loosely: an image manifest has `config` + `layers`, an index `manifests`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<IndexEntry>>,
}

/// An image manifest (not an index) and its digest.
#[derive(Debug, Clone)]
pub(crate) struct ImageManifest {
    pub digest: String,
    /// Its media type (OCI's when the manifest does not say).
    pub media_type: String,
    /// Its bytes as the registry sent them (they hash to `digest`).
    pub bytes: bytes::Bytes,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// GETs the manifest `image` names; returns its bytes and verified digest.
pub(crate) async fn fetch_top(
    client: &Client,
    image: &ImageRef,
    auth: &oci_client::secrets::RegistryAuth,
) -> Result<(bytes::Bytes, String), ImageError> {
    client.pull_manifest_raw(&image.oci, auth, ACCEPTED).await.map_err(|e| map_oci_error(image, e))
}

/// Reads the top-level manifest; for an index, fetches the `wasi/wasm` entry's manifest.
pub(crate) async fn select_image_manifest(
    client: &Client,
    image: &ImageRef,
    auth: &oci_client::secrets::RegistryAuth,
    top: &[u8],
    top_digest: &str,
) -> Result<ImageManifest, ImageError> {
    let parsed = parse(image, top)?;
    let Some(entries) = parsed.manifests else {
        return into_image_manifest(image, parsed, top_digest, bytes::Bytes::copy_from_slice(top));
    };
    let wasm = entries.iter().find(|e| e.platform.as_ref().is_some_and(is_wasi_wasm));
    let linux = || entries.iter().find(|e| e.platform.as_ref().is_some_and(is_host_linux));
    let Some(entry) = wasm.or_else(linux) else {
        let platforms: Vec<String> = entries
            .iter()
            .filter_map(|e| e.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect();
        let detail = format!(
            "image has neither a wasi/wasm nor a linux/{} platform (it has: {})",
            super::pull::host_arch(),
            list_or_none(&platforms)
        );
        return Err(ImageError::NotWasm { reference: image.normalized.clone(), detail });
    };
    let by_digest = ImageRef { oci: image.oci.clone_with_digest(entry.digest.clone()), ..image.clone() };
    let (bytes, digest) =
        client.pull_manifest_raw(&by_digest.oci, auth, ACCEPTED).await.map_err(|e| map_oci_error(image, e))?;
    let parsed = parse(image, &bytes)?;
    if parsed.manifests.is_some() {
        let detail = "the selected entry of the image index is itself an index".to_string();
        return Err(ImageError::InvalidImage { reference: image.normalized.clone(), detail });
    }
    into_image_manifest(image, parsed, &digest, bytes)
}

fn is_host_linux(p: &Platform) -> bool {
    p.os == "linux" && p.architecture == super::pull::host_arch()
}

fn is_wasi_wasm(p: &Platform) -> bool {
    p.architecture == "wasm" && p.os.starts_with("wasi")
}

pub(crate) fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn parse(image: &ImageRef, bytes: &[u8]) -> Result<AnyManifest, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::InvalidImage {
        reference: image.normalized.clone(),
        detail: format!("unreadable manifest: {e}"),
    })
}

fn into_image_manifest(
    image: &ImageRef,
    m: AnyManifest,
    digest: &str,
    bytes: bytes::Bytes,
) -> Result<ImageManifest, ImageError> {
    let config = m.config.ok_or_else(|| ImageError::InvalidImage {
        reference: image.normalized.clone(),
        detail: "manifest has no config".to_string(),
    })?;
    let media_type = m.media_type.unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_string());
    Ok(ImageManifest { digest: digest.to_string(), media_type, bytes, config, layers: m.layers })
}
