//! The routing core, independent of the objects it is built from (Ingress today, Gateway API's
//! HTTPRoute could feed the same [`Builder`]): hosts (exact and `*.wildcard`) -> paths (Exact
//! beats Prefix; the longest Prefix by path element wins) -> a backend, plus a default backend.
//! Pure; the proxy looks a request up in an immutable [`RouteTable`] and swaps whole tables.

use std::collections::HashMap;

/// How a rule's path is compared with a request's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The request path is exactly this path.
    Exact,
    /// The request path is this path or below it, element by element (`/foo` matches `/foo/bar`,
    /// not `/foobar`). Ingress's `ImplementationSpecific` is treated as this.
    Prefix,
}

/// A Service port, by number or by name (as an Ingress backend names it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// Where a matched request goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A Service's port; the proxy resolves it to ready endpoints.
    Service { namespace: String, name: String, port: PortRef },
    /// A backend skiff cannot serve (e.g. an Ingress `resource` backend): answered 503 with this text.
    Unavailable(String),
}

/// Routes of one host (or of every host, for rules without one).
#[derive(Clone, Debug, Default)]
struct HostRoutes {
    exact: HashMap<String, Backend>,
    /// Normalized prefix (no trailing `/`; `""` is `/`) -> backend, longest first.
    prefixes: Vec<(String, Backend)>,
}

impl HostRoutes {
    fn add(&mut self, path: &str, kind: PathMatch, backend: Backend) {
        match kind {
            PathMatch::Exact => {
                self.exact.entry(path.to_string()).or_insert(backend);
            }
            PathMatch::Prefix => {
                let prefix = normalize_prefix(path);
                if !self.prefixes.iter().any(|(p, _)| *p == prefix) {
                    self.prefixes.push((prefix, backend));
                }
            }
        }
    }

    fn finish(&mut self) {
        // Longest first; a stable sort keeps the first-added among equal lengths (they are distinct
        // prefixes of equal length, so at most one of them can match a path anyway).
        self.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    fn lookup(&self, path: &str) -> Option<&Backend> {
        if let Some(b) = self.exact.get(path) {
            return Some(b);
        }
        self.prefixes.iter().find(|(p, _)| prefix_matches(p, path)).map(|(_, b)| b)
    }
}

/// `/foo/` and `/foo` are the same prefix; `/` is the empty one.
fn normalize_prefix(path: &str) -> String {
    path.trim_end_matches('/').to_string()
}

/// Whether normalized `prefix` matches `path` element by element.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Hosts are compared case-insensitively and without a trailing dot or port.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    // Strip a port, but not from a bare IPv6 address (`[::1]:80` keeps `[::1]`).
    let without_port = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) => h,
        _ => host,
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// An immutable routing table; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    exact_hosts: HashMap<String, HostRoutes>,
    /// `*.example.com` stored as `example.com`.
    wildcard_hosts: HashMap<String, HostRoutes>,
    any_host: HostRoutes,
    default_backend: Option<Backend>,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A rule or the default backend.
    Backend(&'a Backend),
    /// Nothing matches: 404.
    NotFound,
}

impl RouteTable {
    /// The backend for a request to `host` (from `Host`/`:authority`, port allowed) and `path`
    /// (without the query). An exact host rule beats a wildcard (one DNS label: `*.a.b` matches
    /// `x.a.b`, not `a.b` nor `y.x.a.b`), which beats rules without a host; within the host,
    /// Exact beats the longest Prefix. Nothing matching goes to the default backend, else 404.
    pub fn lookup(&self, host: &str, path: &str) -> Route<'_> {
        let host = normalize_host(host);
        let path = if path.is_empty() { "/" } else { path };
        let routes = self.host_routes(&host);
        let found = routes.and_then(|r| r.lookup(path)).or(self.default_backend.as_ref());
        match found {
            Some(b) => Route::Backend(b),
            None => Route::NotFound,
        }
    }

    fn host_routes(&self, host: &str) -> Option<&HostRoutes> {
        if let Some(r) = self.exact_hosts.get(host) {
            return Some(r);
        }
        if let Some((_, parent)) = host.split_once('.') {
            if let Some(r) = self.wildcard_hosts.get(parent) {
                return Some(r);
            }
        }
        Some(&self.any_host)
    }

    /// Whether the table routes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.exact_hosts.is_empty()
            && self.wildcard_hosts.is_empty()
            && self.any_host.exact.is_empty()
            && self.any_host.prefixes.is_empty()
            && self.default_backend.is_none()
    }
}

/// Builds a [`RouteTable`]: the first definition of a (host, path, kind) and of the default
/// backend wins, so adding sources oldest first gives Kubernetes controllers' merge (the oldest
/// Ingress wins a conflict).
#[derive(Debug, Default)]
pub struct Builder {
    table: RouteTable,
}

