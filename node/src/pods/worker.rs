//! One pod's worker: drives the pod from bound to running to gone (sandbox, volumes, images, init
//! containers in order, containers, postStart hooks, restarts with back-off, probes, deadline, graceful
//! deletion with preStop hooks and the pod's grace period) and reports its status. All of a pod's state
//! changes happen on this one task; hooks and stops run on tasks of their own that report back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
// tokio's clock, so that paused time drives back-offs, deadlines and grace periods in the unit tests.
use tokio::time::Instant;
use tracing::Instrument;

use super::backoff::Backoff;
use super::env::{self, PodFacts};
use super::grace;
use super::hooks::{self, Hook, HookTarget, Outcome};
use super::lookup::Lookup;
use super::probes::{self, ProbeEvent, ProbeTarget};
use super::service_env;
use super::status::{self, ContainerView, State, Terminated};
use super::volumes::{self, PodVolumes};
use super::Deps;
use crate::events::Kind;
use crate::image::PullPolicy;
use crate::logs::{LogWriter, Rotation};
use crate::runtime::{ContainerExit, Launch, LinuxExtras, PodContext};
use crate::sandbox::{PortMapping, Protocol, Sandbox};

/// What the worker hears about.
pub enum Msg {
    /// The pod as the API server has it now.
    Update(Box<Pod>),
    /// The pod is gone from the API server.
    Gone,
    /// The agent stops: stop the containers but keep the sandbox for adoption.
    Shutdown,
    Exited {
        name: String,
        run: u64,
        exit: ContainerExit,
    },
    Probe {
        name: String,
        run: u64,
        event: ProbeEvent,
    },
    /// A run's postStart hook ended.
    PostStart {
        name: String,
        run: u64,
        outcome: Outcome,
    },
}

/// How long containers get to stop when the agent itself stops (no hooks: the pod lives on).
const AGENT_STOP_GRACE: Duration = Duration::from_secs(10);
/// What the worker adds to a grace period while it waits for SIGKILL to take effect.
const KILL_SLACK: Duration = Duration::from_secs(10);

struct Run {
    id: u64,
    started_at: String,
    since: Instant,
    stop: crate::runtime::Stop,
    probes: Option<tokio::task::AbortHandle>,
    /// The postStart hook while it runs (the container is not Running until it ends).
    post_start: Option<tokio::task::AbortHandle>,
    /// The stop under way (its preStop hook, then SIGTERM and SIGKILL), once asked for.
    stopping: Option<tokio::task::AbortHandle>,
    running_tx: watch::Sender<bool>,
    log: Arc<LogWriter>,
    /// What the run was started with (the hooks' and probes' target).
    launch: Launch,
    /// The run's `containerID` in the pod's status.
    container_id: String,
}

impl Run {
    fn abort_tasks(&self) {
        for task in [&self.probes, &self.post_start, &self.stopping].into_iter().flatten() {
            task.abort();
        }
    }
}

struct Ctr {
    spec: Container,
    image_id: String,
    state: State,
    last: Option<Terminated>,
    restarts: i32,
    backoff: Backoff,
    pull_backoff: Backoff,
    run: Option<Run>,
    ready: bool,
    started: bool,
    ever_ran: bool,
    /// An ephemeral container (`kubectl debug`): started once, never restarted, never ready, and
    /// reported in `ephemeralContainerStatuses`.
    ephemeral: bool,
    /// The stop signal the runtime reported for the latest run (`stopSignal` in the status).
    stop_signal: Option<String>,
    /// A native sidecar: an init container with `restartPolicy: Always`. It starts in the init
    /// order, the next container starts once it is started (not once it exits), it is restarted
    /// whatever the pod's restart policy, and it is probed and counts for the pod's readiness.
    sidecar: bool,
}

impl Ctr {
    fn new(spec: Container, previous: Option<&Value>) -> Self {
        let restarts = previous
            .and_then(|p| p["restartCount"].as_i64())
            .map_or(0, |n| i32::try_from(n.max(0)).unwrap_or(i32::MAX));
        // After an agent restart the old run is gone with the old process: it shows as the last state.
        let last = previous.and_then(|p| {
            let running = p["state"].get("running")?;
            Some(Terminated {
                exit_code: 137,
                reason: "Unknown".into(),
                message: Some("the node agent restarted".into()),
                started_at: running["startedAt"].as_str().unwrap_or_default().to_string(),
                finished_at: now(),
                container_id: p["containerID"].as_str().unwrap_or_default().to_string(),
            })
        });
        let image_id = previous.and_then(|p| p["imageID"].as_str()).unwrap_or_default().to_string();
        let stop_signal = previous.and_then(|p| p["stopSignal"].as_str()).map(str::to_string);
        let done = previous.and_then(|p| Terminated::from_status(&p["state"]));
        let previous_last = previous.and_then(|p| Terminated::from_status(&p["lastState"]));
        if let Some(t) = done {
            return Self {
                spec,
                image_id,
                state: State::Terminated(t),
                last: previous_last,
                restarts,
                backoff: Backoff::default(),
                pull_backoff: Backoff::default(),
                run: None,
                ready: false,
                started: false,
                ever_ran: true,
                ephemeral: false,
                stop_signal,
                sidecar: false,
            };
        }
        let last = last.or(previous_last);
        let ever_ran = last.is_some();
        Self {
            spec,
            image_id,
            state: State::Waiting { reason: "ContainerCreating".into(), message: None },
            last,
            restarts,
            backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            run: None,
            ready: false,
            started: false,
            ever_ran,
            ephemeral: false,
            stop_signal,
            sidecar: false,
        }
    }

    /// An init container's record; one with `restartPolicy: Always` is a native sidecar.
    fn init(spec: Container, previous: Option<&Value>) -> Self {
        let sidecar = spec.restart_policy.as_deref() == Some("Always");
        Self { sidecar, ..Self::new(spec, previous) }
    }

    /// Whether a probe-less container, or one whose probes said so, can be ready: app containers
    /// and native sidecars, never init containers that run to completion nor ephemeral ones.
    fn serves(&self, init: bool) -> bool {
        (!init || self.sidecar) && !self.ephemeral
    }

