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
    let pre = CommandPre::new(linker.instantiate_pre(component).map_err(instantiate)?, world)?;
    let mut store = Store::new(component.engine(), env.p2()?);
    bound_cpu(&mut store, cpu_millis);
    let command = match pre.instantiate(&mut store).await {
        Ok(command) => command,
        Err(_) if store.data_mut().limits().exceeded => return Ok(Exit::OutOfMemory),
        Err(e) => return Err(instantiate(e)),
    };
    let outcome = command.run(&mut store).await;
    let exceeded = store.data_mut().limits().exceeded;
    Ok(match outcome {
        Ok(Ok(())) => Exit::Code(0),
        Ok(Err(())) => Exit::Code(1),
        Err(e) => Exit::of(Err(e), exceeded),
    })
}

/// A command component checked against its world's `wasi:cli/run`.
enum CommandPre {
    P2(wasmtime_wasi::p2::bindings::CommandPre<P2State>),
    P3(wasmtime_wasi::p3::bindings::CommandPre<P2State>),
}

/// An instance of a command.
enum Command {
    P2(wasmtime_wasi::p2::bindings::Command),
    P3(wasmtime_wasi::p3::bindings::Command),
}

impl CommandPre {
    /// [`EngineError::NoEntryPoint`] when `pre` does not export its world's `run`.
    fn new(pre: InstancePre<P2State>, world: World) -> Result<Self, EngineError> {
        let no_entry = |_| EngineError::NoEntryPoint;
        Ok(match world {
            World::CommandP3 => CommandPre::P3(wasmtime_wasi::p3::bindings::CommandPre::new(pre).map_err(no_entry)?),
            _ => CommandPre::P2(wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(no_entry)?),
        })
    }

    async fn instantiate(&self, store: &mut Store<P2State>) -> wasmtime::Result<Command> {
        Ok(match self {
            CommandPre::P2(pre) => Command::P2(pre.instantiate_async(store).await?),
            CommandPre::P3(pre) => Command::P3(pre.instantiate_async(store).await?),
        })
    }
}

impl Command {
    /// Calls `run`: its result, or the trap (an exit with a code is one). A WASI 0.3 `run` is an
    /// async export, called in the store's concurrent event loop, whose own error (a trap, or guest
    /// tasks all blocked with nothing to wake them) counts as the call's.
    async fn run(self, store: &mut Store<P2State>) -> wasmtime::Result<Result<(), ()>> {
        match self {
            Command::P2(command) => command.wasi_cli_run().call_run(store).await,
            Command::P3(command) => {
                store.run_concurrent(async move |store| command.wasi_cli_run().call_run(store).await).await?
            }
        }
    }
}
