//! `containerd-shim-skiff-v1` driven exactly as a kubelet drives it: CRI gRPC against a real containerd 1.6
//! with the CRI plugin (handler `skiff`), images pulled from a loopback registry, pods on a CNI bridge.
//! Needs root, containerd, docker-registry, the CNI plugins, umoci, skopeo, busybox-static and ip.
//! Run with `cargo test -p skiff-shim --test cri -- --test-threads=1`.

mod common;

use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerState, CreateContainerRequest, ImageSpec, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxState, PodSandboxStatusRequest, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::Channel;

use common::cri::{
    container_config, container_status, pod_config, read_cri_log, wait_for_state, CriContainerd, LogLine, HANDLER,
};
use common::{http_get, unique};

type Runtime = RuntimeServiceClient<Channel>;

/// A pod run with handler `skiff`: its sandbox id, config and IP.
struct Pod {
    id: String,
    config: PodSandboxConfig,
    ip: String,
    netns: Option<String>,
}

/// Version, then PullImage of the test image as the kubelet does before creating containers.
async fn version_and_pull(cri: &CriContainerd) -> String {
    let mut runtime = cri.runtime.clone();
    let version = runtime.version(VersionRequest { version: "v1".into() }).await.expect("Version").into_inner();
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");
    let mut images = cri.images.clone();
    let request = PullImageRequest {
        image: Some(ImageSpec { image: cri.image.clone(), ..Default::default() }),
        ..Default::default()
    };
    let image_ref = images.pull_image(request).await.expect("PullImage").into_inner().image_ref;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    image_ref
}

/// RunPodSandbox with handler `skiff` and a log directory; the sandbox is ready and has an IP of the test's
/// network.
async fn run_pod(cri: &CriContainerd, runtime: &mut Runtime) -> Pod {
    let name = unique("pod");
    let config = pod_config(&name, &cri.log_dir(&name));
    let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: HANDLER.into() };
    let id = match runtime.run_pod_sandbox(request).await {
        Ok(response) => response.into_inner().pod_sandbox_id,
        Err(e) => panic!("RunPodSandbox: {e}\n{}", cri.log_tail()),
    };
    let netns = cri.note_netns(&id).await;
    let status = runtime
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("a sandbox status");
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32, "{status:?}");
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    let prefix = cri.network.subnet.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod IP {ip:?} not in {}", cri.network.subnet);
    Pod { id, config, ip, netns }
}

/// CreateContainer then StartContainer of a container that must fail: the failing call's gRPC message and
/// the container's id if CreateContainer succeeded.
async fn create_and_start_fails(runtime: &mut Runtime, pod: &Pod, config: ContainerConfig) -> (String, Option<String>) {
    let request = CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(config),
        sandbox_config: Some(pod.config.clone()),
    };
    let id = match runtime.create_container(request).await {
        Ok(response) => response.into_inner().container_id,
        Err(e) => return (e.message().to_string(), None),
    };
    match runtime.start_container(StartContainerRequest { container_id: id.clone() }).await {
        Ok(_) => panic!("{id} started"),
        Err(e) => (e.message().to_string(), Some(id)),
    }
}

/// CreateContainer then StartContainer; the container's id.
async fn create_and_start(cri: &CriContainerd, runtime: &mut Runtime, pod: &Pod, config: ContainerConfig) -> String {
    let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    let request = CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(config),
        sandbox_config: Some(pod.config.clone()),
    };
    let id = match runtime.create_container(request).await {
        Ok(response) => response.into_inner().container_id,
        Err(e) => panic!("CreateContainer {name}: {e}\n{}", cri.log_tail()),
    };
    if let Err(e) = runtime.start_container(StartContainerRequest { container_id: id.clone() }).await {
        panic!("StartContainer {name}: {e}\n{}", cri.log_tail());
    }
    id
}

/// The pod's log directory joined with a container's relative log path.
fn log_path(pod: &Pod, name: &str) -> std::path::PathBuf {
    std::path::Path::new(&pod.config.log_directory).join(format!("{name}/0.log"))
}

fn has(lines: &[LogLine], stream: &str, text: &str) -> bool {
    lines.iter().any(|l| l.stream == stream && !l.partial && l.text == text)
}

