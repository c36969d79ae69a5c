//! Compile-once, run-bounded WASI preview 1 execution on wasmtime.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, Linker, Module, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// How often the engine's epoch advances: the granularity of CPU bounds and cancellation.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("configuring wasmtime: {0}")]
    Config(String),
    #[error("the module does not compile: {0}")]
    Compile(String),
    #[error("the module cannot be instantiated: {0}")]
    Instantiate(String),
    #[error("the module has no entry point (`_start`)")]
    NoEntryPoint,
    #[error("preopening {host} at {guest}: {reason}")]
    Preopen { host: PathBuf, guest: String, reason: String },
    #[error("compile cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// A host directory the guest sees at `guest` (nothing else of the host is visible).
#[derive(Clone, Debug)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// What one run of a module gets.
#[derive(Debug, Default)]
pub struct RunSpec {
    /// argv, including argv[0] (the module's file name).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_limit: Option<usize>,
    /// Wall-clock budget while running; past it the guest is stopped.
    pub deadline: Option<Duration>,
    /// Set to stop the guest (container kill).
    pub cancel: Option<Arc<AtomicBool>>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest returned from `_start` (0) or called `proc_exit`.
    Code(i32),
    /// The guest trapped; the message says where.
    Trap(String),
    /// The guest wanted more memory than its limit (Kubernetes reason `OOMKilled`).
    OutOfMemory,
    /// Cancelled or over its deadline.
    Killed,
}

impl Exit {
    /// The exit code Kubernetes reports: 137 for OOM and kills, 1 for traps.
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Trap(_) => 1,
            Exit::OutOfMemory | Exit::Killed => 137,
        }
    }
}

struct Limits {
    memory: Option<usize>,
    exceeded: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.memory.is_none_or(|limit| desired <= limit);
        self.exceeded |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

struct Guest {
    wasi: WasiP1Ctx,
    limits: Limits,
}

/// The engine: one per process, shared by every container.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<Guest>,
    cache_dir: PathBuf,
    compiles: AtomicU64,
    ticking: Arc<AtomicBool>,
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl WasmEngine {
    /// An engine whose compiled code is cached under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<Self, EngineError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| EngineError::Config(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |g: &mut Guest| &mut g.wasi)
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let cache_dir = cache_dir.join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&cache_dir).map_err(|source| EngineError::Cache { path: cache_dir.clone(), source })?;
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
        Ok(Self { engine, linker, cache_dir, compiles: AtomicU64::new(0), ticking })
    }

    /// How many modules this engine compiled (cache misses); exported as a metric.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The module for `bytes` (content `digest`), from the disk cache when it was compiled before.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<Module, EngineError> {
        let safe: String = digest.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let path = self.cache_dir.join(format!("{safe}.cwasm"));
        if path.exists() {
            // SAFETY: the file was written by `Module::serialize` of an engine with the same
            // compatibility hash (the directory name), into a directory only skiff writes.
            match unsafe { Module::deserialize_file(&self.engine, &path) } {
                Ok(module) => return Ok(module),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable; recompiling")
                }
            }
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| EngineError::Compile(format!("{e:#}")))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let serialized = module.serialize().map_err(|e| EngineError::Compile(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serialized)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| EngineError::Cache { path: path.clone(), source })?;
        Ok(module)
    }

    /// Runs a WASI preview 1 module to its end on the calling thread.
    pub fn run(&self, module: &Module, spec: RunSpec) -> Result<Exit, EngineError> {
        if module.get_export("_start").is_none() {
            return Err(EngineError::NoEntryPoint);
        }
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&spec.args).envs(&spec.env);
        if let Some(out) = spec.stdout {
            wasi.stdout(OutputFile::new(out));
        }
        if let Some(err) = spec.stderr {
            wasi.stderr(OutputFile::new(err));
        }
        for p in &spec.preopens {
            let perms = if p.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            wasi.preopened_dir(&p.host, &p.guest, perms).map_err(|e| EngineError::Preopen {
                host: p.host.clone(),
                guest: p.guest.clone(),
                reason: e.to_string(),
            })?;
        }
        let guest = Guest { wasi: wasi.build_p1(), limits: Limits { memory: spec.memory_limit, exceeded: false } };
        let mut store = Store::new(&self.engine, guest);
        store.limiter(|g| &mut g.limits);
        let started = Instant::now();
        let (deadline, cancel) = (spec.deadline, spec.cancel.clone());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            let cancelled = cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
            let late = deadline.is_some_and(|d| started.elapsed() > d);
            if cancelled || late {
                return Err(wasmtime::Error::msg(KILLED));
            }
            // Give the core to others at every tick: a busy loop cannot starve other pods.
            std::thread::yield_now();
            Ok(UpdateDeadline::Continue(1))
        });
        let instance =
            self.linker.instantiate(&mut store, module).map_err(|e| EngineError::Instantiate(format!("{e:#}")))?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start").map_err(|_| EngineError::NoEntryPoint)?;
        let outcome = start.call(&mut store, ());
        let exceeded = store.data().limits.exceeded;
        Ok(match outcome {
            Ok(()) => Exit::Code(0),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => Exit::Code(exit.0),
                None if exceeded => Exit::OutOfMemory,
                None if format!("{e:#}").contains(KILLED) => Exit::Killed,
                None => Exit::Trap(format!("{e:#}")),
            },
        })
    }
}

const KILLED: &str = "skiff: container killed";

#[cfg(test)]
mod tests;
