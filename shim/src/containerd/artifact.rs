//! Wasm OCI artifacts: which manifest of an image index and which layer of a manifest hold a container's
//! Wasm program (config `application/vnd.wasm.config.v0+json`, layers `application/wasm` or
//! `application/vnd.wasm.content.layer.v1+wasm`), and the fallback that reads it from containerd's content
//! store when the rootfs holds no Wasm entry.
//!
//! containerd 1.6 cannot unpack such an image: `ctr run` / a CRI pull of it fails with
//! `ctr: mismatched image rootfs and manifest layers` (its unpacker treats every manifest layer as a
//! filesystem layer). containerd/containerd#9142 (merged in 2023, after 1.6) makes the unpacker skip layers
//! of non-layer media types. So the module is never in the rootfs: the shim asks containerd for the
//! container's image and reads the Wasm layer's blob itself (see `content.rs`).

use std::collections::HashMap;

use containerd_shim::protos::ttrpc::Code;
use serde_json::Value;

use super::bundle::Bundle;
use super::content::ContentSource;
use super::entry::Entry;
use super::error::ShimError;

/// The config media type of a Wasm OCI artifact (CNCF TAG Runtime Wasm WG).
pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
/// Layer media types holding a Wasm module or component, as the raw binary.
pub const WASM_LAYERS: &[&str] = &["application/wasm", "application/vnd.wasm.content.layer.v1+wasm"];
/// The annotation naming a layer's file.
pub const TITLE: &str = "org.opencontainers.image.title";
/// The file name of a Wasm layer without a title.
pub const DEFAULT_MODULE: &str = "module.wasm";

const INDEX_TYPES: &[&str] =
    &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
const MANIFEST_TYPES: &[&str] =
    &["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"];
/// Platforms an index is searched for, in order of preference.
const PLATFORMS: &[(&str, &str)] = &[("wasip2", "wasm"), ("wasip1", "wasm"), ("wasi", "wasm"), ("linux", "amd64")];

/// Why a Wasm artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("connecting to containerd at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("containerd {call} {name}: {message}")]
    Rpc { call: &'static str, name: String, message: String },
    #[error("container {0} names no image")]
    NoImage(String),
    #[error("unsupported layer media type {media_type} in Wasm artifact {manifest}")]
    UnsupportedLayer { media_type: String, manifest: String },
    #[error("Wasm artifact {0} has no layers")]
    NoLayers(String),
    #[error("unsupported manifest media type {media_type} for {digest}")]
    UnsupportedManifest { media_type: String, digest: String },
    #[error("image index {0} has no manifest for wasi/wasm or linux/amd64")]
    NoPlatform(String),
    #[error("blob {digest} is missing from containerd's content store: {reason}")]
    MissingBlob { digest: String, reason: String },
    #[error("blob {digest}: {reason}")]
    BadBlob { digest: String, reason: String },
}

impl ArtifactError {
    /// The ttrpc status code containerd gets for this error.
    pub(crate) fn code(&self) -> Code {
        match self {
            ArtifactError::MissingBlob { .. } | ArtifactError::NoImage(_) => Code::NOT_FOUND,
            ArtifactError::Connect { .. } | ArtifactError::Rpc { .. } => Code::UNAVAILABLE,
            _ => Code::INVALID_ARGUMENT,
        }
    }
}

/// A content descriptor from an index or manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub annotations: HashMap<String, String>,
}

impl Descriptor {
    /// Reads `{mediaType, digest, size, annotations}`; `None` without a digest.
    pub fn from_json(value: &Value) -> Option<Self> {
        let digest = value.get("digest")?.as_str()?.to_string();
        let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let annotations = value
            .get("annotations")
            .and_then(Value::as_object)
            .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        Some(Descriptor {
            media_type: text("mediaType"),
            digest,
            size: value.get("size").and_then(Value::as_u64).unwrap_or(0),
            annotations,
        })
    }

    /// Where the guest sees this layer's file: `/` + its title's file name, or `/module.wasm`.
    pub fn guest_path(&self) -> String {
        let name = self
            .annotations
            .get(TITLE)
            .and_then(|t| t.rsplit('/').next())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .unwrap_or(DEFAULT_MODULE);
        format!("/{name}")
    }
}

