//! Review resources answered per request: `SelfSubjectAccessReview` and
//! `SelfSubjectRulesReview` (`kubectl auth can-i`), `SelfSubjectReview` (`kubectl auth whoami`).
//!
//! kubectl sends these as protobuf only (decoded by `crate::protobuf`). RBAC
//! objects are stored but not yet enforced: every authenticated user may do everything, and the
//! reviews say so.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{Call, json_response};
use crate::auth::Identity;
use crate::codec::parse_body;
use crate::error::{ApiError, ApiResult};
use crate::request::content_type;

pub(super) async fn review(call: &Call, identity: Option<&Identity>) -> ApiResult<Response> {
    let info = &call.target.info;
    let spec = parse_body(&content_type(&call.headers), &call.body)?
        .get("spec")
        .cloned()
        .unwrap_or(json!({}));
    let status = match info.kind.as_str() {
        "SelfSubjectAccessReview" => {
            json!({"allowed": true, "reason": "RBAC is not enforced by this Skiff version"})
        }
        "SelfSubjectRulesReview" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        "SelfSubjectReview" => {
            let (user, groups) = identity.map_or(("system:anonymous".to_owned(), vec![]), |i| {
                (i.user.clone(), i.groups.clone())
            });
            json!({"userInfo": {"username": user, "groups": groups}})
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown review kind {other}"
            )));
        }
    };
    let mut body = json!({
        "kind": info.kind, "apiVersion": info.api_version(),
        "metadata": {"creationTimestamp": null}, "status": status,
    });
    if info.kind != "SelfSubjectReview" {
        body["spec"] = spec;
    }
    Ok(json_response(StatusCode::CREATED, &body, &[]))
}
