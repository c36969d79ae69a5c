//! [`Program`]: a compiled core module or component, told apart by its header, compiled once per content
//! digest and engine version (cached on disk) and kept in memory by digest.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use super::spec::EngineError;

/// A compiled Wasm program; cloning is cheap (the code is shared).
#[derive(Clone)]
pub struct Program {
    pub(super) kind: Kind,
}

#[derive(Clone)]
pub(super) enum Kind {
    /// A core module (WASI preview 1).
    Module(Module),
    /// A component (WASI preview 2 or 3), and the world it exports.
    Component { component: Component, world: World },
}

/// What a component exports, which says how it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum World {
    /// `wasi:cli/run@0.2`: a WASI 0.2 command (also a component exporting nothing known: it fails to
    /// run with [`EngineError::NoEntryPoint`]).
    Command,
    /// `wasi:cli/run@0.3`: a WASI 0.3 command, whose `run` is an async export.
    CommandP3,
    /// `wasi:http/incoming-handler@0.2`: a WASI 0.2 HTTP handler.
    HttpP2,
    /// `wasi:http/handler@0.3`: a WASI 0.3 HTTP service.
    HttpP3,
}

impl World {
    /// The world of a component exporting the interfaces `exports` (qualified names with versions).
    fn of<'a>(exports: impl IntoIterator<Item = &'a str>) -> Self {
        let mut world = World::Command;
        for name in exports {
            if name.starts_with(HTTP_HANDLER_P2) {
                return World::HttpP2;
            } else if name.starts_with(HTTP_HANDLER_P3) {
                return World::HttpP3;
            } else if name.starts_with(RUN_P3) {
                world = World::CommandP3;
            }
        }
        world
    }
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Module(_) => f.write_str("Program::Module"),
            Kind::Component { world, .. } => write!(f, "Program::Component({world:?})"),
        }
    }
}

/// The interface a WASI 0.2 HTTP handler exports (any 0.2.x version).
const HTTP_HANDLER_P2: &str = "wasi:http/incoming-handler@0.2";
/// The interface a WASI 0.3 HTTP service exports (any 0.3.x version, release candidates too).
const HTTP_HANDLER_P3: &str = "wasi:http/handler@0.3";
/// The interface a WASI 0.3 command exports.
const RUN_P3: &str = "wasi:cli/run@0.3";

impl Program {
    /// Whether this is a component exporting `wasi:http/incoming-handler@0.2` or `wasi:http/handler@0.3`
    /// (served by `serve_http`).
    pub fn is_http(&self) -> bool {
        matches!(self.kind, Kind::Component { world: World::HttpP2 | World::HttpP3, .. })
    }

    /// Whether this is a WASI 0.3 component (a command or an HTTP service).
    pub fn is_p3(&self) -> bool {
        matches!(self.kind, Kind::Component { world: World::CommandP3 | World::HttpP3, .. })
    }

    /// Whether this is a component (preview 2) rather than a core module (preview 1).
    pub fn is_component(&self) -> bool {
        matches!(self.kind, Kind::Component { .. })
    }

    fn component(engine: &Engine, component: Component) -> Self {
        let world = World::of(component.component_type().exports(engine).map(|(name, _)| name));
        Program { kind: Kind::Component { component, world } }
    }

    /// Compiles `bytes` (binary, or WAT text in tests).
    pub(super) fn compile(engine: &Engine, bytes: &[u8]) -> Result<Self, EngineError> {
        let compile_error = |e: wasmtime::Error| EngineError::Compile(format!("{e:#}"));
        if is_component(bytes) {
            let component = Component::new(engine, bytes).map_err(compile_error)?;
            Ok(Self::component(engine, component))
        } else {
            Ok(Program { kind: Kind::Module(Module::new(engine, bytes).map_err(compile_error)?) })
        }
    }

    /// The file this program's compiled code is cached in under `dir`, for content `digest`.
    pub(super) fn cache_path(dir: &Path, digest: &str, bytes: &[u8]) -> PathBuf {
        let safe: String = digest.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let kind = if is_component(bytes) { "component" } else { "module" };
        dir.join(format!("{safe}.{kind}.cwasm"))
    }