impl Builder {
    /// A rule: `host` `None` or `""` for every host, `*.x` for a wildcard.
    pub fn route(&mut self, host: Option<&str>, path: &str, kind: PathMatch, backend: Backend) -> &mut Self {
        let routes = match host.map(normalize_host).filter(|h| !h.is_empty()) {
            None => &mut self.table.any_host,
            Some(h) => match h.strip_prefix("*.") {
                Some(parent) => self.table.wildcard_hosts.entry(parent.to_string()).or_default(),
                None => self.table.exact_hosts.entry(h).or_default(),
            },
        };
        routes.add(if path.is_empty() { "/" } else { path }, kind, backend);
        self
    }

    /// The default backend, unless one is set already.
    pub fn default_backend(&mut self, backend: Backend) -> &mut Self {
        if self.table.default_backend.is_none() {
            self.table.default_backend = Some(backend);
        }
        self
    }

    /// The finished table.
    pub fn build(mut self) -> RouteTable {
        for r in self.table.exact_hosts.values_mut().chain(self.table.wildcard_hosts.values_mut()) {
            r.finish();
        }
        self.table.any_host.finish();
        self.table
    }
}

/// Host -> TLS certificate names, with the same host matching as routes (exact beats wildcard);
/// the first definition wins. `C` is whatever names a certificate (a Secret, for Ingress).
#[derive(Clone, Debug)]
pub struct TlsHosts<C> {
    exact: HashMap<String, C>,
    wildcard: HashMap<String, C>,
}

impl<C> Default for TlsHosts<C> {
    fn default() -> Self {
        Self { exact: HashMap::new(), wildcard: HashMap::new() }
    }
}