/// StopContainer and RemoveContainer of each, StopPodSandbox and RemovePodSandbox: nothing of the pod is
/// left in CRI, its network namespace is gone.
async fn tear_down(runtime: &mut Runtime, pod: &Pod, containers: &[&str]) {
    for id in containers {
        let stop = runtime.stop_container(StopContainerRequest { container_id: id.to_string(), timeout: 2 }).await;
        stop.unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
        let status = container_status(runtime, id).await;
        assert_eq!(status.state, ContainerState::ContainerExited as i32, "{status:?}");
        let remove = runtime.remove_container(RemoveContainerRequest { container_id: id.to_string() }).await;
        remove.unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
    }
    let filter = ContainerFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() };
    let left = runtime.list_containers(ListContainersRequest { filter: Some(filter) }).await.expect("ListContainers");
    assert!(left.into_inner().containers.is_empty(), "containers left in the pod");
    runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await.expect("StopPodSandbox");
    let status = runtime
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: false })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("a sandbox status");
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32, "{status:?}");
    let remove = runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await;
    remove.expect("RemovePodSandbox");
    let pods = runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await.expect("ListPodSandbox");
    assert!(pods.into_inner().items.iter().all(|p| p.id != pod.id), "the sandbox is still listed");
    if let Some(netns) = &pod.netns {
        assert!(!std::path::Path::new(netns).exists(), "the pod's network namespace {netns} is left");
    }
}

/// The hello container: args and env from the container config; exits 0, its output in its CRI log.
fn hello_config(image: &str) -> ContainerConfig {
    container_config("hello", image, &["/hello.wasm"], &["one", "two"], &[("HELLO_NAME", "cri")])
}

/// Waits for the hello container to exit and checks its status and log.
async fn check_hello(runtime: &mut Runtime, pod: &Pod, id: &str) {
    let status = wait_for_state(runtime, id, ContainerState::ContainerExited).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    assert_eq!(status.reason, "Completed", "{status:?}");
    let path = log_path(pod, "hello");
    assert_eq!(status.log_path, path.display().to_string());
    let lines = read_cri_log(&path);
    for (stream, text) in [
        ("stdout", "hello from skiff"),
        ("stdout", "args: one two"),
        ("stdout", "HELLO_NAME=cri"),
        ("stderr", "hello on stderr"),
    ] {
        assert!(has(&lines, stream, text), "no {stream} line {text:?} in {lines:?}");
    }
}

#[test]
fn a_wasm_pod_through_cri() {
    let cri = CriContainerd::start();
    let mut runtime = cri.runtime.clone();
    cri.rt.block_on(async {
        version_and_pull(&cri).await;
        let pod = run_pod(&cri, &mut runtime).await;

        let web = container_config("web", &cri.image, &["/hello-http.wasm"], &[], &[]);
        let web = create_and_start(&cri, &mut runtime, &pod, web).await;
        let hello = create_and_start(&cri, &mut runtime, &pod, hello_config(&cri.image)).await;
        // A second shim process containerd starts for the pod finds the first serving and exits at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut shims = cri.skiff_shim_pids();
        while shims.len() != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            shims = cri.skiff_shim_pids();
        }
        assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");

        // The wasi:http component answers on the pod IP, from the host, on the default port.
        let response = http_get(&format!("{}:8080", pod.ip), "/");
        let response = response.unwrap_or_else(|| {
            panic!("no answer on the pod IP {} (in the pod's network?): {}", pod.ip, cri.log_tail())
        });
        assert!(response.starts_with("HTTP/1.") && response.contains(" 200 "), "{response}");
        assert!(response.ends_with("hello from skiff\n"), "{response}");

        check_hello(&mut runtime, &pod, &hello).await;
        let status = container_status(&mut runtime, &web).await;
        assert_eq!(status.state, ContainerState::ContainerRunning as i32, "{status:?}");

        // StopContainer sends SIGTERM first: the server stops with 128+15.
        let stop = runtime.stop_container(StopContainerRequest { container_id: web.clone(), timeout: 10 }).await;
        stop.expect("StopContainer web");
        let status = container_status(&mut runtime, &web).await;
        assert_eq!(status.state, ContainerState::ContainerExited as i32, "{status:?}");
        assert_eq!(status.exit_code, 143, "{status:?}");
        tear_down(&mut runtime, &pod, &[&hello, &web]).await;
    });
    assert!(cri.shims_gone(), "shims left running: {:?}", cri.shim_pids());
}