    /// An ephemeral container's record: its spec as a container's, and what `previous` (its last
    /// reported status) says. One that ran before the agent restarted is over: it never runs again.
    fn ephemeral(spec: Container, previous: Option<&Value>) -> Self {
        let mut c = Self::new(spec, previous);
        c.ephemeral = true;
        if matches!(c.state, State::Waiting { .. }) {
            if let Some(t) = c.last.take() {
                c.state = State::Terminated(t);
            }
        }
        c
    }

    fn view(&self) -> ContainerView {
        ContainerView {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: match &self.state {
                State::Terminated(t) => Some(t.container_id.clone()),
                _ => self
                    .run
                    .as_ref()
                    .map(|r| r.container_id.clone())
                    .or_else(|| self.last.as_ref().map(|t| t.container_id.clone())),
            },
            state: self.state.clone(),
            last: self.last.clone(),
            restart_count: self.restarts,
            ready: self.ready,
            started: self.started,
            stop_signal: self.stop_signal.clone(),
        }
    }

    /// The `containerID` of an in-process Wasm run, which has no runtime id of its own.
    fn wasm_container_id(&self) -> String {
        format!("wasm://{}-{}", self.spec.name, self.restarts)
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }
}

pub struct Worker {
    deps: Arc<Deps>,
    pod: Pod,
    uid: String,
    ns: String,
    name: String,
    tx: mpsc::UnboundedSender<Msg>,
    sandbox: Option<Sandbox>,
    ctx: Option<Arc<dyn PodContext>>,
    volumes: Option<PodVolumes>,
    init: Vec<Ctr>,
    containers: Vec<Ctr>,
    start_time: Option<String>,
    started: Instant,
    failed: Option<(String, String)>,
    retry_at: Option<Instant>,
    published: Option<Value>,
    runs: u64,
    gone: bool,
    released: bool,
}

