//! Linux images into containerd, as its own pull would leave them: the manifest, config and layer
//! blobs in the content store (labelled so that containerd's garbage collector follows image ->
//! manifest -> config and layers -> top snapshot), each layer applied by containerd's differ into a
//! committed snapshot named by its chain ID, and an image record with the image's name. A
//! container then gets a writable snapshot on the top layer (`task::RootSnapshot`). Everything is
//! made under a lease until the image record references it. The node's cache keeps the image's
//! description; the layer files it downloaded are dropped once containerd holds them.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::types::Descriptor;
use sha2::{Digest, Sha256};

use std::sync::Arc;

use super::image_files;
use super::spec::ImageFiles;
use crate::image::{BlobRef, ImageStore, LinuxContent, WasmImage};
use crate::runtime::containerd::{Client, ContainerdError};

/// The snapshotter images are unpacked into (containerd's default).
pub const SNAPSHOTTER: &str = "overlayfs";
/// How long an import's lease may outlive a crashed agent.
const LEASE_TTL: Duration = Duration::from_secs(3600);
/// Labels containerd's garbage collector follows from a blob.
const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot";
/// A compressed layer's uncompressed digest (as containerd's own unpacker labels it).
const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// Why an image could not be put into containerd.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a Linux image as the node's cache describes one (a Wasm image, or an index entry from
    /// before Linux images went to containerd).
    #[error("image {reference} is not a Linux image the node pulled for containerd")]
    NotLinux { reference: String },
    #[error("image {reference} has no Linux layers to unpack")]
    NoLayers { reference: String },
    #[error("image {reference}: its config lists {diff_ids} layer digests for {layers} layers")]
    LayerCount { reference: String, diff_ids: usize, layers: usize },
    #[error("image {reference}: layer digest {digest} is not a sha256 digest")]
    BadDigest { reference: String, digest: String },
    /// The node's cache no longer has a blob containerd lacks (a new pull fetches it).
    #[error("image {reference}: blob {digest} is neither in containerd nor in the node's cache")]
    MissingBlob { reference: String, digest: String },
    #[error("image {reference}: layer {layer} unpacked to {applied}, but the config says {expected}")]
    DiffMismatch { reference: String, layer: String, applied: String, expected: String },
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

/// The chain IDs of layers with uncompressed digests `diff_ids` (bottom first): the first is its
/// diff ID, each next one `sha256("<chain below> <diff ID>")`, as the OCI image spec defines.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(below) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{below} {diff_id}")))),
        };
        chain.push(next);
    }
    chain
}

/// The garbage-collection labels of each blob: the manifest references its config and layers, the
/// config the top snapshot, a layer names its uncompressed digest.
fn gc_labels<'a>(content: &'a LinuxContent, top: &str) -> Vec<(&'a BlobRef, HashMap<String, String>)> {
    let mut manifest = HashMap::from([(format!("{GC_REF_CONTENT}.config"), content.config.digest.clone())]);
    for (i, layer) in content.layers.iter().enumerate() {
        manifest.insert(format!("{GC_REF_CONTENT}.l.{i}"), layer.digest.clone());
    }
    let config = HashMap::from([(format!("{GC_REF_SNAPSHOT}.{SNAPSHOTTER}"), top.to_string())]);
    let mut blobs: Vec<(&'a BlobRef, HashMap<String, String>)> = content
        .layers
        .iter()
        .zip(&content.diff_ids)
        .map(|(layer, diff_id)| (layer, HashMap::from([(UNCOMPRESSED_LABEL.to_string(), diff_id.clone())])))
        .collect();
    blobs.push((&content.config, config));
    blobs.push((&content.manifest, manifest));
    blobs
}

fn descriptor(blob: &BlobRef) -> Descriptor {
    Descriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.size,
        annotations: HashMap::new(),
    }
}

/// An image in containerd, as its containers need it.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The committed snapshot of its top layer (its chain ID): the parent of a container's snapshot.
    pub top: String,
    /// Its `/etc/passwd` and `/etc/group`, read once from a view of that snapshot.
    pub files: Arc<ImageFiles>,
}

