//! Supervision: every controller (and informer) task runs under a supervisor that restarts it
//! with back-off when it returns, fails or panics, and keeps its state for `/readyz?verbose` and
//! `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::Error;

/// First restart delay of a task that stopped.
const RESTART_BASE: Duration = Duration::from_millis(500);
/// Longest restart delay.
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A task that ran this long before stopping restarts from the base delay again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    name: String,
    result: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The metrics of every supervised task, by name.
struct Metrics {
    registry: prometheus_client::registry::Registry,
    restarts: Family<NameLabel, Counter>,
    depth: Family<NameLabel, Gauge>,
    reconciles: Family<ResultLabel, Counter>,
    latency: Family<NameLabel, Histogram, fn() -> Histogram>,
    leading: Family<NameLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        let restarts = Family::<NameLabel, Counter>::default();
        let depth = Family::<NameLabel, Gauge>::default();
        let reconciles = Family::<ResultLabel, Counter>::default();
        let latency = Family::<NameLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register("skiff_controller_restarts", "Restarts of a supervised controller task", restarts.clone());
        registry.register("workqueue_depth", "Keys waiting in a controller's work queue", depth.clone());
        registry.register(
            "skiff_controller_reconciles",
            "Reconciles by controller and result (success, requeue, error)",
            reconciles.clone(),
        );
        registry.register("skiff_controller_reconcile_duration_seconds", "Reconcile latency", latency.clone());
        let leading = Family::<NameLabel, Gauge>::default();
        registry.register(
            "leader_election_master_status",
            "1 while this server leads the named component (kube-controller-manager, kube-scheduler), else 0",
            leading.clone(),
        );
        Self { registry, restarts, depth, reconciles, latency, leading }
    }
}

/// The state of one supervised task.
#[derive(Default)]
pub struct TaskState {
    running: AtomicBool,
    restarts: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl TaskState {
    /// True while the task runs (false while it waits to be restarted).
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Times the task was restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Why the task last stopped.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// What a controller reports to its supervisor while it runs (metrics by controller name).
#[derive(Clone)]
pub struct Probe {
    name: String,
    supervisor: Arc<Supervisor>,
}

impl Probe {
    /// Records the depth of the controller's queue.
    pub fn queue_depth(&self, depth: usize) {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        self.supervisor.shared.metrics.depth.get_or_create(&NameLabel { name: self.name.clone() }).set(depth);
    }

    /// Records one reconcile: its result (`success`, `requeue`, `error`) and duration.
    pub fn reconciled(&self, result: &str, elapsed: Duration) {
        let m = &self.supervisor.shared.metrics;
        m.reconciles.get_or_create(&ResultLabel { name: self.name.clone(), result: result.to_string() }).inc();
        m.latency.get_or_create(&NameLabel { name: self.name.clone() }).observe(elapsed.as_secs_f64());
    }
}

/// What every scope of one supervisor shares: the tasks and their metrics.
#[derive(Default)]
struct Shared {
    tasks: Mutex<BTreeMap<String, Arc<TaskState>>>,
    metrics: Metrics,
}

/// See the module documentation. One per server; shared with the HTTP layer. A [`scope`]
/// (Supervisor::scope) of it supervises tasks that all stop together (a leader's controllers).
pub struct Supervisor {
    shared: Arc<Shared>,
    /// Stops this scope's tasks (when it turns true or its sender is gone); `None` for the
    /// server's own supervisor, whose tasks run for as long as the server.
    stop: Option<watch::Receiver<bool>>,
}

impl Supervisor {
    /// A supervisor with no tasks.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { shared: Arc::default(), stop: None })
    }

    /// A view of this supervisor whose tasks stop (and leave `/readyz`) once `stop` turns true;
    /// they share its task list and metrics.
    pub fn scope(&self, stop: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self { shared: Arc::clone(&self.shared), stop: Some(stop) })
    }

    /// Sets a gauge the leader election reports (`leader_election_master_status{name}`).
    pub fn set_leading(&self, name: &str, leading: bool) {
        self.shared.metrics.leading.get_or_create(&NameLabel { name: name.to_string() }).set(i64::from(leading));
    }

    /// The probe a task named `name` reports its metrics through.
    pub fn probe(self: &Arc<Self>, name: &str) -> Probe {
        Probe { name: name.to_string(), supervisor: Arc::clone(self) }
    }

    /// The state of the task `name`, if supervised.
    pub fn task(&self, name: &str) -> Option<Arc<TaskState>> {
        self.shared.tasks.lock().get(name).cloned()
    }

