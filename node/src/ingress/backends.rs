//! Where a routed Service port leads: the ready endpoints of each Service port, computed with
//! the service proxy's own model (`proxy::model::desired`: ready endpoints, else serving
//! terminating ones) and kept current from the Service and EndpointSlice watches.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::route::PortRef;
use crate::proxy::model::{self, PortRules, Proto};

/// `namespace/name`.
pub type Key = (String, String);

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

/// Services, their slices, and the endpoints of each Service's TCP ports.
#[derive(Default)]
pub struct Backends {
    node_name: String,
    services: HashMap<Key, Service>,
    slices: HashMap<Key, EndpointSlice>,
    /// Service -> names of its slices.
    by_service: HashMap<Key, BTreeSet<String>>,
    /// Service -> its TCP ports' rules (with endpoints), recomputed when it or a slice changes.
    ports: HashMap<Key, Vec<PortRules>>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

impl Backends {
    /// Empty, for node `node_name` (only used to tell local endpoints, which the ingress does not prefer).
    pub fn new(node_name: &str) -> Self {
        Self { node_name: node_name.to_string(), ..Self::default() }
    }

    /// Replaces everything (a watch's fresh list).
    pub fn reset_services(&mut self, services: Vec<Service>) {
        let old: Vec<Key> = self.services.keys().cloned().collect();
        self.services = services.into_iter().map(|s| (key_of(&s.metadata), s)).collect();
        let mut touched: BTreeSet<Key> = old.into_iter().collect();
        touched.extend(self.services.keys().cloned());
        touched.into_iter().for_each(|k| self.recompute(&k));
    }

    /// A Service added or changed.
    pub fn put_service(&mut self, svc: Service) {
        let key = key_of(&svc.metadata);
        self.services.insert(key.clone(), svc);
        self.recompute(&key);
    }

    /// A Service deleted.
    pub fn remove_service(&mut self, svc: &Service) {
        let key = key_of(&svc.metadata);
        self.services.remove(&key);
        self.recompute(&key);
    }

    /// Replaces every slice (a watch's fresh list).
    pub fn reset_slices(&mut self, slices: Vec<EndpointSlice>) {
        let old: Vec<Key> = self.slices.keys().cloned().collect();
        let mut touched = BTreeSet::new();
        for key in old {
            touched.extend(self.take_slice(&key));
        }
        for slice in slices {
            touched.extend(self.insert_slice(slice));
        }
        touched.into_iter().for_each(|k| self.recompute(&k));
    }

    /// A slice added or changed.
    pub fn put_slice(&mut self, slice: EndpointSlice) {
        let key = key_of(&slice.metadata);
        let mut touched: BTreeSet<Key> = self.take_slice(&key).into_iter().collect();
        touched.extend(self.insert_slice(slice));
        touched.into_iter().for_each(|k| self.recompute(&k));
    }

    /// A slice deleted.
    pub fn remove_slice(&mut self, slice: &EndpointSlice) {
        if let Some(service) = self.take_slice(&key_of(&slice.metadata)) {
            self.recompute(&service);
        }
    }

    fn insert_slice(&mut self, slice: EndpointSlice) -> Option<Key> {
        let key = key_of(&slice.metadata);
        let service = model::slice_service(&slice).map(|s| (key.0.clone(), s.to_string()));
        if let Some(service) = &service {
            self.by_service.entry(service.clone()).or_default().insert(key.1.clone());
        }
        self.slices.insert(key, slice);
        service
    }

    fn take_slice(&mut self, key: &Key) -> Option<Key> {
        let slice = self.slices.remove(key)?;
        let service = model::slice_service(&slice).map(|s| (key.0.clone(), s.to_string()))?;
        if let Some(names) = self.by_service.get_mut(&service) {
            names.remove(&key.1);
            if names.is_empty() {
                self.by_service.remove(&service);
            }
        }
        Some(service)
    }

    fn recompute(&mut self, key: &Key) {
        let Some(service) = self.services.get(key) else {
            self.ports.remove(key);
            return;
        };
        let slices: Vec<&EndpointSlice> = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())))
            .collect();
        let rules: Vec<PortRules> = model::desired(service, &slices, &self.node_name)
            .into_iter()
            .filter(|r| r.protocol == Proto::Tcp)
            .collect();
        self.ports.insert(key.clone(), rules);
    }

    /// The ready endpoints of `namespace/name`'s `port` (a service port number or name).
    pub fn endpoints(&self, namespace: &str, name: &str, port: &PortRef) -> Result<Vec<SocketAddr>, Unavailable> {
        let key = (namespace.to_string(), name.to_string());
        if !self.services.contains_key(&key) {
            return Err(Unavailable::NoService(key.0, key.1));
        }
        let rules = self.ports.get(&key).map(Vec::as_slice).unwrap_or_default();
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