/// Puts images into one containerd, one import at a time, remembering which are there.
#[derive(Default)]
pub struct Importer {
    /// Image name -> (manifest digest, what its containers need) of what this process imported or found.
    imported: parking_lot::Mutex<HashMap<String, (String, Imported)>>,
    running: tokio::sync::Mutex<()>,
}

impl Importer {
    /// Makes `image` present in containerd (a lookup when this process saw it there already).
    pub async fn ensure(
        &self,
        client: &Client,
        store: &ImageStore,
        image: &WasmImage,
    ) -> Result<Imported, ImportError> {
        let reference = image.reference.clone();
        let Some(content) = image.linux.as_ref() else { return Err(ImportError::NotLinux { reference }) };
        if content.diff_ids.len() != content.layers.len() {
            return Err(ImportError::LayerCount {
                reference,
                diff_ids: content.diff_ids.len(),
                layers: content.layers.len(),
            });
        }
        if let Some(bad) = content.diff_ids.iter().find(|d| crate::image::sha256_hex(d).is_none()) {
            return Err(ImportError::BadDigest { reference, digest: bad.clone() });
        }
        let chain = chain_ids(&content.diff_ids);
        let Some(top) = chain.last().cloned() else { return Err(ImportError::NoLayers { reference }) };
        if let Some((digest, imported)) = self.imported.lock().get(&reference) {
            if *digest == content.manifest.digest {
                return Ok(imported.clone());
            }
        }
        let _one_at_a_time = self.running.lock().await;
        let present = client.image_target(&reference).await?.as_deref() == Some(content.manifest.digest.as_str())
            && client.snapshot_exists(SNAPSHOTTER, &top).await?;
        let lease = format!("skiff-import-{:016x}", rand::random::<u64>());
        client.create_lease(&lease, LEASE_TTL).await?;
        let leased = client.leased(&lease)?;
        let done = async {
            if !present {
                import(&leased, store, image, content, &chain).await?;
                tracing::info!(image = %reference, layers = content.layers.len(), "image imported into containerd");
            }
            read_files(&leased, &top).await
        }
        .await;
        if let Err(e) = client.delete_lease(&lease).await {
            tracing::warn!(error = %e, lease, "deleting an import's lease (it expires)");
        }
        let imported = Imported { top, files: Arc::new(done?) };
        self.imported.lock().insert(reference, (content.manifest.digest.clone(), imported.clone()));
        store.drop_blobs(content.layers.iter().map(|l| l.digest.as_str()));
        Ok(imported)
    }

    /// Forgets what this process knows of `reference` (its snapshot went missing): the next
    /// `ensure` looks in containerd again.
    pub fn forget(&self, reference: &str) {
        self.imported.lock().remove(reference);
    }
}

/// The image files containers' identities are looked up in, from a view of snapshot `top` (its
/// layer directories are read in place: nothing is mounted).
async fn read_files(client: &Client, top: &str) -> Result<ImageFiles, ImportError> {
    let key = format!("skiff-view-{:016x}", rand::random::<u64>());
    let mounts = client.view_snapshot(SNAPSHOTTER, &key, top).await?;
    let dirs = image_files::layer_dirs(&mounts);
    let files = tokio::task::spawn_blocking(move || ImageFiles {
        passwd: image_files::read_file(&dirs, "etc/passwd"),
        group: image_files::read_file(&dirs, "etc/group"),
    })
    .await
    .unwrap_or_default();
    if let Err(e) = client.remove_snapshot(SNAPSHOTTER, &key).await {
        tracing::warn!(error = %e, key, "removing a view snapshot");
    }
    Ok(files)
}

