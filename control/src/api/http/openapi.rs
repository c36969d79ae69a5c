//! `/openapi/v2` and `/openapi/v3`: content negotiation, entity tags and the document cache
//! (the documents themselves are built in `api/openapi`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::respond::json_response;
use super::ApiState;
use crate::api::error::ApiError;
use crate::api::openapi::{self, v2_proto, Doc, RenderError};

/// `/openapi/v3`: the index of group-version documents.
pub async fn v3_index(State(state): State<ApiState>) -> Response {
    json_response(StatusCode::OK, &openapi::index(&state.registry.served()), &[])
}

/// `/openapi/v3/<api|apis/group>/<version>`.
pub async fn v3_document(State(state): State<ApiState>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    let doc = Doc::V3(path.trim_matches('/').to_string());
    send(state, doc, "application/json", &headers).await
}

/// `/openapi/v2`: protobuf when the client asks for it (kubectl does), JSON otherwise.
pub async fn v2(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if v2_proto::wanted(accept) {
        send(state, Doc::V2Protobuf, v2_proto::CONTENT_TYPE, &headers).await
    } else {
        send(state, Doc::V2Json, "application/json", &headers).await
    }
}

async fn send(state: ApiState, doc: Doc, content_type: &'static str, headers: &HeaderMap) -> Response {
    let served = state.registry.served();
    let cache = state.openapi.clone();
    let built = tokio::task::spawn_blocking(move || cache.get(&served, &doc)).await;
    let rendered = match built {
        Ok(Ok(rendered)) => rendered,
        Ok(Err(RenderError::NotFound(_))) => return ApiError::NoSuchResource.into_response(),
        Ok(Err(e)) => return ApiError::Internal(e.to_string()).into_response(),
        Err(e) => return ApiError::Internal(format!("building the OpenAPI document: {e}")).into_response(),
    };
    let etag = HeaderValue::from_str(&rendered.etag).ok();
    let matches = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == rendered.etag || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, [(http::header::CONTENT_TYPE, content_type)], rendered.body).into_response()
    };
    if let Some(etag) = etag {
        response.headers_mut().insert(http::header::ETAG, etag);
    }
    response
}
