//! The task service containerd drives (runtime v2, `containerd.task.v2.Task`): Create, Start, Wait, Kill,
//! Delete, State, Pids, Connect, Shutdown and Stats for the containers of one shim (a pod, or one `ctr run`):
//! Wasm ones in the engine, Linux (ELF or script) ones through runc, CRI sandboxes without a process. Exec,
//! Pause, Resume, Checkpoint, Update and ResizePty answer "not implemented".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::cgroups::metrics::{Metrics, PidsStat};
use containerd_shim::protos::types::task::{ProcessInfo, Status as TaskStatus};
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use parking_lot::Mutex;
use tracing::Instrument;

use super::artifact;
use super::bundle::{Bundle, NetNs, SANDBOX_ID};
use super::container::{Container, Job, Status};
use super::content::ContentSource;
use super::entry::Entry;
use super::error::ShimError;
use super::events::Events;
use super::holder::Holder;
use super::linux::LinuxTask;
use super::linux_spec::Pod;
use super::rootfs;
use super::runc::Runc;
use super::stdio::StdioPaths;
use skiff_engine::{RunSpec, WasmEngine};

/// Where compiled code is cached unless `SKIFF_SHIM_CACHE` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/skiff-shim/cache";
/// The environment variable naming the compile cache directory.
pub const CACHE_ENV: &str = "SKIFF_SHIM_CACHE";
/// Guests (and `wasi:http` requests in flight) one shim, i.e. one pod, runs at once: a node's 1000-slot pool
/// would cost every shim ~3 ms of CPU to make and to tear down (guard pages of each stack).
pub const POD_POOL_SLOTS: u32 = 128;

/// The shim's task service: its containers, the engine (made on the first Wasm container), runc (for Linux
/// containers) and its events.
pub struct TaskService {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Made ahead by a warm-up thread at start (while containerd connects and sends Create), else on first use.
    engine: Arc<Mutex<Option<Arc<WasmEngine>>>>,
    runc: Arc<Runc>,
    /// What each pod sandbox of this shim (by sandbox id) gives its Linux containers, with the pod's
    /// namespace holder once it has one.
    pods: Arc<Mutex<HashMap<String, Pod>>>,
    /// Held while a namespace holder starts, so a pod gets only one.
    holder_start: tokio::sync::Mutex<()>,
    events: Arc<Events>,
    exit: Arc<ExitSignal>,
    /// The shim's own pid: the task pid of Wasm guests (threads of it) and sandboxes.
    pid: u32,
    /// containerd's content store, for Wasm artifacts (none when the shim has no containerd address).
    content: Option<ContentSource>,
}

impl TaskService {
    /// The task service of a shim serving containerd namespace `namespace`.
    pub fn new(events: Events, exit: Arc<ExitSignal>, namespace: &str, content: Option<ContentSource>) -> Self {
        let engine = Arc::new(Mutex::new(None));
        Self {
            containers: Mutex::new(HashMap::new()),
            engine,
            runc: Arc::new(Runc::new(namespace)),
            pods: Arc::new(Mutex::new(HashMap::new())),
            holder_start: tokio::sync::Mutex::new(()),
            events: Arc::new(events),
            exit,
            pid: std::process::id(),
            content,
        }
    }