#[test]
fn a_mixed_pod_through_cri() {
    let cri = CriContainerd::start();
    let mut runtime = cri.runtime.clone();
    cri.rt.block_on(async {
        version_and_pull(&cri).await;
        let pod = run_pod(&cri, &mut runtime).await;

        // The port from the container's env this time.
        let web = container_config("web", &cri.image, &["/hello-http.wasm"], &[], &[("SKIFF_HTTP_PORT", "8081")]);
        let web = create_and_start(&cri, &mut runtime, &pod, web).await;
        let hello = create_and_start(&cri, &mut runtime, &pod, hello_config(&cri.image)).await;
        let linux = container_config("linux", &cri.image, &["/bin/sh", "-c", "echo from-linux; sleep 300"], &[], &[]);
        let linux = create_and_start(&cri, &mut runtime, &pod, linux).await;
        // A Linux container reaches the Wasm server on the pod's loopback: one network for the whole pod.
        let probe = "wget -q -O - http://127.0.0.1:8081/";
        let probe = container_config("probe", &cri.image, &["/bin/sh", "-c", probe], &[], &[]);
        let probe = create_and_start(&cri, &mut runtime, &pod, probe).await;
        // A shim started for a container that finds the pod's shim already serving exits again;
        // on a loaded machine that can take a few seconds.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut shims = cri.serving_shims();
        while shims.len() != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            shims = cri.serving_shims();
        }
        // One look at the processes: the only serving shim, the Linux containers' too, is skiff's.
        assert_eq!(shims.len(), 1, "one serving shim for the pod: {shims:?}");
        assert!(
            shims[0].1.contains("containerd-shim-skiff-v1"),
            "the pod's Linux containers run under the skiff shim too: {shims:?}"
        );

        let response = http_get(&format!("{}:8081", pod.ip), "/");
        let response = response.unwrap_or_else(|| {
            panic!("no answer on the pod IP {} (in the pod's network?): {}", pod.ip, cri.log_tail())
        });
        assert!(response.ends_with("hello from skiff\n"), "{response}");

        check_hello(&mut runtime, &pod, &hello).await;
        let status = wait_for_state(&mut runtime, &probe, ContainerState::ContainerExited).await;
        assert_eq!(status.exit_code, 0, "{status:?}");
        let lines = read_cri_log(&log_path(&pod, "probe"));
        assert!(has(&lines, "stdout", "hello from skiff"), "{lines:?}");

        let status = container_status(&mut runtime, &linux).await;
        assert_eq!(status.state, ContainerState::ContainerRunning as i32, "{status:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !has(&read_cri_log(&log_path(&pod, "linux")), "stdout", "from-linux") {
            assert!(
                std::time::Instant::now() < deadline,
                "no from-linux in {:?}",
                read_cri_log(&log_path(&pod, "linux"))
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }

        // The shell is its PID namespace's init and ignores SIGTERM: StopContainer kills it after the timeout.
        let stop = runtime.stop_container(StopContainerRequest { container_id: linux.clone(), timeout: 2 }).await;
        stop.expect("StopContainer linux");
        let status = container_status(&mut runtime, &linux).await;
        assert_eq!(status.state, ContainerState::ContainerExited as i32, "{status:?}");
        assert!(matches!(status.exit_code, 137 | 143), "{status:?}");
        tear_down(&mut runtime, &pod, &[&web, &hello, &linux, &probe]).await;
    });
    assert!(cri.shims_gone(), "shims left running: {:?}", cri.shim_pids());
}

#[test]
fn bad_wasm_fails_clearly_through_cri() {
    let cri = CriContainerd::start();
    let mut runtime = cri.runtime.clone();
    cri.rt.block_on(async {
        version_and_pull(&cri).await;
        let pod = run_pod(&cri, &mut runtime).await;
        let mut failed = Vec::new();
        for (name, entry, reason) in
            [("corrupt", "/corrupt.wasm", "does not compile"), ("missing", "/nope.wasm", "no Wasm entry point")]
        {
            let config = container_config(name, &cri.image, &[entry], &[], &[]);
            let (message, id) = create_and_start_fails(&mut runtime, &pod, config).await;
            assert!(message.contains(reason), "{entry}: {message}");
            // CRI records the failed start on the container, as `kubectl describe` shows it.
            if let Some(id) = id {
                let status = container_status(&mut runtime, &id).await;
                assert_eq!(status.state, ContainerState::ContainerExited as i32, "{status:?}");
                assert_eq!(status.reason, "StartError", "{status:?}");
                assert!(status.message.contains(reason), "{status:?}");
                failed.push(id);
            }
        }
        // The pod and its shim are fine: a good container still runs in it.
        let hello = create_and_start(&cri, &mut runtime, &pod, hello_config(&cri.image)).await;
        check_hello(&mut runtime, &pod, &hello).await;
        let mut all: Vec<&str> = failed.iter().map(String::as_str).collect();
        all.push(&hello);
        tear_down(&mut runtime, &pod, &all).await;
    });
    assert!(cri.shims_gone(), "shims left running: {:?}", cri.shim_pids());
}
