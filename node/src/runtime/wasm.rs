//! The in-process Wasm runtime: images from the image store, compiled once by the shared engine, each
//! container a task on its pod's executor (the thread inside the pod's network namespace).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skiff_engine::{Exit, Output, OutputSink, Preopen, Program, RunSpec, Usage, WasmEngine};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::executor::PodExecutor;
use super::{
    ContainerExit, ContainerRuntime, ExecOutput, GuestStdin, GuestUsage, GuestWorld, ImageReady, Launch, PodContext,
    RuntimeError, Started, StreamIo,
};
use crate::image::{ImageStore, PullPolicy, RegistryAuth, WasmImage};
use crate::logs::{LogWriter, Stream};
use crate::sandbox::Sandbox;

pub struct WasmRuntime {
    engine: Arc<WasmEngine>,
    images: Arc<ImageStore>,
    programs: parking_lot::Mutex<HashMap<String, Program>>,
    /// The running guests' accounting, by container run.
    guests: Arc<parking_lot::Mutex<HashMap<u64, GuestUsage>>>,
    runs: std::sync::atomic::AtomicU64,
    /// The stdins of running containers made with `stdin: true`, by their scratch directory (one
    /// per pod and container).
    stdins: Arc<parking_lot::Mutex<HashMap<PathBuf, GuestStdin>>>,
}

/// The pipe a container's stdin is read from.
const STDIN_PIPE: usize = 64 * 1024;

impl WasmRuntime {
    pub fn new(engine: Arc<WasmEngine>, images: Arc<ImageStore>) -> Self {
        Self {
            engine,
            images,
            programs: parking_lot::Mutex::new(HashMap::new()),
            guests: Arc::default(),
            runs: std::sync::atomic::AtomicU64::new(0),
            stdins: Arc::default(),
        }
    }

    fn image(&self, reference: &str) -> Result<Arc<WasmImage>, RuntimeError> {
        self.images.cached(reference).ok_or_else(|| RuntimeError::Other(format!("image {reference} is not present")))
    }

    /// The compiled program of an image: from memory, else from the engine (disk cache or compile).
    async fn program(&self, image: &WasmImage) -> Result<Program, RuntimeError> {
        if let Some(p) = self.programs.lock().get(&image.wasm_digest) {
            return Ok(p.clone());
        }
        let (engine, digest, path) = (Arc::clone(&self.engine), image.wasm_digest.clone(), image.wasm_path.clone());
        let program = tokio::task::spawn_blocking(move || -> Result<Program, RuntimeError> {
            let bytes = std::fs::read(&path).map_err(|e| RuntimeError::Other(format!("{}: {e}", path.display())))?;
            Ok(engine.load(&digest, &bytes)?)
        })
        .await
        .map_err(|e| RuntimeError::Other(e.to_string()))??;
        self.programs.lock().insert(image.wasm_digest.clone(), program.clone());
        Ok(program)
    }

    /// argv, env, working dir and preopens of a container, Kubernetes rules applied to Wasm.
    fn run_spec(
        &self,
        image: &WasmImage,
        launch: &Launch,
        extra_args: Option<&[String]>,
    ) -> Result<RunSpec, RuntimeError> {
        let argv = argv(image, launch, extra_args);
        let env = guest_env(image, launch);
        let mut preopens = Vec::new();
        if let Some(rootfs) = &image.rootfs {
            preopens.push(Preopen {
                host: private_rootfs(rootfs, &launch.scratch_dir)?,
                guest: "/".into(),
                read_only: false,
            });
        }
        for m in &launch.mounts {
            preopens.push(Preopen {
                host: m.host_path.clone(),
                guest: m.container_path.clone(),
                read_only: m.read_only,
            });
        }
        let out: Arc<dyn OutputSink> = Arc::new(LogSink { log: Arc::clone(&launch.log), stream: Stream::Stdout });
        let err: Arc<dyn OutputSink> = Arc::new(LogSink { log: Arc::clone(&launch.log), stream: Stream::Stderr });
        Ok(RunSpec {
            args: argv,
            env,
            preopens,
            stdout: Some(Output::Sink(out)),
            stderr: Some(Output::Sink(err)),
            memory_limit: launch.memory_limit.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            cpu_millis: launch.cpu_millis,
            resolver: crate::dns::guest::PodResolver::new(&launch.linux.resolv_conf)
                .map(|r| Arc::new(r) as Arc<dyn skiff_engine::NameResolver>),
            ..RunSpec::default()
        })
    }
}