/// Whether a descriptor of this media type is an image index (or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    INDEX_TYPES.contains(&media_type)
}

/// Whether a descriptor of this media type is an image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    MANIFEST_TYPES.contains(&media_type)
}

/// The manifest of `index` (its digest `digest`) to run: the first for a wasi/wasm platform, else the first
/// for linux/amd64, else the only one.
pub fn pick_manifest(index: &Value, digest: &str) -> Result<Descriptor, ArtifactError> {
    let manifests: Vec<(Descriptor, Option<(String, String)>)> = index
        .get("manifests")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| {
                    let platform = m.get("platform").map(|p| {
                        let field = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                        (field("os"), field("architecture"))
                    });
                    Some((Descriptor::from_json(m)?, platform))
                })
                .collect()
        })
        .unwrap_or_default();
    for (os, arch) in PLATFORMS {
        let found = manifests.iter().find(|(_, p)| p.as_ref().is_some_and(|(o, a)| o == os && a == arch));
        if let Some((descriptor, _)) = found {
            return Ok(descriptor.clone());
        }
    }
    match manifests.as_slice() {
        [(only, _)] => Ok(only.clone()),
        _ => Err(ArtifactError::NoPlatform(digest.to_string())),
    }
}

/// The Wasm layer of `manifest` (its digest `digest`): `None` when it is a regular image (neither its
/// config nor any layer has a Wasm media type), else its first Wasm layer, or an error naming the
/// unsupported layer type of an artifact without one.
pub fn wasm_layer(manifest: &Value, digest: &str) -> Result<Option<Descriptor>, ArtifactError> {
    let config_type = manifest.get("config").and_then(|c| c.get("mediaType")).and_then(Value::as_str);
    let layers: Vec<Descriptor> = manifest
        .get("layers")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Descriptor::from_json).collect())
        .unwrap_or_default();
    let first_wasm = layers.iter().find(|l| WASM_LAYERS.contains(&l.media_type.as_str()));
    if let Some(layer) = first_wasm {
        return Ok(Some(layer.clone()));
    }
    if config_type != Some(WASM_CONFIG_V0) {
        return Ok(None);
    }
    match layers.first() {
        Some(layer) => {
            Err(ArtifactError::UnsupportedLayer { media_type: layer.media_type.clone(), manifest: digest.to_string() })
        }
        None => Err(ArtifactError::NoLayers(digest.to_string())),
    }
}

