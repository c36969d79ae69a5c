//! Image references (parse + normalize), the pull policy and its Kubernetes default rule.

use std::net::IpAddr;

use oci_client::Reference;

use super::error::ImageError;

/// A parsed, normalized image reference.
#[derive(Debug, Clone)]
pub(crate) struct ImageRef {
    /// The oci-client reference (registry, repository, tag and/or digest).
    pub oci: Reference,
    /// Normalized text, e.g. `127.0.0.1:5000/hello:1` or `docker.io/library/nginx:latest`.
    pub normalized: String,
}

impl ImageRef {
    /// Parses `reference` as Docker does (no registry -> docker.io, no tag -> :latest).
    pub fn parse(reference: &str) -> Result<Self, ImageError> {
        let trimmed = reference.trim();
        let oci: Reference = trimmed.parse().map_err(|e: oci_client::ParseError| ImageError::BadReference {
            reference: reference.to_string(),
            detail: e.to_string(),
        })?;
        let normalized = oci.whole();
        Ok(ImageRef { oci, normalized })
    }

    /// The registry host as written in the reference (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        self.oci.registry()
    }

    /// `<registry>/<repository>`, the part before `@` in an image ID.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.oci.registry(), self.oci.repository())
    }
}

/// Normalizes `reference` the way the image store keys it (e.g. `hello` -> `docker.io/library/hello:latest`).
pub fn normalize_reference(reference: &str) -> Result<String, ImageError> {
    Ok(ImageRef::parse(reference)?.normalized)
}

/// The registry host of `reference`, as used for credential lookups (`docker.io` for Docker Hub).
pub fn registry_of(reference: &str) -> Result<String, ImageError> {
    Ok(ImageRef::parse(reference)?.registry().to_string())
}

/// Kubernetes `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the reference at the registry on every container start.
    Always,
    /// Use the node's copy when there is one; pull otherwise.
    IfNotPresent,
    /// Only ever use the node's copy.
    Never,
}

impl PullPolicy {
    /// Reads the policy from the container spec; an absent or empty value gets the Kubernetes default
    /// for `image` (`Always` when the tag is `:latest` or missing and there is no digest, else `IfNotPresent`).
    pub fn from_k8s(policy: Option<&str>, image: &str) -> Result<Self, ImageError> {
        match policy.map(str::trim) {
            Some("Always") => Ok(PullPolicy::Always),
            Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
            Some("Never") => Ok(PullPolicy::Never),
            None | Some("") => Ok(PullPolicy::default_for(image)),
            Some(other) => Err(ImageError::BadReference {
                reference: image.to_string(),
                detail: format!("unknown imagePullPolicy {other:?} (expected Always, IfNotPresent or Never)"),
            }),
        }
    }

    /// The Kubernetes default: `Always` for `:latest` or untagged references without a digest.
    pub fn default_for(image: &str) -> Self {
        let image = image.trim();
        if image.contains('@') {
            return PullPolicy::IfNotPresent;
        }
        // The tag is after the last ':' that follows the last '/' (a ':' before it is a registry port).
        let last_segment = image.rsplit('/').next().unwrap_or(image);
        match last_segment.rsplit_once(':') {
            Some((_, "latest")) | None => PullPolicy::Always,
            Some(_) => PullPolicy::IfNotPresent,
        }
    }
}

/// Whether `registry` (`host[:port]`) is spoken to over plain HTTP: loopback registries (127.0.0.0/8, ::1,
/// localhost), as Docker treats them, and the configured insecure registries (`host:port` or `host`).
pub(crate) fn uses_plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = host_of(registry);
    if insecure.iter().any(|i| i == registry || i == host) {
        return true;
    }
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// The host of `host[:port]`, without brackets for IPv6 (`[::1]:5000` -> `::1`).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => registry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_follows_kubernetes() {
        assert_eq!(PullPolicy::default_for("nginx"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("nginx:latest"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("127.0.0.1:5000/hello"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("127.0.0.1:5000/hello:1"), PullPolicy::IfNotPresent);
        let digest = format!("hello@sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::default_for(&digest), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::from_k8s(Some("Never"), "x:1").ok(), Some(PullPolicy::Never));
        assert_eq!(PullPolicy::from_k8s(None, "x:1").ok(), Some(PullPolicy::IfNotPresent));
        assert!(PullPolicy::from_k8s(Some("Sometimes"), "x:1").is_err());
    }

    #[test]
    fn loopback_and_insecure_registries_use_http() {
        assert!(uses_plain_http("127.0.0.1:5000", &[]));
        assert!(uses_plain_http("127.3.2.1", &[]));
        assert!(uses_plain_http("localhost:5000", &[]));
        assert!(uses_plain_http("[::1]:5000", &[]));
        assert!(!uses_plain_http("registry.example.com:5000", &[]));
        assert!(uses_plain_http("registry.example.com:5000", &["registry.example.com:5000".into()]));
        assert!(!uses_plain_http("10.0.0.1:5000", &["10.0.0.1:6000".into()]));
    }

    #[test]
    fn references_normalize() {
        let r = ImageRef::parse("127.0.0.1:5000/hello:1").ok();
        assert_eq!(r.as_ref().map(|r| r.normalized.as_str()), Some("127.0.0.1:5000/hello:1"));
        assert_eq!(r.map(|r| r.repo()).as_deref(), Some("127.0.0.1:5000/hello"));
        assert_eq!(normalize_reference("hello").ok().as_deref(), Some("docker.io/library/hello:latest"));
        assert!(matches!(ImageRef::parse("has space:1"), Err(ImageError::BadReference { .. })));
    }
}
