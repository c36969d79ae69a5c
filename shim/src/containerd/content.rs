//! Reads a container's Wasm artifact from containerd over its gRPC API: the container's image name
//! (Containers.Get), the image's target (Images.Get), the index and manifest blobs, and the Wasm layer's blob
//! streamed from the content store (Content.Read), checked against its digest.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::metadata::{Ascii, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use sha2::{Digest, Sha256};

use super::artifact::{is_index, is_manifest, pick_manifest, wasm_layer, ArtifactError, Descriptor};
use super::entry::WasmEntry;

/// The largest index or manifest read.
const MAX_JSON: u64 = 4 << 20;
/// The largest Wasm layer read.
const MAX_WASM: u64 = 1 << 30;
/// The first bytes of every Wasm binary.
const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// How many index levels are followed before a manifest.
const MAX_DEPTH: usize = 3;
/// The gRPC metadata key containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Where the shim's containerd is (`-address`) and the namespace of its containers (`-namespace`).
#[derive(Debug, Clone)]
pub struct ContentSource {
    address: String,
    namespace: String,
}

impl ContentSource {
    /// `None` when the shim was started without containerd's address.
    pub fn new(address: &str, namespace: &str) -> Option<Self> {
        let address = address.trim_start_matches("unix://");
        (!address.is_empty()).then(|| ContentSource { address: address.into(), namespace: namespace.into() })
    }

    /// The Wasm program of container `id`'s image when it is a Wasm artifact, `None` for a regular image.
    pub async fn wasm_entry(&self, id: &str) -> Result<Option<WasmEntry>, ArtifactError> {
        let channel = containerd_client::connect(&self.address)
            .await
            .map_err(|e| ArtifactError::Connect { address: self.address.clone(), reason: e.to_string() })?;
        let container = ContainersClient::new(channel.clone())
            .get(self.request(GetContainerRequest { id: id.into() })?)
            .await
            .map_err(|s| rpc("Containers.Get", id, &s))?
            .into_inner()
            .container
            .ok_or_else(|| ArtifactError::NoImage(id.into()))?;
        if container.image.is_empty() {
            return Err(ArtifactError::NoImage(id.into()));
        }
        let image = ImagesClient::new(channel.clone())
            .get(self.request(GetImageRequest { name: container.image.clone() })?)
            .await
            .map_err(|s| rpc("Images.Get", &container.image, &s))?
            .into_inner()
            .image;
        let Some(target) = image.and_then(|i| i.target) else {
            return Err(ArtifactError::NoImage(id.into()));
        };
        let mut content = ContentClient::new(channel);
        let mut descriptor = Descriptor {
            media_type: target.media_type,
            digest: target.digest,
            size: u64::try_from(target.size).unwrap_or(0),
            annotations: target.annotations,
        };
        for _ in 0..MAX_DEPTH {
            if is_manifest(&descriptor.media_type) {
                let manifest = self.read_json(&mut content, &descriptor).await?;
                let Some(layer) = wasm_layer(&manifest, &descriptor.digest)? else { return Ok(None) };
                return self.read_wasm(&mut content, &layer).await.map(Some);
            }
            if !is_index(&descriptor.media_type) {
                break;
            }
            let index = self.read_json(&mut content, &descriptor).await?;
            descriptor = pick_manifest(&index, &descriptor.digest)?;
        }
        Err(ArtifactError::UnsupportedManifest { media_type: descriptor.media_type, digest: descriptor.digest })
    }

    /// `message` as a request in this source's namespace.
    fn request<T>(&self, message: T) -> Result<Request<T>, ArtifactError> {
        let namespace: MetadataValue<Ascii> = self.namespace.parse().map_err(|_| ArtifactError::Rpc {
            call: "namespace",
            name: self.namespace.clone(),
            message: "not a valid gRPC header value".into(),
        })?;
        let mut request = Request::new(message);
        request.metadata_mut().insert(NAMESPACE_HEADER, namespace);
        Ok(request)
    }

    async fn read_json(
        &self,
        content: &mut ContentClient<Channel>,
        descriptor: &Descriptor,
    ) -> Result<serde_json::Value, ArtifactError> {
        let bytes = self.read_blob(content, descriptor, MAX_JSON).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ArtifactError::BadBlob { digest: descriptor.digest.clone(), reason: format!("not JSON: {e}") })
    }

    async fn read_wasm(
        &self,
        content: &mut ContentClient<Channel>,
        layer: &Descriptor,
    ) -> Result<WasmEntry, ArtifactError> {
        let bytes = self.read_blob(content, layer, MAX_WASM).await?;
        if !bytes.starts_with(WASM_MAGIC) {
            return Err(ArtifactError::BadBlob {
                digest: layer.digest.clone(),
                reason: format!("the {} layer is not a Wasm module or component", layer.media_type),
            });
        }
        tracing::info!(digest = %layer.digest, size = bytes.len(), "read the Wasm layer from the content store");
        Ok(WasmEntry { guest_path: layer.guest_path(), bytes, digest: layer.digest.clone() })
    }

    /// The whole blob `descriptor` names (at most `max` bytes), streamed and checked against its digest.
    async fn read_blob(
        &self,
        content: &mut ContentClient<Channel>,
        descriptor: &Descriptor,
        max: u64,
    ) -> Result<Vec<u8>, ArtifactError> {
        let digest = &descriptor.digest;
        let bad = |reason: String| ArtifactError::BadBlob { digest: digest.clone(), reason };
        if descriptor.size > max {
            return Err(bad(format!("{} bytes, more than the {max} allowed", descriptor.size)));
        }
        let missing = |s: Status| match s.code() {
            Code::NotFound => ArtifactError::MissingBlob { digest: digest.clone(), reason: s.message().to_string() },
            _ => rpc("Content.Read", digest, &s),
        };
        let request = self.request(ReadContentRequest { digest: digest.clone(), offset: 0, size: 0 })?;
        let mut stream = content.read(request).await.map_err(missing)?.into_inner();
        let mut bytes = Vec::with_capacity(usize::try_from(descriptor.size).unwrap_or(0));
        while let Some(chunk) = stream.message().await.map_err(missing)? {
            if (bytes.len() + chunk.data.len()) as u64 > max {
                return Err(bad(format!("more than the {max} bytes allowed")));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if digest.starts_with("sha256:") && &actual != digest {
            return Err(bad(format!("content has digest {actual}")));
        }
        Ok(bytes)
    }
}

fn rpc(call: &'static str, name: &str, status: &Status) -> ArtifactError {
    ArtifactError::Rpc { call, name: name.into(), message: format!("{:?}: {}", status.code(), status.message()) }
}
