//! A pod's volumes as host directories the runtime preopens: emptyDir (tmpfs for `medium: Memory`),
//! configMap, secret, downwardAPI, projected and hostPath. Each volume is a directory under the pod's
//! state directory, except hostPath which is the host's own path.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Volume};

use super::env::{self, PodFacts};
use super::lookup::{Data, Lookup, LookupError};
use crate::runtime::Mount;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume \"{volume}\": {source}")]
    Lookup { volume: String, source: LookupError },
    #[error("volume \"{volume}\": {detail}")]
    Invalid { volume: String, detail: String },
    #[error("volume \"{volume}\": {path}: {source}")]
    Io { volume: String, path: PathBuf, source: std::io::Error },
    #[error("volume \"{volume}\" of type {kind} is not supported by this node")]
    Unsupported { volume: String, kind: &'static str },
    #[error("volumeMount \"{0}\" names no volume of the pod")]
    UnknownMount(String),
}

/// Where each volume of a pod lives on the host.
#[derive(Default, Debug)]
pub struct PodVolumes {
    dirs: HashMap<String, (PathBuf, bool /* always read-only */)>,
    tmpfs: Vec<PathBuf>,
}

impl PodVolumes {
    /// Materialises every volume of the pod under `root` (the pod's volume directory).
    pub async fn prepare(
        volumes: &[Volume],
        root: &Path,
        facts: &PodFacts<'_>,
        lookup: &Lookup,
    ) -> Result<Self, VolumeError> {
        let mut out = PodVolumes::default();
        for v in volumes {
            let name = v.name.clone();
            let io = |path: &Path| {
                let (volume, path) = (name.clone(), path.to_path_buf());
                move |source| VolumeError::Io { volume, path, source }
            };
            let dir = root.join(&v.name);
            if let Some(e) = &v.empty_dir {
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                if e.medium.as_deref() == Some("Memory") && !is_mountpoint(&dir) {
                    let size = e.size_limit.as_ref().and_then(|q| super::quantity::bytes(&q.0));
                    mount_tmpfs(&dir, size).map_err(io(&dir))?;
                    out.tmpfs.push(dir.clone());
                }
                out.dirs.insert(name, (dir, false));
            } else if let Some(h) = &v.host_path {
                let path = PathBuf::from(&h.path);
                match h.type_.as_deref() {
                    Some("DirectoryOrCreate") => std::fs::create_dir_all(&path).map_err(io(&path))?,
                    Some("Directory") if !path.is_dir() => {
                        return Err(VolumeError::Invalid {
                            volume: name,
                            detail: format!("hostPath {} is not a directory", h.path),
                        })
                    }
                    _ => {}
                }
                out.dirs.insert(name, (path, false));
            } else if let Some(cm) = &v.config_map {
                let data = source_data(lookup, &name, false, &cm.name, cm.optional).await?;
                write_keys(&name, &dir, &data, cm.items.as_deref(), cm.default_mode)?;
                out.dirs.insert(name, (dir, true));
            } else if let Some(s) = &v.secret {
                let data =
                    source_data(lookup, &name, true, s.secret_name.as_deref().unwrap_or_default(), s.optional).await?;
                write_keys(&name, &dir, &data, s.items.as_deref(), s.default_mode)?;
                out.dirs.insert(name, (dir, true));
            } else if let Some(d) = &v.downward_api {
                fresh_dir(&name, &dir)?;
                write_downward(&name, &dir, d.items.as_deref().unwrap_or_default(), facts)?;
                out.dirs.insert(name, (dir, true));
            } else if let Some(p) = &v.projected {
                fresh_dir(&name, &dir)?;
                for source in p.sources.iter().flatten() {
                    if let Some(cm) = &source.config_map {
                        let data = source_data(lookup, &name, false, &cm.name, cm.optional).await?;
                        add_keys(&name, &dir, &data, cm.items.as_deref(), p.default_mode)?;
                    } else if let Some(s) = &source.secret {
                        let data = source_data(lookup, &name, true, &s.name, s.optional).await?;
                        add_keys(&name, &dir, &data, s.items.as_deref(), p.default_mode)?;
                    } else if let Some(d) = &source.downward_api {
                        write_downward(&name, &dir, d.items.as_deref().unwrap_or_default(), facts)?;
                    }
                }
                out.dirs.insert(name, (dir, true));
            } else if v.persistent_volume_claim.is_some() {
                return Err(VolumeError::Unsupported { volume: name, kind: "persistentVolumeClaim" });
            } else {
                return Err(VolumeError::Unsupported { volume: name, kind: "this" });
            }
        }
        Ok(out)
    }

    /// The mounts of one container (volumeMounts with subPath and readOnly).
    pub fn mounts(&self, container: &Container, env: &[(String, String)]) -> Result<Vec<Mount>, VolumeError> {
        let mut mounts = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let (dir, always_ro) = self.dirs.get(&m.name).ok_or_else(|| VolumeError::UnknownMount(m.name.clone()))?;
            let sub = m.sub_path_expr.as_deref().map(|e| env::expand(e, env)).or_else(|| m.sub_path.clone());
            let host_path = match sub.filter(|s| !s.is_empty()) {
                Some(sub) => {
                    let rel = safe_relative(&sub).ok_or_else(|| VolumeError::Invalid {
                        volume: m.name.clone(),
                        detail: format!("subPath {sub} escapes the volume"),
                    })?;
                    let path = dir.join(rel);
                    std::fs::create_dir_all(&path).map_err(|source| VolumeError::Io {
                        volume: m.name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                    path
                }
                None => dir.clone(),
            };
            mounts.push(Mount {
                host_path,
                container_path: m.mount_path.clone(),
                read_only: *always_ro || m.read_only.unwrap_or(false),
            });
        }
        Ok(mounts)
    }

    /// Unmounts tmpfs volumes; the directories go with the pod's state directory.
    pub fn release(&mut self) {
        for dir in self.tmpfs.drain(..) {
            if let Err(e) = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %dir.display(), error = %e, "unmounting an emptyDir");
            }
        }
    }
}

