//! A pod's volumes as host directories the runtime preopens: emptyDir (tmpfs for `medium: Memory`),
//! configMap, secret, downwardAPI, projected, hostPath and persistentVolumeClaim (bound to a
//! hostPath or local volume). Each volume is a directory under the pod's
//! state directory, except hostPath which is the host's own path.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Volume};

use super::env::{self, PodFacts};
use super::lookup::{Data, Lookup, LookupError};
use super::safe_path::{self, Kind, SafePathError};
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
    /// The kubelet's message for a subPath it cannot mount (one that leaves its volume, links included).
    #[error("failed to prepare subPath for volumeMount \"{mount}\" of container \"{container}\": {source}")]
    SubPath { mount: String, container: String, source: SafePathError },
    #[error("volume \"{volume}\": {source}")]
    Path { volume: String, source: SafePathError },
}

/// Where subPath mounts are bound, under the pod's volume directory (no volume name starts with a dot).
const SUBPATHS: &str = ".subpaths";

/// Where each volume of a pod lives on the host.
#[derive(Default, Debug)]
pub struct PodVolumes {
    /// The pod's volume directory.
    root: PathBuf,
    dirs: HashMap<String, (PathBuf, bool /* always read-only */)>,
    tmpfs: Vec<PathBuf>,
    /// Projected ServiceAccount tokens, rewritten before they expire.
    tokens: Vec<ProjectedToken>,
}

/// A ServiceAccount token in a projected volume, which the kubelet renews at 80% of its life.
#[derive(Debug)]
struct ProjectedToken {
    volume: String,
    dir: PathBuf,
    path: String,
    mode: Option<i32>,
    audience: Option<String>,
    expiration_seconds: i64,
    refresh_at: Instant,
}

impl ProjectedToken {
    /// Requests a token bound to the pod and writes it atomically (a reader never sees half of one).
    async fn write(&mut self, facts: &PodFacts<'_>, lookup: &Lookup) -> Result<(), VolumeError> {
        let pod = &facts.pod.metadata;
        let account = facts.pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
        let token = lookup
            .service_account_token(
                account,
                pod.name.as_deref().unwrap_or_default(),
                pod.uid.as_deref().unwrap_or_default(),
                self.audience.as_deref(),
                self.expiration_seconds,
            )
            .await
            .map_err(|source| VolumeError::Lookup { volume: self.volume.clone(), source })?;
        // Staged beside the target, then renamed over it.
        let (parent, file) = match self.path.rsplit_once('/') {
            Some((parent, file)) => (Some(parent), file),
            None => (None, self.path.as_str()),
        };
        if matches!(file, "" | "." | "..") {
            return Err(VolumeError::Invalid {
                volume: self.volume.clone(),
                detail: format!("serviceAccountToken path {:?} names no file", self.path),
            });
        }
        let parent_dir = match parent {
            Some(p) => safe_path::resolve_beneath(&self.dir, p, true)
                .map_err(|source| VolumeError::Path { volume: self.volume.clone(), source })?,
            None => self.dir.clone(),
        };
        let staged = format!(".{file}.new");
        write_file(&self.volume, &parent_dir, &staged, token.as_bytes(), self.mode)?;
        let target = parent_dir.join(file);
        std::fs::rename(parent_dir.join(&staged), &target).map_err(|source| VolumeError::Io {
            volume: self.volume.clone(),
            path: target.clone(),
            source,
        })?;
        let life = u64::try_from(self.expiration_seconds).unwrap_or(0).saturating_mul(4) / 5;
        self.refresh_at = Instant::now() + Duration::from_secs(life.max(1));
        Ok(())
    }
}

