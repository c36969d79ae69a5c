//! Request bodies: size limit, JSON or YAML, and the patch content types.

use axum::body::Body;
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};

/// Kubernetes' limit on a request body.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How long a client may take to send a request body (kube-apiserver's default
/// `--request-timeout`): a client trickling its body does not hold a request slot for longer.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes with 413 and a body not sent
/// within [`BODY_TIMEOUT`] with 504, as kube-apiserver's request timeout does.
pub async fn read(body: Body) -> ApiResult<bytes::Bytes> {
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await else {
        return Err(ApiError::Timeout(format!(
            "request did not complete within requested timeout - the body was not received within {}s",
            BODY_TIMEOUT.as_secs()
        )));
    };
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::TooLarge { limit: MAX_BODY }
        } else {
            ApiError::BadRequest(format!("reading the request body: {e}"))
        }
    })
}

/// Decodes a JSON or YAML document into a value; YAML is a superset of JSON.
pub fn decode(bytes: &[u8], content_type: Option<&str>) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    if content_type.is_some_and(|c| c.starts_with("application/vnd.kubernetes.protobuf")) {
        return super::protobuf::decode(bytes);
    }
    if let Some(ct) = content_type.filter(|c| c.contains("protobuf") || c.contains("cbor")) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({ct}) - accepted media types include: application/json, application/yaml"
        )));
    }
    let is_yaml = content_type.is_some_and(|c| c.contains("yaml"));
    if !is_yaml {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return Ok(v);
        }
    }
    match serde_yaml::from_slice::<Value>(bytes) {
        Ok(v) => Ok(v),
        Err(yaml_err) => match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Ok(v),
            Err(json_err) if !is_yaml => {
                Err(ApiError::BadRequest(format!("the request body is not valid JSON: {json_err}")))
            }
            Err(_) => Err(ApiError::BadRequest(format!("the request body is not valid YAML: {yaml_err}"))),
        },
    }
}

/// The patch flavours, from the request's content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: Option<&str>) -> ApiResult<Self> {
        let ct = ct.unwrap_or("").split(';').next().unwrap_or("").trim();
        match ct {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml() {
        assert_eq!(decode(br#"{"a":1}"#, Some("application/json")).expect("json")["a"], 1);
        assert_eq!(decode(b"a: 1\nb: [x]\n", Some("application/yaml")).expect("yaml")["b"][0], "x");
        assert!(decode(b"{", Some("application/json")).is_err());
        assert!(decode(b"  ", None).is_err());
    }
}
