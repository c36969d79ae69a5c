//! The authorization attributes of a request, decided from its method, path and query as
//! kube-apiserver's `RequestInfoFactory` does (independent of which resources exist).

use super::UserInfo;

/// What a request asks to do (`authorizer.Attributes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    /// A resource request (`/api/v1/...`, `/apis/<g>/<v>/...`); otherwise a non-resource URL.
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub path: String,
    /// A list's or watch's `fieldSelector`, decoded (kube's AuthorizeWithSelectors): the Node
    /// authorizer grants some reads only with a given selector.
    pub field_selector: String,
}

fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// Decodes a query-string value (`+` is a space, `%XX` escapes).
fn unescape(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// The attributes of `method path?query` for `user`.
pub fn attributes(user: UserInfo, method: &str, path: &str, query: Option<&str>) -> Attributes {
    let lower = method.to_ascii_lowercase();
    let non_resource = |user| Attributes { user, verb: lower.clone(), path: path.to_string(), ..Attributes::default() };
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return non_resource(user),
    };
    let mut verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_string();
    let mut rest = rest;
    if rest.first() == Some(&"watch") {
        verb = "watch".into();
        rest = &rest[1..];
    }
    let mut namespace = String::new();
    if rest.first() == Some(&"namespaces") {
        if let Some(ns) = rest.get(1) {
            namespace = (*ns).to_string();
            if rest.len() > 2 && !matches!(rest.get(2), Some(&"status" | &"finalize")) {
                rest = &rest[2..];
            }
        }
    }
    let resource = rest.first().map(|s| (*s).to_string()).unwrap_or_default();
    let mut name = rest.get(1).map(|s| (*s).to_string()).unwrap_or_default();
    let subresource = rest.get(2).map(|s| (*s).to_string()).unwrap_or_default();
    if name.is_empty() && verb == "get" {
        verb = if truthy(query_value(query, "watch")) { "watch".into() } else { "list".into() };
    } else if verb == "get" && truthy(query_value(query, "watch")) {
        verb = "watch".into();
    }
    // Streaming subresources need `create`, also over a WebSocket's GET (kube-apiserver 1.30+).
    if resource == "pods" && matches!(subresource.as_str(), "exec" | "attach" | "portforward") {
        verb = "create".into();
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection".into();
    }
    let mut field_selector = String::new();
    if (verb == "list" || verb == "watch") && name.is_empty() {
        if let Some(selector) = query_value(query, "fieldSelector") {
            let selector = unescape(selector);
            if let Some(n) = selector.strip_prefix("metadata.name=").filter(|n| !n.contains(',')) {
                name = n.trim_start_matches('=').to_string();
            }
            field_selector = selector;
        }
    }
    Attributes {
        user,
        verb,
        resource_request: true,
        api_group: group.to_string(),
        api_version: version.to_string(),
        namespace,
        resource,
        subresource,
        name,
        path: path.to_string(),
        field_selector,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, query: Option<&str>) -> Attributes {
        attributes(UserInfo::default(), method, path, query)
    }

    #[test]
    fn verbs_as_kube_apiserver_decides_them() {
        let a = attrs("GET", "/api/v1/namespaces/team-a/pods", None);
        assert_eq!((a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()), ("list", "pods", "team-a"));
        assert_eq!(attrs("GET", "/api/v1/namespaces/team-a/pods", Some("watch=true")).verb, "watch");
        assert_eq!(attrs("GET", "/api/v1/namespaces/team-a/pods/x", None).verb, "get");
        assert_eq!(attrs("GET", "/api/v1/namespaces/team-a/pods/x", Some("watch=1")).verb, "watch");
        assert_eq!(attrs("DELETE", "/api/v1/namespaces/team-a/pods", None).verb, "deletecollection");
        let a = attrs("GET", "/api/v1/namespaces/a/pods", Some("fieldSelector=metadata.name%3Dweb"));
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", "web"));
        let a = attrs("GET", "/api/v1/namespaces/a/pods/web/log", None);
        assert_eq!((a.verb.as_str(), a.subresource.as_str(), a.name.as_str()), ("get", "log", "web"));
        let a = attrs("GET", "/api/v1/namespaces/default/pods/web/exec", Some("command=ls&stdout=true"));
        assert_eq!((a.verb.as_str(), a.subresource.as_str()), ("create", "exec"));
        let a = attrs("PUT", "/apis/apps/v1/namespaces/a/deployments/w/scale", None);
        assert_eq!((a.api_group.as_str(), a.verb.as_str(), a.subresource.as_str()), ("apps", "update", "scale"));
        let a = attrs("GET", "/api/v1/namespaces/a", None);
        assert_eq!((a.resource.as_str(), a.name.as_str(), a.namespace.as_str()), ("namespaces", "a", "a"));
        let a = attrs("PUT", "/api/v1/namespaces/a/finalize", None);
        assert_eq!((a.resource.as_str(), a.subresource.as_str()), ("namespaces", "finalize"));
        let a = attrs("GET", "/api/v1/nodes", None);
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", ""));
        let a = attrs("GET", "/apis/apps", None);
        assert!(!a.resource_request);
        assert_eq!(a.verb, "get");
        assert!(!attrs("GET", "/healthz", None).resource_request);
        assert!(!attrs("GET", "/api", None).resource_request);
        assert!(!attrs("GET", "/api/v1", None).resource_request);
    }
}
