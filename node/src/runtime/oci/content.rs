//! containerd's content store as the image store's [`LayerHolder`]: a Linux layer containerd has
//! (another image's base layer, or an image the node's cache forgot) is not downloaded again.

use futures::future::{BoxFuture, FutureExt};

use crate::image::LayerHolder;
use crate::runtime::containerd::Client;

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
            match self.client.content_labels(digest).await {
                Ok(found) => found.is_some(),
                Err(e) => {
                    tracing::debug!(error = %e, digest, "asking containerd for a layer: downloading it");
                    false
                }
            }
        }
        .boxed()
    }
}
