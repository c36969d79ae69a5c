//! A private containerd for the shim benchmark: its own root, state, socket and ctr namespace, the shim
//! under test first on its PATH (runc's shim comes from the system), and the two images the benchmark
//! runs (the skiff guests, busybox) built offline with umoci and skopeo. Dropping it removes every task,
//! container, shim process, shim socket, mount and cgroup it made, also when the benchmark fails.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_testkit::{containerd_command, shim_sockets, unmount_under};

/// skiff's shim (`containerd-shim-skiff-v1` on containerd's PATH).
pub const SKIFF_RUNTIME: &str = "io.containerd.skiff.v1";
/// runc's shim from the containerd package.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The guests at `/` (`/hello.wasm`, `/tool.wasm`), entrypoint `/hello.wasm`.
pub const GUEST_IMAGE: &str = "skiff.bench/guests:1";
/// busybox-static at `/bin/busybox` with `sh`, `echo` and `sleep` links, `PATH=/bin`.
pub const BUSYBOX_IMAGE: &str = "skiff.bench/busybox:1";
/// Where shims (runc's and skiff's) put their sockets.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Guests copied into the guest image.
const GUESTS: &[&str] = &["hello", "tool"];

/// A running private containerd; everything it ran is removed on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    namespace: String,
    /// The entries of [`SHIM_SOCKET_DIR`] before containerd started.
    sockets_before: HashSet<OsString>,
}