/// Whether a container that ended with `exit_code` runs again under the pod's `restartPolicy`
/// (an init container that succeeded never does).
fn restarts(policy: &str, init: bool, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => exit_code != 0 || !init,
    }
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Worker {
    pub fn spawn(deps: Arc<Deps>, pod: Pod) -> mpsc::UnboundedSender<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let previous = pod.status.as_ref().map(|s| serde_json::to_value(s).unwrap_or_default());
        let find = |list: &str, name: &str| -> Option<Value> {
            previous.as_ref()?.get(list)?.as_array()?.iter().find(|c| c["name"] == name).cloned()
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Ctr::init(c.clone(), find("initContainerStatuses", &c.name).as_ref()))
            .collect();
        let mut containers: Vec<Ctr> =
            spec.containers.iter().map(|c| Ctr::new(c.clone(), find("containerStatuses", &c.name).as_ref())).collect();
        for (c, spec) in super::ephemeral::specs(&pod) {
            containers.push(Ctr::ephemeral(spec, find("ephemeralContainerStatuses", &c).as_ref()));
        }
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.to_string());
        let span = tracing::info_span!("pod", pod = %format!("{ns}/{name}"));
        let worker = Worker {
            deps,
            pod,
            uid,
            ns,
            name,
            tx: tx.clone(),
            sandbox: None,
            ctx: None,
            volumes: None,
            init,
            containers,
            start_time,
            started: Instant::now(),
            failed: None,
            retry_at: None,
            published: previous.map(|p| json!(p)),
            runs: 0,
            gone: false,
            released: false,
        };
        tokio::spawn(worker.run(rx).instrument(span));
        tx
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut shutdown = false;
        loop {
            if self.terminating() || self.gone {
                self.terminate(&mut rx).await;
                return;
            }
            self.reconcile().await;
            self.publish().await;
            let wake = self.retry_at.take();
            let msg = match wake {
                Some(at) => tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(at) => continue,
                },
                None => rx.recv().await,
            };
            let Some(msg) = msg else { break };
            let mut next = Some(msg);
            while let Some(m) = next {
                match m {
                    Msg::Shutdown => shutdown = true,
                    m => self.handle(m),
                }
                next = rx.try_recv().ok();
            }
            if shutdown {
                break;
            }
        }
        self.stop_all("the node agent is stopping");
    }

    fn terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Update(pod) => {
                self.pod = *pod;
                self.add_ephemeral();
            }
            Msg::Gone => self.gone = true,
            Msg::Shutdown => {}
            Msg::Exited { name, run, exit } => self.exited(&name, run, exit),
            Msg::Probe { name, run, event } => self.probe(&name, run, event),
            Msg::PostStart { name, run, outcome } => self.post_start_ended(&name, run, outcome),
        }
    }

    /// Takes up the ephemeral containers added to the pod since the worker last looked.
    fn add_ephemeral(&mut self) {
        for (name, spec) in super::ephemeral::specs(&self.pod) {
            if !self.containers.iter().any(|c| c.spec.name == name) {
                tracing::info!(container = %name, "ephemeral container added");
                self.containers.push(Ctr::ephemeral(spec, None));
            }
        }
    }

    /// Where container `name`'s current run `run` is: (init, index).
    fn find_run(&self, name: &str, run: u64) -> Option<(bool, usize)> {
        let has = |c: &Ctr| c.spec.name == name && c.run.as_ref().is_some_and(|r| r.id == run);
        if let Some(i) = self.init.iter().position(has) {
            return Some((true, i));
        }
        self.containers.iter().position(has).map(|i| (false, i))
    }

    /// A postStart hook ended: the container runs on (or, if the hook failed, is killed and restarted
    /// per the restart policy, as the kubelet does).
    fn post_start_ended(&mut self, name: &str, run: u64, outcome: Outcome) {
        let Some((init, i)) = self.find_run(name, run) else { return };
        if let Some(r) = &mut self.ctr(init, i).run {
            r.post_start = None;
        }
        match outcome {
            Outcome::Done => self.begin_running(init, i),
            Outcome::Unsupported(message) => {
                self.event(Some(name), Kind::Warning, Hook::PostStart.failed_reason(), &message);
                self.begin_running(init, i);
            }
            Outcome::Failed(message) => {
                tracing::info!(container = name, %message, "postStart hook failed");
                self.event(Some(name), Kind::Warning, Hook::PostStart.failed_reason(), &message);
                self.event(Some(name), Kind::Normal, "Killing", "FailedPostStartHook");
                let seconds = grace::seconds(&self.pod, None);
                self.kill(init, i, seconds);
                self.ctr(init, i).state =
                    State::Waiting { reason: "PostStartHookError".into(), message: Some(message) };
            }
        }
    }

    /// The run of container `i` is Running: its probes start (after its postStart hook, if any).
    fn begin_running(&mut self, init: bool, i: usize) {
        let (ctx, ip) = (self.ctx.clone(), self.sandbox.as_ref().map(|sb| sb.ip));
        let runtime = Arc::clone(&self.deps.runtime);
        let tx = self.tx.clone();
        let c = self.ctr(init, i);
        let (spec, serves) = (c.spec.clone(), c.serves(init));
        let Some(r) = &mut c.run else { return };
        let has_probes =
            serves && (spec.startup_probe.is_some() || spec.liveness_probe.is_some() || spec.readiness_probe.is_some());
        if let (Some(ctx), Some(ip), true) = (ctx, ip, has_probes) {
            let target = ProbeTarget { pod_ip: ip, runtime, pod: ctx, launch: r.launch.clone() };
            let (probe_name, run_id) = (spec.name.clone(), r.id);
            let report = move |event| {
                let _ = tx.send(Msg::Probe { name: probe_name.clone(), run: run_id, event });
            };
            r.probes = Some(tokio::spawn(probes::run(spec.clone(), target, report)).abort_handle());
        }
        c.state = State::Running { started_at: r.started_at.clone() };
        c.started = !has_probes || spec.startup_probe.is_none() || !serves;
        c.ready = serves && !has_probes;
    }

    /// Stops container `i`'s run within a grace period of `seconds`: its preStop hook first (if it has
    /// one and the period is not zero), then SIGTERM, then SIGKILL after what is left of the period
    /// (at least 2 s after a hook). A run already stopping is left to its stop.
    fn kill(&mut self, init: bool, i: usize, seconds: i64) {
        let target = self.hook_target(init, i);
        let (pod, recorder) = (self.pod.clone(), self.deps.recorder.clone());
        let c = self.ctr(init, i);
        let (name, pre_stop) = (c.spec.name.clone(), c.spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()));
        let Some(r) = &mut c.run else { return };
        if r.stopping.is_some() {
            return;
        }
        for task in [r.probes.take(), r.post_start.take()].into_iter().flatten() {
            task.abort();
        }
        c.ready = false;
        let period = grace::duration(seconds);
        let stop = Arc::clone(&r.stop);
        let span = tracing::info_span!("stop", container = %name, grace_s = seconds);
        let task = async move {
            let mut used = None;
            if let (Some(handler), Some(target), false) = (pre_stop, target, period.is_zero()) {
                let began = Instant::now();
                match tokio::time::timeout(period, hooks::run(&handler, &target, period)).await {
                    Ok(Outcome::Done) => {}
                    Ok(Outcome::Failed(message) | Outcome::Unsupported(message)) => {
                        recorder.record(&pod, Some(&name), Kind::Warning, Hook::PreStop.failed_reason(), &message);
                    }
                    Err(_) => tracing::warn!("the preStop hook did not complete within the grace period"),
                }
                used = Some(began.elapsed());
            }
            let rest = grace::after_hook(period, used);
            tracing::debug!(sigterm_to_sigkill_ms = u64::try_from(rest.as_millis()).unwrap_or(u64::MAX), "stopping");
            stop(rest);
        };
        r.stopping = Some(tokio::spawn(task.instrument(span)).abort_handle());
    }

    /// What container `i`'s hooks reach (`None` without a run or a sandbox).
    fn hook_target(&self, init: bool, i: usize) -> Option<HookTarget> {
        let c = if init { self.init.get(i)? } else { self.containers.get(i)? };
        let r = c.run.as_ref()?;
        Some(HookTarget {
            pod_ip: self.sandbox.as_ref()?.ip,
            runtime: Arc::clone(&self.deps.runtime),
            pod: self.ctx.clone()?,
            launch: r.launch.clone(),
            container: c.spec.clone(),
            pod_name: format!("{}_{}({})", self.name, self.ns, self.uid),
        })
    }

    /// Stops every running container within the pod's grace period, preStop hooks first.
    fn kill_all(&mut self) {
        let seconds = grace::seconds(&self.pod, None);
        for (init, n) in [(true, self.init.len()), (false, self.containers.len())] {
            for i in 0..n {
                self.kill(init, i, seconds);
            }
        }
    }

    fn ctr_mut(&mut self, name: &str, run: u64) -> Option<&mut Ctr> {
        self.init
            .iter_mut()
            .chain(self.containers.iter_mut())
            .find(|c| c.spec.name == name && c.run.as_ref().is_some_and(|r| r.id == run))
    }

    fn restart_policy(&self) -> String {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
    }

    fn exited(&mut self, name: &str, run: u64, exit: ContainerExit) {
        let policy = self.restart_policy();
        let is_init = self.init.iter().any(|i| i.spec.name == name);
        let Some(c) = self.ctr_mut(name, run) else { return };
        // A native sidecar runs again whatever the pod's policy says.
        let policy = if c.sidecar { "Always".to_string() } else { policy };
        let is_init = is_init && !c.sidecar;
        let Some(r) = c.run.take() else { return };
        r.abort_tasks();
        let _ = r.log.flush();
        let _ = r.running_tx.send(false);
        tracing::info!(container = name, code = exit.exit_code, reason = %exit.reason, "container exited");
        if restarts(&policy, is_init, exit.exit_code) {
            c.backoff.failed(r.since.elapsed(), Instant::now());
        }
        c.ready = false;
        c.started = false;
        c.state = State::Terminated(Terminated {
            exit_code: exit.exit_code,
            reason: exit.reason,
            message: exit.message,
            started_at: r.started_at,
            finished_at: now(),
            container_id: r.container_id.clone(),
        });
    }

    fn probe(&mut self, name: &str, run: u64, event: ProbeEvent) {
        let pod = self.pod.clone();
        let recorder = self.deps.recorder.clone();
        let Some(c) = self.ctr_mut(name, run) else { return };
        match event {
            ProbeEvent::Started => c.started = true,
            ProbeEvent::Ready(ready) => c.ready = ready && c.started,
            ProbeEvent::Failure { probe, message } => recorder.record(
                &pod,
                Some(name),
                Kind::Warning,
                "Unhealthy",
                &format!("{probe} probe failed: {message}"),
            ),
            ProbeEvent::LivenessFailed(_) | ProbeEvent::StartupFailed(_) => {
                let liveness = matches!(event, ProbeEvent::LivenessFailed(_));
                let which = if liveness { "liveness" } else { "startup" };
                recorder.record(
                    &pod,
                    Some(name),
                    Kind::Normal,
                    "Killing",
                    &format!("Container {name} failed {which} probe, will be restarted"),
                );
                let probe = if liveness { c.spec.liveness_probe.as_ref() } else { c.spec.startup_probe.as_ref() };
                let seconds = grace::seconds(&pod, probe.and_then(|p| p.termination_grace_period_seconds));
                if let Some((init, i)) = self.find_run(name, run) {
                    self.kill(init, i, seconds);
                }
            }
        }
    }

    /// Stops every running container at once (SIGTERM, SIGKILL after [`AGENT_STOP_GRACE`]), without
    /// hooks: the agent stops and the pod lives on.
    fn stop_all(&mut self, why: &str) {
        for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
            if let Some(r) = &c.run {
                tracing::debug!(container = %c.spec.name, why, "stopping");
                r.abort_tasks();
                (r.stop)(AGENT_STOP_GRACE);
            }
        }
    }

    /// Reconciles again after `delay`; a delay past what the clock can represent (a deadline of
    /// `i64::MAX` seconds) is no retry at all.
    fn retry_in(&mut self, delay: Duration) {
        let Some(at) = Instant::now().checked_add(delay) else { return };
        self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
    }

    fn event(&self, container: Option<&str>, kind: Kind, reason: &str, message: &str) {
        self.deps.recorder.record(&self.pod, container, kind, reason, message);
    }

    fn is_terminal(&self) -> bool {
        matches!(self.phase(), "Succeeded" | "Failed")
    }

    /// Whether the pod is initialized: every init container succeeded and every native sidecar has
    /// started; once an app container has run, it stays so (a sidecar's restart does not undo it).
    fn init_done(&self) -> bool {
        self.initialized()
            || self.init.iter().all(|c| {
                if c.sidecar {
                    c.run.is_some() && c.started && matches!(c.state, State::Running { .. })
                } else {
                    c.succeeded()
                }
            })
    }

    /// Whether an app container has run (so the init containers are behind the pod).
    fn initialized(&self) -> bool {
        self.containers.iter().any(|c| c.ever_ran && !c.ephemeral)
    }

    fn phase(&self) -> &'static str {
        if self.failed.is_some() {
            return "Failed";
        }
        // Native sidecars are restarted whatever happens: they never fail the pod.
        let init: Vec<_> = self.init.iter().filter(|c| !c.sidecar).map(Ctr::view).collect();
        let containers: Vec<_> = self.containers.iter().filter(|c| !c.ephemeral).map(Ctr::view).collect();
        status::phase(&self.restart_policy(), &init, &containers, self.init_done())
    }

    /// Moves the pod forward as far as it can go now.
    async fn reconcile(&mut self) {
        if self.is_terminal() {
            self.release().await;
            return;
        }
        if self.start_time.is_none() {
            self.start_time = Some(now());
        }
        if let Some(deadline) = self.pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) {
            let elapsed = self.started.elapsed();
            let limit = Duration::from_secs(u64::try_from(deadline).unwrap_or(0));
            if elapsed >= limit {
                let message = format!("Pod was active on the node longer than the specified deadline ({deadline}s)");
                self.event(None, Kind::Normal, "DeadlineExceeded", &message);
                self.kill_all();
                self.failed = Some(("DeadlineExceeded".into(), message));
                return;
            }
            self.retry_in(limit - elapsed);
        }
        if !self.ensure_sandbox().await || !self.ensure_volumes().await {
            return;
        }
        let initialized = self.initialized();
        for i in 0..self.init.len() {
            let c = &self.init[i];
            if c.sidecar {
                if c.run.is_none() {
                    self.maybe_start(true, i).await;
                }
                let c = &self.init[i];
                // The next container waits until the sidecar is started (its startup probe passed).
                if initialized || (c.run.is_some() && c.started && matches!(c.state, State::Running { .. })) {
                    continue;
                }
                return;
            }
            if c.succeeded() {
                continue;
            }
            if c.run.is_some() {
                return;
            }
            if c.ever_ran && self.restart_policy() == "Never" {
                return;
            }
            self.maybe_start(true, i).await;
            return;
        }
        for i in 0..self.containers.len() {
            let c = &self.containers[i];
            if c.run.is_some() {
                continue;
            }
            if c.ephemeral && c.ever_ran {
                // Ephemeral containers run once (kubelet: never restarted).
                continue;
            }
            if c.ever_ran {
                let code = match &c.state {
                    State::Terminated(t) => t.exit_code,
                    _ => c.last.as_ref().map_or(1, |t| t.exit_code),
                };
                if !restarts(&self.restart_policy(), false, code) {
                    continue;
                }
            }
            self.maybe_start(false, i).await;
        }
    }

    async fn ensure_sandbox(&mut self) -> bool {
        if self.ctx.is_some() {
            return true;
        }
        if self.sandbox.is_none() {
            let ports: Vec<PortMapping> = self
                .pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| {
                    let host_port = u16::try_from(p.host_port?).ok().filter(|hp| *hp > 0)?;
                    Some(PortMapping {
                        host_port,
                        container_port: u16::try_from(p.container_port).ok()?,
                        protocol: if p.protocol.as_deref() == Some("UDP") { Protocol::Udp } else { Protocol::Tcp },
                        host_ip: p.host_ip.as_deref().and_then(|ip| ip.parse().ok()),
                    })
                })
                .collect();
            match self.deps.sandboxes.create(&self.uid, &ports).await {
                Ok(sb) => self.sandbox = Some(sb),
                Err(e) => return self.sandbox_failed(&e),
            }
        }
        let Some(sb) = &self.sandbox else { return false };
        match self.deps.runtime.pod_context(&self.uid, sb).await {
            Ok(ctx) => {
                self.ctx = Some(ctx);
                true
            }
            Err(e) => self.sandbox_failed(&e),
        }
    }

    /// Reports a sandbox that could not be made and retries soon; always `false` (not ready).
    fn sandbox_failed(&mut self, e: &dyn std::fmt::Display) -> bool {
        self.event(None, Kind::Warning, "FailedCreatePodSandBox", &format!("Failed to create pod sandbox: {e}"));
        self.retry_in(Duration::from_secs(5));
        false
    }

    fn facts(&self) -> PodFacts<'_> {
        PodFacts {
            pod: &self.pod,
            pod_ip: self.sandbox.as_ref().map(|s| s.ip.to_string()),
            host_ip: self.deps.config.node_ip.to_string(),
            node_name: &self.deps.config.node_name,
        }
    }

    fn pod_dir(&self) -> PathBuf {
        self.deps.pods_root.join(&self.uid)
    }

    async fn ensure_volumes(&mut self) -> bool {
        if self.volumes.is_some() {
            self.refresh_tokens().await;
            return true;
        }
        let volumes = self.pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
        let lookup = Lookup::new(self.deps.client.clone(), &self.ns);
        let root = self.pod_dir().join("volumes");
        match PodVolumes::prepare(&volumes, &root, &self.facts(), &lookup).await {
            Ok(v) => {
                self.volumes = Some(v);
                self.refresh_tokens().await;
                true
            }
            Err(e) => {
                self.event(None, Kind::Warning, "FailedMount", &format!("MountVolume.SetUp failed: {e}"));
                for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
                    c.state = State::Waiting { reason: "ContainerCreating".into(), message: None };
                }
                self.retry_in(Duration::from_secs(5));
                false
            }
        }
    }

    /// Renews projected ServiceAccount tokens that are due and wakes the worker for the next one. A
    /// failed renewal is retried soon; the old token stays in place until it expires.
    async fn refresh_tokens(&mut self) {
        let Some(mut volumes) = self.volumes.take() else { return };
        let lookup = Lookup::new(self.deps.client.clone(), &self.ns);
        let result = volumes.refresh_tokens(&self.facts(), &lookup).await;
        self.volumes = Some(volumes);
        match result {
            Ok(Some(next)) => self.retry_in(next.saturating_duration_since(std::time::Instant::now())),
            Ok(None) => {}
            Err(e) => {
                self.event(None, Kind::Warning, "FailedMount", &format!("MountVolume.SetUp failed: {e}"));
                self.retry_in(Duration::from_secs(5));
            }
        }
    }

    fn ctr(&mut self, init: bool, i: usize) -> &mut Ctr {
        if init {
            &mut self.init[i]
        } else {
            &mut self.containers[i]
        }
    }

    /// Starts container `i` unless its back-off says to wait.
    async fn maybe_start(&mut self, init: bool, i: usize) {
        let now_i = Instant::now();
        let (name, backoff, pull_backoff) = {
            let c = self.ctr(init, i);
            (c.spec.name.clone(), c.backoff.waiting(now_i), c.pull_backoff.waiting(now_i))
        };
        if let Some(until) = backoff {
            let pod_name = self.name.clone();
            let secs = until.saturating_duration_since(now_i).as_secs().max(1);
            let c = self.ctr(init, i);
            if let State::Terminated(t) = &c.state {
                c.last = Some(t.clone());
            }
            let already = matches!(&c.state, State::Waiting { reason, .. } if reason == "CrashLoopBackOff");
            c.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!("back-off {secs}s restarting failed container={name} pod={pod_name}")),
            };
            if !already {
                self.event(Some(&name), Kind::Warning, "BackOff", "Back-off restarting failed container");
            }
            self.retry_in(until - now_i);
            return;
        }
        if let Some(until) = pull_backoff {
            let image = self.ctr(init, i).spec.image.clone().unwrap_or_default();
            let c = self.ctr(init, i);
            let mut already = false;
            if let State::Waiting { reason, .. } = &mut c.state {
                already = reason == "ImagePullBackOff";
                *reason = "ImagePullBackOff".into();
            }
            if !already {
                self.event(Some(&name), Kind::Normal, "BackOff", &format!("Back-off pulling image \"{image}\""));
            }
            self.retry_in(until - now_i);
            return;
        }
        if let Err((reason, message)) = self.start(init, i).await {
            let c = self.ctr(init, i);
            c.state = State::Waiting { reason, message: Some(message) };
        }
    }

    async fn start(&mut self, init: bool, i: usize) -> Result<(), (String, String)> {
        let spec = self.ctr(init, i).spec.clone();
        let name = spec.name.clone();
        let image = spec.image.clone().unwrap_or_default();
        // Image.
        let policy = PullPolicy::from_k8s(spec.image_pull_policy.as_deref(), &image)
            .unwrap_or_else(|_| PullPolicy::default_for(&image));
        let auths = self.pull_auths().await;
        let started_pull = Instant::now();
        match self.deps.runtime.ensure_image(&image, policy, &auths).await {
            Ok(ready) => {
                if ready.pulled {
                    self.event(Some(&name), Kind::Normal, "Pulling", &format!("Pulling image \"{image}\""));
                    let ms = started_pull.elapsed().as_millis();
                    self.event(
                        Some(&name),
                        Kind::Normal,
                        "Pulled",
                        &format!("Successfully pulled image \"{image}\" in {ms}ms"),
                    );
                } else if !self.ctr(init, i).ever_ran {
                    let msg = format!("Container image \"{image}\" already present on machine");
                    self.event(Some(&name), Kind::Normal, "Pulled", &msg);
                }
                self.ctr(init, i).image_id = ready.image_id;
            }
            Err(e) => {
                let message = e.to_string();
                self.event(
                    Some(&name),
                    Kind::Warning,
                    "Failed",
                    &format!("Failed to pull image \"{image}\": {message}"),
                );
                let c = self.ctr(init, i);
                let delay = c.pull_backoff.failed(Duration::ZERO, Instant::now());
                self.retry_in(delay);
                return Err((e.reason().into(), message));
            }
        }
        // Environment, command, mounts.
        let lookup = Lookup::new(self.deps.client.clone(), &self.ns);
        let links = self.pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        let services = match lookup.services_for_env(links).await {
            Ok(services) => services,
            Err(e) => {
                self.event(Some(&name), Kind::Warning, "Failed", &format!("Error: {e}"));
                self.retry_in(Duration::from_secs(5));
                return Err(("CreateContainerConfigError".into(), e.to_string()));
            }
        };
        let env = match env::resolve(&spec, &self.facts(), &lookup, service_env::variables(&services)).await {
            Ok(env) => env,
            Err(e) => {
                self.event(Some(&name), Kind::Warning, "Failed", &format!("Error: {e}"));
                self.retry_in(Duration::from_secs(5));
                return Err(("CreateContainerConfigError".into(), e.to_string()));
            }
        };
        let mounts = match self.volumes.as_ref().map(|v| v.mounts(&spec, &env)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.event(Some(&name), Kind::Warning, "Failed", &format!("Error: {e}"));
                self.retry_in(Duration::from_secs(5));
                return Err(("CreateContainerConfigError".into(), e.to_string()));
            }
            None => return Err(("ContainerCreating".into(), "volumes are not ready".into())),
        };
        let expand = |v: &Option<Vec<String>>| v.as_ref().map(|l| l.iter().map(|s| env::expand(s, &env)).collect());
        let restarts = {
            let c = self.ctr(init, i);
            if c.ever_ran {
                c.restarts = c.restarts.saturating_add(1);
                if let State::Terminated(t) = &c.state {
                    c.last = Some(t.clone());
                }
            }
            c.restarts
        };
        let log_dir = crate::logs::pod_log_dir(&self.deps.logs_root, &self.ns, &self.name, &self.uid);
        let log_path = crate::logs::container_log_path(&log_dir, &name, u32::try_from(restarts).unwrap_or(0));
        let log = match LogWriter::create(log_path.clone(), Rotation::default()) {
            Ok(l) => Arc::new(l),
            Err(e) => return Err(("CreateContainerError".into(), e.to_string())),
        };
        let resources = spec.resources.as_ref();
        let limit =
            |name: &str| resources.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(name)).map(|q| q.0.clone());
        let launch = Launch {
            name: name.clone(),
            image: image.clone(),
            command: expand(&spec.command),
            args: expand(&spec.args),
            env: env.clone(),
            working_dir: spec.working_dir.clone(),
            mounts,
            memory_limit: limit("memory").and_then(|q| super::quantity::bytes(&q)),
            cpu_millis: limit("cpu")
                .and_then(|q| super::quantity::millicores(&q))
                .map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            http_port: spec.ports.iter().flatten().find_map(|p| u16::try_from(p.container_port).ok()),
            log: Arc::clone(&log),
            scratch_dir: self.pod_dir().join("containers").join(&name),
            linux: self.linux_extras(&spec),
        };
        let Some(ctx) = self.ctx.clone() else { return Err(("ContainerCreating".into(), "no sandbox".into())) };
        let started = match self.deps.runtime.start(&ctx, launch.clone()).await {
            Ok(s) => s,
            Err(e) => {
                self.event(Some(&name), Kind::Warning, "Failed", &format!("Error: {e}"));
                let c = self.ctr(init, i);
                c.ever_ran = true;
                let delay = c.backoff.failed(Duration::ZERO, Instant::now());
                self.retry_in(delay);
                return Err((e.reason().into(), e.to_string()));
            }
        };
        self.event(Some(&name), Kind::Normal, "Created", &format!("Created container {name}"));
        self.event(Some(&name), Kind::Normal, "Started", &format!("Started container {name}"));
        self.runs += 1;
        let run_id = self.runs;
        let (running_tx, running_rx) = watch::channel(true);
        self.deps.log_index.started(&self.ns, &self.name, &name, log_path, running_rx);
        let exec = super::exec_target::ExecTarget {
            runtime: Arc::clone(&self.deps.runtime),
            pod: ctx,
            launch: launch.clone(),
        };
        self.deps.log_index.exec_target(&self.ns, &self.name, &name, exec);
        let tx = self.tx.clone();
        let exited = started.exited;
        let exit_name = name.clone();
        tokio::spawn(async move {
            let exit = exited.await.unwrap_or(ContainerExit {
                exit_code: 137,
                reason: "Error".into(),
                message: Some("the runtime lost the container".into()),
            });
            let _ = tx.send(Msg::Exited { name: exit_name, run: run_id, exit });
        });
        let started_at = now();
        let post_start = spec.lifecycle.as_ref().and_then(|l| l.post_start.clone());
        let c = self.ctr(init, i);
        c.ever_ran = true;
        c.started = false;
        c.ready = false;
        let container_id = started.id.unwrap_or_else(|| c.wasm_container_id());
        c.stop_signal = started.stop_signal;
        c.run = Some(Run {
            id: run_id,
            started_at,
            since: Instant::now(),
            stop: started.stop,
            probes: None,
            post_start: None,
            stopping: None,
            running_tx,
            log,
            launch,
            container_id,
        });
        let Some(handler) = post_start else {
            self.begin_running(init, i);
            return Ok(());
        };
        // The container is not Running (nor probed) until its postStart hook returns.
        self.ctr(init, i).state = State::Waiting { reason: "ContainerCreating".into(), message: None };
        let Some(target) = self.hook_target(init, i) else { return Ok(()) };
        let tx = self.tx.clone();
        let hook_name = name.clone();
        let task = async move {
            let outcome = hooks::run(&handler, &target, Duration::MAX).await;
            let _ = tx.send(Msg::PostStart { name: hook_name, run: run_id, outcome });
        };
        let span = tracing::info_span!("post_start", container = %name);
        let handle = tokio::spawn(task.instrument(span)).abort_handle();
        if let Some(r) = &mut self.ctr(init, i).run {
            r.post_start = Some(handle);
        }
        Ok(())
    }

    /// What a Linux container takes from the pod: security contexts, hostname, name for messages.
    fn linux_extras(&self, spec: &Container) -> LinuxExtras {
        let pod_spec = self.pod.spec.as_ref();
        let hostname = pod_spec.and_then(|s| s.hostname.clone()).unwrap_or_else(|| self.name.clone());
        LinuxExtras {
            security: spec.security_context.clone(),
            pod_security: pod_spec.and_then(|s| s.security_context.clone()),
            hostname: hostname.chars().take(63).collect(),
            resolv_conf: self.dns_settings().render(),
            pod: format!("{}/{}", self.ns, self.name),
            stdin: spec.stdin.unwrap_or(false),
            tty: spec.tty.unwrap_or(false),
            stop_signal: spec.lifecycle.as_ref().and_then(|l| l.stop_signal.clone()),
            seccomp_dir: self.deps.config.data_dir.join("seccomp"),
            target: super::ephemeral::target_of(&self.pod, &spec.name),
            cpu_request_millis: spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("cpu"))
                .and_then(|q| super::quantity::millicores(&q.0))
                .map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
        }
    }

    /// The pod's resolver settings: its `dnsPolicy` and `dnsConfig` over the node's cluster DNS.
    fn dns_settings(&self) -> crate::dns::resolv::ResolvConf {
        let config = &self.deps.config;
        let node = crate::dns::resolv::NodeDns {
            cluster_dns: config.cluster_dns_ip().filter(|_| config.dns),
            cluster_domain: config.cluster_domain.clone(),
            host: crate::dns::resolv::ResolvConf::parse(&config.host_resolv_conf()),
        };
        crate::dns::resolv::pod_resolv(self.pod.spec.as_ref(), &self.ns, &node)
    }

    /// Registry credentials from the pod's `imagePullSecrets`.
    async fn pull_auths(&self) -> Vec<crate::image::RegistryAuth> {
        let secrets = self.pod.spec.as_ref().and_then(|s| s.image_pull_secrets.clone()).unwrap_or_default();
        let image = |c: &Ctr| c.spec.image.clone().unwrap_or_default();
        let registry =
            self.containers.first().map(image).and_then(|i| crate::image::registry_of(&i).ok()).unwrap_or_default();
        let lookup = Lookup::new(self.deps.client.clone(), &self.ns);
        let mut auths = Vec::new();
        for s in secrets {
            let Ok(Some(data)) = lookup.secret(&s.name, true).await else { continue };
            let Some(config) = data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg")) else { continue };
            if let Ok(map) = crate::image::auths_from_docker_config(config) {
                auths.extend(map.into_iter().filter(|(host, _)| *host == registry).map(|(_, a)| a));
            }
        }
        auths
    }

    /// Stops everything the pod holds on this node except its status and logs (terminal pods).
    async fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        self.kill_all();
        self.ctx = None;
        self.deps.log_index.forget_exec(&self.ns, &self.name);
        if let Some(v) = &mut self.volumes {
            v.release();
        }
        if let Err(e) = self.deps.sandboxes.destroy(&self.uid).await {
            tracing::warn!(error = %e, "removing the sandbox of a finished pod");
        }
    }

    /// Graceful deletion (or the pod vanished): stop the containers within the grace period, remove
    /// the sandbox and the pod's files, then let the API server remove the pod.
    async fn terminate(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        let seconds = grace::seconds(&self.pod, None);
        for c in self.init.iter().chain(self.containers.iter()) {
            if c.run.as_ref().is_some_and(|r| r.stopping.is_none()) {
                let name = &c.spec.name;
                self.event(Some(name), Kind::Normal, "Killing", &format!("Stopping container {name}"));
            }
        }
        tracing::info!(grace_s = seconds, "stopping the pod's containers");
        // The app (and running init) containers first; native sidecars once those are gone, the last
        // one first, each with what is left of the grace period (at least 2 s), as Kubernetes does.
        let began = Instant::now();
        for (init, n) in [(true, self.init.len()), (false, self.containers.len())] {
            for i in 0..n {
                if !(init && self.init[i].sidecar) {
                    self.kill(init, i, seconds);
                }
            }
        }
        // A grace period past what the clock can represent waits as long as the clock can.
        let deadline = grace_deadline(began, grace::wait_bound(grace::duration(seconds), KILL_SLACK));
        self.wait_for_exits(rx, deadline, |c| !c.sidecar).await;
        let sidecars: Vec<usize> = (0..self.init.len()).rev().filter(|&i| self.init[i].sidecar).collect();
        for i in sidecars {
            if self.init[i].run.is_none() {
                continue;
            }
            let used = i64::try_from(began.elapsed().as_secs()).unwrap_or(i64::MAX);
            let min = i64::try_from(grace::MIN_AFTER_HOOK.as_secs()).unwrap_or(2);
            let left = seconds.saturating_sub(used).max(min);
            self.kill(true, i, left);
            let deadline = grace_deadline(Instant::now(), grace::wait_bound(grace::duration(left), KILL_SLACK));
            let name = self.init[i].spec.name.clone();
            self.wait_for_exits(rx, deadline, move |c| c.spec.name == name).await;
        }
        for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
            c.run = None;
        }
        self.ctx = None;
        if let Some(v) = &mut self.volumes {
            v.release();
        }
        if let Err(e) = self.deps.sandboxes.destroy(&self.uid).await {
            tracing::warn!(error = %e, "removing the pod's sandbox");
        }
        volumes::unmount_all_under(&self.pod_dir());
        let _ = std::fs::remove_dir_all(self.pod_dir());
        let log_dir = crate::logs::pod_log_dir(&self.deps.logs_root, &self.ns, &self.name, &self.uid);
        let _ = std::fs::remove_dir_all(log_dir);
        self.deps.log_index.remove_pod(&self.ns, &self.name);
        self.deps.recorder.forget(&self.uid);
        if !self.gone {
            let pods: Api<Pod> = Api::namespaced(self.deps.client.clone(), &self.ns);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match pods.delete(&self.name, &params).await {
                Ok(_) => tracing::info!("pod removed"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(error = %e, "removing the pod from the API server"),
            }
        }
        self.deps.forget(&self.uid);
    }

    /// Takes in exits (and pod updates) until no container `which` picks has a run, or `deadline`.
    async fn wait_for_exits(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
        deadline: Instant,
        which: impl Fn(&Ctr) -> bool,
    ) {
        while self.init.iter().chain(self.containers.iter()).any(|c| c.run.is_some() && which(c)) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Exited { name, run, exit })) => self.exited(&name, run, exit),
                Ok(Some(Msg::Update(pod))) => self.pod = *pod,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn status(&self) -> Value {
        let stamp = now();
        let prev = self.published.as_ref();
        let init: Vec<ContainerView> = self.init.iter().map(Ctr::view).collect();
        let containers: Vec<ContainerView> = self.containers.iter().filter(|c| !c.ephemeral).map(Ctr::view).collect();
        let ephemeral: Vec<ContainerView> = self.containers.iter().filter(|c| c.ephemeral).map(Ctr::view).collect();
        let phase = self.phase();
        let init_done = self.init_done();
        let sidecars_ready = self.init.iter().filter(|c| c.sidecar).all(|c| c.ready);
        let all_ready =
            !containers.is_empty() && containers.iter().all(|c| c.ready) && sidecars_ready && phase == "Running";
        let not_ready = || {
            let sidecars = self.init.iter().filter(|c| c.sidecar && !c.ready).map(|c| c.spec.name.as_str());
            let names: Vec<&str> =
                sidecars.chain(containers.iter().filter(|c| !c.ready).map(|c| c.name.as_str())).collect();
            (!names.is_empty()).then(|| format!("containers with unready status: [{}]", names.join(" ")))
        };
        let mut conditions = vec![
            status::condition(prev, "PodReadyToStartContainers", self.ctx.is_some(), None, &stamp),
            status::condition(
                prev,
                "Initialized",
                init_done,
                (!init_done).then_some("ContainersNotInitialized"),
                &stamp,
            ),
            status::condition(prev, "Ready", all_ready, (!all_ready).then_some("ContainersNotReady"), &stamp),
            status::condition(prev, "ContainersReady", all_ready, (!all_ready).then_some("ContainersNotReady"), &stamp),
            status::condition(prev, "PodScheduled", true, None, &stamp),
        ];
        if !all_ready {
            if let Some(msg) = not_ready() {
                conditions[2]["message"] = json!(msg);
                conditions[3]["message"] = json!(msg);
            }
        }
        let host_ip = self.deps.config.node_ip.to_string();
        let mut s = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "startTime": self.start_time,
            "qosClass": status::qos_class(&self.pod),
            "containerStatuses": containers.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
        });
        if !init.is_empty() {
            s["initContainerStatuses"] = json!(init.iter().map(ContainerView::to_json).collect::<Vec<_>>());
        }
        if !ephemeral.is_empty() {
            s["ephemeralContainerStatuses"] = json!(ephemeral.iter().map(ContainerView::to_json).collect::<Vec<_>>());
        }
        if let Some(sb) = &self.sandbox {
            if !self.released {
                s["podIP"] = json!(sb.ip.to_string());
                s["podIPs"] = json!([{"ip": sb.ip.to_string()}]);
            }
        }
        if let Some((reason, message)) = &self.failed {
            s["reason"] = json!(reason);
            s["message"] = json!(message);
        }
        s
    }

    /// Sends the status when it changed since the last time.
    async fn publish(&mut self) {
        let status = self.status();
        if self.published.as_ref() == Some(&status) {
            return;
        }
        for c in self.init.iter().chain(self.containers.iter()) {
            if let State::Waiting { reason, .. } = &c.state {
                self.deps.log_index.waiting(&self.ns, &self.name, &c.spec.name, reason);
            }
        }
        let pods: Api<Pod> = Api::namespaced(self.deps.client.clone(), &self.ns);
        // Merge patch: lists (conditions, containerStatuses) are replaced whole; `null` clears podIP.
        let mut body = status.clone();
        if body.get("podIP").is_none() {
            body["podIP"] = Value::Null;
            body["podIPs"] = Value::Null;
        }
        match pods.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(json!({"status": body}))).await {
            Ok(_) => self.published = Some(status),
            Err(kube::Error::Api(e)) if e.code == 404 => self.gone = true,
            Err(e) => {
                tracing::warn!(error = %e, "updating the pod status");
                self.retry_in(Duration::from_secs(1));
            }
        }
    }
}

