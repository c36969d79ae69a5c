//! The pod worker driven against fakes, in paused tokio time: a fake runtime (containers that run
//! until the test ends them, and a stop that honours or ignores SIGTERM), fake sandboxes, and a fake
//! API server that answers the worker's requests and hands each status it publishes to the test.
//! No root, no containerd, no network: each test takes milliseconds.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Msg, Worker};
use crate::config::AgentConfig;
use crate::events::Recorder;
use crate::image::{PullPolicy, RegistryAuth};
use crate::pods::log_index::LogIndex;
use crate::pods::{Deps, PodSandboxes};
use crate::runtime::{
    ContainerExit, ContainerRuntime, ExecOutput, ImageReady, Launch, PodContext, RuntimeError, Started,
};
use crate::sandbox::{PortMapping, Sandbox, SandboxError};

/// How long (virtual time) a test waits for something the worker should do.
const PATIENCE: Duration = Duration::from_secs(3600);

/// What the fake API server saw: each status the worker published, and the pod's final deletion.
enum Seen {
    Status(Value),
    Deleted,
}

/// A fake API server: status patches and the pod's deletion go to the test, events are taken,
/// lists are empty, anything else is not found.
#[derive(Clone)]
struct FakeApi {
    seen: mpsc::UnboundedSender<(Instant, Seen)>,
}

type Response = http::Response<Full<bytes::Bytes>>;

impl FakeApi {
    async fn answer(self, req: http::Request<kube::client::Body>) -> Response {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let reply = |code: u16, v: Value| {
            let mut r = http::Response::new(Full::new(bytes::Bytes::from(v.to_string())));
            *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
            r
        };
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}});
        match method {
            http::Method::PATCH if path.ends_with("/status") => {
                let _ = self.seen.send((Instant::now(), Seen::Status(body["status"].clone())));
                reply(200, pod)
            }
            http::Method::DELETE if path.contains("/pods/") => {
                let _ = self.seen.send((Instant::now(), Seen::Deleted));
                reply(200, pod)
            }
            http::Method::POST | http::Method::PATCH => reply(201, body),
            http::Method::GET if path.ends_with("/services") => {
                reply(200, json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": []}))
            }
            _ => reply(
                404,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        }
    }
}

impl tower_service::Service<http::Request<kube::client::Body>> for FakeApi {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move { Ok(api.answer(req).await) })
    }
}

/// Sandboxes that are only records: an address, no namespace.
#[derive(Default)]
struct FakeSandboxes {
    created: Mutex<Vec<String>>,
    destroyed: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl PodSandboxes for FakeSandboxes {
    async fn create(&self, pod_uid: &str, _: &[PortMapping]) -> Result<Sandbox, SandboxError> {
        self.created.lock().push(pod_uid.to_string());
        Ok(Sandbox {
            pod_uid: pod_uid.to_string(),
            container_id: format!("fake-{pod_uid}"),
            netns_path: "/nonexistent".into(),
            ip: IpAddr::from([10, 9, 0, 2]),
            gateway: IpAddr::from([10, 9, 0, 1]),
            ports: Vec::new(),
        })
    }
    async fn destroy(&self, pod_uid: &str) -> Result<(), SandboxError> {
        self.destroyed.lock().push(pod_uid.to_string());
        Ok(())
    }
    async fn sweep(&self, _: &std::collections::HashSet<String>) -> usize {
        0
    }
}

struct NoPod;
impl PodContext for NoPod {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The run of a container the fake runtime started.
struct FakeRun {
    exit: Arc<Mutex<Option<oneshot::Sender<ContainerExit>>>>,
}

/// A runtime whose containers run until the test ends them ([`FakeRuntime::exit`]) or they are
/// stopped: SIGTERM ends a container at once (exit 143), unless it is named in `stubborn`; then
/// only the SIGKILL at the end of the grace period does (exit 137).
#[derive(Default)]
struct FakeRuntime {
    /// Every start: container name and when.
    starts: Mutex<Vec<(String, Instant)>>,
    /// Every stop: container name, when, and the grace period it was given.
    stops: Arc<Mutex<Vec<(String, Instant, Duration)>>>,
    runs: Mutex<HashMap<String, FakeRun>>,
    stubborn: Mutex<Vec<String>>,
}

impl FakeRuntime {
    fn starts_of(&self, name: &str) -> Vec<Instant> {
        self.starts.lock().iter().filter(|(n, _)| n == name).map(|(_, t)| *t).collect()
    }

