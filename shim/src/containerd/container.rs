//! One task (container) of the shim: a Wasm program, created with its compiled program and opened stdio,
//! started on its own executor thread in the bundle's network namespace and killed through cancellation; a
//! Linux program run through runc; or a process-less CRI sandbox. Each stops with an exit status
//! containerd understands.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::bundle::Bundle;
use super::error::ShimError;
use super::events::Events;
use super::linux::LinuxTask;
use super::stdio::StdioPaths;
use skiff_engine::{Exit, Program, RunSpec, WasmEngine};

/// A guest's run, as the task that records its end awaits it.
type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// SIGKILL: the signal a kill without one (and an OOM) stands for.
const SIGKILL: u32 = 9;

/// What the container runs once started (one per container, moved once: its size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Job {
    /// A Wasm program with everything its run gets.
    Wasm { program: Program, spec: RunSpec, http_port: Option<u16> },
    /// A CRI pod sandbox (pause) container: holds the pod until killed, runs nothing.
    Sandbox,
    /// A Linux (ELF or script) container, created through runc and waiting to be started.
    Linux(Arc<LinuxTask>),
}

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Created,
    Running,
    Stopped { code: u32, at: Timestamp },
}

pub struct Container {
    pub id: String,
    pub bundle: Bundle,
    pub stdio: StdioPaths,
    /// Whether the shim mounted the rootfs (and so unmounts it on delete).
    pub rootfs_mounted: bool,
    /// The runc container of a Linux job, for its whole life.
    pub linux: Option<Arc<LinuxTask>>,
    job: Mutex<Option<Job>>,
    /// A handle on the guest's stderr, to tell why the shim stopped it (trap, out of memory).
    notes: Mutex<Option<File>>,
    status: watch::Sender<Status>,
    cancel: CancellationToken,
    signal: AtomicU32,
}

