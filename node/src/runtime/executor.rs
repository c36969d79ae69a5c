//! A pod's executor: one OS thread that entered the pod's network namespace, running a current-thread
//! tokio runtime. Every socket a guest of the pod creates is made on this thread, so it lives in the
//! pod's namespace (DESIGN.md, "Wasm workloads").

use std::path::Path;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::{PodContext, RuntimeError};

pub struct PodExecutor {
    handle: Handle,
    /// The pod's uid (the `name` it was started with).
    uid: String,
    stop: parking_lot::Mutex<Option<oneshot::Sender<()>>>,
}

impl PodContext for PodExecutor {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl PodExecutor {
    /// Starts the thread; it enters `netns` (when given) before anything runs on it.
    pub fn start(name: &str, netns: Option<&Path>) -> Result<Self, RuntimeError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let netns = netns.map(Path::to_path_buf);
        let thread_name: String = format!("pod-{name}").chars().take(15).collect();
        std::thread::Builder::new()
            .name(thread_name)
            .stack_size(1024 * 1024)
            .spawn(move || {
                if let Some(ns) = &netns {
                    if let Err(e) = crate::sandbox::enter_netns(ns) {
                        let _ = ready_tx.send(Err(format!("entering {}: {e}", ns.display())));
                        return;
                    }
                }
                // Name lookups of guests run on the runtime's blocking threads: they enter the namespace too.
                let blocking_ns = netns.clone();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .max_blocking_threads(2)
                    .on_thread_start(move || {
                        if let Some(ns) = &blocking_ns {
                            if let Err(e) = crate::sandbox::enter_netns(ns) {
                                tracing::error!(error = %e, "a pod's blocking thread could not enter its namespace");
                            }
                        }
                    })
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("pod runtime: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                runtime.shutdown_background();
            })
            .map_err(|e| RuntimeError::Other(format!("pod thread: {e}")))?;
        let handle = ready_rx
            .recv()
            .map_err(|_| RuntimeError::Other("pod thread ended before starting".into()))?
            .map_err(RuntimeError::Other)?;
        Ok(Self { handle, uid: name.to_string(), stop: parking_lot::Mutex::new(Some(stop_tx)) })
    }

    /// The pod's uid.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Where the pod's futures run.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for PodExecutor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
    }
}
