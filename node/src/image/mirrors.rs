//! A node's registry configuration, in the shape of k3s's `registries.yaml`: mirrors per registry host
//! (`docker.io` -> `http://127.0.0.1:5000`), and per-host credentials and TLS settings. References keep
//! their names (`busybox` stays `docker.io/library/busybox:latest` in statuses and image IDs); only the
//! host the bytes come from changes.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::auth::RegistryAuth;
use super::error::ImageError;
use super::reference::ImageRef;

/// The whole file (`mirrors:` and `configs:`); an empty one changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistriesConfig {
    /// Registry host as written in references (`docker.io`, or `*` for every registry) -> its mirror.
    #[serde(default)]
    pub mirrors: HashMap<String, Mirror>,
    /// Registry or mirror host (`host:port`) -> credentials and TLS settings.
    #[serde(default)]
    pub configs: HashMap<String, HostConfig>,
}

/// Where a registry's images are fetched from instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Mirror {
    /// URLs (`http://host:port` for plain HTTP, `https://host` or a bare host for TLS); the first is used.
    #[serde(default)]
    pub endpoint: Vec<String>,
}

/// Settings for one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HostConfig {
    #[serde(default)]
    pub auth: Option<HostAuth>,
    #[serde(default)]
    pub tls: Option<HostTls>,
}

/// Basic-auth credentials for one host (used when the pod's pull secrets give none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HostAuth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

/// TLS settings for one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HostTls {
    /// Accept any certificate from this host.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Where one pull actually goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host[:port]` the registry API is spoken to.
    pub host: String,
    /// Plain HTTP (an `http://` mirror endpoint).
    pub plain_http: bool,
    /// Accept any certificate (`tls.insecure_skip_verify`).
    pub skip_verify: bool,
}

impl RegistriesConfig {
    /// Reads a `registries.yaml` file.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let text = std::fs::read_to_string(path).map_err(|e| ImageError::io("reading", path, e))?;
        Self::parse(&text).map_err(|detail| ImageError::BadCredentials {
            detail: format!("registry configuration {}: {detail}", path.display()),
        })
    }

    /// Parses the YAML text (an empty document is an empty configuration).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (registry, mirror) in &config.mirrors {
            for endpoint in &mirror.endpoint {
                let (host, _) = split_endpoint(endpoint);
                if host.is_empty() || host.contains('/') {
                    return Err(format!("mirror endpoint {endpoint:?} of {registry} is not a registry URL"));
                }
            }
        }
        Ok(config)
    }

    /// The endpoint a pull of `image` goes to: the registry's first mirror, else the registry itself.
    pub(crate) fn endpoint(&self, image: &ImageRef) -> Endpoint {
        let registry = image.registry();
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        let (host, plain_http) = match mirror.and_then(|m| m.endpoint.first()) {
            Some(url) => {
                let (host, plain) = split_endpoint(url);
                (host.to_string(), plain)
            }
            None => (image.oci.resolve_registry().to_string(), false),
        };
        let skip_verify = self.host(&host).and_then(|c| c.tls.as_ref()).is_some_and(|t| t.insecure_skip_verify);
        Endpoint { host, plain_http, skip_verify }
    }

    /// The reference to fetch `image` by at `endpoint` (same repository, tag and digest).
    pub(crate) fn at(image: &ImageRef, endpoint: &Endpoint) -> ImageRef {
        if endpoint.host == image.oci.resolve_registry() || endpoint.host == image.registry() {
            return image.clone();
        }
        let repository = image.oci.repository().to_string();
        let oci = match (image.oci.tag(), image.oci.digest()) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                endpoint.host.clone(),
                repository,
                tag.to_string(),
                digest.to_string(),
            ),
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(endpoint.host.clone(), repository, digest.into())
            }
            (tag, None) => {
                oci_client::Reference::with_tag(endpoint.host.clone(), repository, tag.unwrap_or("latest").to_string())
            }
        };
        ImageRef { oci, normalized: image.normalized.clone() }
    }

    /// Credentials configured for `host` (a mirror host, or a registry as references name it).
    pub(crate) fn auth(&self, host: &str) -> Option<RegistryAuth> {
        let auth = self.host(host)?.auth.as_ref()?;
        Some(RegistryAuth { username: auth.username.clone(), password: auth.password.clone() })
    }

    fn host(&self, host: &str) -> Option<&HostConfig> {
        self.configs.get(host)
    }
}

/// `http://h:p/` -> (`h:p`, plain HTTP); `https://h` or `h` -> (`h`, TLS).
fn split_endpoint(url: &str) -> (&str, bool) {
    let (rest, plain) = match url.strip_prefix("http://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("https://").unwrap_or(url), false),
    };
    (rest.trim_end_matches('/'), plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000/"]
configs:
  "127.0.0.1:5000":
    auth: {username: u, password: p}
  "quay.io":
    tls: {insecure_skip_verify: true}
"#;

    #[test]
    fn a_mirror_keeps_the_name_and_changes_the_host() {
        let config = RegistriesConfig::parse(YAML).expect("parse");
        let image = ImageRef::parse("busybox").expect("ref");
        let endpoint = config.endpoint(&image);
        assert_eq!(endpoint, Endpoint { host: "127.0.0.1:5000".into(), plain_http: true, skip_verify: false });
        let fetch = RegistriesConfig::at(&image, &endpoint);
        assert_eq!(fetch.normalized, "docker.io/library/busybox:latest");
        assert_eq!(fetch.oci.whole(), "127.0.0.1:5000/library/busybox:latest");
        assert_eq!(config.auth("127.0.0.1:5000").map(|a| a.username), Some("u".into()));

        let quay =
            ImageRef::parse("quay.io/x/y@sha256:0000000000000000000000000000000000000000000000000000000000000000")
                .expect("ref");
        let endpoint = config.endpoint(&quay);
        assert_eq!(endpoint, Endpoint { host: "quay.io".into(), plain_http: false, skip_verify: true });
        assert_eq!(RegistriesConfig::at(&quay, &endpoint).oci.whole(), quay.oci.whole());
    }

    #[test]
    fn bad_files_are_refused() {
        assert_eq!(RegistriesConfig::parse("").expect("empty"), RegistriesConfig::default());
        assert!(RegistriesConfig::parse("mirrors: [1]").is_err());
        assert!(RegistriesConfig::parse("mirrors: {docker.io: {endpoint: [\"http://a/b\"]}}").is_err());
    }
}
