//! A guest's executor: one OS thread that entered the container's network namespace, running a
//! current-thread tokio runtime (its blocking pool, which resolves names, enters the namespace too). Every
//! socket the guest makes is created on these threads, so it lives in the bundle's network namespace
//! (DESIGN.md, "Wasm workloads").

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use nix::sched::{setns, unshare, CloneFlags};
use tokio::sync::oneshot;

use super::bundle::NetNs;
use super::error::ShimError;

/// Runs `job` to its end on a new thread in `netns`; the receiver gets its output. Fails when the thread
/// cannot start or cannot enter the namespace (reported before the job runs).
pub fn spawn<F, Fut, T>(name: &str, netns: &NetNs, job: F) -> Result<oneshot::Receiver<T>, ShimError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), ShimError>>();
    let (done_tx, done_rx) = oneshot::channel();
    let netns = netns.clone();
    let thread_name: String = format!("guest-{name}").chars().take(15).collect();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let ns = match enter(&netns) {
                Ok(ns) => ns,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(2)
                .on_thread_start(move || {
                    if let Some(ns) = &ns {
                        if let Err(e) = setns(ns.as_ref(), CloneFlags::CLONE_NEWNET) {
                            tracing::error!(error = %e, "a guest's blocking thread could not enter its namespace");
                        }
                    }
                })
                .build();
            let runtime = match runtime {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(ShimError::Thread(format!("guest runtime: {e}"))));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let output = runtime.block_on(job());
            let _ = done_tx.send(output);
            runtime.shutdown_background();
        })
        .map_err(|e| ShimError::Thread(e.to_string()))?;
    ready_rx.recv().map_err(|_| ShimError::Thread("the guest thread ended before starting".into()))??;
    Ok(done_rx)
}

/// Moves the calling thread into `netns`; returns the namespace for the runtime's other threads to join.
fn enter(netns: &NetNs) -> Result<Option<Arc<File>>, ShimError> {
    let ns_error = |path: &Path, reason: String| ShimError::NetNs { path: path.to_path_buf(), reason };
    match netns {
        NetNs::Host => Ok(None),
        NetNs::Join(path) => {
            let file = File::open(path).map_err(|e| ns_error(path, format!("open: {e}")))?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| ns_error(path, format!("setns: {e}")))?;
            Ok(Some(Arc::new(file)))
        }
        NetNs::New => {
            let own = Path::new("/proc/thread-self/ns/net");
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ns_error(own, format!("unshare: {e}")))?;
            let file = File::open(own).map_err(|e| ns_error(own, format!("open: {e}")))?;
            Ok(Some(Arc::new(file)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net_ns_id() -> std::io::Result<std::path::PathBuf> {
        std::fs::read_link("/proc/thread-self/ns/net")
    }

    #[tokio::test]
    async fn runs_jobs_in_the_host_or_a_new_namespace() {
        let host = net_ns_id().expect("own netns");
        let same = spawn("t-host", &NetNs::Host, || async { net_ns_id().ok() }).expect("spawn");
        assert_eq!(same.await.expect("done"), Some(host.clone()));
        let new = spawn("t-new", &NetNs::New, || async {
            let main = net_ns_id().ok();
            let blocking = tokio::task::spawn_blocking(|| net_ns_id().ok()).await.ok().flatten();
            (main, blocking)
        })
        .expect("spawn");
        let (main, blocking) = new.await.expect("done");
        assert!(main.is_some() && main != Some(host.clone()), "{main:?}");
        assert_eq!(blocking, main);
        // This test thread did not move.
        assert_eq!(net_ns_id().expect("own netns"), host);
    }

    #[test]
    fn a_missing_namespace_fails_before_the_job() {
        let err = spawn("t-missing", &NetNs::Join("/nonexistent/netns".into()), || async {}).expect_err("error");
        assert!(matches!(err, ShimError::NetNs { .. }), "{err}");
    }
}
