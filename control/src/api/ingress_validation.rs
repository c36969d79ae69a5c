//! networking.k8s.io/v1 Ingress and IngressClass validation, worded as kube-apiserver's.

use serde_json::Value;

use super::admission::Cause;
use super::names;
use super::object;

const PATH_TYPES: [&str; 3] = ["Exact", "ImplementationSpecific", "Prefix"];
/// Sequences an Exact or Prefix path must not contain, and endings it must not have.
const INVALID_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
const INVALID_SUFFIXES: [&str; 2] = ["/..", "/."];

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The causes of an Ingress (empty when valid).
pub fn validate_ingress(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec") else {
        causes.push((
            "spec".into(),
            "Invalid value: \"null\": either `defaultBackend` or `rules` must be specified".into(),
        ));
        return;
    };
    let rules = arr(spec, "rules");
    match spec.get("defaultBackend").filter(|b| !b.is_null()) {
        Some(b) => backend(b, "spec.defaultBackend", causes),
        None if rules.is_empty() => causes.push((
            "spec".into(),
            "Invalid value: \"null\": either `defaultBackend` or `rules` must be specified".into(),
        )),
        None => {}
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(host) = rule.get("host").and_then(Value::as_str).filter(|h| !h.is_empty()) {
            check_host(host, &format!("{at}.host"), causes);
        }
        let Some(http) = rule.get("http").filter(|h| !h.is_null()) else { continue };
        let paths = arr(http, "paths");
        if paths.is_empty() {
            causes.push((format!("{at}.http.paths"), "Required value".into()));
        }
        for (j, p) in paths.iter().enumerate() {
            let at = format!("{at}.http.paths[{j}]");
            path(p, &at, causes);
            match p.get("backend").filter(|b| !b.is_null()) {
                Some(b) => backend(b, &format!("{at}.backend"), causes),
                None => causes.push((format!("{at}.backend"), "Required value".into())),
            }
        }
    }
    for (i, tls) in arr(spec, "tls").iter().enumerate() {
        for (j, host) in arr(tls, "hosts").iter().enumerate() {
            if let Some(host) = host.as_str() {
                check_host(host, &format!("spec.tls[{i}].hosts[{j}]"), causes);
            }
        }
    }
}

fn check_host(host: &str, field: &str, causes: &mut Vec<Cause>) {
    if host.parse::<std::net::IpAddr>().is_ok() {
        causes.push((field.into(), format!("Invalid value: \"{host}\": must be a DNS name, not an IP address")));
        return;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if let Err(msg) = names::check_dns1123_subdomain(name) {
        causes.push((field.into(), format!("Invalid value: \"{host}\": {msg}")));
    }
}

fn path(p: &Value, at: &str, causes: &mut Vec<Cause>) {
    let path = p.get("path").and_then(Value::as_str).unwrap_or("");
    let field = format!("{at}.path");
    let absolute = || format!("Invalid value: \"{path}\": must be an absolute path");
    match p.get("pathType").and_then(Value::as_str) {
        None | Some("") => causes.push((format!("{at}.pathType"), "Required value: pathType must be specified".into())),
        Some("Exact" | "Prefix") => {
            if !path.starts_with('/') {
                causes.push((field, absolute()));
                return;
            }
            if let Some(seq) = INVALID_SEQUENCES.iter().find(|s| path.contains(*s)) {
                causes.push((field, format!("Invalid value: \"{path}\": must not contain '{seq}'")));
            } else if let Some(suffix) = INVALID_SUFFIXES.iter().find(|s| path.ends_with(*s)) {
                causes.push((field, format!("Invalid value: \"{path}\": cannot end with '{suffix}'")));
            }
        }
        Some("ImplementationSpecific") => {
            if !path.is_empty() && !path.starts_with('/') {
                causes.push((field, absolute()));
            }
        }
        Some(other) => {
            let supported: Vec<String> = PATH_TYPES.iter().map(|t| format!("\"{t}\"")).collect();
            causes.push((
                format!("{at}.pathType"),
                format!("Unsupported value: \"{other}\": supported values: {}", supported.join(", ")),
            ));
        }
    }
}

fn backend(b: &Value, at: &str, causes: &mut Vec<Cause>) {
    let service = b.get("service").filter(|s| !s.is_null());
    let resource = b.get("resource").filter(|r| !r.is_null());
    match (service, resource) {
        (Some(_), Some(_)) => {
            causes.push((at.into(), "Invalid value: \"\": cannot set both resource and service backends".into()))
        }
        (None, None) => causes.push((at.into(), "Invalid value: \"\": resource or service backend is required".into())),
        (None, Some(r)) => {
            for key in ["kind", "name"] {
                if object::str_at(r, &[key]).is_none_or(str::is_empty) {
                    causes.push((format!("{at}.resource.{key}"), "Required value".into()));
                }
            }
        }
        (Some(s), None) => {
            match s.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                None => causes.push((format!("{at}.service.name"), "Required value".into())),
                Some(name) => {
                    if let Err(msg) = names::check_dns1123_label(name) {
                        causes.push((format!("{at}.service.name"), format!("Invalid value: \"{name}\": {msg}")));
                    }
                }
            }
            let port = s.get("port");
            let name = port.and_then(|p| p.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty());
            let number = port.and_then(|p| p.get("number")).and_then(Value::as_i64).filter(|n| *n != 0);
            match (name, number) {
                (Some(_), Some(_)) => {
                    causes.push((at.into(), "Invalid value: \"\": cannot set both port name & port number".into()))
                }
                (None, None) => causes.push((at.into(), "Required value: port name or number is required".into())),
                (None, Some(n)) if !(1..=65535).contains(&n) => causes.push((
                    format!("{at}.service.port.number"),
                    format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                )),
                _ => {}
            }
        }
    }
}