/// The guest's environment: the image's, overridden by the container's, and `PWD` from the working dir.
pub(crate) fn guest_env(image: &WasmImage, launch: &Launch) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = image.env.clone();
    for (k, v) in &launch.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    // WASI has no working directory of its own; wasi-libc and Rust's std read `PWD`.
    if let Some(dir) = working_dir(image, launch) {
        env.retain(|(k, _)| k != "PWD");
        env.push(("PWD".into(), dir));
    }
    env
}

/// The container's working directory: its own, else the image's (`None` when neither names one).
pub(crate) fn working_dir(image: &WasmImage, launch: &Launch) -> Option<String> {
    launch.working_dir.clone().or_else(|| image.working_dir.clone()).filter(|d| !d.is_empty())
}

/// argv for a Wasm container. argv[0] is the module's file name; then `command` (or the image's
/// entrypoint after its `.wasm` path) and `args` (or the image's cmd). For an exec probe, its command
/// replaces both.
pub(crate) fn argv(image: &WasmImage, launch: &Launch, exec: Option<&[String]>) -> Vec<String> {
    let argv0 = image
        .entrypoint
        .first()
        .and_then(|p| Path::new(p).file_name())
        .or_else(|| image.wasm_path.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "main.wasm".into());
    let mut argv = vec![argv0];
    if let Some(cmd) = exec {
        argv.extend(cmd.iter().cloned());
        return argv;
    }
    match (&launch.command, &launch.args) {
        (Some(command), args) => {
            // A command naming the module itself (`/app/x.wasm`) is the entrypoint, not an argument.
            let skip = usize::from(command.first().is_some_and(|c| c.ends_with(".wasm")));
            argv.extend(command.iter().skip(skip).cloned());
            argv.extend(args.iter().flatten().cloned());
        }
        (None, Some(args)) => {
            argv.extend(image.entrypoint.iter().skip(1).cloned());
            argv.extend(args.iter().cloned());
        }
        (None, None) => argv.extend(image.entrypoint.iter().skip(1).cloned()),
    }
    argv
}