impl Container {
    pub fn new(id: String, bundle: Bundle, stdio: StdioPaths, rootfs_mounted: bool, job: Job) -> Self {
        let notes = match &job {
            Job::Wasm { spec, .. } => match &spec.stderr {
                Some(skiff_engine::Output::File(f)) => f.try_clone().ok(),
                _ => None,
            },
            Job::Sandbox | Job::Linux(_) => None,
        };
        let linux = match &job {
            Job::Linux(task) => Some(Arc::clone(task)),
            Job::Wasm { .. } | Job::Sandbox => None,
        };
        Self {
            id,
            bundle,
            stdio,
            rootfs_mounted,
            linux,
            job: Mutex::new(Some(job)),
            notes: Mutex::new(notes),
            status: watch::channel(Status::Created).0,
            cancel: CancellationToken::new(),
            signal: AtomicU32::new(SIGKILL),
        }
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The pid containerd sees for this task: a Linux container's init, else the shim's own (`shim_pid`).
    pub fn pid(&self, shim_pid: u32) -> u32 {
        self.linux.as_ref().map_or(shim_pid, |task| task.pid)
    }

    /// Starts the job: a Wasm program on its executor thread, a Linux one through `runc start`. Its end is
    /// recorded (and published) by a task on the caller's runtime.
    pub async fn start(
        self: &Arc<Self>,
        engine: Option<Arc<WasmEngine>>,
        events: Arc<Events>,
        shim_pid: u32,
    ) -> Result<(), ShimError> {
        let state = |state| ShimError::State { id: self.id.clone(), state, action: "start" };
        let job = match self.status() {
            Status::Created => self.job.lock().take().ok_or_else(|| state("starting"))?,
            Status::Running => return Err(state("running")),
            Status::Stopped { .. } => return Err(state("stopped")),
        };
        let cancel = self.cancel.clone();
        let span = tracing::info_span!("guest", id = %self.id);
        let done: BoxFuture<Result<Exit, String>> = match job {
            Job::Sandbox => Box::pin(async move {
                cancel.cancelled().await;
                Ok(Exit::Killed)
            }),
            Job::Linux(task) => {
                if let Err(e) = task.start().await {
                    // Still created: a later kill or delete removes it.
                    *self.job.lock() = Some(Job::Linux(task));
                    return Err(e);
                }
                Box::pin(async move { Ok(Exit::Code(task.wait().await as i32)) })
            }
            Job::Wasm { program, mut spec, http_port } => {
                let engine = engine.ok_or(ShimError::Thread("no engine".into()))?;
                spec.cancel = Some(cancel);
                let done = skiff_engine::netns::run_to_end(&self.id, &self.bundle.netns, move || {
                    async move {
                        match http_port {
                            Some(port) => {
                                let listener = TcpListener::bind(("0.0.0.0", port)).await.map_err(|e| {
                                    ShimError::io("listening on", format!("0.0.0.0:{port}"), e).to_string()
                                })?;
                                tracing::info!(port, "serving wasi:http");
                                engine.serve_http(&program, spec, listener).await.map_err(|e| e.to_string())
                            }
                            None => engine.run(&program, spec).await.map_err(|e| e.to_string()),
                        }
                    }
                    .instrument(span)
                })?;
                Box::pin(
                    async move { done.await.unwrap_or_else(|_| Err("the guest thread ended without a result".into())) },
                )
            }
        };
        self.status.send_replace(Status::Running);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.finish(done.await, &events, shim_pid).await;
        });
        Ok(())
    }

    /// Records how the guest ended, tells its stderr why the shim stopped it, and publishes OOM and exit.
    async fn finish(&self, exit: Result<Exit, String>, events: &Events, shim_pid: u32) {
        let (code, note) = match &exit {
            Ok(Exit::Code(c)) => ((*c as u32) & 0xff, None),
            Ok(Exit::Trap(message)) => (1, Some(format!("skiff: the guest trapped: {message}"))),
            Ok(Exit::OutOfMemory) => {
                let limit = self.bundle.memory_limit.unwrap_or_default();
                (128 + SIGKILL, Some(format!("skiff: the guest ran out of memory (limit {limit} bytes)")))
            }
            Ok(Exit::Killed) => (128 + self.signal.load(Ordering::Relaxed), None),
            Err(e) => (128, Some(format!("skiff: the guest could not run: {e}"))),
        };
        tracing::info!(id = %self.id, ?exit, code, "guest ended");
        if let Some(mut notes) = self.notes.lock().take() {
            if let Some(note) = &note {
                let _ = writeln!(notes, "{note}");
            }
        }
        let at = now();
        self.status.send_replace(Status::Stopped { code, at: at.clone() });
        let linux_oom = self.linux.as_ref().is_some_and(|task| task.oom_killed());
        if matches!(exit, Ok(Exit::OutOfMemory)) || linux_oom {
            events.oom(&self.id).await;
        }
        events.exited(&self.id, self.pid(shim_pid), code, &at).await;
    }

    /// Sends `signal`. A Linux container gets it through runc (to all its processes with `all`). For a Wasm
    /// guest any terminating signal stops it (it cannot handle signals); those whose default is to ignore
    /// or stop (SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH) and 0 do nothing. A
    /// created task never started stops at once (a Linux one with SIGKILL).
    pub async fn kill(&self, signal: u32, all: bool, events: &Events, shim_pid: u32) -> Result<(), ShimError> {
        if let Some(task) = &self.linux {
            return self.kill_linux(task, signal, all, events).await;
        }
        if matches!(signal, 0 | 17..=23 | 28) {
            return Ok(());
        }
        self.signal.store(signal, Ordering::Relaxed);
        match self.status() {
            Status::Created => {
                self.job.lock().take();
                self.notes.lock().take();
                let (code, at) = (128 + signal, now());
                self.status.send_replace(Status::Stopped { code, at: at.clone() });
                events.exited(&self.id, shim_pid, code, &at).await;
            }
            Status::Running => self.cancel.cancel(),
            Status::Stopped { .. } => {}
        }
        Ok(())
    }

    async fn kill_linux(&self, task: &LinuxTask, signal: u32, all: bool, events: &Events) -> Result<(), ShimError> {
        match self.status() {
            Status::Stopped { .. } => Ok(()),
            Status::Created if self.job.lock().take().is_some() => {
                if let Err(e) = task.kill(SIGKILL, false).await {
                    // Its init may be gone already; `delete --force` kills it otherwise, or nothing waits.
                    tracing::warn!(error = %e, "killing a created container");
                    task.delete().await?;
                }
                let (code, at) = (task.wait().await, now());
                self.status.send_replace(Status::Stopped { code, at: at.clone() });
                events.exited(&self.id, task.pid, code, &at).await;
                Ok(())
            }
            // Running, or being started right now.
            Status::Created | Status::Running => match task.kill(signal, all).await {
                Err(_) if matches!(self.status(), Status::Stopped { .. }) => Ok(()),
                result => result,
            },
        }
    }

    /// Waits until the guest stopped; its exit code and time.
    pub async fn wait(&self) -> (u32, Timestamp) {
        let mut rx = self.status.subscribe();
        loop {
            if let Status::Stopped { code, at } = &*rx.borrow_and_update() {
                return (*code, at.clone());
            }
            if rx.changed().await.is_err() {
                return (128 + SIGKILL, now());
            }
        }
    }
}

/// The current time as containerd's timestamps.
pub fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}
