//! Test harness for the shim against a real containerd: a private containerd (own root, state, socket, runc
//! state root, and the shim under test on its PATH), test images built offline with umoci and imported
//! with `ctr`, network namespaces with a veth to the host. Everything is removed on drop, also when a test
//! fails.
#![allow(dead_code)]

pub mod artifact;
pub mod cri;

pub use skiff_testkit::{containerd_command, shim_sockets, unmount_under};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The runtime name containerd resolves to `containerd-shim-skiff-v1` on its PATH.
pub const RUNTIME: &str = "io.containerd.skiff.v1";
/// The ctr namespace the tests use.
pub const NS: &str = "skiff-shim-test";
/// The image every test imports: the guests below at `/`, busybox in `/bin`, entrypoint `/hello.wasm`.
pub const IMAGE: &str = "skiff.test/guests:1";
/// Guests copied into the test image.
const GUESTS: &[&str] = &["hello", "crasher", "tool", "hello-http", "memory-hog", "busy-loop", "hello-p3"];
/// The static busybox copied into the test image's `/bin`.
const BUSYBOX: &str = "/usr/bin/busybox";
/// busybox applets linked in the test image's `/bin`.
const APPLETS: &[&str] = &["sh", "echo", "sleep", "cat", "hostname", "ifconfig", "readlink", "ls"];

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The built guest `name` (`hello`, `tool`, ...), building `workloads/` once per test process.
pub fn workload(name: &str) -> PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        let root = skiff_testkit::repo_root();
        let out = root.join("workloads").join("out");
        let status = Command::new(root.join("scripts/build-workloads.sh")).arg(&out).status().expect("build workloads");
        assert!(status.success(), "scripts/build-workloads.sh failed");
        out
    });
    let path = out.join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private containerd whose PATH starts with the directory of the shim under test.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Containerd {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("skiff-shim-ctd").tempdir().expect("tempdir");
        let root = dir.path();
        // Only what `ctr run` needs: no CRI plugin (its own networking), nothing listening on TCP.
        std::fs::write(root.join("config.toml"), "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n")
            .expect("config");
        let mut containerd = Containerd { dir, child: None };
        containerd.launch();
        containerd
    }

    /// Kills containerd with SIGKILL (its shims and tasks keep running) and, `down` later, starts it again on
    /// the same root, state and socket.
    pub fn restart_after(&mut self, down: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(down);
        self.launch();
    }

    /// Starts containerd on this directory and waits until it answers.
    fn launch(&mut self) {
        let root = self.dir.path();
        // SKIFF_SHIM_TEST_BIN names another build of the shim (e.g. a copy taken out of a shared target dir).
        let shim = std::env::var_os("SKIFF_SHIM_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-skiff-v1")));
        let shim_dir = shim.parent().expect("the shim's directory");
        let child = containerd_command(root, shim_dir)
            .expect("containerd log")
            .env("SKIFF_SHIM_RUNC_ROOT", root.join("runc"))
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.ctr(&["version"]).status.success();
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "containerd did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// runc's state root for the test namespace (the shim's, under this containerd's directory).
    pub fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc").join(NS)
    }

    /// The containers runc still has state for.
    pub fn runc_containers(&self) -> Vec<String> {
        let entries = std::fs::read_dir(self.runc_root()).into_iter().flatten().flatten();
        entries.map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    }

    /// containerd's output so far (it includes the shims' logs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// A `ctr` command against this containerd, in the test namespace.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.socket()).args(["-n", NS]).args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr ARGS` to its end.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("run ctr")
    }

    /// Imports the test image ([`build_test_image`]) with `ctr images import`.
    pub fn import_image(&self) {
        let work = self.dir.path().join("image");
        let tag = build_test_image(&work);
        let archive = work.join("image.tar");
        run(Command::new("skopeo").args([
            "copy",
            &format!("oci:{tag}"),
            &format!("oci-archive:{}:{IMAGE}", archive.display()),
        ]));
        let out = self.ctr(&["images", "import", archive.to_str().expect("utf-8")]);
        assert!(out.status.success(), "ctr images import: {}", String::from_utf8_lossy(&out.stderr));
        let list = self.ctr(&["images", "ls", "-q"]);
        assert!(String::from_utf8_lossy(&list.stdout).contains(IMAGE), "image not imported");
    }

    /// `ctr run --rm --runtime skiff IMAGE ID [EXTRA...] -- ARGS`: its output.
    pub fn run_rm(&self, id: &str, flags: &[&str], args: &[&str]) -> Output {
        let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
        all.extend_from_slice(flags);
        all.extend_from_slice(&[IMAGE, id]);
        all.extend_from_slice(args);
        self.ctr(&all)
    }

    /// The pids of processes whose command line names this containerd's socket (its shims).
    pub fn shim_pids(&self) -> Vec<i32> {
        skiff_testkit::processes_of("containerd-shim", &self.socket())
    }

    /// Waits (bounded) until no shim of this containerd runs; whether none does.
    pub fn shims_gone(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.shim_pids().is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Removes every task and container (best effort).
    fn remove_all(&self) {
        remove_all_tasks(|args| self.ctr(args));
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
        for pid in self.shim_pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        // Linux containers a dead shim left (their processes, cgroups and state).
        for id in self.runc_containers() {
            let _ = Command::new("runc").arg("--root").arg(self.runc_root()).args(["delete", "--force", &id]).output();
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        unmount_under(self.dir.path());
    }
}

/// A network namespace joined to the host by a veth pair on a /30 of its own; deleted on drop.
pub struct NetNs {
    pub name: String,
    pub host_ip: String,
    pub pod_ip: String,
    host_if: String,
}

impl NetNs {
    pub fn new() -> Self {
        let name = unique("skshim");
        // 10.213.X.Y/30 from the pid and a counter: unlikely to collide with parallel test binaries.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() % 4000) * 16 + NEXT.fetch_add(1, Ordering::Relaxed) % 16;
        let (x, y) = ((n / 64) % 256, (n % 64) * 4);
        let host_ip = format!("10.213.{x}.{}", y + 1);
        let pod_ip = format!("10.213.{x}.{}", y + 2);
        let host_if = format!("vsk{}", n);
        let ns =
            NetNs { name: name.clone(), host_ip: host_ip.clone(), pod_ip: pod_ip.clone(), host_if: host_if.clone() };
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name]));
        run(Command::new("ip").args(["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]));
        run(Command::new("ip").args(["link", "set", &host_if, "up"]));
        let in_ns = |args: &[&str]| {
            run(Command::new("ip").args(["netns", "exec", &name, "ip"]).args(args));
        };
        in_ns(&["addr", "add", &format!("{pod_ip}/30"), "dev", "eth0"]);
        in_ns(&["link", "set", "eth0", "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A running `ctr` child (e.g. `ctr run` of a server); killed on drop.
pub struct CtrChild(pub Option<Child>);

impl Drop for CtrChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET path` over HTTP/1.0 to `addr`, retried until it answers (bounded): the whole response.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut response = String::new();
                if stream.read_to_string(&mut response).is_ok() && !response.is_empty() {
                    return Some(response);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Kills and deletes every task, then deletes every container, through `ctr` (best effort).
pub fn remove_all_tasks(ctr: impl Fn(&[&str]) -> Output) {
    let tasks = ctr(&["tasks", "ls", "-q"]);
    for id in String::from_utf8_lossy(&tasks.stdout).lines().filter(|l| !l.is_empty()) {
        let _ = ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        let _ = ctr(&["tasks", "delete", "-f", id]);
    }
    let containers = ctr(&["containers", "ls", "-q"]);
    for id in String::from_utf8_lossy(&containers.stdout).lines().filter(|l| !l.is_empty()) {
        let _ = ctr(&["containers", "delete", id]);
    }
}

/// Builds the test image as an OCI layout under `work` (the guests at `/`, entrypoint `/hello.wasm`, plus
/// `/corrupt.wasm`, busybox in `/bin`, `/data/in-image.txt`, and `/pause`: an ELF header without the exec
/// bit); its `oci:` tag.
pub fn build_test_image(work: &Path) -> String {
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    std::fs::create_dir_all(work).expect("mkdir");
    let tag = format!("{}:latest", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &tag]));
    run(Command::new("umoci").args(["unpack", "--rootless", "--image", &tag]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for guest in GUESTS {
        std::fs::copy(workload(guest), rootfs.join(format!("{guest}.wasm"))).expect("copy guest");
    }
    std::fs::write(rootfs.join("corrupt.wasm"), b"\0asm\x01\0\0\0this is not wasm").expect("corrupt");
    std::fs::write(rootfs.join("pause"), b"\x7fELF not wasm").expect("pause");
    std::fs::create_dir_all(rootfs.join("bin")).expect("bin dir");
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("busybox (apt-get install busybox-static)");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
    }
    std::fs::create_dir_all(rootfs.join("data")).expect("data dir");
    std::fs::write(rootfs.join("data/in-image.txt"), b"from the image").expect("file");
    run(Command::new("umoci").args(["repack", "--image", &tag]).arg(&bundle));
    run(Command::new("umoci").args(["config", "--image", &tag, "--config.entrypoint", "/hello.wasm"]));
    tag
}