/// The container's Wasm program: the rootfs entry [`Entry::find`] names, else (when that finds none) the
/// Wasm layer of the container's image in containerd's content store. A regular image keeps the rootfs
/// error; an artifact's own problems (unsupported layer type, missing blob) are reported as such.
pub async fn find_entry(source: Option<&ContentSource>, id: &str, bundle: &Bundle) -> Result<Entry, ShimError> {
    let reason = match Entry::find(bundle) {
        Err(ShimError::NoEntry(reason)) => reason,
        other => return other,
    };
    let Some(source) = source else { return Err(ShimError::NoEntry(reason)) };
    let span = tracing::info_span!("artifact", id);
    let found = tracing::Instrument::instrument(source.wasm_entry(id), span).await?;
    found.map(Entry::Wasm).ok_or(ShimError::NoEntry(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(media_type: &str, digest: &str, title: Option<&str>) -> Value {
        let mut l = json!({"mediaType": media_type, "digest": digest, "size": 8});
        if let Some(t) = title {
            l["annotations"] = json!({ TITLE: t });
        }
        l
    }

    fn manifest(config: &str, layers: Vec<Value>) -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config, "digest": "sha256:c0", "size": 2},
            "layers": layers
        })
    }

    #[test]
    fn picks_the_first_wasm_layer_with_its_title() {
        let m = manifest(
            WASM_CONFIG_V0,
            vec![
                layer("application/wasm", "sha256:a1", Some("hello.wasm")),
                layer("application/wasm", "sha256:a2", None),
            ],
        );
        let l = wasm_layer(&m, "sha256:m").expect("valid").expect("an artifact");
        assert_eq!((l.digest.as_str(), l.size), ("sha256:a1", 8));
        assert_eq!(l.guest_path(), "/hello.wasm");

        let m = manifest(WASM_CONFIG_V0, vec![layer("application/vnd.wasm.content.layer.v1+wasm", "sha256:b", None)]);
        let l = wasm_layer(&m, "sha256:m").expect("valid").expect("an artifact");
        assert_eq!((l.digest.as_str(), l.guest_path().as_str()), ("sha256:b", "/module.wasm"));

        // Wasm layers under an OCI image config (runwasi's "OCI image with Wasm layers") count too.
        let m = manifest("application/vnd.oci.image.config.v1+json", vec![layer("application/wasm", "sha256:c", None)]);
        assert!(wasm_layer(&m, "sha256:m").expect("valid").is_some());
    }

    #[test]
    fn a_title_cannot_leave_the_root() {
        let d = |t: &str| Descriptor::from_json(&layer("application/wasm", "sha256:a", Some(t))).expect("descriptor");
        assert_eq!(d("../../etc/x.wasm").guest_path(), "/x.wasm");
        assert_eq!(d("..").guest_path(), "/module.wasm");
        assert_eq!(d("dir/").guest_path(), "/module.wasm");
    }

    #[test]
    fn a_regular_image_is_not_an_artifact() {
        let m = manifest(
            "application/vnd.oci.image.config.v1+json",
            vec![layer("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:l", None)],
        );
        assert_eq!(wasm_layer(&m, "sha256:m").expect("valid"), None);
    }

    #[test]
    fn an_artifact_without_a_wasm_layer_is_an_error() {
        let m = manifest(WASM_CONFIG_V0, vec![layer("application/x-tar", "sha256:t", None)]);
        let err = wasm_layer(&m, "sha256:m").expect_err("unsupported");
        assert_eq!(err.to_string(), "unsupported layer media type application/x-tar in Wasm artifact sha256:m");
        let err = wasm_layer(&manifest(WASM_CONFIG_V0, vec![]), "sha256:m").expect_err("no layers");
        assert!(matches!(err, ArtifactError::NoLayers(_)), "{err}");
    }

    #[test]
    fn an_index_resolves_to_wasm_then_linux_amd64_then_its_only_manifest() {
        let entry = |digest: &str, os: &str, arch: &str| {
            json!({"mediaType": MANIFEST_TYPES[0], "digest": digest, "size": 1,
                   "platform": {"os": os, "architecture": arch}})
        };
        let index = json!({"manifests": [entry("sha256:arm", "linux", "arm64"), entry("sha256:amd", "linux", "amd64"),
                                         entry("sha256:wasi", "wasip1", "wasm")]});
        assert_eq!(pick_manifest(&index, "sha256:i").expect("wasm").digest, "sha256:wasi");
        let index =
            json!({"manifests": [entry("sha256:arm", "linux", "arm64"), entry("sha256:amd", "linux", "amd64")]});
        assert_eq!(pick_manifest(&index, "sha256:i").expect("amd64").digest, "sha256:amd");
        let index = json!({"manifests": [{"mediaType": MANIFEST_TYPES[0], "digest": "sha256:one", "size": 1}]});
        assert_eq!(pick_manifest(&index, "sha256:i").expect("only").digest, "sha256:one");
        let index = json!({"manifests": [entry("sha256:arm", "linux", "arm64"), entry("sha256:s", "linux", "s390x")]});
        assert!(matches!(pick_manifest(&index, "sha256:i"), Err(ArtifactError::NoPlatform(_))));
        assert!(matches!(pick_manifest(&json!({}), "sha256:i"), Err(ArtifactError::NoPlatform(_))));
    }

    #[test]
    fn media_type_classes() {
        assert!(is_index("application/vnd.oci.image.index.v1+json"));
        assert!(is_manifest("application/vnd.docker.distribution.manifest.v2+json"));
        assert!(!is_manifest(WASM_CONFIG_V0));
    }
}
