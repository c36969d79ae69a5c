//! Leader election through Leases, as kube-controller-manager and kube-scheduler do it: each
//! elected component (`kube-controller-manager`, `kube-scheduler`) has a
//! `coordination.k8s.io/v1` Lease in `kube-system`; the server holding it runs the component's
//! controllers, renewing every retry period, and stops them when it cannot renew within the
//! renew deadline. The others wait for the Lease to change or run out (they follow it through
//! the shared Lease informer; nothing re-reads it on a timer) and take it over when its holder
//! stopped renewing for a full lease duration. [`decide`] holds the decisions, pure.
//!
//! A server's identity is stable across restarts (`<hostname>_<id kept in the data directory>`),
//! so a restarted server takes its own Lease back at once instead of waiting out the old one.

pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

pub use decide::Timing;
use decide::{Observed, Step};

use super::runtime::{Change, Error, Informer, Informers};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{Registry, WriteOptions};
use crate::audit::event::micro_time;

/// Where the Leases live.
const NAMESPACE: &str = "kube-system";
const GROUP: &str = "coordination.k8s.io";

/// One server's candidacy: who it is and how fast it elects.
#[derive(Clone, Debug)]
pub struct Election {
    /// The holder identity this server writes (`<hostname>_<id>`).
    pub identity: String,
    pub timing: Timing,
}

/// What starts a component's controllers on a leader, under the leadership's scope.
pub type Lead = Arc<dyn Fn(&Arc<Informers>) + Send + Sync>;

/// Runs `lead` whenever this server holds Lease `name`, as the supervised task
/// `leader-election-<name>`. The controllers `lead` starts stop when leadership is lost (and
/// `lead` runs again when it is regained).
pub fn run(informers: &Arc<Informers>, name: &'static str, election: Election, lead: Lead) {
    let leases = informers.get(GROUP, "Lease");
    let informers = Arc::clone(informers);
    let supervisor = Arc::clone(informers.supervisor());
    supervisor.spawn(&format!("leader-election-{name}"), move || {
        let candidate = Candidate {
            informers: Arc::clone(&informers),
            leases: Arc::clone(&leases),
            name,
            election: election.clone(),
        };
        let lead = Arc::clone(&lead);
        async move { candidate.run(lead).await }
    });
}

/// What one attempt to acquire or renew found.
enum Outcome {
    /// This server holds the Lease (as written).
    Leading(Value),
    /// Another holder's Lease is valid until then.
    Held(Instant),
    /// Someone else wrote the Lease meanwhile: look again.
    Contended,
}

struct Candidate {
    informers: Arc<Informers>,
    leases: Arc<Informer>,
    name: &'static str,
    election: Election,
}

impl Candidate {
    fn registry(&self) -> &Arc<Registry> {
        self.informers.registry()
    }

    async fn run(self, lead: Lead) -> Result<(), Error> {
        let supervisor = Arc::clone(self.informers.supervisor());
        supervisor.set_leading(self.name, false);
        // The version of the Lease last seen and when: another holder is trusted from then on.
        let mut seen = None;
        loop {
            let lease = self.acquire(&mut seen).await;
            tracing::info!(lease = self.name, identity = %self.election.identity, "became leader");
            let message = format!("{} became leader", self.election.identity);
            super::events::record(
                self.registry(),
                &lease,
                ("coordination.k8s.io/v1", "Lease"),
                ("Normal", "LeaderElection", &message),
                self.name,
            )
            .await;
            // Dropping `stop` (this task failing) stops the leader's controllers as well.
            let (stop, stopped) = watch::channel(false);
            supervisor.set_leading(self.name, true);
            lead(&self.informers.scoped(supervisor.scope(stopped)));
            self.hold(&mut seen).await;
            stop.send_replace(true);
            supervisor.set_leading(self.name, false);
            tracing::warn!(lease = self.name, identity = %self.election.identity, "leadership lost; controllers stopped");
        }
    }

    /// Waits until this server holds the Lease; returns it.
    async fn acquire(&self, seen: &mut Option<(String, Instant)>) -> Value {
        let mut changes = self.leases.subscribe();
        loop {
            match self.try_acquire_or_renew(seen).await {
                Ok(Outcome::Leading(lease)) => return lease,
                Ok(Outcome::Contended) => continue,
                Ok(Outcome::Held(until)) => self.changed_or(&mut changes, until).await,
                Err(e) => {
                    tracing::warn!(lease = self.name, error = %e, "acquiring the lease");
                    tokio::time::sleep(self.election.timing.retry_period).await;
                }
            }
        }
    }

