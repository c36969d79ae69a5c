//! The [`Controller`] driver: maps changes of the watched kinds to keys of the controlled kind,
//! feeds them to a [`WorkQueue`], and runs a reconcile function on each key with workers that
//! never hold the same key at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::informer::{controller_ref, Change, Informer};
use super::key::ObjectKey;
use super::queue::WorkQueue;
use super::supervisor::Probe;
use super::{Action, Error};
use crate::api::object;

/// Maps a watched object (old or new state of a change) to the keys to reconcile.
pub type Mapper = Arc<dyn Fn(&Value) -> Vec<ObjectKey> + Send + Sync>;

/// See the module documentation. Build one with [`Controller::new`] and the `owns`/`watches`
/// builders, then [`Controller::run`] it (under a [`Supervisor`](super::Supervisor)).
pub struct Controller {
    name: String,
    queue: WorkQueue<ObjectKey>,
    own: Arc<Informer>,
    sources: Vec<(Arc<Informer>, Mapper)>,
    workers: usize,
}

/// The key of the object's controller `ownerReference` when its kind is `kind`.
pub fn controller_key(obj: &Value, kind: &str) -> Option<ObjectKey> {
    let owner = controller_ref(obj)?;
    if owner.get("kind").and_then(Value::as_str) != Some(kind) {
        return None;
    }
    let name = owner.get("name").and_then(Value::as_str)?;
    Some(ObjectKey { namespace: object::namespace(obj).map(String::from), name: name.to_string() })
}

impl Controller {
    /// A controller of the kind `own` follows; every change of it queues its key.
    pub fn new(name: &str, own: Arc<Informer>) -> Self {
        let mapper: Mapper = Arc::new(|obj: &Value| vec![ObjectKey::of(obj)]);
        Self {
            name: name.to_string(),
            queue: WorkQueue::new(),
            own: Arc::clone(&own),
            sources: vec![(own, mapper)],
            workers: 2,
        }
    }

    /// Also reconciles the owner when a dependent changes: a change of an object of
    /// `dependents` queues the key of its controller `ownerReference` of kind `owner_kind`
    /// (e.g. a Pod -> its ReplicaSet).
    pub fn owns(self, dependents: Arc<Informer>, owner_kind: &str) -> Self {
        let kind = owner_kind.to_string();
        self.watches(dependents, move |obj| controller_key(obj, &kind).into_iter().collect())
    }

    /// Also reconciles the keys `map` returns for every change of `informer`'s kind.
    pub fn watches(
        mut self,
        informer: Arc<Informer>,
        map: impl Fn(&Value) -> Vec<ObjectKey> + Send + Sync + 'static,
    ) -> Self {
        self.sources.push((informer, Arc::new(map)));
        self
    }

    /// Sets the number of concurrent reconciles (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The controller's queue (a reconcile may queue other keys through a clone).
    pub fn queue(&self) -> WorkQueue<ObjectKey> {
        self.queue.clone()
    }

    /// Waits for every informer's first list, queues every object of the own kind, then
    /// reconciles keys until a worker or a change feed stops (which is an error for the
    /// supervisor to restart). Errors back off per key; [`Action::RequeueAfter`] queues the key
    /// again after the delay.
    pub async fn run<C, F, Fut>(self, ctx: Arc<C>, probe: Probe, reconcile: F) -> Result<(), Error>
    where
        C: Send + Sync + 'static,
        F: Fn(ObjectKey, Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, Error>> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let receivers: Vec<_> = self.sources.iter().map(|(inf, _)| inf.subscribe()).collect();
        for (inf, _) in &self.sources {
            inf.wait_synced().await;
        }
        for obj in self.own.list_all() {
            self.queue.add(ObjectKey::of(&obj));
        }
        for ((inf, mapper), rx) in self.sources.iter().zip(receivers) {
            tasks.spawn(feed(Arc::clone(inf), Arc::clone(mapper), rx, self.queue.clone()));
        }
        let reconcile = Arc::new(reconcile);
        for _ in 0..self.workers {
            tasks.spawn(work(
                self.name.clone(),
                self.queue.clone(),
                Arc::clone(&ctx),
                probe.clone(),
                Arc::clone(&reconcile),
            ));
        }
        tracing::info!(controller = %self.name, "controller started");
        let stopped = tasks.join_next().await;
        self.queue.shut_down();
        match stopped {
            Some(Ok(())) | None => Err(Error::Other("a worker or change feed stopped".into())),
            Some(Err(e)) if e.is_panic() => {
                let payload = e.into_panic();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Error::Other(format!("reconcile panicked: {msg}")))
            }
            Some(Err(e)) => Err(Error::Other(format!("worker failed: {e}"))),
        }
    }
}

/// Follows one informer's changes into the queue; a lagging receiver resyncs from the cache.
async fn feed(
    informer: Arc<Informer>,
    mapper: Mapper,
    mut rx: broadcast::Receiver<Change>,
    queue: WorkQueue<ObjectKey>,
) {
    loop {
        match rx.recv().await {
            Ok(change) => {
                for obj in change.objects() {
                    for key in mapper(obj) {
                        queue.add(key);
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for obj in informer.list_all() {
                    for key in mapper(&obj) {
                        queue.add(key);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn work<C, F, Fut>(name: String, queue: WorkQueue<ObjectKey>, ctx: Arc<C>, probe: Probe, reconcile: Arc<F>)
where
    F: Fn(ObjectKey, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    while let Some(key) = queue.next().await {
        probe.queue_depth(queue.len());
        let started = Instant::now();
        let span = tracing::info_span!("reconcile", controller = %name, key = %key);
        let result = reconcile(key.clone(), Arc::clone(&ctx)).instrument(span).await;
        let elapsed = started.elapsed();
        match result {
            Ok(Action::Done) => {
                queue.forget(&key);
                probe.reconciled("success", elapsed);
            }
            Ok(Action::RequeueAfter(delay)) => {
                queue.forget(&key);
                queue.add_after(key.clone(), delay.max(Duration::from_millis(1)));
                probe.reconciled("requeue", elapsed);
            }
            Err(e) => {
                let delay = queue.add_rate_limited(key.clone());
                tracing::warn!(controller = %name, key = %key, error = %e, retry_in = ?delay, "reconcile failed");
                probe.reconciled("error", elapsed);
            }
        }
        queue.done(&key);
        probe.queue_depth(queue.len());
    }
}
