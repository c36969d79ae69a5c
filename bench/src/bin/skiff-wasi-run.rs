//! `skiff-wasi-run`: runs one Wasm program on skiff's engine as `wasmtime run` / `wasmtime serve` would,
//! for conformance suites (the official WASI testsuite's runner drives it through
//! `bench/wasi-testsuite/skiff.py`). The engine is the one the kubelet and the shim use.
//!
//! ```text
//! skiff-wasi-run [--dir HOST::GUEST]... [--env K=V]... [--serve ADDR] FILE [ARGS]...
//! ```
//! A command runs to its end with this process's stdio and exits with the guest's code (a trap: 134,
//! as wasmtime). An HTTP component (WASI 0.2 or 0.3) with `--serve` is served on ADDR: the first
//! stderr line is `Serving HTTP on http://ADDR/`; SIGINT or SIGTERM stop it (exit 0).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use sha2::{Digest, Sha256};
use skiff_engine::{Exit, Input, Output, Preopen, RunSpec, WasmEngine};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Runs a Wasm program on skiff's engine (for conformance suites)")]
struct Args {
    /// A host directory the guest sees at GUEST (`HOST::GUEST`; `HOST` alone: the same path).
    #[arg(long = "dir", value_name = "HOST::GUEST")]
    dirs: Vec<String>,
    /// An environment variable of the guest.
    #[arg(long = "env", value_name = "K=V")]
    envs: Vec<String>,
    /// Serve the HTTP component on this address (e.g. 127.0.0.1:0) instead of running a command.
    #[arg(long)]
    serve: Option<String>,
    /// The .wasm module or component.
    file: PathBuf,
    /// The guest's arguments after argv[0] (the file's name).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The exit code of a trapped guest (wasmtime's: an abort).
const TRAP_EXIT: i32 = 134;

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let code = runtime.block_on(run(args))?;
    std::process::exit(code);
}

async fn run(args: Args) -> Result<i32> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let cache = tempfile::tempdir()?;
    let engine = WasmEngine::for_pods(cache.path(), 4)?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let program = engine.load(&digest, &bytes)?;
    let argv0 = args.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut preopens = Vec::new();
    for dir in &args.dirs {
        let (host, guest) = dir.split_once("::").unwrap_or((dir, dir));
        preopens.push(Preopen { host: host.into(), guest: guest.into(), read_only: false });
    }
    let env = args
        .envs
        .iter()
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect::<Option<Vec<_>>>()
        .context("--env takes K=V")?;
    let spec = RunSpec {
        args: std::iter::once(argv0).chain(args.args).collect(),
        env,
        preopens,
        stdout: Some(Output::File(dup(1)?)),
        stderr: Some(Output::File(dup(2)?)),
        stdin: Some(Input(Box::new(tokio::io::stdin()))),
        ..Default::default()
    };
    let exit = match args.serve {
        Some(addr) => serve(&engine, &program, spec, &addr).await?,
        None => engine.run(&program, spec).await?,
    };
    Ok(match exit {
        Exit::Code(code) => code,
        Exit::Killed => 0,
        Exit::OutOfMemory => {
            eprintln!("skiff-wasi-run: the guest ran out of memory");
            TRAP_EXIT
        }
        Exit::Trap(trap) => {
            eprintln!("skiff-wasi-run: the guest trapped: {trap}");
            TRAP_EXIT
        }
    })
}

async fn serve(engine: &WasmEngine, program: &skiff_engine::Program, mut spec: RunSpec, addr: &str) -> Result<Exit> {
    if !program.is_http() {
        bail!("{addr}: the program is not an HTTP component");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!("Serving HTTP on http://{}/", listener.local_addr()?);
    let stop = CancellationToken::new();
    spec.cancel = Some(stop.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    Ok(engine.serve_http(program, spec, listener).await?)
}

/// A new descriptor for this process's `fd` (the guest's writes go straight to it, unbuffered).
fn dup(fd: i32) -> Result<std::fs::File> {
    use std::os::fd::{AsFd, BorrowedFd};
    // SAFETY: fds 1 and 2 stay open for the life of the process.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(std::fs::File::from(borrowed.as_fd().try_clone_to_owned()?))
}