    fn order(&self) -> Vec<String> {
        self.starts.lock().iter().map(|(n, _)| n.clone()).collect()
    }

    fn stops_of(&self, name: &str) -> Vec<(Instant, Duration)> {
        self.stops.lock().iter().filter(|(n, ..)| n == name).map(|(_, t, g)| (*t, *g)).collect()
    }

    /// Ends container `name`'s current run with `code`.
    fn exit(&self, name: &str, code: i32) {
        let run = self.runs.lock().remove(name);
        let sender = run.and_then(|r| r.exit.lock().take());
        let sender = sender.unwrap_or_else(|| panic!("{name} is not running"));
        let _ = sender.send(ContainerExit::from_code(code));
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn ensure_image(&self, _: &str, _: PullPolicy, _: &[RegistryAuth]) -> Result<ImageReady, RuntimeError> {
        Ok(ImageReady { image_id: "sha256:fake".into(), pulled: false })
    }
    async fn pod_context(&self, _: &str, _: &Sandbox) -> Result<Arc<dyn PodContext>, RuntimeError> {
        Ok(Arc::new(NoPod))
    }
    async fn start(&self, _: &Arc<dyn PodContext>, launch: Launch) -> Result<Started, RuntimeError> {
        let name = launch.name.clone();
        self.starts.lock().push((name.clone(), Instant::now()));
        let (tx, rx) = oneshot::channel();
        let exit = Arc::new(Mutex::new(Some(tx)));
        let stubborn = self.stubborn.lock().contains(&name);
        let (stops, on_stop, stop_name) = (Arc::clone(&self.stops), Arc::clone(&exit), name.clone());
        let stop: crate::runtime::Stop = Arc::new(move |grace: Duration| {
            stops.lock().push((stop_name.clone(), Instant::now(), grace));
            let exit = Arc::clone(&on_stop);
            if stubborn {
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    if let Some(tx) = exit.lock().take() {
                        let _ = tx.send(ContainerExit::from_code(137));
                    }
                });
            } else if let Some(tx) = exit.lock().take() {
                let _ = tx.send(ContainerExit::from_code(143));
            }
        });
        self.runs.lock().insert(name.clone(), FakeRun { exit });
        Ok(Started { id: Some(format!("fake://{name}")), stop, exited: rx, stop_signal: launch.linux.stop_signal })
    }
    async fn exec(
        &self,
        _: &Arc<dyn PodContext>,
        _: &Launch,
        _: &[String],
        _: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        Ok(ExecOutput { exit_code: 0, output: String::new() })
    }
    fn compiles(&self) -> u64 {
        0
    }
}

/// One worker under test and the fakes around it.
struct Harness {
    tx: mpsc::UnboundedSender<Msg>,
    runtime: Arc<FakeRuntime>,
    sandboxes: Arc<FakeSandboxes>,
    seen: mpsc::UnboundedReceiver<(Instant, Seen)>,
    /// The last status the worker published.
    status: Value,
    pod: Pod,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(pod: Value) -> Self {
        Self::start_with(pod, &[])
    }

    /// Starts a worker for `pod`; the containers named in `stubborn` ignore SIGTERM.
    fn start_with(pod: Value, stubborn: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = AgentConfig::new("node-a", "https://127.0.0.1:1", "", "", dir.path().to_path_buf());
        config.resolv_conf = None;
        config.dns = false;
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let client = kube::Client::new(FakeApi { seen: seen_tx }, "default");
        let runtime = Arc::new(FakeRuntime::default());
        runtime.stubborn.lock().extend(stubborn.iter().map(|s| s.to_string()));
        let sandboxes = Arc::new(FakeSandboxes::default());
        let recorder = Recorder::new(client.clone(), "node-a");
        let deps = Deps::new(
            client,
            config,
            Arc::clone(&runtime) as Arc<dyn ContainerRuntime>,
            Arc::clone(&sandboxes) as Arc<dyn PodSandboxes>,
            recorder,
            Arc::new(LogIndex::default()),
        );
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        let tx = Worker::spawn(deps, pod.clone());
        Harness { tx, runtime, sandboxes, seen, status: Value::Null, pod, _dir: dir }
    }

