//! Pushing a `.wasm` file as a Wasm OCI artifact (wasm-oci spec: config `application/vnd.wasm.config.v0+json`,
//! one `application/wasm` layer), with byte progress for the CLI.

use std::path::Path;

use bytes::Bytes;
use oci_client::manifest::{OciDescriptor, OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::Client;
use serde::Serialize;
use sha2::Digest as _;

use super::auth::RegistryAuth;
use super::error::ImageError;
use super::reference::ImageRef;
use super::registry::{client_for, map_oci_error};
use super::ImageConfig;

const CHUNK: usize = 1 << 20;
const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
const WASM_LAYER: &str = "application/wasm";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig {
    created: String,
    architecture: &'static str,
    os: &'static str,
    layer_digests: Vec<String>,
}

/// Pushes `file` to `reference` as a Wasm artifact; returns the manifest digest (`sha256:...`).
/// `progress(sent, total)` is called as the wasm layer is uploaded, last with `sent == total`.
#[tracing::instrument(skip(cfg, auth, progress), fields(file = %file.display()))]
pub async fn push_wasm(
    file: &Path,
    reference: &str,
    cfg: &ImageConfig,
    auth: Option<&RegistryAuth>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<String, ImageError> {
    let image = ImageRef::parse(reference)?;
    let wasm = Bytes::from(tokio::fs::read(file).await.map_err(|e| ImageError::io("reading", file, e))?);
    let os = match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => "wasip1",
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => "wasip2",
        _ => {
            let detail = format!("{} is not a WebAssembly module or component", file.display());
            return Err(ImageError::NotWasm { reference: image.normalized, detail });
        }
    };
    let total = wasm.len() as u64;
    let layer_digest = sha256(&wasm);
    let client = client_for(image.oci.resolve_registry(), &cfg.insecure_registries, false);
    client.store_auth_if_needed(image.oci.resolve_registry(), &RegistryAuth::to_oci(auth)).await;
    let err = |e| map_oci_error(&image, e);

    if client.blob_exists(&image.oci, &layer_digest).await.map_err(err)? {
        tracing::debug!(%layer_digest, "layer already in the registry");
    } else {
        upload_with_progress(&client, &image, wasm, &layer_digest, progress).await?;
    }
    progress(total, total);

    let config = WasmConfig {
        created: jiff::Timestamp::now().to_string(),
        architecture: "wasm",
        os,
        layer_digests: vec![layer_digest.clone()],
    };
    let config = serde_json::to_vec(&config).map_err(|e| ImageError::io("encoding", file, std::io::Error::other(e)))?;
    let config_digest = sha256(&config);
    let config_size = config.len() as i64;
    client.push_blob(&image.oci, config, &config_digest).await.map_err(err)?;

    let title = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
        config: OciDescriptor {
            media_type: WASM_CONFIG_V0.to_string(),
            digest: config_digest,
            size: config_size,
            ..OciDescriptor::default()
        },
        layers: vec![OciDescriptor {
            media_type: WASM_LAYER.to_string(),
            digest: layer_digest,
            size: total as i64,
            annotations: title.map(|t| [("org.opencontainers.image.title".to_string(), t)].into_iter().collect()),
            ..OciDescriptor::default()
        }],
        ..OciImageManifest::default()
    };
    let body = serde_json::to_vec(&manifest).map_err(|e| ImageError::io("encoding", file, std::io::Error::other(e)))?;
    let digest = sha256(&body);
    let content_type = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
    client.push_manifest_raw(&image.oci, body, content_type).await.map_err(err)?;
    tracing::debug!(%digest, reference = %image.normalized, "pushed");
    Ok(digest)
}

/// Uploads `data` in chunks, reporting the bytes the registry has acknowledged.
async fn upload_with_progress(
    client: &Client,
    image: &ImageRef,
    data: Bytes,
    digest: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), ImageError> {
    let total = data.len() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let chunks: Vec<Bytes> =
        (0..data.len()).step_by(CHUNK).map(|s| data.slice(s..(s + CHUNK).min(data.len()))).collect();
    let mut offset = 0u64;
    // The client asks for the next chunk only once the previous one was accepted, so the offset of the
    // chunk being handed out is what has been sent so far.
    let stream = futures::stream::iter(chunks.into_iter().map(move |chunk| {
        let _ = tx.send(offset);
        offset += chunk.len() as u64;
        Ok::<_, oci_client::errors::OciDistributionError>(chunk)
    }));
    let push = client.push_blob_stream(&image.oci, stream, digest, Some(total));
    tokio::pin!(push);
    loop {
        tokio::select! {
            result = &mut push => return result.map(|_| ()).map_err(|e| map_oci_error(image, e)),
            Some(sent) = rx.recv() => progress(sent, total),
        }
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
