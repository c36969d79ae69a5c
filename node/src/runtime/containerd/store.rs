//! containerd's image storage as the kubelet uses it: the content store (blobs written from files,
//! their garbage-collection labels), the snapshotter and differ (layers unpacked into committed
//! snapshots, a container's writable snapshot), image records, and leases that keep what an import
//! makes from the garbage collector until it is referenced.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest, DeleteImageRequest, DeleteRequest, GetImageRequest, Image,
    InfoRequest, UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::{Descriptor, Mount};
use tokio::io::AsyncReadExt;
use tonic::Code;

use super::client::{call, Client};
use super::ContainerdError;

/// Bound on a call that moves or unpacks a whole blob.
const BLOB_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on the small calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes per content write message (under gRPC's default 4 MiB message limit).
const CHUNK: usize = 1 << 20;
/// The label that makes containerd's garbage collector drop a lease at a time.
const LEASE_EXPIRE_LABEL: &str = "containerd.io/gc.expire";

fn ok_if_missing(result: Result<(), tonic::Status>, what: &'static str, id: &str) -> Result<bool, ContainerdError> {
    match result {
        Ok(()) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(call(what, id)(s)),
    }
}

/// A snapshot to make: writable, or a read-only view.
#[derive(Clone, Copy)]
enum NewSnapshot {
    Active,
    View,
}

impl NewSnapshot {
    fn what(self) -> &'static str {
        match self {
            NewSnapshot::Active => "preparing snapshot",
            NewSnapshot::View => "viewing snapshot",
        }
    }
}

