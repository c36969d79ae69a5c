//! The shim's lifecycle as containerd runs it: `start` spawns (or reuses) the serving shim of the
//! container's group (its CRI pod sandbox, else itself) and prints its address; `delete` cleans up after a
//! shim that died; the serving process runs the task service until Shutdown.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::util::write_str_to_file;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{spawn, Config, ExitSignal, Flags, Shim, StartOpts};
use oci_spec::runtime::Spec;

use super::bundle::SANDBOX_ID;
use super::container::now;
use super::content::ContentSource;
use super::events::Events;
use super::publisher::Publisher;
use super::runc::Runc;
use super::task::TaskService;
use super::{logging, rootfs};

/// The runtime name containerd knows this shim by (`--runtime io.containerd.skiff.v1`).
pub const RUNTIME_ID: &str = "io.containerd.skiff.v1";

/// The shim process.
pub struct SkiffShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    /// The container containerd names in the `start` and `delete` commands.
    id: String,
    /// containerd's gRPC address, for reading Wasm artifacts from its content store.
    address: String,
    bundle: PathBuf,
    /// The serving shim's socket (`-socket`), removed when it exits.
    socket: String,
    /// The serving shim's event publisher, flushed before the process exits.
    publisher: OnceLock<Arc<Publisher>>,
}

/// How long an exiting shim waits for its queued events to reach containerd.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the shim binary (`containerd-shim-skiff-v1`): call from `main` on a tokio runtime.
pub async fn run() {
    let config = Config { no_setup_logger: true, ..Config::default() };
    containerd_shim::asynchronous::run::<SkiffShim>(RUNTIME_ID, Some(config)).await;
}

#[async_trait]
impl Shim for SkiffShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, flags: &Flags, _config: &mut Config) -> Self {
        logging::init(flags);
        let bundle = if flags.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&flags.bundle)
        };
        SkiffShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            address: flags.address.clone(),
            bundle,
            socket: flags.socket.clone(),
            publisher: OnceLock::new(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // All containers of a pod share one shim: grouped by the CRI sandbox id when the spec has one.
        let grouping = Spec::load(self.bundle.join("config.json"))
            .ok()
            .and_then(|spec| spec.annotations().as_ref().and_then(|a| a.get(SANDBOX_ID).cloned()))
            .unwrap_or_else(|| opts.id.clone());
        let address = spawn(opts, &grouping, Vec::new()).await?;
        write_str_to_file(self.bundle.join("address"), &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // The serving shim is gone: its guests with it. A Linux container outlived it: runc removes it
        // (nothing when it was not one). Leave no rootfs mounted.
        if let Err(e) = Runc::new(&self.namespace).delete(&self.id, &self.bundle).await {
            tracing::error!(error = %e, "removing the runc container");
        }
        if let Err(e) = rootfs::unmount(&self.bundle.join("rootfs")) {
            tracing::error!(error = %e, "cleaning up the rootfs");
        }
        // A shim that was killed could not remove its socket: remove it when nothing listens on it any more.
        if let Ok(address) = std::fs::read_to_string(self.bundle.join("address")) {
            let path = address.trim().trim_start_matches("unix://").to_string();
            if std::os::unix::net::UnixStream::connect(&path).is_err() {
                remove_socket(&path);
            }
        }
        Ok(DeleteResponse { exit_status: 128 + 9, exited_at: Some(now()).into(), ..Default::default() })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        if let Some(publisher) = self.publisher.get() {
            if !publisher.flush(FLUSH_TIMEOUT).await {
                tracing::warn!("exiting with events containerd has not taken");
            }
        }
        // containerd-shim removes the socket named by `address` in the bundle, which containerd may already
        // have deleted by now (it does after Shutdown): remove it by the flag instead.
        remove_socket(&self.socket);
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        // containerd-shim's publisher loses events across a containerd restart: ours retries them.
        let publisher = Arc::clone(self.publisher.get_or_init(|| Arc::new(Publisher::new(&publisher.address))));
        let content = ContentSource::new(&self.address, &self.namespace);
        let service = TaskService::new(
            Events::new(publisher, self.namespace.clone()),
            Arc::clone(&self.exit),
            &self.namespace,
            content,
        );
        // containerd-shim asks for the service before it binds the socket; when the pod's shim already serves
        // it, this process only says so and exits: no engine for it.
        let socket = self.socket.trim_start_matches("unix://");
        if std::os::unix::net::UnixStream::connect(socket).is_err() {
            service.warm_up_engine();
        }
        service
    }
}

/// Removes the unix socket file at `address` (`unix://` + path), if it is one.
fn remove_socket(address: &str) {
    let path = std::path::Path::new(address.trim_start_matches("unix://"));
    let is_socket = path.symlink_metadata().is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
    if path.is_absolute() && is_socket {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "removing the shim socket");
        }
    }
}
