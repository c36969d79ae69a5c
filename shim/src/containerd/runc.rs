//! runc's command line as the shim drives it (`create`, `start`, `kill`, `delete`), with its own state root
//! per containerd namespace. Every runc, and every container init once its runc is gone, is a child of the
//! shim; containerd-shim's SIGCHLD handler reaps them all and publishes their exits on its monitor, so
//! exits are read from a monitor subscription made before the child is spawned, never waited on directly.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim::asynchronous::monitor::{monitor_subscribe, monitor_unsubscribe, Subscription};
use containerd_shim::monitor::{Subject, Topic};

use super::error::ShimError;

/// The environment variable naming the directory runc's state roots live in.
pub const RUNC_ROOT_ENV: &str = "SKIFF_SHIM_RUNC_ROOT";
/// Where runc's state roots live unless `SKIFF_SHIM_RUNC_ROOT` says otherwise.
pub const DEFAULT_RUNC_ROOT: &str = "/run/skiff-shim/runc";
/// The environment variable naming the runc binary (else `runc` on `PATH`).
pub const RUNC_BINARY_ENV: &str = "SKIFF_SHIM_RUNC";

/// The exits of the shim's children, from the moment of subscribing on.
pub struct Exits {
    subscription: Option<Subscription>,
}

impl Exits {
    /// Subscribes to child exits: do so before spawning the child whose exit is wanted.
    pub async fn subscribe() -> Result<Self, ShimError> {
        let subscription = monitor_subscribe(Topic::Pid).await.map_err(|e| ShimError::Reaper(e.to_string()))?;
        Ok(Self { subscription: Some(subscription) })
    }

    /// The exit code of child `pid` (128+signal when a signal ended it); `None` when the monitor is gone.
    pub async fn of(&mut self, pid: i32) -> Option<i32> {
        let subscription = self.subscription.as_mut()?;
        while let Some(exit) = subscription.rx.recv().await {
            if matches!(exit.subject, Subject::Pid(p) if p == pid) {
                return Some(exit.exit_code);
            }
        }
        None
    }
}

impl Drop for Exits {
    fn drop(&mut self) {
        let Some(subscription) = self.subscription.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = monitor_unsubscribe(subscription.id).await;
            });
        }
    }
}

/// The stdio `runc create` hands down to the container's init.
pub struct InitStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// runc with the state root of one containerd namespace.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

impl Runc {
    /// runc for containerd namespace `namespace`: state under `SKIFF_SHIM_RUNC_ROOT` (or the default).
    pub fn new(namespace: &str) -> Self {
        let base = std::env::var_os(RUNC_ROOT_ENV).map(PathBuf::from).unwrap_or_else(|| DEFAULT_RUNC_ROOT.into());
        let binary = std::env::var_os(RUNC_BINARY_ENV).map(PathBuf::from).unwrap_or_else(|| "runc".into());
        let namespace = if namespace.is_empty() { "default" } else { namespace };
        Self { binary, root: base.join(namespace) }
    }

