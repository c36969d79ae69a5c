//! Runs a WASI preview 2 command component (`wasi:cli/run`) on an async store, and the component linker
//! shared with HTTP serving.

use wasmtime::component::{Component, Linker};
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::limits::{bound_cpu, HasLimits};
use super::spec::{EngineError, Exit};
use super::wasi::{GuestEnv, P2State};

/// The component linker: all of WASI preview 2 plus `wasi:http` (async).
pub(super) fn linker(engine: &wasmtime::Engine) -> Result<Linker<P2State>, EngineError> {
    let mut linker = Linker::new(engine);
    let config = |e: wasmtime::Error| EngineError::Config(format!("{e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(config)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(config)?;
    Ok(linker)
}

/// Instantiates the command `component` and calls `wasi:cli/run` to its end (the caller bounds it in time).
pub(super) async fn run(
    linker: &Linker<P2State>,
    component: &Component,
    env: &GuestEnv,
    cpu_millis: Option<u32>,
) -> Result<Exit, EngineError> {
    let instantiate = |e: wasmtime::Error| EngineError::Instantiate(format!("{e:#}"));
    let pre = linker.instantiate_pre(component).map_err(instantiate)?;
    let pre = CommandPre::new(pre).map_err(|_| EngineError::NoEntryPoint)?;
    let mut store = Store::new(component.engine(), env.p2()?);
    bound_cpu(&mut store, cpu_millis);
    let command = match pre.instantiate_async(&mut store).await {
        Ok(command) => command,
        Err(_) if store.data_mut().limits().exceeded => return Ok(Exit::OutOfMemory),
        Err(e) => return Err(instantiate(e)),
    };
    let outcome = command.wasi_cli_run().call_run(&mut store).await;
    let exceeded = store.data_mut().limits().exceeded;
    Ok(match outcome {
        Ok(Ok(())) => Exit::Code(0),
        Ok(Err(())) => Exit::Code(1),
        Err(e) => Exit::of(Err(e), exceeded),
    })
}