    /// Renews every retry period; returns once leadership is lost: another holder took the
    /// Lease, or no renewal succeeded within the renew deadline.
    async fn hold(&self, seen: &mut Option<(String, Instant)>) {
        let timing = self.election.timing;
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(timing.retry_period).await;
            let attempt = tokio::time::timeout_at(renewed + timing.renew_deadline, self.try_acquire_or_renew(seen));
            match attempt.await {
                Ok(Ok(Outcome::Leading(_))) => renewed = Instant::now(),
                Ok(Ok(Outcome::Held(_))) => return,
                Ok(Ok(Outcome::Contended)) => {}
                Ok(Err(e)) => tracing::warn!(lease = self.name, error = %e, "renewing the lease"),
                Err(_elapsed) => {}
            }
            if decide::lost(renewed, Instant::now(), timing.renew_deadline) {
                return;
            }
        }
    }

    /// Returns when the Lease changes (or the change feed lagged) or at `until`.
    async fn changed_or(&self, changes: &mut broadcast::Receiver<Change>, until: Instant) {
        let ours = |change: &Change| {
            change.objects().any(|o| object::namespace(o) == Some(NAMESPACE) && object::name(o) == self.name)
        };
        let changed = async {
            loop {
                match changes.recv().await {
                    Ok(change) if ours(&change) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }

    /// One read of the Lease and the write [`decide::decide`] calls for (client-go's
    /// `tryAcquireOrRenew`). Writes are pinned to the version read: a concurrent writer wins.
    async fn try_acquire_or_renew(&self, seen: &mut Option<(String, Instant)>) -> Result<Outcome, ApiError> {
        let registry = self.registry();
        let ri = registry.resource(GROUP, "Lease")?;
        let current = match registry.get(ri, Some(NAMESPACE), self.name).await {
            Ok(lease) => Some(lease),
            Err(ApiError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        let observed = current.as_ref().map(|lease| observe(lease, seen, now, self.election.timing));
        let me = &self.election.identity;
        let stamp = micro_time(jiff::Timestamp::now());
        let seconds = self.election.timing.lease_seconds();
        let desired = match (decide::decide(me, observed.as_ref(), now), current) {
            (Step::Wait { until }, _) => return Ok(Outcome::Held(until)),
            (Step::Create, _) | (_, None) => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": NAMESPACE},
                    "spec": {"holderIdentity": me, "leaseDurationSeconds": seconds,
                             "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
                });
                return match registry.create(ri, Some(NAMESPACE), lease, &WriteOptions::default()).await {
                    Ok(written) => Ok(Outcome::Leading(written.object)),
                    Err(ApiError::AlreadyExists { .. }) => Ok(Outcome::Contended),
                    Err(e) => Err(e),
                };
            }
            (Step::Acquire { transitions }, Some(mut lease)) => {
                lease["spec"] = json!({"holderIdentity": me, "leaseDurationSeconds": seconds,
                                       "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": transitions});
                lease
            }
            (Step::Renew, Some(mut lease)) => {
                lease["spec"]["renewTime"] = json!(stamp);
                lease["spec"]["leaseDurationSeconds"] = json!(seconds);
                lease
            }
        };
        let written = registry
            .update_with(ri, Some(NAMESPACE), self.name, None, &WriteOptions::default(), |_| Ok(desired.clone()))
            .await;
        match written {
            Ok(written) => Ok(Outcome::Leading(written.object)),
            Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => Ok(Outcome::Contended),
            Err(e) => Err(e),
        }
    }
}

/// The Lease as observed now; `seen` remembers since when this version is known.
fn observe(lease: &Value, seen: &mut Option<(String, Instant)>, now: Instant, timing: Timing) -> Observed {
    let version = object::resource_version(lease).unwrap_or_default().to_string();
    let seen_at = match seen {
        Some((known, at)) if *known == version => *at,
        _ => {
            *seen = Some((version, now));
            now
        }
    };
    let spec = |field: &str| lease.get("spec").and_then(|s| s.get(field));
    Observed {
        holder: spec("holderIdentity").and_then(Value::as_str).filter(|h| !h.is_empty()).map(str::to_string),
        lease_duration: spec("leaseDurationSeconds")
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
            .unwrap_or(timing.lease_duration),
        transitions: spec("leaseTransitions").and_then(Value::as_i64).unwrap_or(0),
        seen_at,
    }
}