/// The causes of an IngressClass.
pub fn validate_ingress_class(obj: &Value, causes: &mut Vec<Cause>) {
    match object::str_at(obj, &["spec", "controller"]).filter(|c| !c.is_empty()) {
        None => causes.push(("spec.controller".into(), "Required value".into())),
        Some(c) if c.len() > 250 => {
            causes.push(("spec.controller".into(), "Too long: may not be more than 250 bytes".into()))
        }
        Some(_) => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes_of(spec: Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate_ingress(&json!({"metadata": {"name": "i", "namespace": "d"}, "spec": spec}), &mut causes);
        causes
    }

    fn paths(p: Value) -> Value {
        json!({"rules": [{"host": "shop.local", "http": {"paths": [p]}}]})
    }

    #[test]
    fn a_valid_ingress_has_no_causes() {
        let spec = json!({
            "defaultBackend": {"service": {"name": "web", "port": {"name": "http"}}},
            "rules": [{"host": "*.shop.local", "http": {"paths": [
                {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 80}}}},
                {"pathType": "ImplementationSpecific", "backend": {"resource": {"kind": "Bucket", "name": "b"}}}
            ]}}],
            "tls": [{"hosts": ["shop.local"], "secretName": "tls"}]
        });
        assert_eq!(causes_of(spec), Vec::<Cause>::new());
    }

    #[test]
    fn kube_apiserver_messages() {
        let svc = json!({"service": {"name": "web", "port": {"number": 80}}});
        let c = causes_of(paths(json!({"path": "/x", "backend": svc})));
        assert_eq!(
            c,
            vec![("spec.rules[0].http.paths[0].pathType".into(), "Required value: pathType must be specified".into())]
        );
        let c = causes_of(paths(json!({"path": "/x", "pathType": "Regex", "backend": svc})));
        assert_eq!(
            c[0].1,
            "Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\""
        );
        let c = causes_of(paths(json!({"path": "x", "pathType": "Prefix", "backend": svc})));
        assert_eq!(
            c[0],
            ("spec.rules[0].http.paths[0].path".into(), "Invalid value: \"x\": must be an absolute path".into())
        );
        let both = json!({"service": {"name": "web", "port": {"number": 80}}, "resource": {"kind": "B", "name": "b"}});
        let c = causes_of(paths(json!({"path": "/", "pathType": "Exact", "backend": both})));
        assert_eq!(c[0].1, "Invalid value: \"\": cannot set both resource and service backends");
        let ports = json!({"service": {"name": "web", "port": {"number": 80, "name": "http"}}});
        let c = causes_of(paths(json!({"path": "/", "pathType": "Exact", "backend": ports})));
        assert_eq!(
            c[0],
            (
                "spec.rules[0].http.paths[0].backend".into(),
                "Invalid value: \"\": cannot set both port name & port number".into()
            )
        );
        let none = json!({"service": {"name": "web", "port": {}}});
        let c = causes_of(paths(json!({"path": "/", "pathType": "Exact", "backend": none})));
        assert_eq!(c[0].1, "Required value: port name or number is required");
        assert_eq!(causes_of(json!({}))[0].0, "spec");
        let c = causes_of(json!({"rules": [{"host": "10.0.0.1"}]}));
        assert_eq!(c[0].1, "Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address");
    }
}
