//! Reads the ConfigMaps, Secrets and PersistentVolumeClaims a pod refers to (env, envFrom,
//! volumes, pull secrets).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

/// Why a referenced object could not be used (the message Kubernetes users know).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey { kind: &'static str, namespace: String, name: String, key: String },
    #[error("reading {kind} {name}: {detail}")]
    Api { kind: &'static str, name: String, detail: String },
    #[error("persistentvolumeclaim \"{name}\" is not bound")]
    Unbound { name: String },
    #[error("persistentvolume \"{name}\" is neither a hostPath nor a local volume")]
    UnsupportedVolume { name: String },
}

/// The data of a ConfigMap or Secret, as bytes per key.
pub type Data = BTreeMap<String, Vec<u8>>;

#[derive(Clone)]
pub struct Lookup {
    client: kube::Client,
    namespace: String,
}

impl Lookup {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self { client, namespace: namespace.to_string() }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A ConfigMap's data (`data` and `binaryData`); `None` when missing and `optional`.
    pub async fn config_map(&self, name: &str, optional: bool) -> Result<Option<Data>, LookupError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.get_opt(name).await {
            Ok(Some(cm)) => {
                let mut data: Data =
                    cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                Ok(Some(data))
            }
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(LookupError::NotFound { kind: "configmap", name: name.into() }),
            Err(e) => Err(LookupError::Api { kind: "configmap", name: name.into(), detail: e.to_string() }),
        }
    }

    /// A Secret's data (`data` and `stringData`); `None` when missing and `optional`.
    pub async fn secret(&self, name: &str, optional: bool) -> Result<Option<Data>, LookupError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.get_opt(name).await {
            Ok(Some(s)) => {
                let mut data: Data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                data.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                Ok(Some(data))
            }
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(LookupError::NotFound { kind: "secret", name: name.into() }),
            Err(e) => Err(LookupError::Api { kind: "secret", name: name.into(), detail: e.to_string() }),
        }
    }

    /// The host directory of a bound PersistentVolumeClaim: its volume's `hostPath` (or `local`)
    /// path, with whether the kubelet may create it (`DirectoryOrCreate`).
    pub async fn claim_path(&self, claim: &str) -> Result<(String, bool), LookupError> {
        use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.namespace);
        let api_err = |kind, name: &str| {
            let name = name.to_string();
            move |e: kube::Error| LookupError::Api { kind, name, detail: e.to_string() }
        };
        let pvc = claims
            .get_opt(claim)
            .await
            .map_err(api_err("persistentvolumeclaim", claim))?
            .ok_or_else(|| LookupError::NotFound { kind: "persistentvolumeclaim", name: claim.into() })?;
        let volume = pvc
            .spec
            .and_then(|s| s.volume_name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| LookupError::Unbound { name: claim.into() })?;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = volumes
            .get_opt(&volume)
            .await
            .map_err(api_err("persistentvolume", &volume))?
            .ok_or_else(|| LookupError::NotFound { kind: "persistentvolume", name: volume.clone() })?;
        let spec = pv.spec.unwrap_or_default();
        match (spec.host_path, spec.local) {
            (Some(h), _) => Ok((h.path, h.type_.as_deref() == Some("DirectoryOrCreate"))),
            (None, Some(l)) => Ok((l.path, false)),
            (None, None) => Err(LookupError::UnsupportedVolume { name: volume }),
        }
    }

    /// One key of a ConfigMap or Secret (`valueFrom`); `None` when optional and absent.
    pub async fn key(
        &self,
        secret: bool,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>, LookupError> {
        let data = if secret { self.secret(name, optional).await? } else { self.config_map(name, optional).await? };
        let kind = if secret { "secret" } else { "configmap" };
        match data.and_then(|d| d.get(key).cloned()) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            None if optional => Ok(None),
            None => Err(LookupError::MissingKey {
                kind,
                namespace: self.namespace.clone(),
                name: name.into(),
                key: key.into(),
            }),
        }
    }
}

impl Lookup {
    /// A token of ServiceAccount `account` bound to the pod (`pod`, `pod_uid`), through the
    /// TokenRequest API, valid for `expiration_seconds`; `audience` empty means the API server's.
    pub async fn service_account_token(
        &self,
        account: &str,
        pod: &str,
        pod_uid: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, LookupError> {
        use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.filter(|a| !a.is_empty()).map(|a| vec![a.to_string()]).unwrap_or_default(),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.into()),
                    uid: Some(pod_uid.into()),
                }),
            },
            ..TokenRequest::default()
        };
        let issued = api.create_token_request(account, &Default::default(), &request).await.map_err(|e| match e {
            kube::Error::Api(status) if status.code == 404 => {
                LookupError::NotFound { kind: "serviceaccount", name: account.into() }
            }
            e => LookupError::Api { kind: "serviceaccount token", name: account.into(), detail: e.to_string() },
        })?;
        issued.status.map(|s| s.token).filter(|t| !t.is_empty()).ok_or_else(|| LookupError::Api {
            kind: "serviceaccount token",
            name: account.into(),
            detail: "the TokenRequest came back without a token".into(),
        })
    }
}

impl Lookup {
    /// The Services whose variables a container of this pod gets: those of its namespace when
    /// `links` (`enableServiceLinks`), and `kubernetes` in `default` always.
    pub async fn services_for_env(&self, links: bool) -> Result<Vec<k8s_openapi::api::core::v1::Service>, LookupError> {
        use k8s_openapi::api::core::v1::Service;
        let api_error =
            |e: kube::Error| LookupError::Api { kind: "services", name: String::new(), detail: e.to_string() };
        let mut out = Vec::new();
        if links {
            let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
            out.extend(api.list(&Default::default()).await.map_err(api_error)?.items);
        }
        if !links || self.namespace != "default" {
            let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
            out.extend(api.get_opt("kubernetes").await.map_err(api_error)?);
        }
        Ok(out)
    }
}
