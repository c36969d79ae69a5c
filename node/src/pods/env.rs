//! A container's environment: `env` (values, `$(VAR)` references, `valueFrom`) and `envFrom`, as the
//! kubelet builds it.

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod};

use super::lookup::{Lookup, LookupError};

/// What the downward API can see of a running pod.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub node_name: &'a str,
}

/// The environment of `container`, in order (later entries win, as in Kubernetes), after `base`
/// (the service variables, which the container's own `env` may refer to and override).
pub async fn resolve(
    container: &Container,
    facts: &PodFacts<'_>,
    lookup: &Lookup,
    base: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env: Vec<(String, String)> = base;
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &source.config_map_ref {
            lookup.config_map(&cm.name, cm.optional.unwrap_or(false)).await?
        } else if let Some(s) = &source.secret_ref {
            lookup.secret(&s.name, s.optional.unwrap_or(false)).await?
        } else {
            None
        };
        for (k, v) in data.unwrap_or_default() {
            set(&mut env, format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                lookup.key(false, &r.name, &r.key, r.optional.unwrap_or(false)).await?
            } else if let Some(r) = &from.secret_key_ref {
                lookup.key(true, &r.name, &r.key, r.optional.unwrap_or(false)).await?
            } else if let Some(f) = &from.field_ref {
                Some(field(f, facts)?)
            } else {
                from.resource_field_ref.as_ref().map(|r| resource_field(container, &r.resource))
            }
        } else {
            Some(expand(var.value.as_deref().unwrap_or(""), &env))
        };
        if let Some(v) = value {
            set(&mut env, var.name.clone(), v);
        }
    }
    Ok(env)
}

/// Expands `$(VAR)` from `env`; `$$` escapes; unknown references stay as written (Kubernetes rules).
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field(selector: &ObjectFieldSelector, facts: &PodFacts<'_>) -> Result<String, EnvError> {
    let meta = &facts.pod.metadata;
    let path = selector.field_path.as_str();
    let label = |prefix: &str, map: &Option<std::collections::BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => facts.node_name.to_string(),
        "spec.serviceAccountName" => {
            facts.pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into())
        }
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => {
            if let Some(v) = label("metadata.labels['", &meta.labels) {
                v
            } else if let Some(v) = label("metadata.annotations['", &meta.annotations) {
                v
            } else {
                return Err(EnvError::UnsupportedField(path.to_string()));
            }
        }
    })
}

/// `resourceFieldRef`: the container's limit (or request) in plain units (bytes, whole cores rounded up).
pub fn resource_field(container: &Container, resource: &str) -> String {
    let res = container.resources.as_ref();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let map =
        if kind == "requests" { res.and_then(|r| r.requests.as_ref()) } else { res.and_then(|r| r.limits.as_ref()) };
    let quantity = map.and_then(|m| m.get(name)).map(|q| q.0.clone());
    match (name, quantity) {
        ("cpu", Some(q)) => crate::pods::quantity::millicores(&q).map(|m| m.div_ceil(1000).to_string()).unwrap_or(q),
        ("cpu", None) => {
            std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_else(|_| "1".into())
        }
        (_, Some(q)) => crate::pods::quantity::bytes(&q).map(|b| b.to_string()).unwrap_or(q),
        (_, None) => "0".into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("unsupported fieldRef {0}")]
    UnsupportedField(String),
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_references_like_kubernetes() {
        let env = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "two".to_string())];
        assert_eq!(expand("x-$(A)-$(B)", &env), "x-1-two");
        assert_eq!(expand("$(MISSING)", &env), "$(MISSING)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
        assert_eq!(expand("open $(A", &env), "open $(A");
    }
}
