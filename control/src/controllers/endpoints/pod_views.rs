//! The pods each Service selects, as [`PodEndpoint`]s kept by resourceVersion: a reconcile
//! decodes only the pods that changed since the Service's last reconcile (a Service of 1,000
//! pods would otherwise decode all 1,000 from the cache for every pod event).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::build::PodEndpoint;
use crate::controllers::runtime::entry::Cached;
use crate::controllers::runtime::ObjectKey;

/// One Service's selected pods' views by resourceVersion (unique across every object version in
/// the store, so it names one version of one pod).
type ByVersion = HashMap<Box<str>, Arc<PodEndpoint>>;

/// Per Service, its selected pods' views.
#[derive(Default)]
pub struct PodViews(Mutex<HashMap<ObjectKey, ByVersion>>);

impl PodViews {
    /// The views of `pods` (the pods `service` selects now), reusing those of unchanged
    /// versions; what the Service no longer selects is forgotten.
    pub fn of(&self, service: &ObjectKey, pods: &[Cached]) -> Vec<Arc<PodEndpoint>> {
        let previous = self.0.lock().remove(service).unwrap_or_default();
        let mut next = HashMap::with_capacity(pods.len());
        let mut out = Vec::with_capacity(pods.len());
        for pod in pods {
            let version = pod.summary.resource_version();
            let view = match previous.get(version) {
                Some(view) => Arc::clone(view),
                None => match pod.object() {
                    Some(obj) => Arc::new(PodEndpoint::of(&obj)),
                    None => continue,
                },
            };
            if !version.is_empty() {
                next.insert(Box::from(version), Arc::clone(&view));
            }
            out.push(view);
        }
        self.0.lock().insert(service.clone(), next);
        out
    }

    /// Forgets a Service (deleted, or without a selector).
    pub fn forget(&self, service: &ObjectKey) {
        self.0.lock().remove(service);
    }

    /// How many pod versions are kept for `service` (tests).
    #[cfg(test)]
    fn kept(&self, service: &ObjectKey) -> usize {
        self.0.lock().get(service).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn pod(name: &str, version: &str, ip: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "d", "resourceVersion": version},
            "status": {"podIP": ip}})
    }

    fn cached(pods: &[&Value]) -> Vec<Cached> {
        pods.iter().map(|p| Cached::decoded(Arc::new((*p).clone()))).collect()
    }

    #[test]
    fn unchanged_versions_are_reused_and_changed_ones_read_again() {
        let views = PodViews::default();
        let svc = ObjectKey::namespaced("d", "web");
        let (a, b) = (pod("a", "1", "10.0.0.1"), pod("b", "2", "10.0.0.2"));
        let first = views.of(&svc, &cached(&[&a, &b]));
        assert_eq!(first.len(), 2);

        // `a` unchanged: the same view (not read again); `b` at a new version: read again.
        let b2 = pod("b", "3", "10.0.0.3");
        let second = views.of(&svc, &cached(&[&a, &b2]));
        assert!(Arc::ptr_eq(&first[0], &second[0]), "a's view is reused");
        assert_eq!(second[1].ip.as_deref(), Some("10.0.0.3"));
        assert_eq!(views.kept(&svc), 2, "b's old version is forgotten");

        // A pod no longer selected is forgotten; so is a forgotten Service.
        assert_eq!(views.of(&svc, &cached(&[&a])).len(), 1);
        assert_eq!(views.kept(&svc), 1);
        views.forget(&svc);
        assert_eq!(views.kept(&svc), 0);
    }
}
