//! `skiff shim install`: puts `containerd-shim-skiff-v1` on containerd's PATH and adds a CRI runtime handler
//! `skiff` (`runtime_type = "io.containerd.skiff.v1"`) to an existing containerd config without disturbing
//! the rest of it (comments, other runtimes and formatting stay; the file is backed up before a change);
//! idempotent. `--uninstall` removes exactly what install added.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table};

use crate::containerd::RUNTIME_ID;

/// The shim binary's name, as containerd derives it from the runtime name.
pub const SHIM_BINARY: &str = "containerd-shim-skiff-v1";
/// The CRI runtime handler (and RuntimeClass) name.
pub const HANDLER: &str = "skiff";
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";

/// The RuntimeClass pods name (`runtimeClassName: skiff`) to run on the shim.
pub const RUNTIME_CLASS_YAML: &str =
    "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: skiff\nhandler: skiff\n";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid TOML file: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: `{key}` is not a table")]
    NotATable { path: PathBuf, key: String },
    #[error("the shim binary {0} was not found (build it, or pass its path)")]
    NoShimBinary(PathBuf),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError::Io { action, path: path.to_path_buf(), source }
}

/// What to install where.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub containerd_config: PathBuf,
    pub bin_dir: PathBuf,
    /// The shim binary to install; default: `containerd-shim-skiff-v1` beside the running executable.
    pub shim_binary: Option<PathBuf>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self { containerd_config: DEFAULT_CONFIG.into(), bin_dir: DEFAULT_BIN_DIR.into(), shim_binary: None }
    }
}

/// What an install or uninstall changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The installed (or removed) binary.
    pub binary: PathBuf,
    pub binary_changed: bool,
    pub config_changed: bool,
    /// Where the config was backed up before it changed.
    pub backup: Option<PathBuf>,
}

/// Installs the binary and the runtime handler.
pub fn install(opts: &InstallOptions) -> Result<InstallReport, InstallError> {
    let _span = tracing::info_span!("shim install", config = %opts.containerd_config.display()).entered();
    let source = match &opts.shim_binary {
        Some(path) => path.clone(),
        None => {
            let exe = std::env::current_exe().map_err(io("locating", Path::new("the running executable")))?;
            exe.with_file_name(SHIM_BINARY)
        }
    };
    if !source.is_file() {
        return Err(InstallError::NoShimBinary(source));
    }
    let binary = opts.bin_dir.join(SHIM_BINARY);
    let binary_changed = install_binary(&source, &binary)?;
    let (config_changed, backup) = edit_config(&opts.containerd_config, add_handler)?;
    Ok(InstallReport { binary, binary_changed, config_changed, backup })
}

/// Removes the binary and the runtime handler install added.
pub fn uninstall(opts: &InstallOptions) -> Result<InstallReport, InstallError> {
    let _span = tracing::info_span!("shim uninstall", config = %opts.containerd_config.display()).entered();
    let binary = opts.bin_dir.join(SHIM_BINARY);
    let binary_changed = match std::fs::remove_file(&binary) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io("removing", &binary)(e)),
    };
    let (config_changed, backup) = if opts.containerd_config.exists() {
        edit_config(&opts.containerd_config, remove_handler)?
    } else {
        (false, None)
    };
    Ok(InstallReport { binary, binary_changed, config_changed, backup })
}

/// Copies `source` to `target` (mode 0755, replaced atomically) unless it is already identical.
fn install_binary(source: &Path, target: &Path) -> Result<bool, InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(source).map_err(io("reading", source))?;
    if std::fs::read(target).ok().as_deref() == Some(bytes.as_slice()) {
        return Ok(false);
    }
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let tmp = target.with_extension("skiff-tmp");
    std::fs::write(&tmp, &bytes).map_err(io("writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, target).map_err(io("replacing", target))?;
    Ok(true)
}

/// Applies `edit` to the config at `path` (an absent file is an empty one); when it changes anything, backs
/// the old file up beside it and writes the new one atomically. Whether it changed, and the backup.
fn edit_config(
    path: &Path,
    edit: fn(&str, &Path) -> Result<Option<String>, InstallError>,
) -> Result<(bool, Option<PathBuf>), InstallError> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading", path)(e)),
    };
    let Some(new) = edit(old.as_deref().unwrap_or_default(), path)? else {
        return Ok((false, None));
    };
    let backup = match &old {
        Some(text) => {
            let backup = backup_path(path);
            std::fs::write(&backup, text).map_err(io("backing up to", &backup))?;
            Some(backup)
        }
        None => None,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let tmp = path.with_extension("skiff-tmp");
    std::fs::write(&tmp, new).map_err(io("writing", &tmp))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(io("replacing", path))?;
    Ok((true, backup))
}

/// `config.toml` -> `config.toml.skiff-backup-<unix seconds>`.
fn backup_path(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".skiff-backup-{secs}"));
    path.with_file_name(name)
}