    /// `runc create`: the container's init, waiting to be started, with `stdio` (and its cgroup made by
    /// systemd with `systemd_cgroup`). Its pid; `exits` must have been subscribed before this call, and then
    /// sees the init's exit.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: InitStdio,
        systemd_cgroup: bool,
        exits: &mut Exits,
    ) -> Result<u32, ShimError> {
        let pid_file = bundle.join("init.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut args: Vec<OsString> = Vec::new();
        if systemd_cgroup {
            args.push("--systemd-cgroup".into());
        }
        args.extend(["create".into(), "--bundle".into(), bundle.into(), "--pid-file".into(), pid_file.clone().into()]);
        args.push(id.into());
        self.run("create", id, bundle, &args, Some(stdio), exits).await?;
        let text = std::fs::read_to_string(&pid_file).map_err(|e| ShimError::io("reading", &pid_file, e))?;
        text.trim().parse().map_err(|_| ShimError::Runc {
            action: "create",
            id: id.into(),
            message: format!("no pid in {}: {text:?}", pid_file.display()),
        })
    }

    /// `runc start`: the created init execs the container's process.
    pub async fn start(&self, id: &str, bundle: &Path) -> Result<(), ShimError> {
        let mut exits = Exits::subscribe().await?;
        self.run("start", id, bundle, &["start".into(), id.into()], None, &mut exits).await
    }

    /// `runc kill [--all] ID SIGNAL`.
    pub async fn kill(&self, id: &str, bundle: &Path, signal: u32, all: bool) -> Result<(), ShimError> {
        let mut args: Vec<OsString> = vec!["kill".into()];
        if all {
            args.push("--all".into());
        }
        args.extend([id.into(), signal.to_string().into()]);
        let mut exits = Exits::subscribe().await?;
        self.run("kill", id, bundle, &args, None, &mut exits).await
    }

    /// `runc delete --force`: kills what still runs and removes runc's state (and cgroup); a container runc
    /// does not know is already deleted.
    pub async fn delete(&self, id: &str, bundle: &Path) -> Result<(), ShimError> {
        // runc keeps a container's state in `<root>/<id>`: without it there is nothing to delete, and no runc
        // process is spent on every Wasm container containerd cleans up after.
        if !self.root.join(id).exists() {
            return Ok(());
        }
        let mut exits = Exits::subscribe().await?;
        self.run("delete", id, bundle, &["delete".into(), "--force".into(), id.into()], None, &mut exits).await
    }

    /// Runs `runc --root R [--log L --log-format json] ARGS` to its end; its error messages on failure.
    async fn run(
        &self,
        action: &'static str,
        id: &str,
        bundle: &Path,
        args: &[OsString],
        stdio: Option<InitStdio>,
        exits: &mut Exits,
    ) -> Result<(), ShimError> {
        let failed = |message: String| ShimError::Runc { action, id: id.into(), message };
        std::fs::create_dir_all(&self.root).map_err(|e| ShimError::io("creating", &self.root, e))?;
        let log = bundle.is_dir().then(|| bundle.join(format!("runc-{action}.log")));
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root);
        if let Some(log) = &log {
            let _ = std::fs::remove_file(log);
            command.arg("--log").arg(log).args(["--log-format", "json"]);
        }
        command.args(args);
        match stdio {
            Some(stdio) => command.stdin(stdio.stdin).stdout(stdio.stdout).stderr(stdio.stderr),
            None => command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()),
        };
        let child = command.spawn().map_err(|e| failed(format!("running {}: {e}", self.binary.display())))?;
        // The command holds our copies of the init's stdio: close them, so readers see EOF when it ends.
        drop(command);
        let pid = i32::try_from(child.id()).map_err(|_| failed("a pid out of range".into()))?;
        let code = exits.of(pid).await.ok_or_else(|| ShimError::Reaper("the monitor closed".into()))?;
        tracing::debug!(action, id, code, "runc ended");
        if code == 0 {
            return Ok(());
        }
        let messages = log.as_deref().map(errors_in_log).unwrap_or_default();
        Err(failed(if messages.is_empty() { format!("exit status {code}") } else { messages }))
    }
}

/// The error messages of a runc JSON log, joined.
fn errors_in_log(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut messages: Vec<String> = Vec::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let level = entry.get("level").and_then(|l| l.as_str()).unwrap_or_default();
        let Some(msg) = entry.get("msg").and_then(|m| m.as_str()) else { continue };
        if matches!(level, "error" | "fatal" | "panic") && !messages.iter().any(|m| m == msg) {
            messages.push(msg.to_string());
        }
    }
    messages.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_error_messages_from_a_json_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("runc.log");
        let lines = [
            r#"{"level":"info","msg":"starting","time":"t"}"#,
            "not json",
            r#"{"level":"error","msg":"exec: \"/x\": permission denied","time":"t"}"#,
            r#"{"level":"error","msg":"exec: \"/x\": permission denied","time":"t"}"#,
            r#"{"level":"fatal","msg":"giving up","time":"t"}"#,
        ];
        std::fs::write(&log, lines.join("\n")).expect("write");
        assert_eq!(errors_in_log(&log), "exec: \"/x\": permission denied; giving up");
        assert_eq!(errors_in_log(&dir.path().join("missing")), "");
    }

    #[test]
    fn the_state_root_is_per_namespace() {
        let runc = Runc::new("k8s.io");
        assert!(runc.root.ends_with("k8s.io"), "{}", runc.root.display());
        assert!(Runc::new("").root.ends_with("default"));
    }
}
