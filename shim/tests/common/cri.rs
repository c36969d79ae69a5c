//! Harness for driving the shim through containerd's CRI plugin as a kubelet does: a loopback registry
//! holding the test image, a CNI bridge network of its own (unique bridge and /24), and a private containerd
//! with the CRI plugin (runtime handlers `skiff` and `runc`) answered over CRI gRPC on its unix socket.
//! Everything (pod sandboxes, their network namespaces, the bridge, containerd, its shims, the registry,
//! temp dirs) is removed on drop, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest, ImageSpec, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, RemovePodSandboxRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

use skiff_testkit::containerd_command;

use super::{build_test_image, http_get, remove_all_tasks, run, shim_sockets, unmount_under};

/// The CRI runtime handler of the shim under test (`skiff shim install` adds the same name).
pub const HANDLER: &str = "skiff";
/// The namespace CRI keeps its containers and images in.
pub const K8S_NS: &str = "k8s.io";
/// The image's repository and tag in the test registry.
const IMAGE_NAME: &str = "skiff-cri/guests:1";

/// A free TCP port on loopback (the OS's pick; free again once returned).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A child process killed (and reaped) on drop.
struct Process(Option<Child>);

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `docker-registry` on a loopback port, storing under a temp dir.
pub struct Registry {
    pub addr: String,
    process: Process,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("skiff-cri-reg").tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let registry = Registry { addr: format!("127.0.0.1:{port}"), process: Process(Some(child)), dir };
        let answer = http_get(&registry.addr, "/v2/").unwrap_or_default();
        assert!(answer.contains(" 200 "), "the registry does not answer: {answer}");
        registry
    }

    /// Builds the test image ([`build_test_image`]) and pushes it to this registry; its reference.
    pub fn push_test_image(&self) -> String {
        let tag = build_test_image(&self.dir.path().join("image"));
        let reference = format!("{}/{IMAGE_NAME}", self.addr);
        run(Command::new("skopeo").args([
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{tag}"),
            &format!("docker://{reference}"),
        ]));
        reference
    }
}

/// A CNI bridge network of its own: a unique bridge name and a /24 that overlaps no host route, host-local
/// IPAM state under the test's dir. No masquerading, no default route in the pods.
pub struct PodNetwork {
    pub bridge: String,
    pub subnet: String,
}

impl PodNetwork {
    /// Picks the bridge and subnet and writes the conflist into `conf_dir`.
    fn new(conf_dir: &Path, ipam_dir: &Path) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let bridge = format!("skc{pid}x{n}");
        let routes = host_routes();
        let second = 220 + pid % 30;
        let subnet = (0..256)
            .map(|i| ((pid / 30) * 8 + n + i) % 256)
            .map(|third| format!("10.{second}.{third}.0/24"))
            .find(|cidr| !routes.iter().any(|route| overlaps(route, cidr)))
            .expect("a free /24 for the pod network");
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": format!("skiff-cri-{pid}-{n}"),
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "dataDir": ipam_dir,
                },
            }],
        });
        std::fs::create_dir_all(conf_dir).expect("cni conf dir");
        std::fs::write(conf_dir.join("10-skiff-cri.conflist"), conflist.to_string()).expect("conflist");
        PodNetwork { bridge, subnet }
    }
}

/// The destinations (`A.B.C.D/LEN`) of the host's IPv4 routes in all tables, default routes left out.
fn host_routes() -> Vec<String> {
    const TYPES: &[&str] = &[
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "throw",
        "unreachable",
        "prohibit",
        "blackhole",
        "nat",
        "anycast",
    ];
    let out = run(Command::new("ip").args(["-4", "route", "show", "table", "all"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| !TYPES.contains(w)).map(str::to_string))
        .filter(|dest| dest != "default")
        .map(|dest| if dest.contains('/') { dest } else { format!("{dest}/32") })
        .collect()
}

/// Whether two IPv4 CIDRs share an address.
fn overlaps(a: &str, b: &str) -> bool {
    let parse = |cidr: &str| -> Option<(u32, u32)> {
        let (ip, len) = cidr.split_once('/')?;
        let ip = u32::from(ip.parse::<std::net::Ipv4Addr>().ok()?);
        let len: u32 = len.parse().ok()?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32)) };
        Some((ip & mask, mask))
    };
    match (parse(a), parse(b)) {
        (Some((na, ma)), Some((nb, mb))) => {
            let common = ma & mb;
            na & common == nb & common
        }
        _ => false,
    }
}

