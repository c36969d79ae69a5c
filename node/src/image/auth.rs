//! Registry credentials: the basic-auth pair and the `kubernetes.io/dockerconfigjson` secret format.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use super::error::ImageError;

/// A username and password for HTTP basic auth (or a token exchange) at one registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

impl RegistryAuth {
    pub(crate) fn to_oci(auth: Option<&RegistryAuth>) -> oci_client::secrets::RegistryAuth {
        match auth {
            Some(a) => oci_client::secrets::RegistryAuth::Basic(a.username.clone(), a.password.clone()),
            None => oci_client::secrets::RegistryAuth::Anonymous,
        }
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: Option<HashMap<String, DockerAuthEntry>>,
}

#[derive(Deserialize)]
struct DockerAuthEntry {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

/// Reads a `.dockerconfigjson` (`{"auths":{"host":{"username","password"} | {"auth": base64("user:pass")}}}`,
/// or the legacy `.dockercfg` map without `auths`) into credentials keyed by registry host as it appears in
/// image references (`https://index.docker.io/v1/` -> `docker.io`, `http://127.0.0.1:5000` -> `127.0.0.1:5000`).
/// Entries with neither form (e.g. only an identity token) are skipped.
pub fn auths_from_docker_config(json: &[u8]) -> Result<HashMap<String, RegistryAuth>, ImageError> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| ImageError::BadCredentials { detail: format!("docker config is not valid JSON: {e}") })?;
    let entries: HashMap<String, DockerAuthEntry> = if value.get("auths").is_some() {
        let cfg: DockerConfig = serde_json::from_value(value)
            .map_err(|e| ImageError::BadCredentials { detail: format!("docker config \"auths\": {e}") })?;
        cfg.auths.unwrap_or_default()
    } else {
        serde_json::from_value(value)
            .map_err(|e| ImageError::BadCredentials { detail: format!("docker config: {e}") })?
    };
    let mut out = HashMap::new();
    for (host, entry) in entries {
        let auth = match (entry.username, entry.password, entry.auth) {
            (Some(username), Some(password), _) if !username.is_empty() => RegistryAuth { username, password },
            (_, _, Some(encoded)) if !encoded.is_empty() => decode_auth(&host, &encoded)?,
            _ => continue,
        };
        out.insert(normalize_registry_key(&host), auth);
    }
    Ok(out)
}

fn decode_auth(host: &str, encoded: &str) -> Result<RegistryAuth, ImageError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| ImageError::BadCredentials { detail: format!("\"auth\" of {host} is not base64: {e}") })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ImageError::BadCredentials { detail: format!("\"auth\" of {host} is not UTF-8") })?;
    let (username, password) = text.split_once(':').ok_or_else(|| ImageError::BadCredentials {
        detail: format!("\"auth\" of {host} is not base64(\"user:password\")"),
    })?;
    Ok(RegistryAuth { username: username.to_string(), password: password.to_string() })
}

/// `https://index.docker.io/v1/` -> `docker.io`; `http://host:5000/path` -> `host:5000`.
fn normalize_registry_key(key: &str) -> String {
    let key = key.trim();
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_and_key_normalization() -> Result<(), ImageError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode("bob:p:w");
        let json = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"username":"alice","password":"s3cret"}},
                "https://index.docker.io/v1/":{{"auth":"{encoded}"}},
                "http://reg.local:80/v2/":{{"identitytoken":"x"}}}}}}"#
        );
        let auths = auths_from_docker_config(json.as_bytes())?;
        assert_eq!(auths.len(), 2);
        assert_eq!(auths["127.0.0.1:5000"], RegistryAuth { username: "alice".into(), password: "s3cret".into() });
        assert_eq!(auths["docker.io"], RegistryAuth { username: "bob".into(), password: "p:w".into() });
        let legacy = auths_from_docker_config(br#"{"reg:1":{"username":"u","password":"p"}}"#)?;
        assert_eq!(legacy["reg:1"].username, "u");
        Ok(())
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(auths_from_docker_config(b"nope"), Err(ImageError::BadCredentials { .. })));
        assert!(matches!(
            auths_from_docker_config(br#"{"auths":{"h":{"auth":"!!!"}}}"#),
            Err(ImageError::BadCredentials { .. })
        ));
        assert!(!format!("{:?}", RegistryAuth { username: "u".into(), password: "hunter2".into() }).contains("hunter2"));
    }
}