impl<C> TlsHosts<C> {
    /// `host` (`*.x` for a wildcard) is served with `cert`, unless it already has one.
    pub fn add(&mut self, host: &str, cert: C) {
        let host = normalize_host(host);
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.entry(parent.to_string()).or_insert(cert),
            None => self.exact.entry(host).or_insert(cert),
        };
    }

    /// The certificate for a TLS server name.
    pub fn get(&self, server_name: &str) -> Option<&C> {
        let host = normalize_host(server_name);
        self.exact.get(&host).or_else(|| self.wildcard.get(host.split_once('.')?.1))
    }

    /// Every certificate named.
    pub fn values(&self) -> impl Iterator<Item = &C> {
        self.exact.values().chain(self.wildcard.values())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn svc(name: &str) -> Backend {
        Backend::Service { namespace: "d".into(), name: name.into(), port: PortRef::Number(80) }
    }

    fn target<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        match t.lookup(host, path) {
            Route::Backend(Backend::Service { name, .. }) => Some(name.as_str()),
            Route::Backend(Backend::Unavailable(_)) => Some("unavailable"),
            Route::NotFound => None,
        }
    }

    #[test]
    fn prefix_matches_by_element_and_longest_wins() {
        let mut b = Builder::default();
        b.route(Some("shop.local"), "/foo", PathMatch::Prefix, svc("foo"))
            .route(Some("shop.local"), "/foo/bar/", PathMatch::Prefix, svc("foobar"))
            .route(Some("shop.local"), "/", PathMatch::Prefix, svc("root"));
        let t = b.build();
        assert_eq!(target(&t, "shop.local", "/foo"), Some("foo"));
        assert_eq!(target(&t, "shop.local", "/foo/"), Some("foo"));
        assert_eq!(target(&t, "shop.local", "/foo/baz"), Some("foo"));
        assert_eq!(target(&t, "shop.local", "/foobar"), Some("root"), "/foo is not a prefix of /foobar");
        assert_eq!(target(&t, "shop.local", "/foo/bar"), Some("foobar"));
        assert_eq!(target(&t, "shop.local", "/foo/bar/x"), Some("foobar"));
        assert_eq!(target(&t, "shop.local", "/foo/barx"), Some("foo"));
        assert_eq!(target(&t, "SHOP.local:8080", "/"), Some("root"), "host case and port ignored");
        assert_eq!(target(&t, "other.local", "/foo"), None, "unknown host: 404");
    }

    #[test]
    fn exact_beats_prefix() {
        let mut b = Builder::default();
        b.route(None, "/api", PathMatch::Prefix, svc("prefix")).route(None, "/api", PathMatch::Exact, svc("exact"));
        let t = b.build();
        assert_eq!(target(&t, "any", "/api"), Some("exact"));
        assert_eq!(target(&t, "any", "/api/"), Some("prefix"), "Exact does not match a trailing slash");
        assert_eq!(target(&t, "any", "/api/v1"), Some("prefix"));
        assert_eq!(target(&t, "any", "/"), None);
    }

    #[test]
    fn hosts_exact_then_one_label_wildcard_then_any() {
        let mut b = Builder::default();
        b.route(Some("a.example.com"), "/", PathMatch::Prefix, svc("exact"))
            .route(Some("*.example.com"), "/", PathMatch::Prefix, svc("wild"))
            .route(None, "/", PathMatch::Prefix, svc("any"));
        let t = b.build();
        assert_eq!(target(&t, "a.example.com", "/x"), Some("exact"));
        assert_eq!(target(&t, "b.example.com", "/x"), Some("wild"));
        assert_eq!(target(&t, "c.b.example.com", "/x"), Some("any"), "a wildcard covers one label");
        assert_eq!(target(&t, "example.com", "/x"), Some("any"));
        assert_eq!(target(&t, "b.example.com.", "/x"), Some("wild"), "trailing dot ignored");
    }

    #[test]
    fn a_host_without_a_matching_path_takes_the_default_backend_else_404() {
        let mut b = Builder::default();
        b.route(Some("h"), "/only", PathMatch::Exact, svc("only"));
        assert_eq!(target(&b.build(), "h", "/other"), None);
        let mut b = Builder::default();
        b.route(Some("h"), "/only", PathMatch::Exact, svc("only")).default_backend(svc("default"));
        b.default_backend(svc("later"));
        let t = b.build();
        assert_eq!(target(&t, "h", "/other"), Some("default"));
        assert_eq!(target(&t, "unknown", "/"), Some("default"), "the first default backend wins");
    }

    #[test]
    fn the_first_definition_wins_a_conflict() {
        let mut b = Builder::default();
        b.route(Some("h"), "/x", PathMatch::Prefix, svc("older"))
            .route(Some("h"), "/x/", PathMatch::Prefix, svc("newer"))
            .route(Some("h"), "/y", PathMatch::Exact, svc("older-y"))
            .route(Some("h"), "/y", PathMatch::Exact, svc("newer-y"));
        let t = b.build();
        assert_eq!(target(&t, "h", "/x/1"), Some("older"));
        assert_eq!(target(&t, "h", "/y"), Some("older-y"));
    }

    #[test]
    fn tls_hosts_prefer_exact_names() {
        let mut tls = TlsHosts::default();
        tls.add("*.example.com", "wild");
        tls.add("a.example.com", "exact");
        tls.add("a.example.com", "later");
        assert_eq!(tls.get("a.example.com"), Some(&"exact"));
        assert_eq!(tls.get("B.example.com"), Some(&"wild"));
        assert_eq!(tls.get("example.com"), None);
        assert_eq!(tls.get("x.b.example.com"), None);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "ab", "b", "api", "v1", "x"]).prop_map(str::to_string)
    }

    fn path() -> impl Strategy<Value = String> {
        (prop::collection::vec(segment(), 0..4), any::<bool>())
            .prop_map(|(s, slash)| format!("/{}{}", s.join("/"), if slash && !s.is_empty() { "/" } else { "" }))
    }

    proptest! {
        /// The prefix chosen is the longest rule prefix that is a whole-element prefix of the path,
        /// computed the slow way on elements.
        #[test]
        fn the_longest_element_prefix_wins(rules in prop::collection::vec(path(), 1..6), request in path()) {
            let mut b = Builder::default();
            for (i, r) in rules.iter().enumerate() {
                b.route(None, r, PathMatch::Prefix, svc(&i.to_string()));
            }
            let t = b.build();
            let elements = |p: &str| p.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>();
            let req = elements(&request);
            let expected = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| { let e = elements(r); req.starts_with(&e) })
                // Longest; among equal prefixes (e.g. `/a` and `/a/`) the first added.
                .min_by_key(|(i, r)| (std::cmp::Reverse(elements(r).len()), *i))
                .map(|(i, _)| i.to_string());
            prop_assert_eq!(target(&t, "h", &request).map(str::to_string), expected);
        }

        /// Exact rules always win over prefixes for the very path they name, and never match another.
        #[test]
        fn exact_rules_match_only_their_path(exact in path(), prefix in path(), request in path()) {
            let mut b = Builder::default();
            b.route(None, &prefix, PathMatch::Prefix, svc("prefix")).route(None, &exact, PathMatch::Exact, svc("exact"));
            let t = b.build();
            let got = target(&t, "h", &request);
            if request == exact {
                prop_assert_eq!(got, Some("exact"));
            } else {
                prop_assert_ne!(got, Some("exact"));
            }
        }
    }
}
