//! A private containerd for node tests whose kubelet runs Wasm through containerd: its own root, state and
//! socket, no CRI plugin, and skiff's shim (`containerd-shim-skiff-v1`, built once per test process) first
//! on its PATH. On drop every container of its namespaces, containerd itself and any shim it left are gone.

use skiff_testkit::{containerd_command, shim_sockets, unmount_under};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The shim binary, built from this workspace once per test process.
pub fn shim_binary() -> PathBuf {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        // The test's own CARGO_* variables (package name, manifest dir...) would make cargo rebuild shared deps.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("CARGO_") && key != "CARGO_TARGET_DIR" && key != "CARGO_HOME" {
                build.env_remove(&key);
            }
        }
        let status = build
            .args(["build", "-p", "skiff-shim", "--bin", "containerd-shim-skiff-v1"])
            .current_dir(skiff_testkit::repo_root())
            .status()
            .expect("cargo build of the shim");
        assert!(status.success(), "building containerd-shim-skiff-v1 failed");
        // The test binary is `<target>/debug/deps/<name>`; the shim is `<target>/debug/containerd-shim-skiff-v1`.
        let exe = std::env::current_exe().expect("test binary path");
        let debug = exe.parent().and_then(Path::parent).expect("the target's profile directory");
        let shim = debug.join("containerd-shim-skiff-v1");
        assert!(shim.is_file(), "{} was not built", shim.display());
        shim
    })
    .clone()
}

/// A private containerd with skiff's shim on its PATH.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// The namespaces tests used (cleaned on drop).
    pub namespace: String,
}

impl Containerd {
    pub fn start(namespace: &str) -> Self {
        Self::launch(namespace, Some(shim_binary()))
    }

    /// A private containerd with only the system's runtimes (runc): no build of skiff's shim.
    #[allow(dead_code)]
    pub fn start_runc_only(namespace: &str) -> Self {
        Self::launch(namespace, None)
    }

    fn launch(namespace: &str, shim: Option<PathBuf>) -> Self {
        let dir = tempfile::Builder::new().prefix("skiff-ctd").tempdir().expect("tempdir");
        let root = dir.path();
        // Only the container and task services: no CRI plugin (its own networking), nothing on TCP.
        std::fs::write(root.join("config.toml"), "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n")
            .expect("config");
        // Only the shim on its PATH first, not the rest of the target directory.
        let bin = root.join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        if let Some(shim) = shim {
            std::os::unix::fs::symlink(&shim, bin.join("containerd-shim-skiff-v1")).expect("shim link");
        }
        let child = containerd_command(root, &bin).expect("containerd log").spawn().expect("start containerd");
        let containerd = Containerd { dir, child: Some(child), namespace: namespace.to_string() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not start: {}", containerd.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Kills containerd (SIGKILL: its shims and containers live on) and starts it again on the same
    /// root and socket, as a supervisor would; returns once it answers.
    #[allow(dead_code)]
    pub fn kill_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let root = self.dir.path();
        let child = containerd_command(root, &root.join("bin")).expect("containerd log").spawn().expect("restart");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not come back: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node agent arguments that make its kubelet run Wasm in this containerd.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--wasm-runtime".into(),
            "containerd".into(),
            "--containerd-address".into(),
            self.socket().display().to_string(),
            "--containerd-namespace".into(),
            self.namespace.clone(),
        ]
    }

    /// containerd's output so far (with the shims' logs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr -n <namespace> ARGS` to its end.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// The ids `ctr ... ls -q` prints (`tasks` or `containers`).
    pub fn ids(&self, what: &str) -> Vec<String> {
        let out = self.ctr(&[what, "ls", "-q"]);
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().into()).collect()
    }

    /// `ctr tasks ls` as printed (TASK PID STATUS).
    pub fn tasks_table(&self) -> String {
        String::from_utf8_lossy(&self.ctr(&["tasks", "ls"]).stdout).into_owned()
    }

    /// The pids of this containerd's shims (their command line names its socket).
    pub fn shim_pids(&self) -> Vec<i32> {
        skiff_testkit::processes_of("containerd-shim-skiff", &self.socket())
    }

    /// Removes every task and container of the namespace (best effort).
    fn remove_all(&self) {
        for id in self.ids("tasks") {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
            let _ = self.ctr(&["tasks", "delete", "-f", &id]);
        }
        for id in self.ids("containers") {
            let _ = self.ctr(&["containers", "delete", &id]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all();
        let sockets = shim_sockets(&self.dir.path().join("state"));
        if let Some(mut child) = self.child.take() {
            let _ = nix_kill(child.id() as i32, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.shim_pids() {
            let _ = nix_kill(pid, "KILL");
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        unmount_under(self.dir.path());
    }
}

fn nix_kill(pid: i32, signal: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).stderr(Stdio::null()).status()
}