/// The container's own writable copy of the image's files (made once per container).
pub(crate) fn private_rootfs(template: &Path, scratch: &Path) -> Result<PathBuf, RuntimeError> {
    let dest = scratch.join("rootfs");
    if !dest.exists() {
        copy_tree(template, &dest).map_err(|e| RuntimeError::Other(format!("copying the image's files: {e}")))?;
    }
    Ok(dest)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

struct LogSink {
    log: Arc<LogWriter>,
    stream: Stream,
}

impl OutputSink for LogSink {
    fn write(&self, bytes: &[u8]) {
        if let Err(e) = self.log.write(self.stream, bytes) {
            tracing::warn!(error = %e, "writing a container log");
        }
    }
}

fn to_container_exit(result: Result<Exit, skiff_engine::EngineError>) -> ContainerExit {
    match result {
        Ok(Exit::Code(c)) => ContainerExit::from_code(c),
        Ok(Exit::OutOfMemory) => ContainerExit {
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: Some("the module tried to grow its memory past resources.limits.memory".into()),
        },
        Ok(Exit::Killed) => ContainerExit { exit_code: 137, reason: "Error".into(), message: Some("killed".into()) },
        Ok(Exit::Trap(msg)) => {
            ContainerExit { exit_code: 1, reason: "Error".into(), message: Some(format!("wasm trap: {msg}")) }
        }
        Err(e) => ContainerExit { exit_code: 128, reason: "ContainerCannotRun".into(), message: Some(e.to_string()) },
    }
}

fn executor(pod: &Arc<dyn PodContext>) -> Result<&PodExecutor, RuntimeError> {
    pod.as_any().downcast_ref::<PodExecutor>().ok_or_else(|| RuntimeError::Other("not a Wasm pod context".into()))
}

#[async_trait::async_trait]
impl ContainerRuntime for WasmRuntime {
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        auths: &[RegistryAuth],
    ) -> Result<ImageReady, RuntimeError> {
        let pulled = self.images.ensure(image, policy, auths.first()).await?;
        let program = self.program(&pulled.image).await?;
        drop(program);
        Ok(ImageReady { image_id: pulled.image.image_id.clone(), pulled: pulled.pulled })
    }

    async fn pod_context(&self, pod_uid: &str, sandbox: &Sandbox) -> Result<Arc<dyn PodContext>, RuntimeError> {
        Ok(Arc::new(PodExecutor::start(pod_uid, Some(&sandbox.netns_path))?))
    }

    async fn start(&self, pod: &Arc<dyn PodContext>, launch: Launch) -> Result<Started, RuntimeError> {
        let image = self.image(&launch.image)?;
        let program = self.program(&image).await?;
        let spec = self.run_spec(&image, &launch, None)?;
        let exec = executor(pod)?;
        let cancel = CancellationToken::new();
        let (exit_tx, exited) = oneshot::channel();
        let engine = Arc::clone(&self.engine);
        let port = launch.http_port.unwrap_or(8080);
        let usage = Arc::new(Usage::default());
        // `stdin: true`: the guest reads what `kubectl attach -i` clients write; the pipe stays open
        // while the container runs, whoever comes and goes.
        let (stdin, input) = if launch.linux.stdin {
            let (writer, reader) = tokio::io::duplex(STDIN_PIPE);
            let shared: GuestStdin = Arc::new(tokio::sync::Mutex::new(Some(writer)));
            self.stdins.lock().insert(launch.scratch_dir.clone(), Arc::clone(&shared));
            (Some(shared), Some(skiff_engine::Input(Box::new(reader))))
        } else {
            (None, None)
        };
        let spec = RunSpec { cancel: Some(cancel.clone()), usage: Some(Arc::clone(&usage)), stdin: input, ..spec };
        let (stdins, scratch) = (Arc::clone(&self.stdins), launch.scratch_dir.clone());
        let log = Arc::clone(&launch.log);
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (namespace, pod_name) = launch.linux.pod.split_once('/').unwrap_or(("", launch.linux.pod.as_str()));
        let guest = GuestUsage {
            namespace: namespace.to_string(),
            pod: pod_name.to_string(),
            pod_uid: exec.uid().to_string(),
            container: launch.name.clone(),
            started: jiff::Timestamp::now(),
            usage,
        };
        self.guests.lock().insert(run, guest);
        let guests = Arc::clone(&self.guests);
        // An HTTP component's port is bound before `start` returns, so its first probe finds it open.
        let listener = if program.is_http() {
            let (bound_tx, bound_rx) = oneshot::channel();
            exec.handle().spawn(async move {
                let _ = bound_tx.send(tokio::net::TcpListener::bind(("0.0.0.0", port)).await);
            });
            let bound = bound_rx.await.map_err(|_| RuntimeError::Other("the pod's executor stopped".into()))?;
            Some(bound.map_err(|e| RuntimeError::Other(format!("listening on port {port}: {e}")))?)
        } else {
            None
        };
        exec.handle().spawn(async move {
            let result = match listener {
                Some(listener) => engine.serve_http(&program, spec, listener).await,
                None => engine.run(&program, spec).await,
            };
            let _ = log.flush();
            guests.lock().remove(&run);
            if let Some(stdin) = stdin {
                stdin.lock().await.take();
                let mut map = stdins.lock();
                if map.get(&scratch).is_some_and(|s| Arc::ptr_eq(s, &stdin)) {
                    map.remove(&scratch);
                }
            }
            let _ = exit_tx.send(to_container_exit(result));
        });
        // A guest has no signal handlers: stopping cancels it at once, whatever the grace period.
        let stop: crate::runtime::Stop = Arc::new(move |_grace| cancel.cancel());
        Ok(Started { id: None, stop, exited, stop_signal: None })
    }

    async fn exec(
        &self,
        pod: &Arc<dyn PodContext>,
        launch: &Launch,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let image = self.image(&launch.image)?;
        let program = self.program(&image).await?;
        let capture = Arc::new(Capture::default());
        let sink: Arc<dyn OutputSink> = capture.clone();
        let spec = RunSpec {
            stdout: Some(Output::Sink(Arc::clone(&sink))),
            stderr: Some(Output::Sink(sink)),
            deadline: Some(timeout),
            ..self.run_spec(&image, launch, Some(command))?
        };
        let engine = Arc::clone(&self.engine);
        let (tx, rx) = oneshot::channel();
        executor(pod)?.handle().spawn(async move {
            let _ = tx.send(engine.run(&program, spec).await);
        });
        let exit = rx.await.map_err(|_| RuntimeError::Other("the pod's executor stopped".into()))??;
        let output = String::from_utf8_lossy(&capture.bytes.lock()).into_owned();
        match exit {
            Exit::Killed => Err(RuntimeError::Other(format!("command timed out after {timeout:?}"))),
            other => Ok(ExecOutput { exit_code: other.code(), output }),
        }
    }

    fn attach_stdin(&self, launch: &Launch) -> Option<GuestStdin> {
        self.stdins.lock().get(&launch.scratch_dir).cloned()
    }

    fn guest_world(&self, launch: &Launch) -> Option<GuestWorld> {
        let image = self.image(&launch.image).ok()?;
        let mut dirs = Vec::new();
        // The container's copy of the image's files (made when it started) is its `/`.
        let rootfs = launch.scratch_dir.join("rootfs");
        if image.rootfs.is_some() && rootfs.is_dir() {
            dirs.push(super::Mount { host_path: rootfs, container_path: "/".into(), read_only: false });
        }
        dirs.extend(launch.mounts.iter().cloned());
        Some(GuestWorld { env: guest_env(&image, launch), dirs, working_dir: working_dir(&image, launch) })
    }

    async fn exec_streaming(
        &self,
        pod: &Arc<dyn PodContext>,
        launch: &Launch,
        command: &[String],
        io: StreamIo,
    ) -> Result<oneshot::Receiver<i32>, RuntimeError> {
        let image = self.image(&launch.image)?;
        let program = self.program(&image).await?;
        let (tx, rx) = oneshot::channel();
        let shown = command.first().cloned().unwrap_or_default();
        if program.is_http() {
            // An HTTP component has no command entry point to run with arguments.
            io.stderr.write(
                format!("{shown}: command not found (not a toolbox command, and the container's module is an HTTP component that runs no commands)\n")
                    .as_bytes(),
            );
            let _ = tx.send(127);
            return Ok(rx);
        }
        // A command naming the module itself (`/app/x.wasm args`) runs it with those args.
        let skip = usize::from(command.first().is_some_and(|c| c.ends_with(".wasm")));
        let args: Vec<String> = command.iter().skip(skip).cloned().collect();
        let spec = RunSpec {
            stdin: io.stdin.map(skiff_engine::Input),
            stdout: Some(Output::Sink(io.stdout)),
            stderr: Some(Output::Sink(Arc::clone(&io.stderr))),
            cancel: Some(io.cancel),
            ..self.run_spec(&image, launch, Some(&args))?
        };
        let engine = Arc::clone(&self.engine);
        let stderr = io.stderr;
        executor(pod)?.handle().spawn(async move {
            let code = match engine.run(&program, spec).await {
                Ok(Exit::Code(c)) => c,
                Ok(Exit::Trap(msg)) => {
                    stderr.write(format!("wasm trap: {msg}\n").as_bytes());
                    1
                }
                Ok(Exit::OutOfMemory | Exit::Killed) => 137,
                Err(e @ skiff_engine::EngineError::NoEntryPoint) => {
                    stderr.write(format!("{shown}: command not found ({e})\n").as_bytes());
                    127
                }
                Err(e) => {
                    stderr.write(format!("{shown}: cannot execute: {e}\n").as_bytes());
                    126
                }
            };
            let _ = tx.send(code);
        });
        Ok(rx)
    }

    fn compiles(&self) -> u64 {
        self.engine.compiles()
    }

    fn guests(&self) -> Vec<GuestUsage> {
        self.guests.lock().values().cloned().collect()
    }
}

#[derive(Default)]
struct Capture {
    bytes: parking_lot::Mutex<Vec<u8>>,
}

impl OutputSink for Capture {
    fn write(&self, bytes: &[u8]) {
        let mut buf = self.bytes.lock();
        if buf.len() < 64 * 1024 {
            buf.extend_from_slice(bytes);
        }
    }
}