impl Client {
    /// Creates lease `id`, dropped by containerd after `ttl` if nobody deletes it first.
    pub async fn create_lease(&self, id: &str, ttl: Duration) -> Result<(), ContainerdError> {
        let expire = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::from_hours(1)))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let labels = HashMap::from([(LEASE_EXPIRE_LABEL.to_string(), expire.to_string())]);
        let request = self.request(CreateRequest { id: id.to_string(), labels }, Some(CALL_TIMEOUT));
        LeasesClient::new(self.channel.clone()).create(request).await.map_err(call("creating lease", id))?;
        Ok(())
    }

    /// Deletes lease `id` (what it held becomes collectable unless referenced); a missing one is fine.
    pub async fn delete_lease(&self, id: &str) -> Result<(), ContainerdError> {
        let request = self.request(DeleteRequest { id: id.to_string(), sync: false }, Some(CALL_TIMEOUT));
        let result = LeasesClient::new(self.channel.clone()).delete(request).await.map(|_| ());
        ok_if_missing(result, "deleting lease", id).map(|_| ())
    }

    /// The labels of blob `digest` in the content store, `None` when it is not there.
    pub async fn content_labels(&self, digest: &str) -> Result<Option<HashMap<String, String>>, ContainerdError> {
        let request = self.request(InfoRequest { digest: digest.to_string() }, Some(CALL_TIMEOUT));
        match ContentClient::new(self.channel.clone()).info(request).await {
            Ok(r) => Ok(Some(r.into_inner().info.map(|i| i.labels).unwrap_or_default())),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(call("reading content", digest)(s)),
        }
    }

    /// Sets `labels` on blob `digest` (others it has are kept).
    pub async fn label_content(&self, digest: &str, labels: HashMap<String, String>) -> Result<(), ContainerdError> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = containerd_client::services::v1::Info { digest: digest.to_string(), labels, ..Default::default() };
        let request = self.request(
            UpdateRequest { info: Some(info), update_mask: Some(prost_types::FieldMask { paths }) },
            Some(CALL_TIMEOUT),
        );
        ContentClient::new(self.channel.clone()).update(request).await.map_err(call("labelling content", digest))?;
        Ok(())
    }

    /// Writes the file at `path` into the content store as blob `digest` of `size` bytes (containerd
    /// verifies both) with `labels`. A blob already there (a concurrent writer) is fine.
    pub async fn write_content(
        &self,
        path: &Path,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let prepare =
            |what: &str, e: std::io::Error| ContainerdError::Prepare(format!("{what} {}: {e}", path.display()));
        let mut file = tokio::fs::File::open(path).await.map_err(|e| prepare("opening", e))?;
        // A fresh ref: a concurrent writer of the same blob holds its own lock, and the loser's commit
        // finds the blob there.
        let reference = format!("skiff-{digest}-{}", rand::random::<u64>());
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let request = self.request(tokio_stream::wrappers::ReceiverStream::new(rx), Some(BLOB_TIMEOUT));
        let mut client = ContentClient::new(self.channel.clone());
        let responses = tokio::spawn(async move {
            let mut stream = client.write(request).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        });
        let mut offset = 0i64;
        let mut buf = vec![0u8; CHUNK];
        let sent: Result<(), ContainerdError> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(|e| prepare("reading", e))?;
                let last = n == 0;
                let message = WriteContentRequest {
                    action: if last { WriteAction::Commit } else { WriteAction::Write } as i32,
                    r#ref: reference.clone(),
                    total: size,
                    expected: digest.to_string(),
                    offset,
                    data: buf[..n].to_vec(),
                    labels: if last { labels.clone() } else { HashMap::new() },
                };
                if tx.send(message).await.is_err() {
                    return Ok(()); // the stream ended early: its status says why
                }
                offset = offset.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
                if last {
                    return Ok(());
                }
            }
        }
        .await;
        drop(tx);
        let answered =
            responses.await.map_err(|e| ContainerdError::Prepare(format!("writing {digest} into containerd: {e}")))?;
        sent?;
        match answered {
            Ok(()) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(call("writing content", digest)(s)),
        }
    }

    /// Whether snapshot `key` exists in `snapshotter`.
    pub async fn snapshot_exists(&self, snapshotter: &str, key: &str) -> Result<bool, ContainerdError> {
        let request = self.request(
            StatSnapshotRequest { snapshotter: snapshotter.to_string(), key: key.to_string() },
            Some(CALL_TIMEOUT),
        );
        let result = SnapshotsClient::new(self.channel.clone()).stat(request).await.map(|_| ());
        ok_if_missing(result, "reading snapshot", key)
    }

    /// Makes active snapshot `key` on committed `parent` (none: empty) and returns how to mount it.
    pub async fn prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>, ContainerdError> {
        self.new_snapshot(NewSnapshot::Active, snapshotter, key, parent).await
    }

    /// Makes read-only view `key` of committed `parent` and returns how to mount it.
    pub async fn view_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>, ContainerdError> {
        self.new_snapshot(NewSnapshot::View, snapshotter, key, parent).await
    }

    async fn new_snapshot(
        &self,
        kind: NewSnapshot,
        snapshotter: &str,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>, ContainerdError> {
        let (snapshotter, key_owned, parent) = (snapshotter.to_string(), key.to_string(), parent.to_string());
        let mut client = SnapshotsClient::new(self.channel.clone());
        let labels = HashMap::new();
        let mounts = match kind {
            NewSnapshot::Active => {
                let message = PrepareSnapshotRequest { snapshotter, key: key_owned, parent, labels };
                client.prepare(self.request(message, Some(CALL_TIMEOUT))).await.map(|r| r.into_inner().mounts)
            }
            NewSnapshot::View => {
                let message = ViewSnapshotRequest { snapshotter, key: key_owned, parent, labels };
                client.view(self.request(message, Some(CALL_TIMEOUT))).await.map(|r| r.into_inner().mounts)
            }
        };
        mounts.map_err(call(kind.what(), key))
    }

    /// Commits active snapshot `key` as `name`.
    pub async fn commit_snapshot(&self, snapshotter: &str, name: &str, key: &str) -> Result<(), ContainerdError> {
        let request = self.request(
            CommitSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                name: name.to_string(),
                key: key.to_string(),
                labels: HashMap::new(),
            },
            Some(CALL_TIMEOUT),
        );
        SnapshotsClient::new(self.channel.clone()).commit(request).await.map_err(call("committing snapshot", name))?;
        Ok(())
    }

    /// Removes snapshot `key`; a missing one is fine.
    pub async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<(), ContainerdError> {
        let request = self.request(
            RemoveSnapshotRequest { snapshotter: snapshotter.to_string(), key: key.to_string() },
            Some(CALL_TIMEOUT),
        );
        let result = SnapshotsClient::new(self.channel.clone()).remove(request).await.map(|_| ());
        ok_if_missing(result, "removing snapshot", key).map(|_| ())
    }

    /// Applies layer `layer` (a blob in the content store) onto `mounts`; the digest of its
    /// uncompressed content (the layer's diff ID).
    pub async fn apply_layer(&self, layer: Descriptor, mounts: Vec<Mount>) -> Result<String, ContainerdError> {
        let digest = layer.digest.clone();
        let request = self.request(
            ApplyRequest { diff: Some(layer), mounts, payloads: HashMap::new(), sync_fs: false },
            Some(BLOB_TIMEOUT),
        );
        let response =
            DiffClient::new(self.channel.clone()).apply(request).await.map_err(call("applying layer", &digest))?;
        Ok(response.into_inner().applied.map(|d| d.digest).unwrap_or_default())
    }

    /// The digest image record `name` points at, `None` when there is none.
    pub async fn image_target(&self, name: &str) -> Result<Option<String>, ContainerdError> {
        let request = self.request(GetImageRequest { name: name.to_string() }, Some(CALL_TIMEOUT));
        match ImagesClient::new(self.channel.clone()).get(request).await {
            Ok(r) => Ok(r.into_inner().image.and_then(|i| i.target).map(|t| t.digest)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(call("reading image", name)(s)),
        }
    }

    /// Points image record `name` at `target` (created, or updated when it exists).
    pub async fn put_image(&self, name: &str, target: Descriptor) -> Result<(), ContainerdError> {
        let image = Image { name: name.to_string(), target: Some(target), ..Image::default() };
        let mut images = ImagesClient::new(self.channel.clone());
        let create = self
            .request(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }, Some(CALL_TIMEOUT));
        match images.create(create).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                let paths = vec!["target".to_string()];
                let update = self.request(
                    UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(prost_types::FieldMask { paths }),
                        source_date_epoch: None,
                    },
                    Some(CALL_TIMEOUT),
                );
                images.update(update).await.map_err(call("updating image", name))?;
                Ok(())
            }
            Err(s) => Err(call("creating image", name)(s)),
        }
    }

    /// Deletes image record `name` (containerd then collects the content and snapshots only it
    /// held); a missing one is fine.
    pub async fn delete_image(&self, name: &str) -> Result<(), ContainerdError> {
        let request =
            self.request(DeleteImageRequest { name: name.to_string(), sync: true, target: None }, Some(BLOB_TIMEOUT));
        let result = ImagesClient::new(self.channel.clone()).delete(request).await.map(|_| ());
        ok_if_missing(result, "deleting image", name).map(|_| ())
    }
}
