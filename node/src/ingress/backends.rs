//! Where a routed Service port leads: the ready endpoints of each Service port, computed with
//! the service proxy's own model (`proxy::model::desired`: ready endpoints, else serving
//! terminating ones) over the node's shared Service and EndpointSlice store (`service_cache`),
//! recomputed for the Services it says changed.

use std::collections::HashMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::route::PortRef;
use crate::proxy::model::{self, PortRules, Proto};
use crate::service_cache::SharedStore;

/// `namespace/name`.
pub type Key = crate::service_cache::Key;

/// Why a Service port cannot take a request (answered 503 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("service \"{0}/{1}\" not found")]
    NoService(String, String),
    #[error("service \"{0}/{1}\" has no port {2}")]
    NoPort(String, String, String),
    #[error("service \"{0}/{1}\" has no ready endpoints for port {2}")]
    NoEndpoints(String, String, String),
}

fn port_label(port: &PortRef) -> String {
    match port {
        PortRef::Number(n) => n.to_string(),
        PortRef::Name(n) => n.clone(),
    }
}

/// The endpoints of each Service's TCP ports, from a store of Services and their slices.
#[derive(Default)]
pub struct Backends {
    node_name: String,
    store: SharedStore,
    /// Service -> its TCP ports' rules (with endpoints), recomputed when it or a slice changes;
    /// an entry for every Service of the store this has been told about.
    ports: HashMap<Key, Vec<PortRules>>,
}

impl Backends {
    /// Empty, over a store of its own, for node `node_name` (only used to tell local endpoints,
    /// which the ingress does not prefer); fed with the `put_*`/`remove_*`/`reset_*` methods.
    pub fn new(node_name: &str) -> Self {
        Self { node_name: node_name.to_string(), ..Self::default() }
    }

    /// Over the node's shared `store` (written by its reflector); [`Backends::refresh`] with the
    /// Services it says changed.
    pub fn over(node_name: &str, store: SharedStore) -> Self {
        Self { node_name: node_name.to_string(), store, ports: HashMap::new() }
    }

    /// Recomputes the Services `keys` from the store.
    pub fn refresh(&mut self, keys: impl IntoIterator<Item = Key>) {
        keys.into_iter().for_each(|k| self.recompute(&k));
    }

    /// Replaces every Service (a fresh list).
    pub fn reset_services(&mut self, services: Vec<Service>) {
        let touched = self.store.write().reset_services(services);
        self.refresh(touched);
    }

    /// A Service added or changed.
    pub fn put_service(&mut self, svc: Service) {
        let key = self.store.write().put_service(svc);
        self.recompute(&key);
    }

    /// A Service deleted.
    pub fn remove_service(&mut self, svc: &Service) {
        let key = self.store.write().remove_service(svc);
        self.recompute(&key);
    }

    /// Replaces every slice (a fresh list).
    pub fn reset_slices(&mut self, slices: Vec<EndpointSlice>) {
        let touched = self.store.write().reset_slices(slices);
        self.refresh(touched);
    }

    /// A slice added or changed.
    pub fn put_slice(&mut self, slice: EndpointSlice) {
        let touched = self.store.write().put_slice(slice);
        self.refresh(touched);
    }

    /// A slice deleted.
    pub fn remove_slice(&mut self, slice: &EndpointSlice) {
        let touched = self.store.write().remove_slice(slice);
        self.refresh(touched);
    }

    fn recompute(&mut self, key: &Key) {
        let store = self.store.read();
        let Some(service) = store.service(key) else {
            self.ports.remove(key);
            return;
        };
        let rules: Vec<PortRules> = model::desired(service, &store.slices_of(key), &self.node_name)
            .into_iter()
            .filter(|r| r.protocol == Proto::Tcp)
            .collect();
        drop(store);
        self.ports.insert(key.clone(), rules);
    }

    /// The ready endpoints of `namespace/name`'s `port` (a service port number or name).
    pub fn endpoints(&self, namespace: &str, name: &str, port: &PortRef) -> Result<Vec<SocketAddr>, Unavailable> {
        let key = (namespace.to_string(), name.to_string());
        let Some(rules) = self.ports.get(&key) else { return Err(Unavailable::NoService(key.0, key.1)) };
        let found = rules.iter().find(|r| match port {
            PortRef::Number(n) => r.port == *n,
            // The rule id ends with the port's name (or its number when unnamed).
            PortRef::Name(n) => r.id.rsplit('/').next() == Some(n.as_str()),
        });
        let Some(rule) = found else { return Err(Unavailable::NoPort(key.0, key.1, port_label(port))) };
        if rule.cluster_endpoints.is_empty() {
            return Err(Unavailable::NoEndpoints(key.0, key.1, port_label(port)));
        }
        Ok(rule.cluster_endpoints.iter().map(|e| SocketAddr::from((e.ip, e.port))).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn service(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "d"},
            "spec": {"clusterIP": "10.43.0.5", "ports": [{"name": "web", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap()
    }

    fn slice(service: &str, ready: bool) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-1"), "namespace": "d", "labels": {model::SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.88.0.7"], "conditions": {"ready": ready}},
                {"addresses": ["10.88.0.8"], "conditions": {"ready": true}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn endpoints_by_port_number_or_name_and_clear_reasons() {
        let mut b = Backends::new("n");
        assert_eq!(
            b.endpoints("d", "web", &PortRef::Number(80)).unwrap_err().to_string(),
            "service \"d/web\" not found"
        );
        b.put_service(service("web"));
        assert_eq!(
            b.endpoints("d", "web", &PortRef::Number(80)).unwrap_err().to_string(),
            "service \"d/web\" has no ready endpoints for port 80"
        );
        b.put_slice(slice("web", false));
        let want: Vec<SocketAddr> = vec!["10.88.0.8:8080".parse().unwrap()];
        assert_eq!(b.endpoints("d", "web", &PortRef::Number(80)).unwrap(), want);
        assert_eq!(b.endpoints("d", "web", &PortRef::Name("web".into())).unwrap(), want);
        assert_eq!(
            b.endpoints("d", "web", &PortRef::Number(81)).unwrap_err().to_string(),
            "service \"d/web\" has no port 81"
        );
        b.put_slice(slice("web", true));
        assert_eq!(b.endpoints("d", "web", &PortRef::Number(80)).unwrap().len(), 2);
        b.remove_slice(&slice("web", true));
        assert!(b.endpoints("d", "web", &PortRef::Number(80)).is_err());
        b.reset_slices(vec![slice("web", true)]);
        assert_eq!(b.endpoints("d", "web", &PortRef::Number(80)).unwrap().len(), 2);
        b.reset_services(Vec::new());
        assert!(matches!(b.endpoints("d", "web", &PortRef::Number(80)), Err(Unavailable::NoService(..))));
    }
}