    /// Waits until a published status satisfies `done`; returns when it was published.
    async fn until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if done(&self.status) {
                return Instant::now();
            }
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some((at, Seen::Status(s)))) => {
                    self.status = s;
                    if done(&self.status) {
                        return at;
                    }
                }
                Ok(Some((_, Seen::Deleted))) => panic!("the pod was deleted while waiting for {what}"),
                Ok(None) | Err(_) => panic!("never saw {what}; last status: {:#}", self.status),
            }
        }
    }

    /// Waits until the worker deletes the pod from the API server; returns when.
    async fn deleted(&mut self) -> Instant {
        loop {
            match tokio::time::timeout(PATIENCE, self.seen.recv()).await {
                Ok(Some((at, Seen::Deleted))) => return at,
                Ok(Some((_, Seen::Status(s)))) => self.status = s,
                Ok(None) | Err(_) => panic!("the pod was never deleted; last status: {:#}", self.status),
            }
        }
    }

    /// Waits until container `name` has been started `n` times.
    async fn started(&mut self, name: &str, n: usize) -> Instant {
        let runtime = Arc::clone(&self.runtime);
        self.until(&format!("{name} started {n} times"), |_| runtime.starts_of(name).len() >= n).await;
        self.runtime.starts_of(name)[n - 1]
    }

    /// Lets the worker run for `d` of virtual time, taking in what it publishes.
    async fn idle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(Some((_, seen))) = tokio::time::timeout_at(deadline, self.seen.recv()).await {
            if let Seen::Status(s) = seen {
                self.status = s;
            }
        }
    }

    /// Marks the pod deleted with a grace period of `grace` seconds, as the API server does.
    fn delete(&mut self, grace: i64) {
        let mut pod = self.pod.clone();
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        pod.metadata.deletion_grace_period_seconds = Some(grace);
        let _ = self.tx.send(Msg::Update(Box::new(pod)));
    }
}

fn pod(spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-1"},
        "spec": spec,
    })
}

fn container(name: &str) -> Value {
    json!({"name": name, "image": "busybox"})
}

/// `status.containerStatuses` (or another list) entry `name`.
fn of<'a>(status: &'a Value, list: &str, name: &str) -> &'a Value {
    status[list].as_array().and_then(|l| l.iter().find(|c| c["name"] == name)).unwrap_or(&Value::Null)
}