impl PodVolumes {
    /// Materialises every volume of the pod under `root` (the pod's volume directory).
    pub async fn prepare(
        volumes: &[Volume],
        root: &Path,
        facts: &PodFacts<'_>,
        lookup: &Lookup,
    ) -> Result<Self, VolumeError> {
        let mut out = PodVolumes { root: root.to_path_buf(), ..PodVolumes::default() };
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
                    let size = e.size_limit.as_ref().and_then(|q| tmpfs_size(&q.0));
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
                    } else if let Some(t) = &source.service_account_token {
                        let mut token = ProjectedToken {
                            volume: name.clone(),
                            dir: dir.clone(),
                            path: t.path.clone(),
                            mode: p.default_mode,
                            audience: t.audience.clone(),
                            expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                            refresh_at: Instant::now(),
                        };
                        token.write(facts, lookup).await?;
                        out.tokens.push(token);
                    }
                }
                out.dirs.insert(name, (dir, true));
            } else if let Some(c) = &v.persistent_volume_claim {
                let (path, create) = lookup
                    .claim_path(&c.claim_name)
                    .await
                    .map_err(|source| VolumeError::Lookup { volume: name.clone(), source })?;
                let path = PathBuf::from(path);
                if create {
                    std::fs::create_dir_all(&path).map_err(io(&path))?;
                } else if !path.is_dir() {
                    return Err(VolumeError::Invalid {
                        volume: name,
                        detail: format!("the volume's path {} is not a directory", path.display()),
                    });
                }
                out.dirs.insert(name, (path, c.read_only.unwrap_or(false)));
            } else {
                return Err(VolumeError::Unsupported { volume: name, kind: "this" });
            }
        }
        Ok(out)
    }

    /// Renews the projected tokens that reached 80% of their life; returns when the next one is due.
    pub async fn refresh_tokens(
        &mut self,
        facts: &PodFacts<'_>,
        lookup: &Lookup,
    ) -> Result<Option<Instant>, VolumeError> {
        let now = Instant::now();
        for token in self.tokens.iter_mut().filter(|t| t.refresh_at <= now) {
            token.write(facts, lookup).await?;
        }
        Ok(self.tokens.iter().map(|t| t.refresh_at).min())
    }

    /// The mounts of one container (volumeMounts with subPath and readOnly).
    pub fn mounts(&self, container: &Container, env: &[(String, String)]) -> Result<Vec<Mount>, VolumeError> {
        let mut mounts = Vec::new();
        for (index, m) in container.volume_mounts.iter().flatten().enumerate() {
            let (dir, always_ro) = self.dirs.get(&m.name).ok_or_else(|| VolumeError::UnknownMount(m.name.clone()))?;
            let sub = m.sub_path_expr.as_deref().map(|e| env::expand(e, env)).or_else(|| m.sub_path.clone());
            let host_path = match sub.filter(|s| !s.is_empty()) {
                Some(sub) => self.bind_sub_path(dir, &sub, &container.name, index).map_err(|source| {
                    VolumeError::SubPath { mount: m.name.clone(), container: container.name.clone(), source }
                })?,
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

    /// Resolves `sub` beneath the volume directory `dir` (links that leave it refused, a missing path made
    /// as a directory) and bind-mounts what was resolved, through its descriptor, onto a kubelet-owned
    /// path: the container gets exactly what was checked, even if the volume's names change later.
    fn bind_sub_path(&self, dir: &Path, sub: &str, container: &str, index: usize) -> Result<PathBuf, SafePathError> {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let (fd, kind) = safe_path::open_beneath(dir, sub, true)?;
        let target = self.root.join(SUBPATHS).join(container).join(index.to_string());
        let io = |source: std::io::Error| SafePathError::Io { path: target.clone(), source };
        if is_mountpoint(&target) {
            umount2(&target, MntFlags::MNT_DETACH).map_err(|e| io(e.into()))?;
        }
        match (kind, std::fs::symlink_metadata(&target)) {
            (Kind::Directory, Ok(meta)) if meta.is_dir() => {}
            (Kind::File, Ok(meta)) if meta.is_file() => {}
            (_, Ok(meta)) if meta.is_dir() => std::fs::remove_dir_all(&target).map_err(io)?,
            (_, Ok(_)) => std::fs::remove_file(&target).map_err(io)?,
            (_, Err(_)) => {}
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match kind {
            Kind::Directory => std::fs::create_dir_all(&target).map_err(io)?,
            Kind::File => {
                std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&target).map_err(io)?;
            }
        }
        let source = safe_path::fd_path(&fd);
        mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| io(e.into()))?;
        Ok(target)
    }

    /// Unmounts tmpfs volumes and subPath binds; the directories go with the pod's state directory.
    pub fn release(&mut self) {
        if !self.root.as_os_str().is_empty() {
            unmount_all_under(&self.root.join(SUBPATHS));
        }
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

/// The `size=` of a memory-backed emptyDir: its sizeLimit, unless that is past what tmpfs can count
/// (the kernel rounds the size up to pages and would wrap to "unlimited" or refuse); then no size.
fn tmpfs_size(q: &str) -> Option<u64> {
    super::quantity::bytes(q).filter(|b| *b > 0 && *b <= 1 << 62)
}

fn mount_tmpfs(dir: &Path, size: Option<u64>) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let options = size.map(|s| format!("size={s},mode=0777")).unwrap_or_else(|| "mode=0777".into());
    mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))
        .map_err(std::io::Error::from)
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

/// Writes one item of a configMap/secret/downwardAPI volume; its `path` never leaves the volume.
fn write_file(volume: &str, dir: &Path, rel: &str, bytes: &[u8], mode: Option<i32>) -> Result<(), VolumeError> {
    // Kubernetes' defaultMode: 0644 unless the volume or item says otherwise; only permission bits.
    let mode = u32::try_from(mode.unwrap_or(0o644)).unwrap_or(0o644) & 0o777;
    safe_path::write_beneath(dir, rel, bytes, mode)
        .map_err(|source| VolumeError::Path { volume: volume.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;
    use std::os::unix::fs::PermissionsExt;

    fn container(sub: &str) -> Container {
        Container {
            name: "reader".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "shared".into(),
                mount_path: "/data".into(),
                sub_path: Some(sub.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn volumes(root: &Path) -> PodVolumes {
        let dir = root.join("shared");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut v = PodVolumes { root: root.to_path_buf(), ..PodVolumes::default() };
        v.dirs.insert("shared".into(), (dir, false));
        v
    }

    #[test]
    fn a_sub_path_through_a_planted_link_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let v = volumes(tmp.path());
        // What one container can do in a shared emptyDir: plant links out of it.
        std::os::unix::fs::symlink("/etc", tmp.path().join("shared/escape")).expect("link");
        std::os::unix::fs::symlink("../../../../../../..", tmp.path().join("shared/up")).expect("link");
        for sub in ["escape", "escape/ssl", "up/etc", "../shared", "/etc"] {
            let err = v.mounts(&container(sub), &[]).expect_err(sub).to_string();
            assert!(
                err.starts_with("failed to prepare subPath for volumeMount \"shared\" of container \"reader\""),
                "{sub}: {err}"
            );
            assert!(err.contains("not within the volume"), "{sub}: {err}");
        }
    }

    #[test]
    fn a_sub_path_inside_is_made_and_bound_to_what_was_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut v = volumes(tmp.path());
        std::fs::create_dir(tmp.path().join("shared/logs")).expect("logs");
        std::os::unix::fs::symlink("logs", tmp.path().join("shared/alias")).expect("link inside");
        let mounts = v.mounts(&container("alias/app"), &[]).expect("mounts");
        let target = &mounts[0].host_path;
        assert!(target.starts_with(tmp.path().join(SUBPATHS)), "{}", target.display());
        assert!(tmp.path().join("shared/logs/app").is_dir());
        std::fs::write(target.join("out"), b"1").expect("write through the bind");
        assert_eq!(std::fs::read(tmp.path().join("shared/logs/app/out")).expect("read"), b"1");
        // A second start of the container binds again over the same target.
        v.mounts(&container("alias/app"), &[]).expect("again");
        v.release();
        assert!(!is_mountpoint(target));
    }

    #[test]
    fn item_paths_never_leave_the_volume() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data: Data = [("k".to_string(), b"v".to_vec())].into_iter().collect();
        let item = |path: &str| KeyToPath { key: "k".into(), path: path.into(), mode: None };
        let dir = tmp.path().join("cm");
        for path in ["../x", "/etc/x", "a/../../x"] {
            assert!(write_keys("cm", &dir, &data, Some(&[item(path)]), None).is_err(), "{path}");
        }
        write_keys("cm", &dir, &data, Some(&[item("a/b")]), Some(0o400)).expect("inside");
        assert_eq!(std::fs::read(dir.join("a/b")).expect("read"), b"v");
        assert_eq!(std::fs::metadata(dir.join("a/b")).expect("meta").permissions().mode() & 0o777, 0o400);
    }
}