    /// Makes the engine on a thread now, while containerd connects and sends Create, instead of in the first
    /// Create. (Only the serving shim does: a process that finds its pod's shim already serving exits.)
    pub fn warm_up_engine(&self) {
        let warming = Arc::clone(&self.engine);
        let warm_up = std::thread::Builder::new().name("engine-warm-up".into()).spawn(move || {
            let mut engine = warming.lock();
            if engine.is_none() {
                // A failure is left for the first Wasm container to report.
                *engine = make_engine().inspect_err(|e| tracing::warn!(error = %e, "warming up the engine")).ok();
            }
        });
        if let Err(e) = warm_up {
            tracing::warn!(error = %e, "starting the engine warm-up");
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>, ShimError> {
        self.containers.lock().get(id).cloned().ok_or_else(|| ShimError::NotFound(id.to_string()))
    }

    /// The engine, made on first use with its compile cache under `SKIFF_SHIM_CACHE` (or the default).
    fn engine(&self) -> Result<Arc<WasmEngine>, ShimError> {
        let mut engine = self.engine.lock();
        if let Some(engine) = &*engine {
            return Ok(Arc::clone(engine));
        }
        let made = make_engine()?;
        *engine = Some(Arc::clone(&made));
        Ok(made)
    }

    async fn create_task(&self, req: &CreateTaskRequest) -> Result<u32, ShimError> {
        if self.containers.lock().contains_key(&req.id) {
            return Err(ShimError::AlreadyExists(req.id.clone()));
        }
        let mut bundle = Bundle::load(Path::new(&req.bundle))?;
        self.join_pod_network(&req.id, &mut bundle);
        let mounted = !req.rootfs.is_empty();
        rootfs::mount(&req.rootfs, &bundle.rootfs).await?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let job = match self.prepare(&req.id, &bundle, &stdio).await {
            Ok(job) => job,
            Err(e) => {
                if mounted {
                    let _ = rootfs::unmount(&bundle.rootfs);
                }
                return Err(e);
            }
        };
        let container = Arc::new(Container::new(req.id.clone(), bundle, stdio.clone(), mounted, job));
        let pid = container.pid(self.pid);
        self.containers.lock().insert(req.id.clone(), container);
        self.events.created(&req.id, &req.bundle, &req.rootfs, &stdio, pid).await;
        Ok(pid)
    }

    /// CRI points a pod's containers at the sandbox task's network namespace by its pid
    /// (`/proc/<pid>/ns/net`), and a sandbox's pid is this shim's own (the host's network): a Wasm guest joins
    /// the namespace the sandbox container was given instead. (Linux containers get theirs in `linux_spec`.)
    fn join_pod_network(&self, id: &str, bundle: &mut Bundle) {
        if bundle.netns != NetNs::Join(PathBuf::from(format!("/proc/{}/ns/net", self.pid))) {
            return;
        }
        if let Some(netns) = self.pods.lock().get(Self::sandbox_id(id, bundle)).and_then(|pod| pod.netns.clone()) {
            bundle.netns = NetNs::Join(netns);
        }
    }

    /// The id of the pod sandbox a container belongs to (a sandbox's is its own).
    fn sandbox_id<'a>(id: &'a str, bundle: &'a Bundle) -> &'a str {
        bundle.annotations.get(SANDBOX_ID).map_or(id, String::as_str)
    }

    /// What the container will run: its Wasm entry compiled (or from the cache) with its run spec, a Linux
    /// program created through runc, or nothing for a CRI sandbox container (whose hostname and network
    /// namespace are kept for the pod).
    async fn prepare(&self, id: &str, bundle: &Bundle, stdio: &StdioPaths) -> Result<Job, ShimError> {
        if bundle.is_sandbox() {
            self.pods.lock().insert(Self::sandbox_id(id, bundle).to_string(), Pod::of_sandbox(&bundle.path));
            return Ok(Job::Sandbox);
        }
        let entry = match artifact::find_entry(self.content.as_ref(), id, bundle).await? {
            Entry::Wasm(entry) => entry,
            Entry::Linux { guest_path } => {
                tracing::info!(path = %guest_path, "a Linux program: running it through runc");
                let pod = self.linux_pod(Self::sandbox_id(id, bundle)).await;
                let runc = Arc::clone(&self.runc);
                let task = LinuxTask::create(runc, id, &bundle.path, stdio, &pod).await?;
                return Ok(Job::Linux(Arc::new(task)));
            }
        };
        let started = std::time::Instant::now();
        let engine = self.engine()?;
        let engine_ms = started.elapsed().as_millis();
        let before = engine.compiles();
        let loader = Arc::clone(&engine);
        let digest = entry.digest.clone();
        let bytes = entry.bytes.clone();
        let program = tokio::task::spawn_blocking(move || loader.load(&digest, &bytes))
            .await
            .map_err(|e| ShimError::Thread(format!("compiling: {e}")))??;
        let compiled = engine.compiles() > before;
        let load_ms = started.elapsed().as_millis() - engine_ms;
        tracing::info!(
            digest = %entry.digest, path = %entry.guest_path, compiled, cache_hit = !compiled, engine_ms, load_ms,
            "loaded program"
        );
        let (stdout, stderr) = stdio.open_outputs_blocking().await?;
        let preopens = bundle.preopens();
        let mut args = vec![entry.argv0()];
        args.extend(bundle.args.iter().skip(1).cloned());
        let http_port = program.is_http().then(|| bundle.http_port());
        let spec = RunSpec {
            args,
            env: bundle.env.clone(),
            preopens,
            stdout,
            stderr,
            memory_limit: bundle.memory_limit,
            cpu_millis: bundle.cpu_millis,
            deadline: None,
            cancel: None,
            usage: None,
            resolver: None,
            stdin: stdio.open_input()?,
        };
        Ok(Job::Wasm { program, spec, http_port })
    }

    /// What the pod of sandbox `sandbox` gives a Linux container (nothing for an unknown one), its namespace
    /// holder started first if it has none yet; without one (it could not start) the container gets new
    /// namespaces.
    async fn linux_pod(&self, sandbox: &str) -> Pod {
        let _starting = self.holder_start.lock().await;
        let Some(pod) = self.pods.lock().get(sandbox).cloned() else { return Pod::default() };
        if pod.holder.is_some() {
            return pod;
        }
        match Holder::start(pod.hostname.as_deref()).await {
            Ok(holder) => {
                let mut pods = self.pods.lock();
                // A sandbox deleted meanwhile drops (and so kills) the holder.
                let Some(kept) = pods.get_mut(sandbox) else { return pod };
                kept.holder = Some(Arc::new(holder));
                kept.clone()
            }
            Err(e) => {
                tracing::warn!(sandbox, error = %e, "no namespace holder: new IPC and UTS namespaces");
                pod
            }
        }
    }

    /// Kills the namespace holder of sandbox `sandbox`'s pod, if it has one.
    fn kill_holder(pods: &Mutex<HashMap<String, Pod>>, sandbox: &str) {
        let holder = pods.lock().get(sandbox).and_then(|pod| pod.holder.clone());
        if let Some(holder) = holder {
            holder.kill();
        }
    }

    async fn delete_task(&self, id: &str) -> Result<DeleteResponse, ShimError> {
        let container = self.container(id)?;
        let (code, at) = match container.status() {
            Status::Running => {
                return Err(ShimError::State { id: id.into(), state: "running", action: "delete" });
            }
            Status::Created => {
                container.kill(9, false, &self.events, self.pid).await?;
                container.wait().await
            }
            Status::Stopped { code, at } => (code, at),
        };
        if let Some(task) = &container.linux {
            task.delete().await?;
        }
        if container.rootfs_mounted {
            rootfs::unmount(&container.bundle.rootfs)?;
        }
        self.containers.lock().remove(id);
        if container.bundle.is_sandbox() {
            let sandbox = Self::sandbox_id(id, &container.bundle);
            Self::kill_holder(&self.pods, sandbox);
            self.pods.lock().remove(sandbox);
        }
        let pid = container.pid(self.pid);
        self.events.deleted(id, pid, code, &at).await;
        Ok(DeleteResponse { pid, exit_status: code, exited_at: Some(at).into(), ..Default::default() })
    }

    /// Removes every Linux container (runc kills what still runs) and unmounts its rootfs: the shim is
    /// about to exit, and nothing of runc's may outlive it.
    async fn remove_linux_containers(&self) {
        let linux: Vec<Arc<Container>> =
            self.containers.lock().values().filter(|c| c.linux.is_some()).cloned().collect();
        for container in linux {
            let Some(task) = &container.linux else { continue };
            if let Err(e) = task.delete().await {
                tracing::error!(id = %container.id, error = %e, "removing a Linux container at shutdown");
            }
            if container.rootfs_mounted {
                if let Err(e) = rootfs::unmount(&container.bundle.rootfs) {
                    tracing::error!(id = %container.id, error = %e, "unmounting at shutdown");
                }
            }
        }
    }

    fn state(&self, id: &str) -> Result<StateResponse, ShimError> {
        let c = self.container(id)?;
        let (status, exit_status, exited_at) = match c.status() {
            Status::Created => (TaskStatus::CREATED, 0, None),
            Status::Running => (TaskStatus::RUNNING, 0, None),
            Status::Stopped { code, at } => (TaskStatus::STOPPED, code, Some(at)),
        };
        Ok(StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.path.to_string_lossy().into_owned(),
            pid: c.pid(self.pid),
            status: status.into(),
            stdin: c.stdio.stdin.clone(),
            stdout: c.stdio.stdout.clone(),
            stderr: c.stdio.stderr.clone(),
            terminal: c.stdio.terminal,
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }
}

/// The engine with its compile cache under `SKIFF_SHIM_CACHE` (or the default).
fn make_engine() -> Result<Arc<WasmEngine>, ShimError> {
    let dir = std::env::var_os(CACHE_ENV).map(PathBuf::from).unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
    Ok(Arc::new(WasmEngine::with_slots(&dir, POD_POOL_SLOTS)?))
}

/// A request for an exec process (`exec_id` set): this shim has none.
fn no_exec(exec_id: &str) -> Result<(), ShimError> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(ShimError::Unsupported("exec"))
    }
}

fn unimplemented<T>(what: &'static str) -> TtrpcResult<T> {
    Err(ShimError::Unsupported(what).into())
}

#[async_trait]
impl Task for TaskService {
    async fn create(&self, _ctx: &TtrpcContext, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        let span = tracing::info_span!("create", id = %req.id, bundle = %req.bundle);
        let pid =
            self.create_task(&req).instrument(span).await.inspect_err(|e| tracing::error!(error = %e, "create"))?;
        Ok(CreateTaskResponse { pid, ..Default::default() })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let span = tracing::info_span!("start", id = %req.id);
        no_exec(&req.exec_id)?;
        let container = self.container(&req.id)?;
        let engine = self.engine.lock().clone();
        container
            .start(engine, Arc::clone(&self.events), self.pid)
            .instrument(span)
            .await
            .inspect_err(|e| tracing::error!(id = %req.id, error = %e, "start"))?;
        if container.bundle.is_sandbox() {
            // The pod's namespace holder goes when its sandbox stops.
            let (pods, sandbox) = (Arc::clone(&self.pods), Self::sandbox_id(&req.id, &container.bundle).to_string());
            let stopping = Arc::clone(&container);
            tokio::spawn(async move {
                stopping.wait().await;
                Self::kill_holder(&pods, &sandbox);
            });
        }
        let events = Arc::clone(&self.events);
        let (id, pid) = (req.id.clone(), container.pid(self.pid));
        // Published after this reply is sent, as containerd expects TaskStart after Start returns.
        tokio::spawn(async move { events.started(&id, pid).await });
        Ok(StartResponse { pid, ..Default::default() })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        no_exec(&req.exec_id)?;
        let container = self.container(&req.id)?;
        let (code, at) = container.wait().instrument(tracing::debug_span!("wait", id = %req.id)).await;
        Ok(WaitResponse { exit_status: code, exited_at: Some(at).into(), ..Default::default() })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let span = tracing::info_span!("kill", id = %req.id, signal = req.signal);
        no_exec(&req.exec_id)?;
        let container = self.container(&req.id)?;
        container.kill(req.signal, req.all, &self.events, self.pid).instrument(span).await?;
        Ok(Empty::default())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let span = tracing::info_span!("delete", id = %req.id);
        no_exec(&req.exec_id)?;
        Ok(self.delete_task(&req.id).instrument(span).await?)
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        no_exec(&req.exec_id)?;
        Ok(self.state(&req.id)?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let container = self.container(&req.id)?;
        let process = ProcessInfo { pid: container.pid(self.pid), ..Default::default() };
        Ok(PidsResponse { processes: vec![process], ..Default::default() })
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let task_pid = self.container(&req.id).map_or(self.pid, |c| c.pid(self.pid));
        Ok(ConnectResponse {
            shim_pid: self.pid,
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        if req.now || self.containers.lock().is_empty() {
            tracing::info!("shutting down");
            self.remove_linux_containers().await;
            let sandboxes: Vec<String> = self.pods.lock().keys().cloned().collect();
            for sandbox in sandboxes {
                Self::kill_holder(&self.pods, &sandbox);
            }
            self.exit.signal();
        }
        Ok(Empty::default())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        self.container(&req.id)?;
        let metrics =
            Metrics { pids: Some(PidsStat { current: 1, ..Default::default() }).into(), ..Default::default() };
        let any = containerd_shim::util::convert_to_any(Box::new(metrics))
            .map_err(|e| containerd_shim::protos::ttrpc::Error::Others(e.to_string()))?;
        Ok(StatsResponse { stats: Some(any).into(), ..Default::default() })
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        // A Linux container's stdin reaches EOF; a Wasm guest's does when the client closes its end
        // of the fifo (the guest reads the fifo itself).
        if let Some(task) = self.container(&req.id)?.linux.as_ref() {
            task.close_stdin();
        }
        Ok(Empty::default())
    }

    async fn exec(&self, _ctx: &TtrpcContext, _req: ExecProcessRequest) -> TtrpcResult<Empty> {
        unimplemented("exec")
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: PauseRequest) -> TtrpcResult<Empty> {
        unimplemented("pause")
    }

    async fn resume(&self, _ctx: &TtrpcContext, _req: ResumeRequest) -> TtrpcResult<Empty> {
        unimplemented("resume")
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, _req: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        unimplemented("checkpoint")
    }

    async fn update(&self, _ctx: &TtrpcContext, _req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        unimplemented("update")
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, _req: ResizePtyRequest) -> TtrpcResult<Empty> {
        unimplemented("resize_pty")
    }
}
