//! Another store on the node that may hold a Linux image's layers already (containerd's content
//! store, `runtime/oci/content.rs`): a pull does not download a layer it holds, so an image that
//! shares its base layers with one containerd has, or that containerd kept after the node's cache
//! forgot it, costs only its own layers.

use futures::future::BoxFuture;

/// Answers whether a blob is held elsewhere on the node.
pub trait LayerHolder: Send + Sync {
    /// Whether blob `digest` is held there now (`false` when that cannot be told).
    fn holds<'a>(&'a self, digest: &'a str) -> BoxFuture<'a, bool>;
}