/// The data of the ConfigMap (or Secret) a volume source names; empty when optional and missing.
async fn source_data(
    lookup: &Lookup,
    volume: &str,
    secret: bool,
    name: &str,
    optional: Option<bool>,
) -> Result<Data, VolumeError> {
    let optional = optional.unwrap_or(false);
    let data = if secret { lookup.secret(name, optional).await } else { lookup.config_map(name, optional).await };
    data.map(Option::unwrap_or_default).map_err(|source| VolumeError::Lookup { volume: volume.into(), source })
}

/// Unmounts anything still mounted under a pod's volume directory (after a restart, before removal).
pub fn unmount_all_under(root: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    for line in mounts.lines() {
        if let Some(target) = line.split_whitespace().nth(1) {
            if Path::new(target).starts_with(root) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn is_mountpoint(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return false };
    mounts.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|t| Path::new(t) == dir))
}

fn mount_tmpfs(dir: &Path, size: Option<u64>) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let options = size.map(|s| format!("size={s},mode=0777")).unwrap_or_else(|| "mode=0777".into());
    mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))
        .map_err(std::io::Error::from)
}

/// A relative path that stays inside its base (no `..`, not absolute).
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let ok = p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    (ok && !path.is_empty()).then(|| p.to_path_buf())
}

fn fresh_dir(volume: &str, dir: &Path) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io { volume: volume.into(), path: dir.to_path_buf(), source };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    std::fs::create_dir_all(dir).map_err(io)
}

fn write_keys(
    volume: &str,
    dir: &Path,
    data: &Data,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> Result<(), VolumeError> {
    fresh_dir(volume, dir)?;
    add_keys(volume, dir, data, items, mode)
}

fn add_keys(
    volume: &str,
    dir: &Path,
    data: &Data,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> Result<(), VolumeError> {
    let files: BTreeMap<String, (Vec<u8>, Option<i32>)> = match items {
        Some(items) => {
            let mut files = BTreeMap::new();
            for item in items {
                let value = data.get(&item.key).ok_or_else(|| VolumeError::Invalid {
                    volume: volume.into(),
                    detail: format!("configuration key \"{}\" not found", item.key),
                })?;
                files.insert(item.path.clone(), (value.clone(), item.mode));
            }
            files
        }
        None => data.iter().map(|(k, v)| (k.clone(), (v.clone(), None))).collect(),
    };
    for (path, (bytes, item_mode)) in files {
        write_file(volume, dir, &path, &bytes, item_mode.or(mode))?;
    }
    Ok(())
}

fn write_downward(
    volume: &str,
    dir: &Path,
    items: &[DownwardAPIVolumeFile],
    facts: &PodFacts<'_>,
) -> Result<(), VolumeError> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            let meta = &facts.pod.metadata;
            let map = |m: &Option<BTreeMap<String, String>>| {
                m.iter().flatten().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect::<String>()
            };
            match f.field_path.as_str() {
                "metadata.labels" => map(&meta.labels),
                "metadata.annotations" => map(&meta.annotations),
                "metadata.name" => meta.name.clone().unwrap_or_default(),
                "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
                "metadata.uid" => meta.uid.clone().unwrap_or_default(),
                other => {
                    return Err(VolumeError::Invalid {
                        volume: volume.into(),
                        detail: format!("unsupported fieldRef {other}"),
                    })
                }
            }
        } else if let Some(r) = &item.resource_field_ref {
            let container = facts
                .pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| Some(&c.name) == r.container_name.as_ref())
                .or_else(|| facts.pod.spec.as_ref().and_then(|s| s.containers.first()));
            container.map(|c| env::resource_field(c, &r.resource)).unwrap_or_default()
        } else {
            String::new()
        };
        write_file(volume, dir, &item.path, value.as_bytes(), item.mode)?;
    }
    Ok(())
}

fn write_file(volume: &str, dir: &Path, rel: &str, bytes: &[u8], mode: Option<i32>) -> Result<(), VolumeError> {
    let rel = safe_relative(rel).ok_or_else(|| VolumeError::Invalid {
        volume: volume.into(),
        detail: format!("path {rel} escapes the volume"),
    })?;
    let path = dir.join(rel);
    let io = |source| VolumeError::Io { volume: volume.into(), path: path.clone(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&path, bytes).map_err(io)?;
    let mode = mode.unwrap_or(0o644) as u32 & 0o777;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sub_paths_cannot_escape() {
        assert!(super::safe_relative("a/b").is_some());
        assert!(super::safe_relative("../etc").is_none());
        assert!(super::safe_relative("/etc").is_none());
        assert!(super::safe_relative("a/../../b").is_none());
    }
}
