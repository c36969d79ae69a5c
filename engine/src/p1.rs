//! Runs a WASI preview 1 module's `_start` on an async store.

use wasmtime::{Linker, Module, Store};

use super::limits::{bound_cpu, HasLimits};
use super::spec::{EngineError, Exit};
use super::wasi::{GuestEnv, P1State};

/// The linker with the preview 1 host functions (async).
pub(super) fn linker(engine: &wasmtime::Engine) -> Result<Linker<P1State>, EngineError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut P1State| &mut s.wasi)
        .map_err(|e| EngineError::Config(format!("{e:#}")))?;
    Ok(linker)
}

/// Instantiates `module` and calls `_start` to its end (the caller bounds it in time).
pub(super) async fn run(
    linker: &Linker<P1State>,
    module: &Module,
    env: &GuestEnv,
    cpu_millis: Option<u32>,
) -> Result<Exit, EngineError> {
    if module.get_export("_start").is_none() {
        return Err(EngineError::NoEntryPoint);
    }
    let mut store = Store::new(module.engine(), env.p1()?);
    bound_cpu(&mut store, cpu_millis);
    let instance = match linker.instantiate_async(&mut store, module).await {
        Ok(instance) => instance,
        // A start function or data segment may already hit the memory limit.
        Err(_) if store.data_mut().limits().exceeded => return Ok(Exit::OutOfMemory),
        Err(e) => return Err(EngineError::Instantiate(format!("{e:#}"))),
    };
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start").map_err(|_| EngineError::NoEntryPoint)?;
    let outcome = start.call_async(&mut store, ()).await;
    Ok(Exit::of(outcome, store.data_mut().limits().exceeded))
}
