//! Events the kubelet records about pods (Pulling, Pulled, Created, Started, Killing, BackOff,
//! Unhealthy...). Repeats of the same event bump its count, as `kubectl describe` shows (`x5 over 2m`).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// (pod uid, reason, message) -> (event name, count): repeats bump the count of the first event.
type Seen = HashMap<(String, String, String), (String, i32)>;

/// Posts events for one node's pods; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    node: String,
    seen: Arc<parking_lot::Mutex<Seen>>,
    /// Events go out through a few ordered lanes; one pod's events always take the same lane, so
    /// they are written in the order they happened and repeats are counted, not duplicated.
    lanes: Arc<Vec<tokio::sync::mpsc::UnboundedSender<Pending>>>,
}

struct Pending {
    ns: String,
    name: String,
    uid: String,
    field_path: Option<String>,
    kind: Kind,
    reason: String,
    message: String,
}

const LANES: usize = 4;

impl Recorder {
    /// A recorder; must be created inside a tokio runtime (its lanes are tasks).
    pub fn new(client: kube::Client, node: &str) -> Self {
        let mut senders = Vec::with_capacity(LANES);
        let mut receivers = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Pending>();
            senders.push(tx);
            receivers.push(rx);
        }
        let this = Self { client, node: node.to_string(), seen: Arc::default(), lanes: Arc::new(senders) };
        for mut rx in receivers {
            let lane = this.clone();
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    let result = lane.post(&p.ns, &p.name, &p.uid, p.field_path, p.kind, &p.reason, &p.message).await;
                    if let Err(e) = result {
                        tracing::debug!(pod = %p.name, reason = %p.reason, error = %e, "recording an event");
                    }
                }
            });
        }
        this
    }

    /// Records an event about `pod` (and one of its containers, when `container` is given); never
    /// blocks the caller and never fails it (a lost event is logged).
    pub fn record(&self, pod: &Pod, container: Option<&str>, kind: Kind, reason: &str, message: &str) {
        let (ns, name, uid) = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
            pod.metadata.uid.clone().unwrap_or_default(),
        );
        let field_path = container.map(|c| {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|ics| ics.iter().any(|ic| ic.name == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        let lane = uid.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % LANES;
        let pending = Pending { ns, name, uid, field_path, kind, reason: reason.into(), message: message.into() };
        if let Some(tx) = self.lanes.get(lane) {
            let _ = tx.send(pending);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn post(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        field_path: Option<String>,
        kind: Kind,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let now = jiff::Timestamp::now();
        let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let key = (uid.to_string(), reason.to_string(), message.to_string());
        let repeat = self.seen.lock().get(&key).cloned();
        if let Some((event_name, count)) = repeat {
            let patch = json!({"count": count + 1, "lastTimestamp": stamp});
            if events.patch(&event_name, &PatchParams::default(), &Patch::Merge(patch)).await.is_ok() {
                self.seen.lock().insert(key, (event_name, count + 1));
                return Ok(());
            }
        }
        let event_name = format!("{name}.{:x}", now.as_nanosecond() as u64);
        let event: Event = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event_name, "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name, "uid": uid,
                               "fieldPath": field_path},
            "reason": reason, "message": message,
            "type": if kind == Kind::Normal { "Normal" } else { "Warning" },
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet", "reportingInstance": self.node,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }))
        .map_err(kube::Error::SerdeError)?;
        events.create(&PostParams::default(), &event).await?;
        let mut seen = self.seen.lock();
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(key, (event_name, 1));
        Ok(())
    }

    /// Forgets the repeat counts of a pod that is gone.
    pub fn forget(&self, uid: &str) {
        self.seen.lock().retain(|(u, _, _), _| u != uid);
    }
}