fn condition(status: &Value, kind: &str) -> String {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn running(status: &Value, name: &str) -> bool {
    of(status, "containerStatuses", name)["state"].get("running").is_some()
}

#[tokio::test(start_paused = true)]
async fn a_pod_starts_and_is_running_and_ready() {
    let mut h = Harness::start(pod(json!({"containers": [container("app")]})));
    h.until("Running and Ready", |s| s["phase"] == "Running" && condition(s, "Ready") == "True").await;
    let app = of(&h.status, "containerStatuses", "app");
    assert!(running(&h.status, "app"), "{app:#}");
    assert_eq!((app["ready"].as_bool(), app["restartCount"].as_i64()), (Some(true), Some(0)));
    assert_eq!((app["containerID"].as_str(), app["imageID"].as_str()), (Some("fake://app"), Some("sha256:fake")));
    assert_eq!(h.status["podIP"], "10.9.0.2");
    assert_eq!(h.runtime.order(), ["app"]);
    assert_eq!(*h.sandboxes.created.lock(), ["uid-1"]);
}

#[tokio::test(start_paused = true)]
async fn restart_policy_always_restarts_with_back_off() {
    let mut h = Harness::start(pod(json!({"containers": [container("app")]})));
    h.started("app", 1).await;
    // The first restart is immediate, then 10 s, then 20 s (the kubelet's back-off).
    let mut gaps = Vec::new();
    for n in 1..=3 {
        h.until("app running", |s| running(s, "app")).await;
        let exited = Instant::now();
        h.runtime.exit("app", 1);
        if n > 1 {
            h.until("CrashLoopBackOff", |s| {
                of(s, "containerStatuses", "app")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            })
            .await;
            let app = of(&h.status, "containerStatuses", "app");
            assert_eq!(app["lastState"]["terminated"]["exitCode"], 1, "{app:#}");
            assert_eq!(h.status["phase"], "Running", "a container in back-off keeps the pod Running");
        }
        let restarted = h.started("app", n + 1).await;
        gaps.push((restarted - exited).as_secs());
    }
    assert_eq!(gaps, [0, 10, 20]);
    h.until("restartCount 3", |s| of(s, "containerStatuses", "app")["restartCount"] == 3).await;
}

#[tokio::test(start_paused = true)]
async fn on_failure_restarts_only_failures_and_never_restarts_nothing() {
    let mut h = Harness::start(pod(json!({"restartPolicy": "OnFailure", "containers": [container("app")]})));
    h.started("app", 1).await;
    h.until("app running", |s| running(s, "app")).await;
    h.runtime.exit("app", 3);
    h.started("app", 2).await;
    h.until("app running again", |s| running(s, "app")).await;
    h.runtime.exit("app", 0);
    h.until("Succeeded", |s| s["phase"] == "Succeeded").await;
    h.idle(Duration::from_secs(600)).await;
    assert_eq!(h.runtime.starts_of("app").len(), 2, "a success is not restarted under OnFailure");
    assert_eq!(*h.sandboxes.destroyed.lock(), ["uid-1"], "a finished pod's sandbox is released");

    let mut h = Harness::start(pod(json!({"restartPolicy": "Never", "containers": [container("app")]})));
    h.started("app", 1).await;
    h.until("app running", |s| running(s, "app")).await;
    h.runtime.exit("app", 1);
    h.until("Failed", |s| s["phase"] == "Failed").await;
    let app = of(&h.status, "containerStatuses", "app");
    assert_eq!(app["state"]["terminated"]["reason"], "Error", "{app:#}");
    h.idle(Duration::from_secs(600)).await;
    assert_eq!(h.runtime.starts_of("app").len(), 1, "nothing is restarted under Never");
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_one_after_the_other_before_the_app() {
    let spec = json!({"initContainers": [container("first"), container("second")], "containers": [container("app")]});
    let mut h = Harness::start(pod(spec));
    h.started("first", 1).await;
    h.until("Initialized False, Pending", |s| s["phase"] == "Pending" && condition(s, "Initialized") == "False").await;
    assert_eq!(h.runtime.order(), ["first"]);
    // A failed init container runs again (restartPolicy Always) before the next one starts.
    h.runtime.exit("first", 1);
    h.started("first", 2).await;
    h.idle(Duration::from_secs(1)).await;
    assert_eq!(h.runtime.order(), ["first", "first"]);
    h.runtime.exit("first", 0);
    h.started("second", 1).await;
    assert_eq!(h.runtime.order(), ["first", "first", "second"]);
    h.runtime.exit("second", 0);
    h.started("app", 1).await;
    h.until("Running and Initialized", |s| s["phase"] == "Running" && condition(s, "Initialized") == "True").await;
    let first = of(&h.status, "initContainerStatuses", "first");
    assert_eq!(first["state"]["terminated"]["reason"], "Completed", "{first:#}");
    assert_eq!(h.runtime.order(), ["first", "first", "second", "app"]);
}

#[tokio::test(start_paused = true)]
async fn a_native_sidecar_keeps_running_beside_the_app() {
    let mut sidecar = container("sidecar");
    sidecar["restartPolicy"] = json!("Always");
    let spec = json!({
        "restartPolicy": "Never",
        "initContainers": [sidecar, container("setup")],
        "containers": [container("app")],
    });
    let mut h = Harness::start(pod(spec));
    // The sidecar starts first and the next init container does not wait for it to exit.
    h.started("setup", 1).await;
    assert_eq!(h.runtime.order(), ["sidecar", "setup"]);
    h.runtime.exit("setup", 0);
    h.started("app", 1).await;
    h.until("Running and Ready", |s| s["phase"] == "Running" && condition(s, "Ready") == "True").await;
    let sc = of(&h.status, "initContainerStatuses", "sidecar");
    assert!(sc["state"].get("running").is_some() && sc["ready"] == true, "{sc:#}");
    assert!(h.runtime.stops_of("sidecar").is_empty(), "the sidecar was stopped");
    // A sidecar that exits runs again, even under restartPolicy Never, and the app is left alone.
    h.runtime.exit("sidecar", 2);
    h.started("sidecar", 2).await;
    h.until("the sidecar running again", |s| {
        of(s, "initContainerStatuses", "sidecar")["state"].get("running").is_some()
    })
    .await;
    assert_eq!(h.runtime.starts_of("app").len(), 1);
    assert_eq!(h.status["phase"], "Running");
    // The app's end ends the pod; the sidecar is stopped then.
    h.runtime.exit("app", 0);
    h.until("Succeeded", |s| s["phase"] == "Succeeded").await;
    h.idle(Duration::from_secs(1)).await;
    assert_eq!(h.runtime.stops_of("sidecar").len(), 1, "the sidecar is stopped once the pod is done");
}

#[tokio::test(start_paused = true)]
async fn deletion_stops_then_kills_after_the_grace_period() {
    // A container that ignores SIGTERM: killed when the grace period ends, then the pod is removed.
    let mut h = Harness::start_with(pod(json!({"containers": [container("app")]})), &["app"]);
    h.until("Running", |s| running(s, "app")).await;
    h.delete(7);
    let deleted = h.deleted().await;
    let stops = h.runtime.stops_of("app");
    assert_eq!(stops.len(), 1, "{stops:?}");
    let (stopped, grace) = stops[0];
    assert_eq!(grace, Duration::from_secs(7), "the stop carries the pod's deletion grace period");
    assert_eq!((deleted - stopped).as_secs(), 7, "removed once SIGKILL ended it");
    assert_eq!(*h.sandboxes.destroyed.lock(), ["uid-1"]);

    // One that exits on SIGTERM: the pod is removed at once.
    let mut h = Harness::start(pod(json!({"containers": [container("app")]})));
    h.until("Running", |s| running(s, "app")).await;
    h.delete(30);
    let deleted = h.deleted().await;
    let (stopped, grace) = h.runtime.stops_of("app")[0];
    assert_eq!(grace, Duration::from_secs(30));
    assert!(deleted - stopped < Duration::from_secs(1), "{:?}", deleted - stopped);
}

#[tokio::test(start_paused = true)]
async fn the_stop_signal_the_runtime_chose_is_in_the_status() {
    let mut app = container("app");
    app["lifecycle"] = json!({"stopSignal": "SIGUSR1"});
    let mut h = Harness::start(pod(json!({"os": {"name": "linux"}, "containers": [app, container("plain")]})));
    h.until("both running", |s| running(s, "app") && running(s, "plain")).await;
    assert_eq!(of(&h.status, "containerStatuses", "app")["stopSignal"], "SIGUSR1");
    assert!(of(&h.status, "containerStatuses", "plain").get("stopSignal").is_none(), "{:#}", h.status);
    h.runtime.exit("app", 0);
    h.until("app terminated", |s| of(s, "containerStatuses", "app")["lastState"].get("terminated").is_some()).await;
    assert_eq!(of(&h.status, "containerStatuses", "app")["stopSignal"], "SIGUSR1", "kept after the run");
}

#[tokio::test(start_paused = true)]
async fn on_deletion_native_sidecars_stop_after_the_app_with_what_is_left_of_the_grace() {
    let spec = |grace: i64| {
        let mut sidecar = container("sidecar");
        sidecar["restartPolicy"] = json!("Always");
        pod(
            json!({"terminationGracePeriodSeconds": grace, "initContainers": [sidecar], "containers": [container("app")]}),
        )
    };
    // An app that ignores SIGTERM uses the whole period: the sidecar then gets the 2 s minimum.
    let mut h = Harness::start_with(spec(10), &["app"]);
    h.until("both running", |s| running(s, "app") && condition(s, "Ready") == "True").await;
    h.delete(10);
    let deleted = h.deleted().await;
    let (app_stop, app_grace) = h.runtime.stops_of("app")[0];
    let (sidecar_stop, sidecar_grace) = h.runtime.stops_of("sidecar")[0];
    assert_eq!(app_grace, Duration::from_secs(10));
    assert_eq!((sidecar_stop - app_stop).as_secs(), 10, "the sidecar is stopped once the app is gone");
    assert_eq!(sidecar_grace, Duration::from_secs(2));
    assert_eq!((deleted - app_stop).as_secs(), 10);

    // An app that exits on SIGTERM: the sidecar is stopped right after, with the rest of the period.
    let mut h = Harness::start(spec(30));
    h.until("both running", |s| running(s, "app") && condition(s, "Ready") == "True").await;
    h.delete(30);
    h.deleted().await;
    let (app_stop, _) = h.runtime.stops_of("app")[0];
    let (sidecar_stop, sidecar_grace) = h.runtime.stops_of("sidecar")[0];
    assert!(sidecar_stop >= app_stop && sidecar_stop - app_stop < Duration::from_secs(1));
    assert_eq!(sidecar_grace, Duration::from_secs(30));
}
