//! `containerd-shim-skiff-v1`: the containerd runtime v2 shim (`io.containerd.skiff.v1`) that runs Wasm
//! containers with skiff's engine. containerd runs it; see `skiff_shim::containerd`. Started by itself with
//! a hidden first argument, it is a pod's namespace holder instead (`skiff_shim::containerd::hold_if_asked`).

fn main() {
    // First of all: a holder must not start a runtime or threads.
    skiff_shim::containerd::hold_if_asked();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("containerd-shim-skiff-v1: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(skiff_shim::containerd::run());
}
