//! Runs a command component to its end: WASI 0.2 (`wasi:cli/run@0.2`) on an async store, or WASI 0.3
//! (`wasi:cli/run@0.3`, an async export) in the store's concurrent event loop; and the component linker
//! shared with HTTP serving.

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::Store;

use super::limits::{bound_cpu, HasLimits};
use super::program::World;
use super::spec::{EngineError, Exit};
use super::wasi::{GuestEnv, P2State};

/// The component linker: WASI 0.2 and 0.3, each with `wasi:http` (async). A component may import both
/// (a WASI 0.3 guest built with a 0.2 standard library does).
pub(super) fn linker(engine: &wasmtime::Engine) -> Result<Linker<P2State>, EngineError> {
    let mut linker = Linker::new(engine);
    let config = |e: wasmtime::Error| EngineError::Config(format!("{e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(config)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(config)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(config)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(config)?;
    Ok(linker)
}

/// Instantiates the command `component` of `world` and calls its `wasi:cli/run` to its end (the caller
/// bounds it in time).
pub(super) async fn run(
    linker: &Linker<P2State>,
    component: &Component,
    world: World,
    env: &GuestEnv,
    cpu_millis: Option<u32>,
) -> Result<Exit, EngineError> {
    let instantiate = |e: wasmtime::Error| EngineError::Instantiate(format!("{e:#}"));
    let pre = linker.instantiate_pre(component).map_err(instantiate)?;
    let mut store = Store::new(component.engine(), env.p2()?);
    bound_cpu(&mut store, cpu_millis);
    let started = match world {
        World::CommandP3 => run_p3(pre, &mut store).await?,
        _ => run_p2(pre, &mut store).await?,
    };
    let exceeded = store.data_mut().limits().exceeded;
    let outcome = match started {
        Ok(outcome) => outcome,
        Err(_) if exceeded => return Ok(Exit::OutOfMemory),
        Err(e) => return Err(instantiate(e)),
    };
    Ok(match outcome {
        Ok(Ok(())) => Exit::Code(0),
        Ok(Err(())) => Exit::Code(1),
        Err(_) if exceeded => Exit::OutOfMemory,
        Err(e) => Exit::of(Err(e), exceeded),
    })
}

/// What a command's `run` gave: its result, or the trap (an exit with a code is one).
type Outcome = wasmtime::Result<Result<(), ()>>;

/// A command's run: [`EngineError::NoEntryPoint`] when the component is no command of its world, the
/// instantiation's error, or the outcome of `run`.
type Started = Result<wasmtime::Result<Outcome>, EngineError>;

async fn run_p2(pre: InstancePre<P2State>, store: &mut Store<P2State>) -> Started {
    let pre = wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(|_| EngineError::NoEntryPoint)?;
    let command = match pre.instantiate_async(&mut *store).await {
        Ok(command) => command,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(command.wasi_cli_run().call_run(&mut *store).await))
}

async fn run_p3(pre: InstancePre<P2State>, store: &mut Store<P2State>) -> Started {
    let pre = wasmtime_wasi::p3::bindings::CommandPre::new(pre).map_err(|_| EngineError::NoEntryPoint)?;
    let command = match pre.instantiate_async(&mut *store).await {
        Ok(command) => command,
        Err(e) => return Ok(Err(e)),
    };
    // The outer result is the event loop's (a trap, or guest tasks all blocked with nothing to wake
    // them); the inner one is `run`'s call.
    let ran = store.run_concurrent(async move |store| command.wasi_cli_run().call_run(store).await).await;
    Ok(Ok(ran.and_then(|call| call)))
}