/// The keys of the CRI plugin's runtimes table for the config's `version` (1, 2 or 3).
fn runtimes_path(doc: &DocumentMut) -> Vec<&'static str> {
    match doc.get("version").and_then(Item::as_integer) {
        Some(3) => vec!["plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"],
        Some(2) => vec!["plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"],
        _ => vec!["plugins", "cri", "containerd", "runtimes"],
    }
}

fn parse(text: &str, path: &Path) -> Result<DocumentMut, InstallError> {
    text.parse::<DocumentMut>().map_err(|e| InstallError::Parse { path: path.to_path_buf(), reason: e.to_string() })
}

/// Adds `[plugins.<cri>.containerd.runtimes.skiff]` with `runtime_type = "io.containerd.skiff.v1"`; `None` when
/// it is already there. An empty config becomes a version 2 one.
pub fn add_handler(text: &str, path: &Path) -> Result<Option<String>, InstallError> {
    let mut doc = parse(text, path)?;
    if doc.is_empty() {
        doc.insert("version", toml_edit::value(2));
    }
    let keys = runtimes_path(&doc);
    let mut table = doc.as_table_mut();
    for key in keys {
        let item = table.entry(key).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table = item.as_table_mut().ok_or_else(|| InstallError::NotATable { path: path.into(), key: key.into() })?;
    }
    let current = table.get(HANDLER).and_then(|h| h.get("runtime_type")).and_then(Item::as_str);
    if current == Some(RUNTIME_ID) {
        return Ok(None);
    }
    let handler = table.entry(HANDLER).or_insert_with(|| Item::Table(Table::new()));
    let handler =
        handler.as_table_mut().ok_or_else(|| InstallError::NotATable { path: path.into(), key: HANDLER.into() })?;
    handler.insert("runtime_type", toml_edit::value(RUNTIME_ID));
    Ok(Some(doc.to_string()))
}

/// Removes the `skiff` runtime handler, and the tables above it that are left empty and were only implied;
/// `None` when there is none.
pub fn remove_handler(text: &str, path: &Path) -> Result<Option<String>, InstallError> {
    let mut doc = parse(text, path)?;
    let keys = runtimes_path(&doc);
    if !remove_at(doc.as_table_mut(), &keys) {
        return Ok(None);
    }
    Ok(Some(doc.to_string()))
}

/// Removes `skiff` under `keys` from `table`, then each implicit table on the way that became empty.
fn remove_at(table: &mut Table, keys: &[&str]) -> bool {
    let Some((first, rest)) = keys.split_first() else {
        return table.remove(HANDLER).is_some();
    };
    let Some(child) = table.get_mut(first).and_then(Item::as_table_mut) else {
        return false;
    };
    let removed = remove_at(child, rest);
    if removed && child.is_empty() && child.is_implicit() {
        table.remove(first);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"# my containerd
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"  # pinned
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
"#;

    #[test]
    fn adds_once_and_removes_exactly() {
        let p = Path::new("config.toml");
        let added = add_handler(CONFIG, p).expect("add").expect("changed");
        assert!(added.starts_with("# my containerd\n"), "{added}");
        assert!(added.contains("sandbox_image = \"registry.k8s.io/pause:3.6\"  # pinned"));
        assert!(added.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.skiff]"), "{added}");
        assert!(added.contains("runtime_type = \"io.containerd.skiff.v1\""));
        assert!(added.contains("runtime_type = \"io.containerd.runc.v2\""));
        assert_eq!(add_handler(&added, p).expect("again"), None, "idempotent");
        let removed = remove_handler(&added, p).expect("remove").expect("changed");
        assert_eq!(removed, CONFIG);
        assert_eq!(remove_handler(&removed, p).expect("again"), None);
    }

    #[test]
    fn an_empty_config_gets_version_2_and_loses_only_what_was_added() {
        let p = Path::new("config.toml");
        let added = add_handler("", p).expect("add").expect("changed");
        let doc: DocumentMut = added.parse().expect("valid");
        assert_eq!(doc["version"].as_integer(), Some(2));
        assert_eq!(
            doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["skiff"]["runtime_type"].as_str(),
            Some(RUNTIME_ID)
        );
        let removed = remove_handler(&added, p).expect("remove").expect("changed");
        assert_eq!(removed.trim(), "version = 2");
    }

    #[test]
    fn version_3_uses_the_cri_runtime_plugin_and_bad_files_fail() {
        let p = Path::new("config.toml");
        let added = add_handler("version = 3\n", p).expect("add").expect("changed");
        assert!(added.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.skiff]"), "{added}");
        assert!(matches!(add_handler("version = [", p), Err(InstallError::Parse { .. })));
        assert!(matches!(add_handler("version = 2\nplugins = 1\n", p), Err(InstallError::NotATable { .. })));
    }
}
