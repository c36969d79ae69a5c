//! The threads a pod's guests run on, in the pod's network namespace: one OS thread that entered the
//! namespace runs a current-thread tokio runtime, so every socket a guest makes (created on the
//! thread that polls its future) lives in the pod's network (DESIGN.md, "Wasm workloads"). The
//! kubelet keeps one per pod ([`GuestExecutor`]); the shim runs each container's task on one
//! ([`run_to_end`]).
//!
//! Fails closed: a thread that cannot enter the namespace never runs guest code. The runtime's
//! main thread reports the failure before anything runs on it. Its blocking threads (which resolve
//! names for guests) join the namespace when they start; one that cannot moves into a new, empty
//! network namespace instead (nothing reachable from there), and one that cannot do that either
//! panics before it takes any work.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::{setns, unshare, CloneFlags};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The network a guest's sockets live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNs {
    /// The host's (no namespace asked for: `ctr run --net-host`).
    Host,
    /// A new, empty one (a namespace without a path, as runc makes).
    New,
    /// The namespace at this path (a pod's).
    Join(PathBuf),
}

/// Why a guest thread did not start.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {reason}")]
    Enter { path: PathBuf, reason: String },
    #[error("starting the guest thread: {0}")]
    Thread(String),
}

/// Stack of a guest thread: guests run on fibers of their own; this one runs the runtime and host calls.
const STACK_SIZE: usize = 1024 * 1024;

/// A long-lived guest thread in a network namespace (a pod's); stopped when dropped.
pub struct GuestExecutor {
    handle: Handle,
    /// Dropped (with the executor) to end the thread.
    _stop: oneshot::Sender<()>,
}

impl GuestExecutor {
    /// Starts the thread; it enters `netns` before anything runs on it.
    pub fn start(name: &str, netns: &NetNs) -> Result<Self, NetnsError> {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = start_thread(&format!("pod-{name}"), netns, move |runtime| {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(Self { handle, _stop: stop })
    }

    /// Where the pod's futures run.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Runs `job` to its end on a new guest thread in `netns`; the receiver gets its output. Fails when
/// the thread cannot start or cannot enter the namespace (reported before the job runs).
pub fn run_to_end<F, Fut, T>(name: &str, netns: &NetNs, job: F) -> Result<oneshot::Receiver<T>, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (done_tx, done_rx) = oneshot::channel();
    start_thread(&format!("guest-{name}"), netns, move |runtime| {
        let _ = done_tx.send(runtime.block_on(job()));
    })?;
    Ok(done_rx)
}

/// Starts a thread that enters `netns`, builds its runtime and hands it to `body`; returns the
/// runtime's handle once the thread is in the namespace.
fn start_thread(
    name: &str,
    netns: &NetNs,
    body: impl FnOnce(&tokio::runtime::Runtime) + Send + 'static,
) -> Result<Handle, NetnsError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Handle, NetnsError>>();
    let netns = netns.clone();
    let thread_name: String = name.chars().take(15).collect();
    std::thread::Builder::new()
        .name(thread_name)
        .stack_size(STACK_SIZE)
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
                        join_or_isolate(ns);
                    }
                })
                .build();
            let runtime = match runtime {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(NetnsError::Thread(format!("guest runtime: {e}"))));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(runtime.handle().clone()));
            body(&runtime);
            runtime.shutdown_background();
        })
        .map_err(|e| NetnsError::Thread(e.to_string()))?;
    ready_rx.recv().map_err(|_| NetnsError::Thread("the guest thread ended before starting".into()))?
}

/// Moves the calling thread into `netns`; returns the namespace for the runtime's other threads.
fn enter(netns: &NetNs) -> Result<Option<Arc<File>>, NetnsError> {
    let error = |path: &Path, reason: String| NetnsError::Enter { path: path.to_path_buf(), reason };
    match netns {
        NetNs::Host => Ok(None),
        NetNs::Join(path) => {
            let file = File::open(path).map_err(|e| error(path, format!("open: {e}")))?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| error(path, format!("setns: {e}")))?;
            Ok(Some(Arc::new(file)))
        }
        NetNs::New => {
            let own = Path::new("/proc/thread-self/ns/net");
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| error(own, format!("unshare: {e}")))?;
            let file = File::open(own).map_err(|e| error(own, format!("open: {e}")))?;
            Ok(Some(Arc::new(file)))
        }
    }
}

/// A blocking thread of a guest runtime joins the namespace, or an empty one of its own, or dies
/// before it takes work.
fn join_or_isolate(ns: &File) {
    let Err(e) = setns(ns, CloneFlags::CLONE_NEWNET) else { return };
    tracing::error!(error = %e, "a guest's helper thread could not enter its network namespace; isolating it");
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        panic!("a guest's helper thread is outside its network namespace and cannot be isolated: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net_ns_id() -> std::io::Result<PathBuf> {
        std::fs::read_link("/proc/thread-self/ns/net")
    }

    #[tokio::test]
    async fn runs_jobs_in_the_host_or_a_new_namespace() {
        let host = net_ns_id().expect("own netns");
        let same = run_to_end("t-host", &NetNs::Host, || async { net_ns_id().ok() }).expect("spawn");
        assert_eq!(same.await.expect("done"), Some(host.clone()));
        let new = run_to_end("t-new", &NetNs::New, || async {
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
        let err = run_to_end("t-missing", &NetNs::Join("/nonexistent/netns".into()), || async {}).expect_err("error");
        assert!(matches!(err, NetnsError::Enter { .. }), "{err}");
        let err = GuestExecutor::start("t-missing", &NetNs::Join("/nonexistent/netns".into())).err();
        assert!(matches!(err, Some(NetnsError::Enter { .. })), "{err:?}");
    }

    #[test]
    fn an_executor_runs_futures_and_blocking_work_in_its_namespace() {
        let host = net_ns_id().expect("own netns");
        let executor = GuestExecutor::start("t-exec", &NetNs::New).expect("start");
        let (tx, rx) = std::sync::mpsc::channel();
        // Blocking work handed in from this (host) thread still runs in the namespace.
        let blocking = executor.handle().spawn_blocking(|| net_ns_id().ok());
        executor.handle().spawn(async move {
            let main = net_ns_id().ok();
            let _ = tx.send((main, blocking.await.ok().flatten()));
        });
        let (main, blocking) = rx.recv().expect("ran");
        assert!(main.is_some() && main != Some(host.clone()), "{main:?}");
        assert_eq!(blocking, main);
        assert_eq!(net_ns_id().expect("own netns"), host);
    }

    #[test]
    fn a_helper_thread_that_cannot_join_is_isolated() {
        // A file that is no namespace: setns fails, so the thread gets an empty namespace of its own.
        let host = net_ns_id().expect("own netns");
        let not_a_namespace = File::open("/proc/self/status").expect("open");
        let isolated = std::thread::spawn(move || {
            join_or_isolate(&not_a_namespace);
            net_ns_id().ok()
        })
        .join()
        .expect("thread");
        assert!(isolated.is_some() && isolated != Some(host), "{isolated:?}");
    }
}
