//! A pod's namespace holder: a process that owns the IPC and UTS namespaces all Linux containers of the pod
//! join (with the pod's hostname), standing in for the pause process this shim's sandboxes do not have.
//! The shim starts itself again (`/proc/self/exe __skiff_hold_namespaces [HOSTNAME]`) in new IPC and UTS
//! namespaces; that process sets the hostname, says it is ready and sleeps until killed (SIGKILL, also when
//! the shim dies: its parent-death signal). Its exit is reaped by containerd-shim's reaper like every child
//! of the shim, never waited on here. A holder cannot share a PID namespace (its own is the shim's), so
//! each Linux container keeps a new PID namespace of its own.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The hidden first argument that makes the shim binary a holder (see [`hold_if_asked`]).
pub const HOLD_ARG: &str = "__skiff_hold_namespaces";
/// How long a starting holder may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// What a holder prints once its namespaces and hostname are set.
const READY: &str = "ready";

/// Why a holder could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("starting the namespace holder: {0}")]
    Spawn(std::io::Error),
    #[error("the namespace holder did not get ready: {0}")]
    NotReady(String),
    #[error("reading the namespace holder's namespaces: {0}")]
    Namespaces(std::io::Error),
}

/// Turns this process into a namespace holder when its first argument is [`HOLD_ARG`] (never returning
/// then); else returns at once. Call first thing in `main`, before any runtime or thread exists.
pub fn hold_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(HOLD_ARG)) {
        return;
    }
    let hostname = args.next();
    let set = hostname.as_ref().map_or(Ok(()), nix::unistd::sethostname);
    let mut stdout = std::io::stdout();
    if let Err(e) = set {
        let _ = writeln!(stdout, "error: setting the hostname: {e}");
        std::process::exit(1);
    }
    let _ = writeln!(stdout, "{READY}").and_then(|()| stdout.flush());
    loop {
        nix::unistd::pause();
    }
}

/// A running holder of a pod's IPC and UTS namespaces; killed on [`Holder::kill`] or drop.
#[derive(Debug)]
pub struct Holder {
    pid: u32,
    /// Its namespaces as `/proc/<pid>/ns/{ipc,uts}` read when it got ready (`ipc:[inode]`), to tell it from
    /// another process that got its pid after it died.
    ipc: PathBuf,
    uts: PathBuf,
    killed: AtomicBool,
}

impl Holder {
    /// Starts a holder with `hostname` (else the shim's own) and waits until it is ready. Call on the
    /// shim's main thread (its runtime's): the holder's parent-death signal fires when the thread that
    /// spawned it ends.
    pub async fn start(hostname: Option<&str>) -> Result<Self, HolderError> {
        let mut command = Command::new("/proc/self/exe");
        command.arg(HOLD_ARG).args(hostname).current_dir("/");
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let parent = nix::unistd::getpid();
        // SAFETY: between fork and exec the closure only makes system calls (prctl, getppid, unshare): no
        // allocation, no locks.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                if nix::unistd::getppid() != parent {
                    // The shim died before the death signal was set.
                    return Err(nix::errno::Errno::ESRCH.into());
                }
                unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)?;
                Ok(())
            })
        };
        let mut child = command.spawn().map_err(HolderError::Spawn)?;
        let pid = child.id();
        // The child is left to containerd-shim's reaper: it is never waited on here.
        let stdout = child.stdout.take();
        drop(child);
        let mut started = Self { pid, ipc: PathBuf::new(), uts: PathBuf::new(), killed: AtomicBool::new(false) };
        let line = match stdout {
            Some(stdout) => read_line(stdout).await,
            None => Err("no stdout".into()),
        };
        match line {
            Ok(line) if line.trim_end() == READY => {}
            Ok(line) => return Err(HolderError::NotReady(format!("it said {:?}", line.trim_end()))),
            Err(e) => return Err(HolderError::NotReady(e)),
        }
        let link = |ns: &str| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).map_err(HolderError::Namespaces);
        (started.ipc, started.uts) = (link("ipc")?, link("uts")?);
        let (ipc, uts) = (started.ipc.display(), started.uts.display());
        tracing::info!(pid, hostname, %ipc, %uts, "namespace holder ready");
        Ok(started)
    }

    /// The holder's pid while it runs (its namespaces still the ones it made): `/proc/<pid>/ns/*` are the
    /// pod's namespaces then.
    pub fn pid(&self) -> Option<u32> {
        (!self.killed.load(Ordering::Relaxed) && self.is_ours()).then_some(self.pid)
    }

    /// Whether `pid` still has the namespaces the holder made (a holder that never got ready counts).
    fn is_ours(&self) -> bool {
        if self.ipc.as_os_str().is_empty() {
            return true;
        }
        let link = |ns: &str| std::fs::read_link(format!("/proc/{}/ns/{ns}", self.pid)).ok();
        link("ipc").as_ref() == Some(&self.ipc) && link("uts").as_ref() == Some(&self.uts)
    }

    /// Kills the holder with SIGKILL, once, and not a process that took its pid after it died.
    pub fn kill(&self) {
        if !self.killed.swap(true, Ordering::Relaxed) && self.is_ours() {
            self.signal();
        }
    }

    fn signal(&self) {
        let Ok(pid) = i32::try_from(self.pid) else { return };
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => tracing::info!(pid, "namespace holder killed"),
            Err(e) => tracing::warn!(pid, error = %e, "killing the namespace holder"),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first line the holder writes to `stdout`, waiting at most [`READY_TIMEOUT`].
async fn read_line(stdout: std::process::ChildStdout) -> Result<String, String> {
    let fd = std::os::fd::OwnedFd::from(stdout);
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(|e| e.to_string())?;
    let mut line = String::new();
    match tokio::time::timeout(READY_TIMEOUT, BufReader::new(pipe).read_line(&mut line)).await {
        Ok(Ok(0)) => Err("it exited".into()),
        Ok(Ok(_)) => Ok(line),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {READY_TIMEOUT:?}")),
    }
}
