//! `kubectl exec` in a containerd task: an extra process made from the container's own process spec
//! (env, cwd, user, capabilities) with the given arguments, fifos for the streams the client asked for,
//! a terminal when it asked for one; the process is waited for and forgotten (DeleteProcess) in the
//! background, whoever ends first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::client::{self, Client, NewExec};
use super::ContainerdError;
use crate::streaming::{ExecRequest, Process, ProcessControl};

/// SIGKILL: a process whose client went away.
const SIGKILL: u32 = 9;

/// Tells concurrent execs of this kubelet apart.
static EXECS: AtomicU64 = AtomicU64::new(0);

/// The process spec of an exec: the container's (`spec`, its OCI runtime spec as JSON) with `command`
/// as its arguments and a terminal if `tty`.
pub fn process_spec(spec: &[u8], command: &[String], tty: bool) -> Result<Vec<u8>, ContainerdError> {
    let bad = |m: String| ContainerdError::Prepare(format!("the container's spec: {m}"));
    let spec: serde_json::Value = serde_json::from_slice(spec).map_err(|e| bad(e.to_string()))?;
    let mut process = spec.get("process").cloned().ok_or_else(|| bad("no process".into()))?;
    let object = process.as_object_mut().ok_or_else(|| bad("process is not an object".into()))?;
    object.insert("args".into(), serde_json::json!(command));
    object.insert("terminal".into(), serde_json::Value::Bool(tty));
    object.remove("consoleSize");
    serde_json::to_vec(&process).map_err(|e| bad(e.to_string()))
}

/// The fifos of one exec; removed when dropped.
struct Fifos {
    paths: Vec<PathBuf>,
}

impl Fifos {
    fn make(&mut self, dir: &Path, name: String) -> Result<PathBuf, ContainerdError> {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| ContainerdError::Prepare(format!("{}: {e}", path.display())))?;
        self.paths.push(path.clone());
        Ok(path)
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Starts `req.command` in the running task of container `id` (whose OCI spec is `spec`); fifos go in
/// `io_dir`.
pub async fn start(
    client: &Client,
    id: &str,
    spec: &[u8],
    io_dir: &Path,
    req: &ExecRequest,
) -> Result<Process, ContainerdError> {
    let process = process_spec(spec, &req.command, req.tty)?;
    let exec_id = format!("exec-{}-{}", std::process::id(), EXECS.fetch_add(1, Ordering::Relaxed));
    create_private_dir(io_dir)?;
    let mut fifos = Fifos { paths: Vec::new() };
    let open_err = |p: &Path, e: std::io::Error| ContainerdError::Prepare(format!("{}: {e}", p.display()));
    // Read ends of the outputs first (they do not wait for a writer); stdin read-write so it does not
    // wait for the shim either (closing it is the process's EOF).
    let mut stdin = None;
    let mut stdin_path = String::new();
    if req.stdin {
        let path = fifos.make(io_dir, format!("{exec_id}.stdin"))?;
        let sender = pipe::OpenOptions::new().read_write(true).open_sender(&path).map_err(|e| open_err(&path, e))?;
        stdin = Some(sender);
        stdin_path = path.to_string_lossy().into_owned();
    }
    let mut outputs: [(Option<pipe::Receiver>, String); 2] = [(None, String::new()), (None, String::new())];
    let wanted = [req.stdout, req.stderr && !req.tty];
    for (i, (name, want)) in ["stdout", "stderr"].iter().zip(wanted).enumerate() {
        // Without a terminal the shim opens both outputs (an empty path fails the exec), so an
        // output the client did not ask for goes to a fifo that is read and dropped.
        if want || !req.tty {
            let path = fifos.make(io_dir, format!("{exec_id}.{name}"))?;
            let receiver = pipe::OpenOptions::new().open_receiver(&path).map_err(|e| open_err(&path, e))?;
            let path = path.to_string_lossy().into_owned();
            if want {
                outputs[i] = (Some(receiver), path);
            } else {
                tokio::spawn(discard(receiver));
                outputs[i] = (None, path);
            }
        }
    }
    let [(stdout, stdout_path), (stderr, stderr_path)] = outputs;
    let new = NewExec {
        container_id: id,
        exec_id: &exec_id,
        stdin: &stdin_path,
        stdout: &stdout_path,
        stderr: &stderr_path,
        terminal: req.tty,
        process,
    };
    client.exec_process(new).await?;
    if let Err(e) = client.start_exec(id, &exec_id).await {
        let _ = client.delete_exec(id, &exec_id).await;
        return Err(e);
    }
    let (exit_tx, exited) = oneshot::channel();
    let (waiter, wait_id, wait_exec) = (client.clone(), id.to_string(), exec_id.clone());
    tokio::spawn(
        async move {
            let status = waiter.wait_exec(&wait_id, &wait_exec).await;
            let code = match status {
                Ok(code) => Ok(i32::try_from(code).unwrap_or(255)),
                Err(e) if client::is_not_found(&e) => Err("the container's task is gone".to_string()),
                Err(e) => Err(e.to_string()),
            };
            tracing::debug!(?code, "exec ended");
            let _ = exit_tx.send(code);
            if let Err(e) = waiter.delete_exec(&wait_id, &wait_exec).await {
                tracing::warn!(error = %e, "forgetting an exec");
            }
            drop(fifos);
        }
        .instrument(tracing::info_span!("exec_wait", container = %id, exec = %exec_id)),
    );
    let control = Arc::new(Control { client: client.clone(), id: id.to_string(), exec_id });
    Ok(Process {
        stdin: stdin.map(|s| Box::new(s) as _),
        stdout: stdout.map(|s| Box::new(s) as _),
        stderr: stderr.map(|s| Box::new(s) as _),
        control,
        exited,
    })
}

/// Reads an output nobody asked for to its end, so the process never blocks writing it.
async fn discard(mut receiver: pipe::Receiver) {
    let _ = tokio::io::copy(&mut receiver, &mut tokio::io::sink()).await;
}

fn create_private_dir(dir: &Path) -> Result<(), ContainerdError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ContainerdError::Prepare(format!("{}: {e}", dir.display())))
}