impl Containerd {
    /// Starts containerd with `shim_bin` reachable as `containerd-shim-skiff-v1` and a fresh compile cache.
    pub async fn start(shim_bin: &Path) -> Result<Self> {
        let shim_bin = shim_bin.canonicalize().with_context(|| format!("shim binary {}", shim_bin.display()))?;
        let dir = tempfile::Builder::new().prefix("skiff-bench-ctd").tempdir()?;
        let root = dir.path();
        let bin_dir = root.join("bin");
        std::fs::create_dir_all(&bin_dir)?;
        std::os::unix::fs::symlink(&shim_bin, bin_dir.join("containerd-shim-skiff-v1"))?;
        // Only what `ctr run` needs: no CRI plugin (no networking of its own), nothing listening on TCP.
        std::fs::write(root.join("config.toml"), "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n")?;
        let sockets_before = socket_entries();
        let child = containerd_command(root, &bin_dir)?.spawn().context("starting containerd")?;
        let namespace = format!("skiff-bench-{}", std::process::id());
        let mut ctd = Containerd { dir, child: Some(child), namespace, sockets_before };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ctd.ctr(&["version"]).await?.status.success() {
            if let Some(status) = ctd.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("containerd exited ({status}): {}", ctd.log_tail(20));
            }
            if Instant::now() > deadline {
                bail!("containerd did not answer within 30 s: {}", ctd.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ctd)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The last `lines` lines of containerd's log (it includes the shims' logs).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A `ctr ARGS` command against this containerd in its namespace, killed if dropped while running.
    pub fn ctr_cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ctr");
        cmd.arg("-a").arg(self.socket()).args(["-n", &self.namespace]).args(args);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs `ctr ARGS` to its end.
    pub async fn ctr(&self, args: &[&str]) -> Result<Output> {
        self.ctr_cmd(args).output().await.context("running ctr")
    }

    /// Runs `ctr ARGS`, failing unless it succeeds.
    pub async fn ctr_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.ctr(args).await?;
        if !out.status.success() {
            bail!("ctr {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out)
    }

    /// Builds and imports [`GUEST_IMAGE`] (guests from `workloads`) and [`BUSYBOX_IMAGE`].
    pub async fn import_images(&self, workloads: &Path) -> Result<()> {
        let guests = self.dir.path().join("guests");
        let layout = prepare_image(&guests).await?;
        for guest in GUESTS {
            let from = workloads.join(format!("{guest}.wasm"));
            std::fs::copy(&from, layout.rootfs.join(format!("{guest}.wasm")))
                .with_context(|| format!("copying {} (run scripts/build-workloads.sh)", from.display()))?;
        }
        let archive = finish_image(&layout, &["--config.entrypoint", "/hello.wasm"], GUEST_IMAGE).await?;
        self.ctr_ok(&["images", "import", path_str(&archive)?]).await?;

        let busybox = self.dir.path().join("busybox");
        let layout = prepare_image(&busybox).await?;
        let bin = layout.rootfs.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::copy("/usr/bin/busybox", bin.join("busybox")).context("copying /usr/bin/busybox")?;
        for applet in ["sh", "echo", "sleep"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
        let config = ["--config.env", "PATH=/bin", "--config.cmd", "sh"];
        let archive = finish_image(&layout, &config, BUSYBOX_IMAGE).await?;
        self.ctr_ok(&["images", "import", path_str(&archive)?]).await?;
        Ok(())
    }

    /// The serving shim processes of this containerd: task id -> pid (one shim per task here).
    pub fn shims(&self) -> HashMap<String, u32> {
        let socket = self.socket().display().to_string();
        let mut shims = HashMap::new();
        for (pid, argv) in processes() {
            let is_shim = argv.first().is_some_and(|a| a.contains("containerd-shim"));
            let arg = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1));
            if is_shim && arg("-address") == Some(&socket) {
                if let Some(id) = arg("-id") {
                    shims.insert(id.clone(), pid);
                }
            }
        }
        shims
    }

    /// Waits (at most `limit`) until no shim of this containerd runs; whether none does.
    pub async fn shims_gone(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.shims().is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Synchronous `ctr` for the drop path.
    fn ctr_sync(&self, args: &[&str]) -> Option<Output> {
        std::process::Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()
    }

    /// Removes every task and container (best effort, synchronous).
    fn remove_all(&self) {
        let lines = |out: Option<Output>| -> Vec<String> {
            out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
        };
        for id in lines(self.ctr_sync(&["tasks", "ls", "-q"])).iter().filter(|l| !l.is_empty()) {
            let _ = self.ctr_sync(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr_sync(&["tasks", "delete", "-f", id]);
        }
        for id in lines(self.ctr_sync(&["containers", "ls", "-q"])).iter().filter(|l| !l.is_empty()) {
            let _ = self.ctr_sync(&["containers", "delete", id]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all();
        // Shim sockets live outside our directory (/run/containerd/s): note them before the shims go.
        let sockets = shim_sockets(&self.dir.path().join("state"));
        if let Some(mut child) = self.child.take() {
            skiff_testkit::stop(&mut child, Duration::from_secs(10));
        }
        for pid in self.shims().into_values() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        // A shim that died without removing its socket: new since the start, and nobody listens on it.
        for name in socket_entries().difference(&self.sockets_before) {
            let path = Path::new(SHIM_SOCKET_DIR).join(name);
            let refused = std::os::unix::net::UnixStream::connect(&path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            if refused && std::fs::remove_file(&path).is_ok() {
                eprintln!(
                    "note: removed a stale shim socket {} (its shim had exited without removing it)",
                    path.display()
                );
            }
        }
        unmount_under(self.dir.path());
        // runc made /sys/fs/cgroup/<controller>/<namespace>/<id>; the ids are gone, the namespace level stays.
        for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(controller.path().join(&self.namespace));
        }
    }
}

/// An unpacked umoci image being built.
struct Layout {
    tag: String,
    bundle: PathBuf,
    rootfs: PathBuf,
    work: PathBuf,
}

/// `umoci init` + `new` + `unpack` under `work`: an empty rootfs to fill.
async fn prepare_image(work: &Path) -> Result<Layout> {
    std::fs::create_dir_all(work)?;
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    let tag = format!("{}:latest", layout.display());
    tool("umoci", &["init", "--layout", path_str(&layout)?]).await?;
    tool("umoci", &["new", "--image", &tag]).await?;
    tool("umoci", &["unpack", "--rootless", "--image", &tag, path_str(&bundle)?]).await?;
    let rootfs = bundle.join("rootfs");
    Ok(Layout { tag, bundle, rootfs, work: work.to_path_buf() })
}

/// `umoci repack` + `config` + `skopeo copy` to an OCI archive named `name`: the archive's path.
async fn finish_image(layout: &Layout, config: &[&str], name: &str) -> Result<PathBuf> {
    tool("umoci", &["repack", "--image", &layout.tag, path_str(&layout.bundle)?]).await?;
    let mut args = vec!["config", "--image", &layout.tag];
    args.extend_from_slice(config);
    tool("umoci", &args).await?;
    let archive = layout.work.join("image.tar");
    let dest = format!("oci-archive:{}:{name}", archive.display());
    tool("skopeo", &["copy", &format!("oci:{}", layout.tag), &dest]).await?;
    Ok(archive)
}

/// Runs a build tool to its end, failing with its stderr.
async fn tool(program: &str, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Every process: pid and argv.
pub fn processes() -> Vec<(u32, Vec<String>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let argv = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into());
        all.push((pid, argv.collect()));
    }
    all
}

/// The names in [`SHIM_SOCKET_DIR`].
fn socket_entries() -> HashSet<OsString> {
    std::fs::read_dir(SHIM_SOCKET_DIR).into_iter().flatten().flatten().map(|e| e.file_name()).collect()
}
