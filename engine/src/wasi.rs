//! The WASI view a guest gets: args, env, preopens, stdio and the network, built fresh for every store,
//! and the store data of preview 1 modules ([`P1State`]) and components ([`P2State`]).
//!
//! Sockets: guests get TCP and UDP sockets and name lookups (`inherit_network`). wasmtime-wasi creates a
//! socket inside the host call, on the thread polling the guest's future, so the socket belongs to that
//! thread's network namespace. Name lookups run `getaddrinfo` on tokio's blocking pool: a runtime whose
//! threads (`on_thread_start`) entered the pod's namespace makes those resolve in the pod too.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::limits::{HasLimits, Limits};
use super::output::{Stdin, Stdio};
use super::resolve::PodHttpHooks;
use super::spec::{EngineError, Preopen, RunSpec};

/// Everything of a [`RunSpec`] a guest's WASI context is made of, reusable for many stores.
#[derive(Clone)]
pub(super) struct GuestEnv {
    args: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    stdin: Option<Stdin>,
    stdout: Option<Stdio>,
    pub(super) stderr: Option<Stdio>,
    pub(super) memory_limit: Option<usize>,
    /// Where the guest's CPU and memory are counted.
    pub(super) usage: Option<std::sync::Arc<super::usage::Usage>>,
    resolver: Option<std::sync::Arc<dyn super::resolve::NameResolver>>,
}

impl GuestEnv {
    /// Takes the WASI parts out of `spec` (the rest stays for the caller).
    pub(super) fn take(spec: &mut RunSpec) -> Self {
        Self {
            args: std::mem::take(&mut spec.args),
            env: std::mem::take(&mut spec.env),
            preopens: std::mem::take(&mut spec.preopens),
            stdin: spec.stdin.take().map(Stdin::new),
            stdout: spec.stdout.take().map(Stdio::from),
            stderr: spec.stderr.take().map(Stdio::from),
            memory_limit: spec.memory_limit,
            usage: spec.usage.clone(),
            resolver: spec.resolver.take(),
        }
    }

    /// The guest's argv[0] (empty without args), for spans.
    pub(super) fn argv0(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or_default()
    }

    fn builder(&self) -> Result<WasiCtxBuilder, EngineError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&self.args).envs(&self.env);
        if let Some(input) = &self.stdin {
            wasi.stdin(input.clone());
        }
        if let Some(out) = &self.stdout {
            wasi.stdout(out.clone());
        }
        if let Some(err) = &self.stderr {
            wasi.stderr(err.clone());
        }
        for p in &self.preopens {
            let perms = if p.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            wasi.preopened_dir(&p.host, &p.guest, perms).map_err(|e| EngineError::Preopen {
                host: p.host.clone(),
                guest: p.guest.clone(),
                reason: format!("{e:#}"),
            })?;
        }
        wasi.inherit_network().allow_tcp(true).allow_udp(true).allow_ip_name_lookup(true);
        Ok(wasi)
    }

    pub(super) fn p1(&self) -> Result<P1State, EngineError> {
        Ok(P1State { wasi: self.builder()?.build_p1(), limits: Limits::new(self.memory_limit, self.usage.clone()) })
    }

    pub(super) fn p2(&self) -> Result<P2State, EngineError> {
        Ok(P2State {
            wasi: self.builder()?.build(),
            http: WasiHttpCtx::new(),
            hooks: PodHttpHooks { resolver: self.resolver.clone() },
            table: ResourceTable::new(),
            limits: Limits::new(self.memory_limit, self.usage.clone()),
        })
    }
}

/// Store data of a preview 1 module.
pub(super) struct P1State {
    pub(super) wasi: WasiP1Ctx,
    limits: Limits,
}

impl HasLimits for P1State {
    fn limits(&mut self) -> &mut Limits {
        &mut self.limits
    }
}

/// Store data of a component (command or HTTP handler).
pub(super) struct P2State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: PodHttpHooks,
    table: ResourceTable,
    limits: Limits,
}

impl HasLimits for P2State {
    fn limits(&mut self) -> &mut Limits {
        &mut self.limits
    }
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for P2State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}
