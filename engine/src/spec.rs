//! What a run gets ([`RunSpec`], [`Preopen`]) and how it ends ([`Exit`], [`EngineError`]).

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::output::Output;

/// Why the engine could not load or start a program (a guest's own failure is an [`Exit`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("configuring wasmtime: {0}")]
    Config(String),
    #[error("the program does not compile: {0}")]
    Compile(String),
    #[error("the program cannot be instantiated: {0}")]
    Instantiate(String),
    #[error("the program has no entry point (`_start` or `wasi:cli/run`)")]
    NoEntryPoint,
    #[error("the program is not a component exporting `wasi:http/incoming-handler@0.2` or `wasi:http/handler@0.3`")]
    NotHttp,
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

/// What one run of a program (or every request of an HTTP server) gets.
#[derive(Debug, Default)]
pub struct RunSpec {
    /// argv, including argv[0] (the program's file name).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    /// Where the guest's stdout goes; discarded when `None`.
    pub stdout: Option<Output>,
    /// Where the guest's stderr goes (and, for HTTP servers, a line per failed request).
    pub stderr: Option<Output>,
    /// What the guest reads on stdin (`kubectl exec -i`, `kubectl attach`); empty when `None`.
    pub stdin: Option<super::output::Input>,
    /// Cap on the guest's linear memory (all its memories together), in bytes.
    pub memory_limit: Option<usize>,
    /// CPU bound in millicores (a container's `limits.cpu`): the guest gets about that share of one core.
    pub cpu_millis: Option<u32>,
    /// Wall-clock budget of a run ([`Exit::Killed`] past it); for HTTP servers, of each request (500 past it).
    pub deadline: Option<Duration>,
    /// Cancelled to stop the guest (container kill) or the HTTP server.
    pub cancel: Option<CancellationToken>,
    /// Where the guest's CPU time and memory are counted (for every request of an HTTP server).
    pub usage: Option<std::sync::Arc<super::usage::Usage>>,
    /// Resolves the host names of the guest's outgoing HTTP requests (the pod's DNS settings);
    /// `None`: the host's resolver.
    pub resolver: Option<std::sync::Arc<dyn super::resolve::NameResolver>>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest returned from its entry point (0), called `proc_exit`/`exit`, or `wasi:cli/run` returned an
    /// error (1).
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

    /// The exit of a guest call that returned `outcome`; `exceeded` says whether the memory limit was hit.
    pub(super) fn of(outcome: wasmtime::Result<()>, exceeded: bool) -> Exit {
        match outcome {
            Ok(()) => Exit::Code(0),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => Exit::Code(exit.0),
                None if exceeded => Exit::OutOfMemory,
                None => Exit::Trap(format!("{e:#}")),
            },
        }
    }
}

/// An OCI-style environment list (`KEY=VALUE`, as image configs and runtime specs write it) as the
/// pairs a [`RunSpec`] takes; an entry without `=` is a variable with an empty value.
pub fn env_pairs(list: impl IntoIterator<Item = String>) -> Vec<(String, String)> {
    list.into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect()
}
