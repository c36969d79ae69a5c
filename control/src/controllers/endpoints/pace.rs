//! At most one round of writes per Service per period: the first change after a quiet spell is
//! written at once, and the changes that follow within the period are written together when it
//! ends (kube-controller-manager's `--endpoint-updates-batch-period`, but with the leading change
//! not delayed). A Deployment of 1,000 replicas coming up behind one Service otherwise rewrites
//! its 1,000-address Endpoints once per pod event, and every watcher of Endpoints and
//! EndpointSlices (each node's proxy, the DNS) receives each rewrite.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::controllers::runtime::ObjectKey;

/// The period the endpoints controllers keep between two rounds of writes for one Service,
/// unless `--endpoint-updates-batch-period` says otherwise.
pub const DEFAULT_BATCH_PERIOD: Duration = Duration::from_millis(500);

/// When each Service's endpoints were last written.
pub struct Pace {
    period: Duration,
    written: Mutex<HashMap<ObjectKey, Instant>>,
}

impl Pace {
    pub fn new(period: Duration) -> Self {
        Self { period, written: Mutex::new(HashMap::new()) }
    }

    /// How long `service` must wait before its next writes (`None`: it may write now).
    pub fn wait(&self, service: &ObjectKey, now: Instant) -> Option<Duration> {
        let written = self.written.lock();
        let next = written.get(service)?.checked_add(self.period)?;
        next.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// Notes that `service`'s endpoints were written at `now`.
    pub fn wrote(&self, service: &ObjectKey, now: Instant) {
        let mut written = self.written.lock();
        // Entries older than a period hold nothing back: drop them now and then.
        if written.len() >= 1024 {
            let period = self.period;
            written.retain(|_, at| now.saturating_duration_since(*at) < period);
        }
        written.insert(service.clone(), now);
    }

    /// Forgets a Service that is gone.
    pub fn forget(&self, service: &ObjectKey) {
        self.written.lock().remove(service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_write_goes_at_once_and_the_next_waits_out_the_period() {
        let pace = Pace::new(Duration::from_millis(500));
        let svc = ObjectKey::namespaced("d", "web");
        let t0 = Instant::now();
        assert_eq!(pace.wait(&svc, t0), None, "never written: at once");
        pace.wrote(&svc, t0);
        assert_eq!(pace.wait(&svc, t0 + Duration::from_millis(200)), Some(Duration::from_millis(300)));
        assert_eq!(pace.wait(&svc, t0 + Duration::from_millis(500)), None, "the period is over");
        assert_eq!(pace.wait(&ObjectKey::namespaced("d", "other"), t0), None, "per Service");
        pace.forget(&svc);
        assert_eq!(pace.wait(&svc, t0), None);
    }
}
