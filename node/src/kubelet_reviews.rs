//! The kubelet endpoint's [`Reviews`] asked of the API server with the node's own credentials:
//! `TokenReview` for bearer tokens, `SubjectAccessReview` for `nodes/<subresource>` of this Node.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::Api;

use crate::kubelet_auth::{KubeletUser, ReviewError, Reviews};

/// Reviews by the API server for the Node `node`.
pub struct ApiReviews {
    client: kube::Client,
    node: String,
}

impl ApiReviews {
    pub fn new(client: kube::Client, node: String) -> Self {
        Self { client, node }
    }
}

#[async_trait::async_trait]
impl Reviews for ApiReviews {
    async fn authenticate(&self, token: &str) -> Result<Option<KubeletUser>, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: None },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await.map_err(|e| ReviewError(e.to_string()))?;
        let Some(status) = answer.status.filter(|s| s.authenticated == Some(true)) else {
            return Ok(None);
        };
        let Some(user) = status.user.filter(|u| u.username.as_ref().is_some_and(|n| !n.is_empty())) else {
            return Ok(None);
        };
        let extra = user.extra.unwrap_or_default().into_iter().collect();
        Ok(Some(KubeletUser {
            name: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra,
        }))
    }

    async fn authorize(&self, user: &KubeletUser, verb: &str, subresource: &str) -> Result<bool, ReviewError> {
        let extra: BTreeMap<String, Vec<String>> = user.extra.iter().cloned().collect();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!extra.is_empty()).then_some(extra),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.to_string()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await.map_err(|e| ReviewError(e.to_string()))?;
        let status = answer.status.ok_or_else(|| ReviewError("a SubjectAccessReview without status".into()))?;
        if let Some(error) = status.evaluation_error.filter(|e| !e.is_empty()) {
            tracing::debug!(%error, "kubelet endpoint: evaluation error in the access review");
        }
        Ok(status.allowed && status.denied != Some(true))
    }
}
