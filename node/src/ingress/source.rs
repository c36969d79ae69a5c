//! networking.k8s.io/v1 Ingresses as a front end of the routing core: which Ingresses are
//! skiff's (by IngressClass), merged oldest first into one [`RouteTable`] and TLS host map.

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use super::route::{Backend, Builder, PathMatch, PortRef, RouteTable, TlsHosts};

/// The `spec.controller` of IngressClasses skiff serves.
pub const CONTROLLER: &str = "skiff.io/ingress";
/// The annotation making an IngressClass the default for Ingresses without a class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated per-Ingress class annotation, still honoured by controllers.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// A TLS certificate source: the Secret `namespace/name`.
pub type SecretKey = (String, String);

/// The IngressClasses skiff owns, and whether one of them is the cluster's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classes {
    pub ours: Vec<String>,
    pub default_is_ours: bool,
}

impl Classes {
    /// From every IngressClass in the cluster.
    pub fn from<'a>(classes: impl IntoIterator<Item = &'a IngressClass>) -> Self {
        let mut this = Classes::default();
        for class in classes {
            let ours = class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER);
            if !ours {
                continue;
            }
            let name = class.metadata.name.clone().unwrap_or_default();
            let default = class.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                == Some(&"true".to_string());
            this.default_is_ours |= default;
            this.ours.push(name);
        }
        this
    }

    /// Whether `ingress` is served by skiff.
    pub fn takes(&self, ingress: &Ingress) -> bool {
        let class = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()).or_else(|| {
            ingress.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)).map(String::as_str)
        });
        match class {
            Some(c) => self.ours.iter().any(|o| o == c),
            None => self.default_is_ours,
        }
    }
}

/// What the proxy serves from a set of Ingresses.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    pub table: RouteTable,
    pub tls: TlsHosts<SecretKey>,
}

fn backend(namespace: &str, b: &IngressBackend) -> Backend {
    if let Some(svc) = &b.service {
        let port = match &svc.port {
            Some(p) => match (&p.name, p.number) {
                (Some(name), _) if !name.is_empty() => PortRef::Name(name.clone()),
                (_, Some(n)) => match u16::try_from(n) {
                    Ok(n) if n > 0 => PortRef::Number(n),
                    _ => return Backend::Unavailable(format!("invalid service port {n}")),
                },
                _ => return Backend::Unavailable("the backend names no service port".into()),
            },
            None => return Backend::Unavailable("the backend names no service port".into()),
        };
        return Backend::Service { namespace: namespace.to_string(), name: svc.name.clone(), port };
    }
    match &b.resource {
        Some(r) => {
            Backend::Unavailable(format!("resource backends ({}/{}) are not supported by skiff", r.kind, r.name))
        }
        None => Backend::Unavailable("the backend names neither a service nor a resource".into()),
    }
}

fn path_match(path_type: &str) -> PathMatch {
    match path_type {
        "Exact" => PathMatch::Exact,
        _ => PathMatch::Prefix,
    }
}

/// Oldest first (creation time, then namespace/name): the order conflicts are decided in.
fn age_key(i: &Ingress) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        i.metadata.creation_timestamp.as_ref().map(|t| t.0),
        i.metadata.namespace.clone().unwrap_or_default(),
        i.metadata.name.clone().unwrap_or_default(),
    )
}

