//! Delivers the shim's events to containerd's ttrpc Events service, in order, across a containerd restart:
//! a failed forward drops the connection, reconnects and retries (with backoff, for up to
//! [`GIVE_UP_AFTER`]), so an exit that happens while containerd is down still reaches it once it is back.
//! [`Publisher::flush`] lets the shim deliver what is queued before it exits.
//!
//! containerd-shim's own `RemotePublisher` retries an event five times over 15 s and drops what is still
//! queued when the process exits: the exit and delete events of a task removed right after containerd
//! restarted were lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::events::{Envelope, ForwardRequest};
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::ttrpc::context;
use tokio::sync::{mpsc, Notify};

/// How long one event is retried while containerd does not take it.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
/// The deadline of one forward call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest pause between retries.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// The events queue and its delivery task (spawned on the current tokio runtime).
pub struct Publisher {
    queue: mpsc::UnboundedSender<Envelope>,
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Publisher {
    /// A publisher to containerd's ttrpc socket at `address` (a path, or `unix://` + path).
    pub fn new(address: &str) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let idle = Arc::new(Notify::new());
        let address = address.trim_start_matches("unix://").to_string();
        tokio::spawn(deliver(address, rx, Arc::clone(&pending), Arc::clone(&idle)));
        Publisher { queue, pending, idle }
    }

    /// Queues `event` under `topic` in `namespace`.
    pub fn publish(&self, topic: &str, namespace: &str, event: Box<dyn MessageDyn>) -> Result<(), String> {
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_owned());
        envelope.set_namespace(namespace.to_owned());
        envelope.set_timestamp(containerd_shim::util::timestamp().map_err(|e| e.to_string())?);
        envelope.set_event(containerd_shim::util::convert_to_any(event).map_err(|e| e.to_string())?);
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.queue.send(envelope).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            "the event queue is closed".to_string()
        })
    }

    /// Waits until every queued event was delivered (or given up), at most `timeout`: whether all were.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            if self.pending.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.pending.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

/// Forwards queued events one by one, reconnecting and retrying each until it is taken or too old.
async fn deliver(
    address: String,
    mut rx: mpsc::UnboundedReceiver<Envelope>,
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(envelope) = rx.recv().await {
        let topic = envelope.topic.clone();
        let first = Instant::now();
        let mut pause = BACKOFF.0;
        let mut failures = 0u32;
        let request = ForwardRequest { envelope: Some(envelope).into(), ..Default::default() };
        loop {
            let result = match &client {
                Some(c) => c.forward(context::with_timeout(CALL_TIMEOUT.as_nanos() as i64), &request).await,
                None => match containerd_shim::util::connect(&address) {
                    Ok(fd) => {
                        client = Some(EventsClient::new(Client::new(fd)));
                        continue;
                    }
                    Err(e) => Err(containerd_shim::protos::ttrpc::Error::Others(format!("connecting: {e}"))),
                },
            };
            match result {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!(%topic, failures, "event delivered after retrying");
                    }
                    break;
                }
                Err(e) => {
                    client = None;
                    failures += 1;
                    if first.elapsed() >= GIVE_UP_AFTER {
                        tracing::error!(%topic, error = %e, failures, "dropping an event containerd did not take");
                        break;
                    }
                    if failures == 1 {
                        tracing::warn!(%topic, error = %e, "publishing an event failed, retrying");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BACKOFF.1);
                }
            }
        }
        pending.fetch_sub(1, Ordering::SeqCst);
        idle.notify_waiters();
    }
}
