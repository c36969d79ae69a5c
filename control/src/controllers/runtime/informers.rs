//! [`Informers`]: one shared [`Informer`] per kind, its reflector supervised.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::informer::Informer;
use super::supervisor::Supervisor;
use crate::api::registry::Registry;
use crate::api::selector::FieldSelector;

/// Started informers by group, kind and field selector ("" for none).
type Started = Arc<Mutex<HashMap<(String, String, String), Arc<Informer>>>>;

/// The informers of one server: controllers watching the same kind share one cache.
pub struct Informers {
    registry: Arc<Registry>,
    /// What the controllers started through these informers run under.
    supervisor: Arc<Supervisor>,
    /// What the reflectors run under: the server's own supervisor, also for a [`scoped`] view
    /// (Informers::scoped), so a cache outlives the controllers of a lost leadership.
    reflectors: Arc<Supervisor>,
    started: Started,
}

impl Informers {
    /// No informers yet; [`Informers::get`] starts them on first use.
    pub fn new(registry: Arc<Registry>, supervisor: Arc<Supervisor>) -> Arc<Self> {
        let reflectors = Arc::clone(&supervisor);
        Arc::new(Self { registry, supervisor, reflectors, started: Started::default() })
    }

    /// The same informers, with controllers supervised by `supervisor` (a scope that stops
    /// them together).
    pub fn scoped(&self, supervisor: Arc<Supervisor>) -> Arc<Self> {
        Arc::new(Self {
            registry: Arc::clone(&self.registry),
            supervisor,
            reflectors: Arc::clone(&self.reflectors),
            started: Arc::clone(&self.started),
        })
    }

    /// The informer of `group`/`kind` (core is `""`), started under the supervisor as
    /// `informer-<kind>` on first use.
    pub fn get(&self, group: &str, kind: &str) -> Arc<Informer> {
        self.start(group, kind, None)
    }

    /// The informer of the `group`/`kind` objects that `fields` matches (a field selector the
    /// kind supports), started as `informer-<kind>-<selector>` on first use: a controller that
    /// needs only some objects of a kind (token Secrets) caches only those.
    pub fn get_selected(&self, group: &str, kind: &str, fields: &FieldSelector) -> Arc<Informer> {
        self.start(group, kind, Some(fields.clone()))
    }

    fn start(&self, group: &str, kind: &str, fields: Option<FieldSelector>) -> Arc<Informer> {
        let selector = fields.as_ref().map(ToString::to_string).unwrap_or_default();
        let id = (group.to_string(), kind.to_string(), selector);
        let mut started = self.started.lock();
        if let Some(inf) = started.get(&id) {
            return Arc::clone(inf);
        }
        let inf = Informer::with_fields(group, kind, fields);
        let task = match id.2.as_str() {
            "" => format!("informer-{}", kind.to_lowercase()),
            selector => format!("informer-{}-{selector}", kind.to_lowercase()),
        };
        started.insert(id, Arc::clone(&inf));
        let (registry, reflected) = (Arc::clone(&self.registry), Arc::clone(&inf));
        self.reflectors.spawn(&task, move || Arc::clone(&reflected).run(Arc::clone(&registry)));
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