/// Merges the Ingresses `classes` takes into one table; the oldest Ingress wins a conflict.
pub fn routes<'a>(ingresses: impl IntoIterator<Item = &'a Ingress>, classes: &Classes) -> Routes {
    let mut ours: Vec<&Ingress> = ingresses.into_iter().filter(|i| classes.takes(i)).collect();
    ours.sort_by_key(|i| age_key(i));
    let mut builder = Builder::default();
    let mut tls = TlsHosts::default();
    for ing in ours {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let Some(spec) = &ing.spec else { continue };
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.as_deref();
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let path = p.path.as_deref().unwrap_or("/");
                builder.route(host, path, path_match(&p.path_type), backend(&ns, &p.backend));
            }
        }
        if let Some(default) = &spec.default_backend {
            builder.default_backend(backend(&ns, default));
        }
        for t in spec.tls.iter().flatten() {
            let Some(secret) = t.secret_name.clone().filter(|s| !s.is_empty()) else { continue };
            for host in t.hosts.iter().flatten() {
                tls.add(host, (ns.clone(), secret.clone()));
            }
        }
    }
    Routes { table: builder.build(), tls }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ingress::route::Route;

    fn ingress(json: serde_json::Value) -> Ingress {
        serde_json::from_value(json).unwrap()
    }

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        let annotations =
            if default { serde_json::json!({DEFAULT_CLASS_ANNOTATION: "true"}) } else { serde_json::json!({}) };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"controller": controller}
        }))
        .unwrap()
    }

    fn rule_ingress(name: &str, created: &str, class: Option<&str>, svc: &str) -> Ingress {
        ingress(serde_json::json!({
            "metadata": {"name": name, "namespace": "d", "creationTimestamp": created},
            "spec": {
                "ingressClassName": class,
                "rules": [{"host": "shop.local", "http": {"paths": [
                    {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 8080}}}}
                ]}}],
                "tls": [{"hosts": ["shop.local"], "secretName": format!("{svc}-tls")}]
            }
        }))
    }

    #[test]
    fn classes_decide_which_ingresses_are_ours() {
        let skiff = class("skiff", CONTROLLER, true);
        let other = class("nginx", "k8s.io/ingress-nginx", false);
        let classes = Classes::from([&skiff, &other]);
        assert!(classes.takes(&rule_ingress("a", "2026-01-01T00:00:00Z", Some("skiff"), "s")));
        assert!(!classes.takes(&rule_ingress("a", "2026-01-01T00:00:00Z", Some("nginx"), "s")));
        assert!(classes.takes(&rule_ingress("a", "2026-01-01T00:00:00Z", None, "s")), "default class");
        let not_default = Classes::from([&class("skiff", CONTROLLER, false)]);
        assert!(!not_default.takes(&rule_ingress("a", "2026-01-01T00:00:00Z", None, "s")));
    }

    #[test]
    fn the_oldest_ingress_wins_conflicts() {
        let classes = Classes::from([&class("skiff", CONTROLLER, true)]);
        let newer = rule_ingress("a-newer", "2026-02-01T00:00:00Z", None, "newer");
        let older = rule_ingress("z-older", "2026-01-01T00:00:00Z", None, "older");
        let r = routes([&newer, &older], &classes);
        match r.table.lookup("shop.local", "/api/x") {
            Route::Backend(Backend::Service { name, port, namespace }) => {
                assert_eq!((name.as_str(), namespace.as_str()), ("older", "d"));
                assert_eq!(*port, PortRef::Number(8080));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.tls.get("shop.local"), Some(&("d".to_string(), "older-tls".to_string())));
    }

    #[test]
    fn named_ports_default_and_resource_backends() {
        let classes = Classes::from([&class("skiff", CONTROLLER, true)]);
        let ing = ingress(serde_json::json!({
            "metadata": {"name": "x", "namespace": "d"},
            "spec": {
                "defaultBackend": {"resource": {"kind": "StorageBucket", "name": "b"}},
                "rules": [{"http": {"paths": [
                    {"path": "/n", "pathType": "ImplementationSpecific", "backend": {"service": {"name": "s", "port": {"name": "web"}}}}
                ]}}]
            }
        }));
        let r = routes([&ing], &classes);
        assert!(matches!(
            r.table.lookup("any", "/n/1"),
            Route::Backend(Backend::Service { port: PortRef::Name(p), .. }) if p == "web"
        ));
        assert!(
            matches!(r.table.lookup("any", "/other"), Route::Backend(Backend::Unavailable(m)) if m.contains("StorageBucket"))
        );
    }
}