async fn import(
    client: &Client,
    store: &ImageStore,
    image: &WasmImage,
    content: &LinuxContent,
    chain: &[String],
) -> Result<(), ImportError> {
    let top = chain.last().map(String::as_str).unwrap_or_default();
    for (blob, labels) in gc_labels(content, top) {
        match client.content_labels(&blob.digest).await? {
            Some(have) if labels.iter().all(|(k, v)| have.get(k) == Some(v)) => {}
            Some(_) => client.label_content(&blob.digest, labels).await?,
            None => {
                let path = store.blob_file(&blob.digest).ok_or_else(|| ImportError::MissingBlob {
                    reference: image.reference.clone(),
                    digest: blob.digest.clone(),
                })?;
                client.write_content(&path, &blob.digest, blob.size, labels).await?;
            }
        }
    }
    let mut parent = "";
    for ((layer, diff_id), chain_id) in content.layers.iter().zip(&content.diff_ids).zip(chain) {
        if !client.snapshot_exists(SNAPSHOTTER, chain_id).await? {
            unpack(client, &image.reference, layer, diff_id, chain_id, parent).await?;
        }
        parent = chain_id;
    }
    client.put_image(&image.reference, descriptor(&content.manifest)).await?;
    Ok(())
}

/// Applies `layer` on `parent` in a fresh active snapshot and commits it as `chain_id`.
async fn unpack(
    client: &Client,
    reference: &str,
    layer: &BlobRef,
    diff_id: &str,
    chain_id: &str,
    parent: &str,
) -> Result<(), ImportError> {
    let key = format!("skiff-extract-{:016x}-{chain_id}", rand::random::<u64>());
    let mounts = client.prepare_snapshot(SNAPSHOTTER, &key, parent).await?;
    let committed = async {
        let applied = client.apply_layer(descriptor(layer), mounts).await?;
        if applied != diff_id {
            return Err(ImportError::DiffMismatch {
                reference: reference.to_string(),
                layer: layer.digest.clone(),
                applied,
                expected: diff_id.to_string(),
            });
        }
        match client.commit_snapshot(SNAPSHOTTER, chain_id, &key).await {
            // Another containerd client committed the same layer first.
            Err(ContainerdError::Call { code: tonic::Code::AlreadyExists, .. }) => Ok(()),
            other => other.map_err(ImportError::from),
        }
    }
    .await;
    // Gone after a commit; left by a failure or a lost race.
    if let Err(e) = client.remove_snapshot(SNAPSHOTTER, &key).await {
        tracing::warn!(error = %e, key, "removing an unpacking snapshot");
    }
    committed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(digest: char) -> BlobRef {
        BlobRef { media_type: "m".into(), digest: format!("sha256:{}", digest.to_string().repeat(64)), size: 1 }
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        // The values `ctr`/containerd compute for these diff IDs (identity.ChainIDs).
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}"))));
        assert_eq!(chain[1], expected);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn the_manifest_references_config_and_layers_and_the_config_the_top_snapshot() {
        let content = LinuxContent {
            manifest: blob('f'),
            config: blob('c'),
            layers: vec![blob('1'), blob('2')],
            diff_ids: vec!["sha256:d1".into(), "sha256:d2".into()],
        };
        let labels = gc_labels(&content, "sha256:top");
        let of = |d: &BlobRef| labels.iter().find(|(b, _)| b.digest == d.digest).map(|(_, l)| l.clone()).unwrap();
        let manifest = of(&content.manifest);
        assert_eq!(manifest["containerd.io/gc.ref.content.config"], content.config.digest);
        assert_eq!(manifest["containerd.io/gc.ref.content.l.0"], content.layers[0].digest);
        assert_eq!(manifest["containerd.io/gc.ref.content.l.1"], content.layers[1].digest);
        assert_eq!(of(&content.config)["containerd.io/gc.ref.snapshot.overlayfs"], "sha256:top");
        assert_eq!(of(&content.layers[1])["containerd.io/uncompressed"], "sha256:d2");
        // The manifest is written last: what it references is in the store before it.
        assert_eq!(labels.last().map(|(b, _)| b.digest.clone()), Some(content.manifest.digest.clone()));
    }
}
