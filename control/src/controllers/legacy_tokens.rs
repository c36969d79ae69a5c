//! The token controller for legacy Secret-based ServiceAccount tokens, as Kubernetes keeps it
//! since 1.24: no Secret is created for a ServiceAccount any more, but a Secret of type
//! `kubernetes.io/service-account-token` that a user creates with the annotation
//! `kubernetes.io/service-account.name` is filled with a token, the cluster CA and the namespace
//! once its ServiceAccount exists.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::runtime::{Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::object;
use crate::api::registry::{Registry, WriteOptions};
use crate::api::selector::FieldSelector;
use crate::auth::authn::LEGACY_TOKEN_TYPE;
use crate::auth::service_account::{LegacyClaims, TokenIssuer, LEGACY_ISSUER};

const NAME: &str = "controller-legacy-tokens";
const SA_NAME: &str = "kubernetes.io/service-account.name";
const SA_UID: &str = "kubernetes.io/service-account.uid";

/// What a reconcile works with.
pub struct Ctx {
    registry: Arc<Registry>,
    secrets: Arc<Informer>,
    accounts: Arc<Informer>,
    issuer: Arc<TokenIssuer>,
    root_ca: Option<Arc<str>>,
}

/// Starts the controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>, issuer: Arc<TokenIssuer>, root_ca: Option<Arc<str>>) {
    // Only token Secrets are cached: the controller never reads another Secret, and a cache of
    // every Secret would keep all of them decrypted in memory.
    let secrets = match FieldSelector::parse(&format!("type={LEGACY_TOKEN_TYPE}")) {
        Ok(fields) => informers.get_selected("", "Secret", &fields),
        Err(_) => informers.get("", "Secret"),
    };
    let accounts = informers.get("", "ServiceAccount");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        secrets: Arc::clone(&secrets),
        accounts: Arc::clone(&accounts),
        issuer,
        root_ca,
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(NAME);
    supervisor.spawn(NAME, move || {
        let lookup = Arc::clone(&secrets);
        Controller::new(NAME, Arc::clone(&secrets))
            .watches(Arc::clone(&accounts), move |account| token_secrets_of(&lookup, account))
            .run(Arc::clone(&ctx), probe.clone(), reconcile)
    });
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    object::meta(obj).get("annotations")?.get(key)?.as_str()
}

/// The token Secrets naming a ServiceAccount (its creation lets them be filled).
fn token_secrets_of(secrets: &Informer, account: &Value) -> Vec<ObjectKey> {
    let name = object::name(account);
    secrets
        .list(object::namespace(account))
        .iter()
        .filter(|s| annotation(s, SA_NAME) == Some(name))
        .map(|s| ObjectKey::of(s))
        .collect()
}

/// Whether the Secret is a token Secret still waiting for its token.
fn wants_token(secret: &Value) -> bool {
    secret.get("type").and_then(Value::as_str) == Some(LEGACY_TOKEN_TYPE)
        && annotation(secret, SA_NAME).is_some_and(|n| !n.is_empty())
        && secret.pointer("/data/token").and_then(Value::as_str).is_none_or(str::is_empty)
        && object::deletion_timestamp(secret).is_none()
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(secret) = ctx.secrets.get(&key) else { return Ok(Action::Done) };
    if !wants_token(&secret) {
        return Ok(Action::Done);
    }
    let ns = key.namespace.clone().unwrap_or_default();
    let account_name = annotation(&secret, SA_NAME).unwrap_or_default().to_string();
    let Some(account) = ctx.accounts.get(&ObjectKey::namespaced(&ns, &account_name)) else {
        return Ok(Action::Done);
    };
    let uid = object::str_at(&account, &["metadata", "uid"]).unwrap_or_default().to_string();
    if annotation(&secret, SA_UID).is_some_and(|u| u != uid) {
        // Made for an earlier ServiceAccount of that name: Kubernetes leaves it unfilled.
        return Ok(Action::Done);
    }
    let claims = LegacyClaims {
        iss: LEGACY_ISSUER.into(),
        sub: crate::auth::service_account_user(&ns, &account_name),
        namespace: ns.clone(),
        secret_name: key.name.clone(),
        service_account_name: account_name,
        service_account_uid: uid.clone(),
    };
    let token = ctx.issuer.sign_legacy(&claims).map_err(|e| Error::Other(format!("signing a legacy token: {e}")))?;
    let b64 = |s: &str| Value::String(base64::engine::general_purpose::STANDARD.encode(s));
    let mut data = json!({"token": b64(&token), "namespace": b64(&ns)});
    if let Some(ca) = &ctx.root_ca {
        data["ca.crt"] = b64(ca);
    }
    let ri = ctx.registry.resource("", "Secret")?;
    let opts = WriteOptions { field_manager: Some("kube-controller-manager".into()), ..Default::default() };
    ctx.registry
        .update_with(ri, Some(&ns), &key.name, None, &opts, |current| {
            let mut next = current.clone();
            if !wants_token(&next) {
                return Ok(next);
            }
            if let Some(map) = next.as_object_mut() {
                let existing = map.entry("data").or_insert_with(|| json!({}));
                for (k, v) in data.as_object().into_iter().flatten() {
                    existing[k] = v.clone();
                }
            }
            next["metadata"]["annotations"][SA_UID] = json!(uid);
            Ok(next)
        })
        .await?;
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_annotated_token_secrets_without_a_token_are_filled() {
        let secret = |ty: &str, ann: Value, data: Value| json!({"metadata": {"name": "s", "namespace": "a", "annotations": ann}, "type": ty, "data": data});
        let named = json!({SA_NAME: "old"});
        assert!(wants_token(&secret(LEGACY_TOKEN_TYPE, named.clone(), json!({}))));
        assert!(!wants_token(&secret(LEGACY_TOKEN_TYPE, named.clone(), json!({"token": "eA=="}))));
        assert!(!wants_token(&secret("Opaque", named, json!({}))));
        assert!(!wants_token(&secret(LEGACY_TOKEN_TYPE, json!({}), json!({}))));
    }
}