    /// Runs `make()` as task `name` and restarts it with back-off whenever it returns, fails or
    /// panics (the panic is caught by its own tokio task). In a [`scope`](Supervisor::scope), the
    /// task is aborted and forgotten once the scope stops.
    pub fn spawn<F, Fut>(self: &Arc<Self>, name: &str, make: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let state = Arc::new(TaskState::default());
        // Running from now on: a task only counts as down once it stopped.
        state.running.store(true, Ordering::Relaxed);
        self.shared.tasks.lock().insert(name.to_string(), Arc::clone(&state));
        let restarts = self.shared.metrics.restarts.get_or_create(&NameLabel { name: name.to_string() }).clone();
        let (name, shared, stop) = (name.to_string(), Arc::clone(&self.shared), self.stop.clone());
        tokio::spawn(async move {
            let supervised = async {
                let mut delay = RESTART_BASE;
                loop {
                    state.running.store(true, Ordering::Relaxed);
                    let started = Instant::now();
                    let span = tracing::info_span!("controller", name = %name);
                    let task = tokio::spawn(make().instrument(span));
                    // Aborted when the scope stops (this future is then dropped mid-await).
                    let abort = AbortOnDrop(task.abort_handle());
                    let outcome = task.await;
                    drop(abort);
                    let why = match outcome {
                        Ok(Ok(())) => "returned".to_string(),
                        Ok(Err(e)) => format!("failed: {e}"),
                        Err(join) if join.is_panic() => format!("panicked: {}", panic_message(join.into_panic())),
                        Err(_) => "cancelled".to_string(),
                    };
                    if started.elapsed() >= HEALTHY_RUN {
                        delay = RESTART_BASE;
                    }
                    tracing::error!(controller = %name, reason = %why, restart_in = ?delay, "controller stopped; restarting");
                    *state.last_error.lock() = Some(why);
                    state.running.store(false, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2).min(RESTART_MAX);
                    state.restarts.fetch_add(1, Ordering::Relaxed);
                    restarts.inc();
                }
            };
            tokio::select! {
                () = supervised => {}
                () = stopped(stop) => {
                    tracing::info!(controller = %name, "stopped with its scope");
                    let mut tasks = shared.tasks.lock();
                    // A later scope may have started a task of the same name meanwhile.
                    if tasks.get(&name).is_some_and(|s| Arc::ptr_eq(s, &state)) {
                        tasks.remove(&name);
                    }
                }
            }
        });
    }

    /// The tasks that are not running, with their last error, by name.
    pub fn failed_tasks(&self) -> Vec<(String, String)> {
        let tasks = self.shared.tasks.lock();
        tasks
            .iter()
            .filter(|(_, state)| !state.running())
            .map(|(name, state)| (name.clone(), state.last_error().unwrap_or_default()))
            .collect()
    }

    /// `/readyz` checks: one line per task (`[+]controller-x ok` or `[-]controller-x failed: ..`)
    /// and whether all pass.
    pub fn readyz(&self) -> (bool, String) {
        let mut ok = true;
        let mut out = String::new();
        for (name, state) in self.shared.tasks.lock().iter() {
            if state.running() {
                let _ = writeln!(out, "[+]{name} ok");
            } else {
                ok = false;
                let why = state.last_error().unwrap_or_default();
                let _ = writeln!(out, "[-]{name} failed: {why} (restarts: {})", state.restarts());
            }
        }
        (ok, out)
    }

    /// The metrics in the Prometheus text format (without `# EOF`).
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.shared.metrics.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Resolves when a scope's stop signal turns true or its sender is gone; never without a scope.
async fn stopped(stop: Option<watch::Receiver<bool>>) {
    match stop {
        Some(mut stop) => {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
        None => std::future::pending().await,
    }
}

/// Aborts a task when dropped: the supervised task must not outlive its stopped scope.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_reported() {
        let sup = Supervisor::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&runs);
        sup.spawn("controller-test", move || {
            let counter = Arc::clone(&counter);
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        // Restarts after 0.5 s and 1 s of back-off.
        for _ in 0..100 {
            if runs.load(Ordering::SeqCst) == 3 && sup.task("controller-test").is_some_and(|t| t.running()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let task = sup.task("controller-test");
        assert!(task.as_ref().is_some_and(|t| t.running() && t.restarts() == 2));
        assert!(task.and_then(|t| t.last_error()).is_some_and(|e| e.contains("panicked: boom")));
        let (ok, text) = sup.readyz();
        assert!(ok);
        assert_eq!(text, "[+]controller-test ok\n");
        assert!(sup.render_metrics().contains("skiff_controller_restarts_total{name=\"controller-test\"} 2"));
    }

    #[tokio::test]
    async fn a_failing_task_shows_in_readyz_while_it_waits() {
        let sup = Supervisor::new();
        sup.spawn("controller-bad", || async { Err(Error::Other("no luck".into())) });
        for _ in 0..100 {
            if !sup.readyz().0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (ok, text) = sup.readyz();
        assert!(!ok);
        assert!(text.starts_with("[-]controller-bad failed: failed: no luck"), "{text}");
    }

    #[tokio::test]
    async fn a_scope_stops_its_tasks_and_they_leave_readyz() {
        let sup = Supervisor::new();
        let (stop, stopped) = watch::channel(false);
        let scope = sup.scope(stopped);
        let alive = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&alive);
        scope.spawn("controller-scoped", move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                // Counts down when aborted (dropped).
                struct Down(Arc<AtomicU32>);
                impl Drop for Down {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _down = Down(counter);
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        sup.spawn("controller-root", || std::future::pending::<Result<(), Error>>());
        for _ in 0..100 {
            if alive.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(alive.load(Ordering::SeqCst), 1);
        assert!(sup.readyz().1.contains("[+]controller-scoped ok"));
        stop.send_replace(true);
        for _ in 0..100 {
            if alive.load(Ordering::SeqCst) == 0 && sup.task("controller-scoped").is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(alive.load(Ordering::SeqCst), 0, "the scoped task was aborted");
        let (ok, text) = sup.readyz();
        assert!(ok, "{text}");
        assert!(!text.contains("controller-scoped"), "{text}");
        assert!(text.contains("[+]controller-root ok"), "{text}");
    }
}
