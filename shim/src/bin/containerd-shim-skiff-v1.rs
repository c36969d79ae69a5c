//! `containerd-shim-skiff-v1`: the containerd runtime v2 shim (`io.containerd.skiff.v1`) that runs Wasm
//! containers with skiff's engine. containerd runs it; see `skiff_shim::containerd`.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    skiff_shim::containerd::run().await;
}