    /// The program cached at `path`, if it is there, intact and usable. An entry whose digest does not
    /// match its bytes (truncated, tampered, an older format) is removed and never deserialized:
    /// `deserialize` runs the bytes as native code, so only what this engine wrote may reach it.
    pub(super) fn from_cache(engine: &Engine, path: &Path, bytes: &[u8]) -> Option<Self> {
        let entry = match std::fs::read(path) {
            Ok(entry) => entry,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry unreadable; recompiling");
                return None;
            }
        };
        let Some(code) = verified(&entry) else {
            tracing::warn!(path = %path.display(), "compile cache entry fails its digest; discarding and recompiling");
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "removing a bad compile cache entry");
            }
            return None;
        };
        // SAFETY: `code` is byte for byte what `serialize` of an engine with the same compatibility hash
        // (the directory name) produced: its SHA-256, written beside it by `store_cache` into a 0700
        // directory in the same atomic rename, matches. The name says its kind.
        let loaded = if is_component(bytes) {
            unsafe { Component::deserialize(engine, code) }.map(|c| Self::component(engine, c))
        } else {
            unsafe { Module::deserialize(engine, code) }.map(|m| Program { kind: Kind::Module(m) })
        };
        match loaded {
            Ok(program) => Some(program),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable; recompiling");
                None
            }
        }
    }

    /// Writes the compiled code to `path` (atomically: a reader sees all of it or nothing).
    pub(super) fn store_cache(&self, path: &Path) -> Result<(), EngineError> {
        let serialized = match &self.kind {
            Kind::Module(m) => m.serialize(),
            Kind::Component { component, .. } => component.serialize(),
        }
        .map_err(|e| EngineError::Compile(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        write_private(&tmp, &sealed(&serialized))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| EngineError::Cache { path: path.to_path_buf(), source })
    }
}

/// The first bytes of a cache entry: a format tag, then the SHA-256 of the compiled code after it.
const ENTRY_MAGIC: &[u8; 8] = b"skiffcw1";
const HEADER_LEN: usize = ENTRY_MAGIC.len() + 32;

/// A cache entry: tag, digest of `code`, `code`.
fn sealed(code: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(HEADER_LEN + code.len());
    entry.extend_from_slice(ENTRY_MAGIC);
    entry.extend_from_slice(&Sha256::digest(code));
    entry.extend_from_slice(code);
    entry
}

/// The compiled code of a cache entry when its digest matches; `None` for anything else.
pub(super) fn verified(entry: &[u8]) -> Option<&[u8]> {
    let (header, code) = (entry.get(..HEADER_LEN)?, entry.get(HEADER_LEN..)?);
    let (magic, digest) = header.split_at(ENTRY_MAGIC.len());
    (magic == ENTRY_MAGIC && Sha256::digest(code).as_slice() == digest && !code.is_empty()).then_some(code)
}

/// Writes a file only its owner can read (0600, whatever the umask).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Whether `bytes` are a component: binary layer header `0d 00 01 00`, or WAT text starting `(component`.
fn is_component(bytes: &[u8]) -> bool {
    match bytes {
        [0, b'a', b's', b'm', _, _, layer_lo, layer_hi, ..] => (*layer_lo, *layer_hi) == (1, 0),
        _ => std::str::from_utf8(bytes).is_ok_and(|text| text.trim_start().starts_with("(component")),
    }
}

#[cfg(test)]
mod world_tests {
    use super::World;

    #[test]
    fn a_component_runs_by_what_it_exports() {
        assert_eq!(World::of(["wasi:cli/run@0.2.6"]), World::Command);
        assert_eq!(World::of([]), World::Command);
        assert_eq!(World::of(["wasi:cli/run@0.3.0"]), World::CommandP3);
        assert_eq!(World::of(["wasi:cli/run@0.3.0-rc-2025-09-16"]), World::CommandP3);
        assert_eq!(World::of(["wasi:http/incoming-handler@0.2.0"]), World::HttpP2);
        assert_eq!(World::of(["wasi:cli/run@0.3.0", "wasi:http/handler@0.3.0"]), World::HttpP3);
        // A service that also exports a command's `run` is served, as `wasmtime serve` would.
        assert_eq!(World::of(["wasi:http/handler@0.3.0", "wasi:cli/run@0.2.0"]), World::HttpP3);
        assert_eq!(World::of(["wasi:http/handler@0.4.0"]), World::Command);
    }
}
