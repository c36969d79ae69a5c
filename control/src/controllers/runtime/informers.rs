//! [`Informers`]: one shared [`Informer`] per kind, its reflector supervised.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::informer::Informer;
use super::supervisor::Supervisor;
use crate::api::registry::Registry;

/// The informers of one server: controllers watching the same kind share one cache.
pub struct Informers {
    registry: Arc<Registry>,
    supervisor: Arc<Supervisor>,
    started: Mutex<HashMap<(String, String), Arc<Informer>>>,
}

impl Informers {
    /// No informers yet; [`Informers::get`] starts them on first use.
    pub fn new(registry: Arc<Registry>, supervisor: Arc<Supervisor>) -> Arc<Self> {
        Arc::new(Self { registry, supervisor, started: Mutex::new(HashMap::new()) })
    }

    /// The informer of `group`/`kind` (core is `""`), started under the supervisor as
    /// `informer-<kind>` on first use.
    pub fn get(&self, group: &str, kind: &str) -> Arc<Informer> {
        let mut started = self.started.lock();
        if let Some(inf) = started.get(&(group.to_string(), kind.to_string())) {
            return Arc::clone(inf);
        }
        let inf = Informer::new(group, kind);
        started.insert((group.to_string(), kind.to_string()), Arc::clone(&inf));
        let (registry, reflected) = (Arc::clone(&self.registry), Arc::clone(&inf));
        self.supervisor.spawn(&format!("informer-{}", kind.to_lowercase()), move || {
            Arc::clone(&reflected).run(Arc::clone(&registry))
        });
        inf
    }

    /// The registry the informers read from (and controllers write through).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The supervisor the informers run under.
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }
}
