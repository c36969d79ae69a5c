//! Lifecycle hooks (`postStart`, `preStop`) as the kubelet runs them: `exec` inside the container through
//! the runtime's exec (Linux containers; Wasm containers cannot run exec hooks yet and say so), `httpGet`
//! to the pod's IP (or the handler's host) and `sleep`. A hook is bounded by the budget it is given (a
//! preStop hook by the grace period). The outcome's message is the text of the kubelet's
//! `FailedPostStartHook` / `FailedPreStopHook` events.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use crate::runtime::{ContainerRuntime, Launch, PodContext};

/// Which hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PostStart,
    PreStop,
}

impl Hook {
    /// The Warning event's reason when the hook fails.
    pub fn failed_reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }
}

/// How a hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The hook ran and failed (the event's message).
    Failed(String),
    /// This container cannot run the hook (an exec hook in a Wasm container): skipped, with a Warning.
    Unsupported(String),
}

/// What a hook reaches: the container (through the runtime) and the pod's IP.
#[derive(Clone)]
pub struct HookTarget {
    pub pod_ip: IpAddr,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub pod: Arc<dyn PodContext>,
    pub launch: Launch,
    pub container: Container,
    /// The pod as the kubelet names it in messages: `name_namespace(uid)`.
    pub pod_name: String,
}

/// Runs `handler` against `target`, for at most `budget`.
pub async fn run(handler: &LifecycleHandler, target: &HookTarget, budget: Duration) -> Outcome {
    let container = &target.container.name;
    let pod = &target.pod_name;
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        if !target.runtime.runs_exec_hooks(&target.launch.image) {
            return Outcome::Unsupported(format!(
                "Exec lifecycle hook ({}) for Container {container:?} in Pod {pod:?} was not run: exec hooks are \
                 not supported in Wasm containers",
                go_list(&command)
            ));
        }
        let result = target.runtime.exec(&target.pod, &target.launch, &command, budget).await;
        let (error, output) = match result {
            Ok(out) if out.exit_code == 0 => return Outcome::Done,
            Ok(out) => (format!("command '{}' exited with {}: ", command.join(" "), out.exit_code), out.output),
            Err(e) => (e.to_string(), String::new()),
        };
        return Outcome::Failed(format!(
            "Exec lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {output:?}",
            go_list(&command)
        ));
    }
    if let Some(http) = &handler.http_get {
        let path = http.path.clone().unwrap_or_default();
        let failed = |error: String| {
            Outcome::Failed(format!(
                "HTTP lifecycle hook ({path}) for Container {container:?} in Pod {pod:?} failed - error: {error}"
            ))
        };
        let port = match super::probes::container_port(&target.container, &http.port) {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        let host = http.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.to_string());
        let host = if host.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{host}]") } else { host };
        let scheme = http.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let slash = if path.starts_with('/') { "" } else { "/" };
        let url = format!("{scheme}://{host}:{port}{slash}{path}");
        // The process-wide TLS provider (the agent installs the same one; a no-op then).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match reqwest::Client::builder().danger_accept_invalid_certs(true).no_proxy().build() {
            Ok(c) => c,
            Err(e) => return failed(e.to_string()),
        };
        let mut req = client.get(&url).timeout(budget.max(Duration::from_millis(1)));
        for header in http.http_headers.iter().flatten() {
            req = req.header(&header.name, &header.value);
        }
        // As the kubelet: only a failed request fails the hook, not the response's status.
        return match req.send().await {
            Ok(_) => Outcome::Done,
            Err(e) => failed(format!("Get {url:?}: {e}")),
        };
    }
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        if wanted > budget {
            tokio::time::sleep(budget).await;
            return Outcome::Failed("container terminated before sleep hook finished".into());
        }
        tokio::time::sleep(wanted).await;
        return Outcome::Done;
    }
    Outcome::Failed(format!("invalid handler for Container {container:?} in Pod {pod:?}: no exec, httpGet or sleep"))
}