/// When a wait of `grace` from `now` ends, saturating at a century (further than any node lives;
/// `Instant` arithmetic past its range would panic).
fn grace_deadline(now: Instant, grace: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(grace.min(CENTURY)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ephemeral_container_that_ran_before_an_agent_restart_is_over() {
        let spec = Container { name: "dbg".into(), image: Some("busybox".into()), ..Container::default() };
        let running = json!({"name": "dbg", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                             "containerID": "containerd://abc", "imageID": "busybox@sha256:1"});
        let c = Ctr::ephemeral(spec.clone(), Some(&running));
        assert!(c.ephemeral && c.ever_ran);
        assert!(
            matches!(&c.state, State::Terminated(t) if t.exit_code == 137 && t.started_at == "2026-01-01T00:00:00Z")
        );
        assert!(c.last.is_none());
        assert_eq!(
            Ctr::new(spec.clone(), Some(&json!({"stopSignal": "SIGQUIT"}))).view().stop_signal.as_deref(),
            Some("SIGQUIT")
        );
        let fresh = Ctr::ephemeral(spec, None);
        assert!(!fresh.ever_ran && !fresh.ready);
        assert!(matches!(&fresh.state, State::Waiting { reason, .. } if reason == "ContainerCreating"));
    }

    #[test]
    fn huge_grace_periods_saturate() {
        let now = Instant::now();
        assert_eq!(grace_deadline(now, Duration::from_secs(30)), now + Duration::from_secs(30));
        assert!(grace_deadline(now, Duration::MAX) > now + Duration::from_secs(50 * 365 * 24 * 3600));
        assert!(grace_deadline(now, Duration::from_secs(i64::MAX as u64)) > now);
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod worker_tests;