/// Deletes bridges (`skc<pid>x<n>`) left behind by test processes that died before their cleanup.
fn sweep_dead_bridges() {
    let Ok(out) = Command::new("ip").args(["-o", "link", "show", "type", "bridge"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or_default()) else {
            continue;
        };
        let Some(pid) = name.strip_prefix("skc").and_then(|rest| rest.split('x').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

/// A private containerd with the CRI plugin, the shim under test on its PATH, its own registry and pod
/// network, and CRI clients on its socket.
pub struct CriContainerd {
    pub registry: Registry,
    pub network: PodNetwork,
    /// The test image's reference in the registry (also the sandbox image).
    pub image: String,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// The runtime the CRI clients live on (tests `block_on` it).
    pub rt: tokio::runtime::Runtime,
    /// Network namespaces this containerd made for its pods (removed on drop if still there).
    netns: Mutex<Vec<String>>,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl CriContainerd {
    pub fn start() -> Self {
        sweep_dead_bridges();
        let registry = Registry::start();
        let image = registry.push_test_image();
        let dir = tempfile::Builder::new().prefix("skiff-cri-ctd").tempdir().expect("tempdir");
        let root = dir.path();
        let network = PodNetwork::new(&root.join("cni"), &root.join("ipam"));
        std::fs::write(root.join("config.toml"), config(root, &image, &registry.addr)).expect("config");
        let shim = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-skiff-v1"));
        let shim_dir = shim.parent().expect("the shim's directory");
        let child = containerd_command(root, shim_dir).expect("containerd log").spawn().expect("start containerd");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let socket = root.join("containerd.sock");
        // Until the socket answers CRI's Version (the CRI plugin loads after containerd listens).
        let deadline = Instant::now() + Duration::from_secs(30);
        let (runtime, images) = loop {
            let attempt = rt.block_on(async {
                let channel = containerd_client::connect(&socket).await.ok()?;
                let mut runtime = RuntimeServiceClient::new(channel.clone());
                runtime.version(k8s_cri::v1::VersionRequest { version: "v1".into() }).await.ok()?;
                Some((runtime, ImageServiceClient::new(channel)))
            });
            if let Some(clients) = attempt {
                break clients;
            }
            let log = std::fs::read_to_string(root.join("containerd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "containerd's CRI did not answer: {log}");
            std::thread::sleep(Duration::from_millis(100));
        };
        CriContainerd {
            registry,
            network,
            image,
            runtime,
            images,
            rt,
            netns: Mutex::new(Vec::new()),
            child: Some(child),
            dir,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// containerd's output so far (it includes the shims' logs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The last 60 lines of containerd's output, without its plugin loading: for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("loading plugin")).collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Runs `ctr -n k8s.io ARGS` against this containerd to its end.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", K8S_NS])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// A pod's directory for container logs (made, as the kubelet does).
    pub fn log_dir(&self, pod: &str) -> PathBuf {
        let dir = self.dir.path().join("pods").join(pod);
        std::fs::create_dir_all(&dir).expect("pod log dir");
        dir
    }

    /// Notes the network namespace of sandbox `id` (from its verbose status) so drop removes it if CRI did
    /// not; its path.
    pub async fn note_netns(&self, id: &str) -> Option<String> {
        let mut runtime = self.runtime.clone();
        let status =
            runtime.pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true }).await;
        let info = status.ok()?.into_inner().info.into_values().collect::<Vec<_>>().join(" ");
        let start = info.find("/var/run/netns/")?;
        let path: String = info[start..].chars().take_while(|c| !matches!(c, '"' | ' ' | '\\' | ',')).collect();
        if let Ok(mut noted) = self.netns.lock() {
            if !noted.contains(&path) {
                noted.push(path.clone());
            }
        }
        Some(path)
    }

    /// The pids of processes whose command line names this containerd's socket (its shims).
    pub fn shim_pids(&self) -> Vec<i32> {
        skiff_testkit::processes_of("containerd-shim", &self.socket())
    }

    /// This containerd's serving shims, pid and program, read once: not the short-lived `start` and `delete`
    /// commands containerd also runs with its address (one may still be exiting when a CRI call returns), nor
    /// a process that exited between the listing and the read of its command line.
    pub fn serving_shims(&self) -> Vec<(i32, String)> {
        self.shim_pids()
            .into_iter()
            .filter_map(|pid| {
                let args = shim_args(pid);
                let serving = !args.is_empty() && !args.iter().any(|a| a == "start" || a == "delete");
                serving.then(|| (pid, args.into_iter().next().unwrap_or_default()))
            })
            .collect()
    }

    /// The pids of this containerd's serving skiff shims.
    pub fn skiff_shim_pids(&self) -> Vec<i32> {
        let shims = self.serving_shims().into_iter();
        shims.filter(|(_, program)| program.contains("containerd-shim-skiff-v1")).map(|(pid, _)| pid).collect()
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

    /// Stops and removes every pod sandbox through CRI (best effort, bounded), noting their netns first.
    async fn remove_all_pods(&self) {
        let bound = Duration::from_secs(20);
        let mut runtime = self.runtime.clone();
        let list = tokio::time::timeout(bound, runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None })).await;
        let Ok(Ok(list)) = list else { return };
        for pod in list.into_inner().items {
            let _ = self.note_netns(&pod.id).await;
            let stop = runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() });
            let _ = tokio::time::timeout(bound, stop).await;
            let remove = runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() });
            let _ = tokio::time::timeout(bound, remove).await;
        }
    }

    /// Removes every task and container left in CRI's namespace (best effort).
    fn remove_all_containers(&self) {
        remove_all_tasks(|args| self.ctr(args));
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        self.rt.block_on(self.remove_all_pods());
        self.remove_all_containers();
        let sockets = shim_sockets(&self.dir.path().join("state"));
        if let Some(mut child) = self.child.take() {
            skiff_testkit::stop(&mut child, Duration::from_secs(10));
        }
        for pid in self.shim_pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        let netns = self.netns.lock().map(|n| n.clone()).unwrap_or_default();
        for path in netns {
            if Path::new(&path).exists() {
                let _ = nix::mount::umount2(path.as_str(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(&path);
            }
        }
        let _ = Command::new("ip").args(["link", "del", &self.network.bridge]).output();
        unmount_under(self.dir.path());
    }
}

/// containerd's config: the CRI plugin with handlers `skiff` (the shim) and `runc` (the default), the test
/// image as sandbox image, the test's CNI network, the registry as a plain-HTTP mirror, streaming on loopback.
fn config(root: &Path, sandbox_image: &str, registry: &str) -> String {
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        r#"version = 2
[{cri}]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
[{cri}.containerd]
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.skiff]
  runtime_type = "io.containerd.skiff.v1"
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{conf_dir}"
  max_conf_num = 1
[{cri}.registry.mirrors."{registry}"]
  endpoint = ["http://{registry}"]
"#,
        conf_dir = root.join("cni").display(),
    )
}

/// A pod sandbox config as the kubelet sends it: metadata, hostname, log directory, pod network namespace.
pub fn pod_config(name: &str, log_directory: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_directory.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The kubelet's default namespaces: network and IPC of the pod, a PID namespace per container.
fn pod_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A container config as the kubelet sends it: `command` replaces the image's entrypoint, the log path is
/// relative to the pod's log directory (`NAME/0.log`).
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(ImageSpec { image: image.into(), ..Default::default() }),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        envs: env.iter().map(|(k, v)| KeyValue { key: k.to_string(), value: v.to_string() }).collect(),
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// ContainerStatus of `id`.
pub async fn container_status(runtime: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    let response = runtime
        .container_status(ContainerStatusRequest { container_id: id.into(), verbose: false })
        .await
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"));
    response.into_inner().status.unwrap_or_else(|| panic!("ContainerStatus {id}: no status"))
}

/// Polls ContainerStatus (bounded) until `id` is in `state`; its status then.
pub async fn wait_for_state(
    runtime: &mut RuntimeServiceClient<Channel>,
    id: &str,
    state: ContainerState,
) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = container_status(runtime, id).await;
        if status.state == state as i32 {
            return status;
        }
        assert!(Instant::now() < deadline, "{id} never got to {state:?}: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One line of a CRI container log: `<RFC 3339 time> <stdout|stderr> <F|P> <text>`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub stream: String,
    pub partial: bool,
    pub text: String,
}

/// Reads the CRI log at `path` line by line, asserting each line's format.
pub fn read_cri_log(path: &Path) -> Vec<LogLine> {
    let content = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    content
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (time, stream, tag) = (parts.next(), parts.next(), parts.next());
            let text = parts.next().unwrap_or_default();
            let time = time.unwrap_or_default();
            assert!(
                time.len() > 20 && time.as_bytes().get(10) == Some(&b'T') && time.ends_with('Z'),
                "not an RFC 3339 time in {line:?}"
            );
            let stream = stream.unwrap_or_default();
            assert!(matches!(stream, "stdout" | "stderr"), "no stream in {line:?}");
            let tag = tag.unwrap_or_default();
            assert!(matches!(tag, "F" | "P"), "no F/P tag in {line:?}");
            LogLine { stream: stream.into(), partial: tag == "P", text: text.into() }
        })
        .collect()
}

/// The command line of process `pid`, split into its arguments (empty when it is gone).
fn shim_args(pid: i32) -> Vec<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}
