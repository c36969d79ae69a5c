//! The audit event (`audit.k8s.io/v1 Event`) and how it is built from a request's attributes.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::policy::{Level, Stage};
use crate::auth::request_info::Attributes;
use crate::auth::UserInfo;

/// The annotation recording the authorization decision (`allow` or `forbid`).
pub const DECISION: &str = "authorization.k8s.io/decision";
/// The annotation recording why the authorizer decided so.
pub const REASON: &str = "authorization.k8s.io/reason";

/// The object a request is about.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

impl ObjectRef {
    /// The reference of a resource request; `None` for a non-resource URL.
    pub fn of(attrs: &Attributes) -> Option<Self> {
        attrs.resource_request.then(|| Self {
            resource: attrs.resource.clone(),
            namespace: attrs.namespace.clone(),
            name: attrs.name.clone(),
            api_group: attrs.api_group.clone(),
            api_version: attrs.api_version.clone(),
            subresource: attrs.subresource.clone(),
        })
    }
}

/// The response's status (`metav1.Status`, only the fields the audit log keeps).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatus {
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub code: u16,
}

impl ResponseStatus {
    /// The status of a response with HTTP `code`, and for a failure the `status`, `reason` and
    /// `message` of its `metav1.Status` body (if it had one).
    pub fn new(code: u16, body: Option<&Value>) -> Self {
        let mut s = Self { code, ..Self::default() };
        if code >= 400 {
            if let Some(body) = body.filter(|b| b.get("kind").and_then(Value::as_str) == Some("Status")) {
                let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                (s.status, s.reason, s.message) = (field("status"), field("reason"), field("message"));
            }
        }
        s
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub level: Level,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: Stage,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    /// The authenticated user (`{}` when authentication failed).
    pub user: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<Value>,
    #[serde(rename = "sourceIPs")]
    pub source_ips: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_object: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_object: Option<Value>,
    pub request_received_timestamp: String,
    pub stage_timestamp: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The user as the audit log shows it: `{}` when unknown.
pub fn user_json(user: Option<&UserInfo>) -> Value {
    user.map_or_else(|| Value::Object(serde_json::Map::new()), UserInfo::to_json)
}

/// A timestamp as `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits.
pub fn micro_time(ts: jiff::Timestamp) -> String {
    let seconds = ts.strftime("%Y-%m-%dT%H:%M:%S");
    format!("{seconds}.{:06}Z", ts.subsec_microsecond())
}

/// Removes `metadata.managedFields` from an object, or from each item of a list.
pub fn strip_managed_fields(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(meta) = item.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::request_info::attributes;
    use serde_json::json;

    #[test]
    fn micro_time_has_six_digits_in_utc() {
        let ts: jiff::Timestamp = "2026-12-06T05:52:38.1234567+02:00".parse().expect("ts");
        assert_eq!(micro_time(ts), "2026-12-06T03:52:38.123456Z");
        let whole: jiff::Timestamp = "2026-01-02T03:04:05Z".parse().expect("ts");
        assert_eq!(micro_time(whole), "2026-01-02T03:04:05.000000Z");
    }

    #[test]
    fn object_ref_of_resource_requests_only() {
        let a = attributes(UserInfo::default(), "GET", "/apis/apps/v1/namespaces/a/deployments/w/scale", None);
        let r = ObjectRef::of(&a).expect("resource request");
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            json!({"resource": "deployments", "namespace": "a", "name": "w", "apiGroup": "apps",
                   "apiVersion": "v1", "subresource": "scale"})
        );
        let core = ObjectRef::of(&attributes(UserInfo::default(), "GET", "/api/v1/nodes", None)).expect("nodes");
        assert_eq!(serde_json::to_value(&core).expect("json"), json!({"resource": "nodes", "apiVersion": "v1"}));
        assert!(ObjectRef::of(&attributes(UserInfo::default(), "GET", "/healthz", None)).is_none());
    }

    #[test]
    fn response_status_keeps_failure_details_only() {
        let body = json!({"kind": "Status", "status": "Failure", "reason": "Forbidden", "message": "no", "code": 403});
        let s = serde_json::to_value(ResponseStatus::new(403, Some(&body))).expect("json");
        assert_eq!(
            s,
            json!({"metadata": {}, "status": "Failure", "reason": "Forbidden", "message": "no", "code": 403})
        );
        let ok = serde_json::to_value(ResponseStatus::new(200, Some(&json!({"kind": "Status"})))).expect("json");
        assert_eq!(ok, json!({"metadata": {}, "code": 200}));
        let not_status = ResponseStatus::new(500, Some(&json!({"kind": "Pod", "message": "x"})));
        assert_eq!(not_status.message, "");
    }

    #[test]
    fn event_serializes_as_audit_k8s_io_v1() {
        let user = UserInfo { name: "admin".into(), groups: vec!["system:masters".into()], ..UserInfo::default() };
        let attrs = attributes(user.clone(), "DELETE", "/api/v1/namespaces/default/configmaps/c", None);
        let event = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: Level::Metadata,
            audit_id: "id".into(),
            stage: Stage::ResponseComplete,
            request_uri: "/api/v1/namespaces/default/configmaps/c".into(),
            verb: attrs.verb.clone(),
            user: user_json(Some(&user)),
            impersonated_user: None,
            source_ips: vec!["127.0.0.1".into()],
            user_agent: String::new(),
            object_ref: ObjectRef::of(&attrs),
            response_status: Some(ResponseStatus::new(200, None)),
            request_object: None,
            response_object: None,
            request_received_timestamp: "t0".into(),
            stage_timestamp: "t1".into(),
            annotations: BTreeMap::from([(DECISION.to_string(), "allow".to_string())]),
        };
        let v = serde_json::to_value(&event).expect("json");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["auditID"], "id");
        assert_eq!(v["requestURI"], "/api/v1/namespaces/default/configmaps/c");
        assert_eq!(v["verb"], "delete");
        assert_eq!(v["user"], json!({"username": "admin", "groups": ["system:masters"]}));
        assert_eq!(v["objectRef"]["name"], "c");
        assert_eq!(v["sourceIPs"], json!(["127.0.0.1"]));
        assert_eq!(v["annotations"][DECISION], "allow");
        assert!(v.get("requestObject").is_none() && v.get("impersonatedUser").is_none());
        assert_eq!(user_json(None), json!({}));
    }

    #[test]
    fn managed_fields_are_stripped_from_objects_and_lists() {
        let mut obj = json!({"metadata": {"name": "a", "managedFields": [{}]}});
        strip_managed_fields(&mut obj);
        assert_eq!(obj, json!({"metadata": {"name": "a"}}));
        let mut list = json!({"items": [{"metadata": {"managedFields": []}}]});
        strip_managed_fields(&mut list);
        assert_eq!(list, json!({"items": [{"metadata": {}}]}));
    }
}
