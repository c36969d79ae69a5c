//! A Linux (ELF or script) container of the shim, run through runc on its bundle: created with the task's
//! stdio as its init's, started, signalled, and deleted with nothing of runc's left behind. Its init's
//! real pid is the task's pid; its exit code comes from the shim's reaper, and whether the OOM killer struck
//! in its memory cgroup from that cgroup's count, read when the init ends.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use parking_lot::Mutex;

use super::error::ShimError;
use super::linux_spec::{self, Pod};
use super::oom::OomCounter;
use super::runc::{Exits, InitStdio, Runc};
use super::stdio::StdioPaths;
use skiff_engine::Output;

/// SIGKILL, the code a lost exit is reported as (128 + it).
const SIGKILL: u32 = 9;

/// One runc container.
pub struct LinuxTask {
    runc: Arc<Runc>,
    id: String,
    bundle: PathBuf,
    /// The container's init, as the host sees it.
    pub pid: u32,
    /// The init's end: watched from before `runc create` on, then kept.
    exit: tokio::sync::Mutex<InitExit>,
    /// The OOM-kill count of the container's memory cgroup, if it has one the shim can read.
    oom: Option<OomCounter>,
    /// Whether the OOM killer struck in the container's cgroup before its init ended.
    oom_killed: AtomicBool,
    /// The write end of the stdin fifo the shim holds until CloseIO, so the init does not read EOF before
    /// containerd opened it.
    stdin: Mutex<Option<File>>,
}

impl LinuxTask {
    /// Adapts the bundle's spec (see [`linux_spec`]) and runs `runc create` with the task's stdio.
    pub async fn create(
        runc: Arc<Runc>,
        id: &str,
        bundle: &Path,
        stdio: &StdioPaths,
        pod: &Pod,
    ) -> Result<Self, ShimError> {
        let adapted = linux_spec::adapt(bundle, std::process::id(), pod)?;
        let (stdout, stderr) = stdio.open_outputs_blocking().await?;
        let (stdin, stdin_writer) = open_stdin(&stdio.stdin)?;
        let init_stdio = InitStdio { stdin, stdout: output(stdout), stderr: output(stderr) };
        let mut exits = Exits::subscribe().await?;
        let pid = match runc.create(id, bundle, init_stdio, adapted.systemd_cgroup, &mut exits).await {
            Ok(pid) => pid,
            Err(e) => {
                // runc removes a container it failed to create; make sure no state stays either way.
                let _ = runc.delete(id, bundle).await;
                return Err(e);
            }
        };
        let oom = OomCounter::of_pid(pid).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "finding the container's memory cgroup");
            None
        });
        tracing::info!(pid, oom_counter = ?oom.as_ref().map(OomCounter::file), "created through runc");
        Ok(Self {
            runc,
            id: id.into(),
            bundle: bundle.into(),
            pid,
            exit: tokio::sync::Mutex::new(InitExit { exits: Some(exits), code: None }),
            oom,
            oom_killed: AtomicBool::new(false),
            stdin: Mutex::new(stdin_writer),
        })
    }

    /// `runc start`: the init execs the container's process.
    pub async fn start(&self) -> Result<(), ShimError> {
        self.runc.start(&self.id, &self.bundle).await
    }

    /// Sends `signal` to the init (to all of the container's processes with `all`).
    pub async fn kill(&self, signal: u32, all: bool) -> Result<(), ShimError> {
        self.runc.kill(&self.id, &self.bundle, signal, all).await
    }

    /// Waits for the init to end: its exit code, 128+signal when a signal ended it (any number of times).
    /// Then tells (see [`Self::oom_killed`]) whether the OOM killer struck in its cgroup.
    pub async fn wait(&self) -> u32 {
        let mut exit = self.exit.lock().await;
        if let Some(code) = exit.code {
            return code;
        }
        let pid = i32::try_from(self.pid).unwrap_or(i32::MAX);
        let code = match exit.exits.as_mut() {
            Some(exits) => exits.of(pid).await,
            None => None,
        };
        let code = code.map(|c| (c as u32) & 0xff).unwrap_or(128 + SIGKILL);
        if let Some(oom) = &self.oom {
            match oom.fired() {
                Ok(fired) => self.oom_killed.store(fired, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "reading the container's OOM kills"),
            }
        }
        *exit = InitExit { exits: None, code: Some(code) };
        self.close_stdin();
        code
    }

    /// Whether the OOM killer killed a process of the container before its init ended (known once
    /// [`Self::wait`] returned).
    pub fn oom_killed(&self) -> bool {
        self.oom_killed.load(Ordering::Relaxed)
    }

    /// `runc delete --force`: whatever still runs is killed; runc's state and cgroup go.
    pub async fn delete(&self) -> Result<(), ShimError> {
        self.close_stdin();
        self.runc.delete(&self.id, &self.bundle).await
    }

    /// Closes the shim's end of the stdin fifo: the init reads EOF once containerd closed its end too.
    pub fn close_stdin(&self) {
        self.stdin.lock().take();
    }
}

/// How far the init's exit is known.
struct InitExit {
    /// Child exits, until the init's is seen.
    exits: Option<Exits>,
    code: Option<u32>,
}

/// An opened output for the init, or `/dev/null`.
fn output(output: Option<Output>) -> Stdio {
    match output {
        Some(Output::File(file)) => Stdio::from(file),
        Some(Output::Sink(_)) | None => Stdio::null(),
    }
}

/// The init's stdin (`/dev/null` without one) and the write end the shim keeps open until CloseIO.
fn open_stdin(path: &str) -> Result<(Stdio, Option<File>), ShimError> {
    if path.is_empty() {
        return Ok((Stdio::null(), None));
    }
    if path.contains("://") {
        return Err(ShimError::Unsupported("this stdin URI scheme (only fifos are)"));
    }
    // Opening the read end first never blocks; then the write end opens at once too.
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| ShimError::io("opening the stdin fifo", path, e))?;
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| ShimError::io("opening the stdin fifo", path, e))?;
    fcntl(&reader, FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| ShimError::io("making stdin blocking", path, e.into()))?;
    Ok((Stdio::from(reader), Some(writer)))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn stdin_reads_what_is_written_and_eof_only_after_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let (stdin, writer) = open_stdin(fifo.to_str().expect("utf-8")).expect("open");
        let mut child = std::process::Command::new("cat").stdin(stdin).stdout(Stdio::piped()).spawn().expect("cat");
        let mut containerd = OpenOptions::new().write(true).open(&fifo).expect("containerd's end");
        containerd.write_all(b"typed").expect("write");
        drop(containerd);
        // containerd closed its end, but the shim's keeps the stream open until CloseIO.
        let mut out = child.stdout.take().expect("stdout");
        let mut first = [0u8; 5];
        out.read_exact(&mut first).expect("read");
        assert_eq!(&first, b"typed");
        drop(writer);
        let mut rest = String::new();
        out.read_to_string(&mut rest).expect("EOF after close");
        assert_eq!(rest, "");
        assert!(child.wait().expect("wait").success());
        assert!(open_stdin("").expect("none").1.is_none());
    }
}