/// A list as Go's `%v` prints a `[]string`: `[a b c]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, SleepAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::image::{PullPolicy, RegistryAuth};
    use crate::logs::{LogWriter, Rotation};
    use crate::runtime::{ExecOutput, ImageReady, RuntimeError, Started};
    use crate::sandbox::Sandbox;

    /// A runtime whose exec answers with a fixed exit code and counts its calls.
    struct FakeRuntime {
        exec_code: i32,
        exec_hooks: bool,
        calls: AtomicUsize,
    }

    struct NoPod;
    impl PodContext for NoPod {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    #[async_trait::async_trait]
    impl ContainerRuntime for FakeRuntime {
        async fn ensure_image(&self, _: &str, _: PullPolicy, _: &[RegistryAuth]) -> Result<ImageReady, RuntimeError> {
            Err(RuntimeError::Other("fake".into()))
        }
        async fn pod_context(&self, _: &str, _: &Sandbox) -> Result<Arc<dyn PodContext>, RuntimeError> {
            Ok(Arc::new(NoPod))
        }
        async fn start(&self, _: &Arc<dyn PodContext>, _: Launch) -> Result<Started, RuntimeError> {
            Err(RuntimeError::Other("fake".into()))
        }
        async fn exec(
            &self,
            _: &Arc<dyn PodContext>,
            _: &Launch,
            _: &[String],
            _: Duration,
        ) -> Result<ExecOutput, RuntimeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(ExecOutput { exit_code: self.exec_code, output: "out".into() })
        }
        fn runs_exec_hooks(&self, _: &str) -> bool {
            self.exec_hooks
        }
        fn compiles(&self) -> u64 {
            0
        }
    }

    fn target(dir: &std::path::Path, runtime: Arc<FakeRuntime>, ip: IpAddr) -> HookTarget {
        let log = Arc::new(LogWriter::create(dir.join("log"), Rotation::default()).expect("log"));
        let launch = Launch {
            name: "c".into(),
            image: "busybox".into(),
            command: None,
            args: None,
            env: Vec::new(),
            working_dir: None,
            mounts: Vec::new(),
            memory_limit: None,
            cpu_millis: None,
            http_port: None,
            log,
            scratch_dir: dir.to_path_buf(),
            linux: Default::default(),
        };
        HookTarget {
            pod_ip: ip,
            runtime,
            pod: Arc::new(NoPod),
            launch,
            container: Container { name: "c".into(), ..Container::default() },
            pod_name: "p_ns(u)".into(),
        }
    }

    fn exec(cmd: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction { command: Some(cmd.iter().map(|s| s.to_string()).collect()) }),
            ..LifecycleHandler::default()
        }
    }

    fn fake(exec_code: i32, exec_hooks: bool) -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime { exec_code, exec_hooks, calls: AtomicUsize::new(0) })
    }

    #[tokio::test]
    async fn exec_hooks_run_in_the_container_and_report_as_the_kubelet() {
        let dir = tempfile::tempdir().expect("dir");
        let ip = IpAddr::from([127, 0, 0, 1]);
        let ok = fake(0, true);
        let t = target(dir.path(), Arc::clone(&ok), ip);
        assert_eq!(run(&exec(&["true"]), &t, Duration::from_secs(1)).await, Outcome::Done);
        assert_eq!(ok.calls.load(Ordering::SeqCst), 1);
        let t = target(dir.path(), fake(3, true), ip);
        assert_eq!(
            run(&exec(&["sh", "-c", "exit 3"]), &t, Duration::from_secs(1)).await,
            Outcome::Failed(
                "Exec lifecycle hook ([sh -c exit 3]) for Container \"c\" in Pod \"p_ns(u)\" failed - error: \
                 command 'sh -c exit 3' exited with 3: , message: \"out\""
                    .into()
            )
        );
        // A Wasm container: not run at all, and said so.
        let wasm = fake(0, false);
        let t = target(dir.path(), Arc::clone(&wasm), ip);
        let outcome = run(&exec(&["true"]), &t, Duration::from_secs(1)).await;
        assert!(matches!(&outcome, Outcome::Unsupported(m) if m.contains("not supported in Wasm containers")));
        assert_eq!(wasm.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn sleep_hooks_sleep_within_their_budget() {
        let dir = tempfile::tempdir().expect("dir");
        let t = target(dir.path(), fake(0, true), IpAddr::from([127, 0, 0, 1]));
        let sleep = |seconds| LifecycleHandler { sleep: Some(SleepAction { seconds }), ..LifecycleHandler::default() };
        let began = std::time::Instant::now();
        assert_eq!(run(&sleep(1), &t, Duration::from_secs(30)).await, Outcome::Done);
        assert!(began.elapsed() >= Duration::from_secs(1));
        // A sleep past the budget ends with the budget.
        let began = std::time::Instant::now();
        assert!(matches!(run(&sleep(i64::MAX), &t, Duration::from_millis(300)).await, Outcome::Failed(_)));
        let took = began.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
        assert_eq!(run(&sleep(-1), &t, Duration::from_secs(3)).await, Outcome::Done);
    }

    #[tokio::test]
    async fn http_hooks_get_the_pod_and_fail_only_when_the_request_fails() {
        let dir = tempfile::tempdir().expect("dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(parking_lot::Mutex::new(String::new()));
        let seen = Arc::clone(&got);
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.expect("read");
            *seen.lock() = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = s.write_all(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n").await;
        });
        let t = target(dir.path(), fake(0, true), IpAddr::from([127, 0, 0, 1]));
        let http = |port: i32, path: &str| LifecycleHandler {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(port),
                path: Some(path.into()),
                ..HTTPGetAction::default()
            }),
            ..LifecycleHandler::default()
        };
        let outcome = run(&http(i32::from(port), "/hook"), &t, Duration::from_secs(5)).await;
        assert_eq!(outcome, Outcome::Done);
        server.await.expect("server");
        assert!(got.lock().starts_with("GET /hook HTTP/1.1"), "{}", got.lock());
        // Nobody listens any more: the request fails, and so does the hook.
        let outcome = run(&http(i32::from(port), "/hook"), &t, Duration::from_secs(5)).await;
        assert!(matches!(&outcome, Outcome::Failed(m) if m.starts_with("HTTP lifecycle hook (/hook)")), "{outcome:?}");
        let outcome = run(&http(70000, "/"), &t, Duration::from_secs(5)).await;
        assert!(matches!(&outcome, Outcome::Failed(m) if m.contains("out of range")), "{outcome:?}");
        // tcpSocket is no lifecycle handler.
        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(1), host: None }),
            ..LifecycleHandler::default()
        };
        assert!(matches!(run(&tcp, &t, Duration::from_secs(1)).await, Outcome::Failed(_)));
    }
}