/// Resize, stdin close and kill of one exec'd process.
struct Control {
    client: Client,
    id: String,
    exec_id: String,
}

#[async_trait::async_trait]
impl ProcessControl for Control {
    async fn resize(&self, width: u16, height: u16) {
        if let Err(e) = self.client.resize_exec(&self.id, &self.exec_id, width.into(), height.into()).await {
            tracing::debug!(error = %e, "resizing an exec's terminal");
        }
    }

    async fn close_stdin(&self) {
        if let Err(e) = self.client.close_exec_stdin(&self.id, &self.exec_id).await {
            tracing::debug!(error = %e, "closing an exec's stdin");
        }
    }

    async fn kill(&self) {
        if let Err(e) = self.client.kill_exec(&self.id, &self.exec_id, SIGKILL).await {
            tracing::warn!(error = %e, "killing an exec");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_process_is_the_containers_with_new_args() {
        let spec = br#"{"ociVersion":"1.0.2","process":{"args":["sleep","1"],"env":["A=1"],"cwd":"/w",
            "user":{"uid":7,"gid":8},"consoleSize":{"height":1,"width":2}},"root":{"path":"/r"}}"#;
        let out = process_spec(spec, &["sh".into(), "-c".into(), "id".into()], true).expect("spec");
        let p: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "id"]));
        assert_eq!(p["env"], serde_json::json!(["A=1"]));
        assert_eq!((p["cwd"].as_str(), p["user"]["uid"].as_u64()), (Some("/w"), Some(7)));
        assert_eq!(p["terminal"], serde_json::json!(true));
        assert!(p.get("consoleSize").is_none());
        assert!(process_spec(b"{}", &[], false).is_err());
    }
}
