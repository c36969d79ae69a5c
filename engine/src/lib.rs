//! The Wasm engine: compiles programs (WASI preview 1 modules, WASI 0.2 and 0.3 components) once per content
//! digest and engine version, and runs them as async tasks with a memory cap, a CPU share, cancellation,
//! and the guest's exit code; serves `wasi:http/incoming-handler` components over HTTP/1.1.
//!
//! # Threads and network namespaces
//!
//! Every future of this engine makes its sockets (the guest's listeners and outbound connections, the
//! connections `serve_http` accepts) on the thread that polls it, and spawns its helper tasks with
//! `tokio::spawn` onto the caller's runtime: it never starts threads or runtimes of its own for socket
//! work. On Linux a socket belongs to the network namespace of the thread that creates it, so to give a
//! pod's guests the pod's network, poll these futures on a runtime whose threads entered the pod's
//! namespace (e.g. a current-thread runtime on a thread that did `setns(CLONE_NEWNET)`; set
//! `on_thread_start` to do the same on its blocking pool, which resolves names).

mod component;
mod config;
mod http;
mod limits;
pub mod netns;
mod output;
mod p1;
mod program;
mod resolve;
mod spec;
mod usage;
mod wasi;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wasmtime::Engine;

pub use config::{Pool, DEFAULT_PODS, IN_FLIGHT_GUESTS, LARGEST_GUEST};
pub use output::{Input, Output, OutputSink};
pub use program::Program;
pub use resolve::{Lookup, NameResolver};
pub use spec::{env_pairs, EngineError, Exit, Preopen, RunSpec};
pub use usage::Usage;

use limits::EPOCH_TICK;
use program::{Kind, World};
use wasi::{GuestEnv, P1State, P2State};

/// The engine: one per process, shared by every container.
pub struct WasmEngine {
    engine: Engine,
    /// The host functions of WASI p1 and of p2 + `wasi:http`, each made on first use: a process that runs
    /// only modules (or only components) never builds (nor pages in the code of) the other.
    p1_linker: OnceLock<wasmtime::Linker<P1State>>,
    linker: OnceLock<wasmtime::component::Linker<P2State>>,
    cache_dir: PathBuf,
    compiles: AtomicU64,
    programs: Mutex<HashMap<String, Program>>,
    ticking: Arc<AtomicBool>,
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl WasmEngine {
    /// An engine whose compiled code is cached under `cache_dir`, with room for the pods of a node with
    /// the default `--max-pods` ([`DEFAULT_PODS`]).
    pub fn new(cache_dir: &Path) -> Result<Self, EngineError> {
        Self::for_pods(cache_dir, DEFAULT_PODS)
    }

    /// An engine with room for `pods` running guests of the largest supported kind at once (and the HTTP
    /// requests in flight, see [`Pool::for_pods`]): what a node that advertises `pods` pods needs.
    pub fn for_pods(cache_dir: &Path, pods: u32) -> Result<Self, EngineError> {
        Self::with_pool(cache_dir, Pool::for_pods(pods))
    }

    /// An engine whose pool holds `slots` instances (and memories, tables, async stacks) at once: more
    /// than that fail to instantiate. Each slot costs its guard pages and their bookkeeping when the
    /// engine is made and when the process exits.
    pub fn with_slots(cache_dir: &Path, slots: u32) -> Result<Self, EngineError> {
        Self::with_pool(cache_dir, Pool::uniform(slots))
    }

    /// An engine whose pooling allocator is sized by `pool`.
    pub fn with_pool(cache_dir: &Path, pool: Pool) -> Result<Self, EngineError> {
        // The guest's outgoing HTTPS (wasi:http) uses rustls, which needs a process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let engine = Engine::new(&config::config(pool)).map_err(|e| EngineError::Config(format!("{e:#}")))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let versioned = cache_dir.join(format!("{:016x}", hasher.finish()));
        private_dir(&versioned).map_err(|source| EngineError::Cache { path: versioned.clone(), source })?;
        let cache_dir = versioned;
        let ticking = Arc::new(AtomicBool::new(true));
        let (ticker, flag) = (engine.weak(), Arc::clone(&ticking));
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| EngineError::Config(e.to_string()))?;
        Ok(Self {
            engine,
            p1_linker: OnceLock::new(),
            linker: OnceLock::new(),
            cache_dir,
            compiles: AtomicU64::new(0),
            programs: Mutex::new(HashMap::new()),
            ticking,
        })
    }

    fn p1_linker(&self) -> Result<&wasmtime::Linker<P1State>, EngineError> {
        if let Some(linker) = self.p1_linker.get() {
            return Ok(linker);
        }
        let made = p1::linker(&self.engine)?;
        Ok(self.p1_linker.get_or_init(|| made))
    }

