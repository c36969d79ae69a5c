//! Bootstrap tokens, as kubeadm and k3s join nodes with them: a bearer token `<id>.<secret>`
//! (`[a-z0-9]{6}.[a-z0-9]{16}`) backed by the Secret `bootstrap-token-<id>` in `kube-system` of type
//! `bootstrap.kubernetes.io/token`. It authenticates as `system:bootstrap:<id>` in
//! `system:bootstrappers` (plus its `auth-extra-groups`) until its `expiration`, which is enough to
//! ask for a node client certificate and nothing more.

use serde_json::Value;
use subtle::ConstantTimeEq;

use super::{UserInfo, AUTHENTICATED};

/// The namespace bootstrap token Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// The Secret type of a bootstrap token.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token is in.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// The id and secret of a token that has the bootstrap token shape.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let shaped =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (shaped(id, 6) && shaped(secret, 16)).then_some((id, secret))
}

/// The name of the Secret that backs token `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// Checks `secret` (the presented one) against the token Secret `stored` at `now` (seconds since
/// the epoch): the user it authenticates, or why not.
pub fn verify(stored: &Value, id: &str, secret: &str, now: i64) -> Result<UserInfo, String> {
    if stored.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return Err(format!("bootstrap token {id}: the Secret is not of type {SECRET_TYPE}"));
    }
    let field = |k: &str| -> Option<String> {
        let encoded = stored.pointer(&format!("/data/{k}")).and_then(Value::as_str)?;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        String::from_utf8(bytes).ok()
    };
    if field("token-id").as_deref() != Some(id) {
        return Err(format!("bootstrap token {id}: token-id does not match the Secret's name"));
    }
    let stored_secret = field("token-secret").unwrap_or_default();
    if !bool::from(stored_secret.as_bytes().ct_eq(secret.as_bytes())) {
        return Err(format!("bootstrap token {id}: wrong secret"));
    }
    if field("usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(format!("bootstrap token {id}: not usable for authentication"));
    }
    if let Some(expiration) = field("expiration") {
        let at = expiration
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("bootstrap token {id}: expiration {expiration:?}: {e}"))?;
        if at.as_second() <= now {
            return Err(format!("bootstrap token {id} expired at {expiration}"));
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    for group in field("auth-extra-groups").unwrap_or_default().split(',').map(str::trim).filter(|g| !g.is_empty()) {
        if group.starts_with("system:bootstrappers:") && !groups.iter().any(|g| g == group) {
            groups.push(group.to_string());
        }
    }
    groups.push(AUTHENTICATED.into());
    Ok(UserInfo { name: format!("system:bootstrap:{id}"), groups, ..UserInfo::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(expiration: Option<&str>) -> Value {
        let mut data = json!({
            "token-id": b64("abcdef"), "token-secret": b64("0123456789abcdef"),
            "usage-bootstrap-authentication": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:skiff:nodes,system:masters"),
        });
        if let Some(e) = expiration {
            data["expiration"] = json!(b64(e));
        }
        json!({"type": SECRET_TYPE, "data": data})
    }

    #[test]
    fn only_the_bootstrap_shape_parses() {
        assert_eq!(parse("abcdef.0123456789abcdef"), Some(("abcdef", "0123456789abcdef")));
        for bad in ["abcdef", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdef", "abcdef.0123456789abcde!", "a.b.c"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_valid_token_is_a_bootstrapper_and_never_a_master() {
        let user = verify(&secret(Some("2030-01-01T00:00:00Z")), "abcdef", "0123456789abcdef", 0).expect("valid");
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(user.groups, ["system:bootstrappers", "system:bootstrappers:skiff:nodes", "system:authenticated"]);
    }

    #[test]
    fn wrong_secret_expired_or_unusable_tokens_are_refused() {
        assert!(verify(&secret(None), "abcdef", "0123456789abcdeX", 0).unwrap_err().contains("wrong secret"));
        let expired = verify(&secret(Some("2020-01-01T00:00:00Z")), "abcdef", "0123456789abcdef", 1_700_000_000);
        assert!(expired.unwrap_err().contains("expired"));
        let mut unusable = secret(None);
        unusable["data"]["usage-bootstrap-authentication"] = json!(b64("false"));
        assert!(verify(&unusable, "abcdef", "0123456789abcdef", 0).is_err());
        let mut opaque = secret(None);
        opaque["type"] = json!("Opaque");
        assert!(verify(&opaque, "abcdef", "0123456789abcdef", 0).is_err());
    }
}
