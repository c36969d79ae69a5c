//! containerd's content store as the image store's [`LayerHolder`]: a Linux layer containerd has
//! (another image's base layer, or an image the node's cache forgot) is not downloaded again.

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};

use crate::image::LayerHolder;
use crate::runtime::containerd::Client;

/// How long a layer check waits for containerd: a healthy one answers in milliseconds, and a hung
/// one must not hold every layer of a pull for the client's whole call timeout (30 s); without an
/// answer the layer is downloaded, as it would be anyway.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The content store of the containerd the node's Linux containers run in.
pub struct ContentStore {
    client: Client,
}

impl ContentStore {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl LayerHolder for ContentStore {
    fn holds<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, bool> {
        async move {
            match tokio::time::timeout(CHECK_TIMEOUT, self.client.content_labels(digest)).await {
                Ok(Ok(found)) => found.is_some(),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, digest, "asking containerd for a layer: downloading it");
                    false
                }
                Err(_) => {
                    tracing::warn!(digest, timeout = ?CHECK_TIMEOUT, "containerd did not answer a layer check: downloading it");
                    false
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A containerd that accepts connections and never answers: the check gives up after
    /// [`CHECK_TIMEOUT`] and the layer is downloaded, instead of waiting out the call timeout.
    #[tokio::test]
    async fn a_hung_containerd_is_not_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("containerd.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let held = tokio::spawn(async move {
            let mut silent = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                silent.push(conn);
            }
        });
        let client = Client::connect(&socket, "k8s.io").await.expect("connects without an answer");
        let store = ContentStore::new(client);
        let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let answer = tokio::time::timeout(CHECK_TIMEOUT * 5, store.holds(digest)).await;
        assert_eq!(answer.ok(), Some(false), "gave up and downloads");
        held.abort();
    }
}
