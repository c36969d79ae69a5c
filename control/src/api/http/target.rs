//! Resolves a request path to the resource, namespace, name and subresource it addresses.

use crate::api::error::{ApiError, ApiResult};
use crate::api::resources::{ResourceInfo, Resources};

/// What a resource URL points at.
#[derive(Debug)]
pub struct Target<'a> {
    pub resource: &'a ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// A parsed `/api/...` or `/apis/...` path.
#[derive(Debug)]
pub enum Route<'a> {
    /// `/api/v1` or `/apis/<group>/<version>`: the resource list of one group-version.
    GroupVersion {
        group: String,
        version: String,
    },
    /// `/apis/<group>`: one group.
    Group {
        group: String,
    },
    Resource(Target<'a>),
}

/// Parses the path after the `/api` or `/apis` root (`legacy` for `/api`).
pub fn parse<'a>(resources: &'a Resources, legacy: bool, rest: &str) -> ApiResult<Route<'a>> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, segs) = if legacy {
        match segs.split_first() {
            Some((v, tail)) => ("", *v, tail),
            None => return Err(ApiError::NoSuchResource),
        }
    } else {
        match segs.as_slice() {
            [g] => return Ok(Route::Group { group: (*g).to_string() }),
            [g, v, tail @ ..] => (*g, *v, tail),
            _ => return Err(ApiError::NoSuchResource),
        }
    };
    let find = |plural: &str| resources.by_plural(group, version, plural).ok_or(ApiError::NoSuchResource);
    let some = |s: &&str| Some((*s).to_string());
    let target = match segs {
        [] => {
            if resources.iter().any(|r| r.group == group && r.version == version) {
                return Ok(Route::GroupVersion { group: group.into(), version: version.into() });
            }
            return Err(ApiError::NoSuchResource);
        }
        [res] => Target { resource: find(res)?, namespace: None, name: None, subresource: None },
        [res, name] => Target { resource: find(res)?, namespace: None, name: some(name), subresource: None },
        ["namespaces", ns, res] if !matches!(*res, "status" | "finalize") => {
            Target { resource: find(res)?, namespace: some(ns), name: None, subresource: None }
        }
        [res, name, sub] => Target { resource: find(res)?, namespace: None, name: some(name), subresource: some(sub) },
        ["namespaces", ns, res, name] => {
            Target { resource: find(res)?, namespace: some(ns), name: some(name), subresource: None }
        }
        ["namespaces", ns, res, name, sub] => {
            Target { resource: find(res)?, namespace: some(ns), name: some(name), subresource: some(sub) }
        }
        _ => return Err(ApiError::NoSuchResource),
    };
    if target.namespace.is_some() && !target.resource.namespaced {
        return Err(ApiError::NoSuchResource);
    }
    // kube-apiserver serves a namespaced resource's cluster-wide path only as a collection (list
    // and watch across namespaces): `/api/v1/pods/<name>` addresses nothing.
    if target.namespace.is_none() && target.resource.namespaced && target.name.is_some() {
        return Err(ApiError::NoSuchResource);
    }
    if let Some(sub) = &target.subresource {
        if !target.resource.subresources.contains(&sub.as_str()) {
            return Err(ApiError::NoSuchResource);
        }
    }
    Ok(Route::Resource(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = Resources::default();
        let Ok(Route::Resource(t)) = parse(&r, true, "v1/namespaces/shop/pods/web/log") else { panic!("pod log") };
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref()),
            ("pods", Some("shop"), Some("web"), Some("log"))
        );
        let Ok(Route::Resource(t)) = parse(&r, true, "v1/namespaces/shop") else { panic!("namespace") };
        assert_eq!((t.resource.plural, t.name.as_deref()), ("namespaces", Some("shop")));
        let Ok(Route::Resource(t)) = parse(&r, true, "v1/namespaces/shop/status") else { panic!("ns status") };
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let Ok(Route::Resource(t)) = parse(&r, false, "apps/v1/deployments") else { panic!("all deployments") };
        assert!(t.namespace.is_none());
        assert!(parse(&r, true, "v1/namespaces/shop/nodes").is_err());
        assert!(parse(&r, true, "v1/bogus").is_err());
        assert!(parse(&r, true, "v1/namespaces/a/pods/b/bogus").is_err());
        assert!(matches!(parse(&r, false, "apps/v1"), Ok(Route::GroupVersion { .. })));
        // A namespaced resource has no named objects at its cluster-wide path.
        assert!(matches!(parse(&r, true, "v1/configmaps/x"), Err(ApiError::NoSuchResource)));
        assert!(matches!(parse(&r, true, "v1/pods/x/status"), Err(ApiError::NoSuchResource)));
        assert!(matches!(parse(&r, true, "v1/pods"), Ok(Route::Resource(_))));
        assert!(matches!(parse(&r, true, "v1/nodes/n1/status"), Ok(Route::Resource(_))));
    }
}