    fn component_linker(&self) -> Result<&wasmtime::component::Linker<P2State>, EngineError> {
        if let Some(linker) = self.linker.get() {
            return Ok(linker);
        }
        let made = component::linker(&self.engine)?;
        Ok(self.linker.get_or_init(|| made))
    }

    /// How many programs this engine compiled (cache misses); exported as a metric.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The program for `bytes` (content `digest`): from memory when this engine loaded it before, else from
    /// the disk cache when any engine of the same version compiled it, else compiled (and cached).
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<Program, EngineError> {
        if let Some(program) = self.programs.lock().ok().and_then(|map| map.get(digest).cloned()) {
            return Ok(program);
        }
        let _span = tracing::info_span!("load wasm", digest).entered();
        let path = Program::cache_path(&self.cache_dir, digest, bytes);
        let program = match Program::from_cache(&self.engine, &path, bytes) {
            Some(program) => program,
            None => {
                let program = Program::compile(&self.engine, bytes)?;
                self.compiles.fetch_add(1, Ordering::Relaxed);
                program.store_cache(&path)?;
                program
            }
        };
        if let Ok(mut map) = self.programs.lock() {
            map.insert(digest.to_string(), program.clone());
        }
        Ok(program)
    }

    /// Runs a preview 1 module (`_start`) or a WASI 0.2 or 0.3 command component (`wasi:cli/run`) to its end.
    ///
    /// The guest yields to the executor at every epoch tick (10 ms), so a busy guest does not starve the
    /// other tasks of a current-thread runtime. [`Exit::Killed`] when `spec.cancel` fires or `spec.deadline`
    /// passes, whether the guest computes or waits. See the module docs about threads and sockets.
    pub async fn run(&self, program: &Program, mut spec: RunSpec) -> Result<Exit, EngineError> {
        let env = GuestEnv::take(&mut spec);
        let span = tracing::info_span!("run wasm", program = ?program, argv0 = env.argv0());
        let usage = env.usage.clone();
        let guest = async {
            match &program.kind {
                Kind::Module(module) => p1::run(self.p1_linker()?, module, &env, spec.cpu_millis).await,
                Kind::Component { component, world } => {
                    component::run(self.component_linker()?, component, *world, &env, spec.cpu_millis).await
                }
            }
        };
        let cancelled = cancelled(spec.cancel.as_ref());
        let late = elapsed(spec.deadline);
        let bounded = async {
            let exit = tokio::select! {
                biased;
                () = cancelled => Ok(Exit::Killed),
                () = late => Ok(Exit::Killed),
                exit = usage::Metered::new(guest, usage) => exit,
            };
            tracing::debug!(?exit, "guest ended");
            exit
        };
        bounded.instrument(span).await
    }

    /// Serves a component exporting `wasi:http/incoming-handler` on `listener` (HTTP/1.1, keep-alive) until
    /// `spec.cancel` fires, then returns [`Exit::Killed`]. A client that half-closes after its request still
    /// gets the answer.
    ///
    /// Every request gets a fresh instance with `spec`'s args, env, preopens, memory limit, CPU share and
    /// output; `spec.deadline` bounds each request. A request whose guest traps, runs out of memory or
    /// passes its deadline gets a 500 and a line on the stderr output; the server goes on serving.
    /// Connections and requests are spawned with `tokio::spawn` on the caller's runtime (a current-thread
    /// runtime works); see the module docs about threads and sockets.
    pub async fn serve_http(
        &self,
        program: &Program,
        mut spec: RunSpec,
        listener: TcpListener,
    ) -> Result<Exit, EngineError> {
        let Kind::Component { component, world: world @ (World::HttpP2 | World::HttpP3) } = &program.kind else {
            return Err(EngineError::NotHttp);
        };
        let env = GuestEnv::take(&mut spec);
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let span = tracing::info_span!("serve wasi-http", %address, argv0 = env.argv0());
        let cancel = spec.cancel.unwrap_or_default();
        let handler = http::Handler::new(self.component_linker()?, component, *world)?;
        http::serve(handler, env, spec.cpu_millis, spec.deadline, listener, cancel).instrument(span).await
    }
}

/// Resolves when `cancel` fires; never without one.
async fn cancelled(cancel: Option<&CancellationToken>) {
    match cancel {
        Some(cancel) => cancel.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Resolves after `deadline`; never without one.
async fn elapsed(deadline: Option<Duration>) {
    match deadline {
        Some(deadline) => tokio::time::sleep(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_components;
#[cfg(test)]
mod tests_netns;

/// Makes `dir` (and its missing parents, 0700 too) and leaves it 0700: compiled code is native code the
/// engine will run, so no other user may write, or read, the cache.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
