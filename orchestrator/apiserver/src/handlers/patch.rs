//! PATCH in its four media types: JSON patch, merge patch, strategic merge patch and server-side
//! apply (`application/apply-patch+yaml`, which also creates a missing object).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use skiff_api::apply::{apply_configuration, record_manager};
use skiff_api::patch::{
    PatchError, apply_json_patch, apply_merge_patch, apply_strategic_merge_patch,
};

use super::{Call, json_response};
use crate::codec::{client_resource_version, decode_object, parse_body, to_served, to_storage};
use crate::error::{ApiError, ApiResult};
use crate::objects::{Objects, current_revision};
use crate::request::content_type;

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    "application/strategic-merge-patch+json",
];

/// The kinds of patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

pub(super) fn patch_type(call: &Call) -> ApiResult<PatchType> {
    match content_type(&call.headers).as_str() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
        other => Err(ApiError::unsupported_media_type(other, PATCH_TYPES)),
    }
}

/// Apply a non-apply patch to a served-version object.
pub(super) fn apply_patch(kind: PatchType, object: &Value, body: &[u8]) -> ApiResult<Value> {
    let result = match kind {
        PatchType::Json => apply_json_patch(object, body),
        PatchType::Merge => apply_merge_patch(object, body),
        PatchType::Strategic => apply_strategic_merge_patch(object, body),
        PatchType::Apply => unreachable!("apply is handled separately"),
    };
    result.map_err(|PatchError(msg)| ApiError::bad_request(msg))
}

/// The resourceVersion precondition a patch carries: a changed resourceVersion, or one written
/// in the patch itself.
fn patch_precondition(before: &Value, after: &Value, body: &[u8]) -> ApiResult<Option<i64>> {
    let patched = client_resource_version(after)?;
    if patched != client_resource_version(before)? {
        return Ok(patched);
    }
    let mentions_rv = serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|b| b.pointer("/metadata/resourceVersion").is_some());
    Ok(if mentions_rv { patched } else { None })
}

pub(super) async fn patch(call: &Call) -> ApiResult<Response> {
    let kind = patch_type(call)?;
    if kind == PatchType::Apply {
        return server_side_apply(call).await;
    }
    let t = &call.target;
    let info = &t.info;
    let name = t.name.as_deref().unwrap_or_default();
    let validation = call.query.field_validation()?;
    let mut warnings = Vec::new();
    let updated = Objects::new(&call.state, info)
        .update(
            t.namespace.as_deref(),
            name,
            t.subresource.as_deref(),
            call.query.dry_run()?,
            |current| {
                let served = to_served(info, current.clone());
                let patched = apply_patch(kind, &served, &call.body)?;
                let precondition = patch_precondition(&served, &patched, &call.body)?;
                let (obj, w) = decode_object(info, patched, validation)?;
                check_identity(&obj, name, t.namespace.as_deref())?;
                warnings = w;
                Ok((to_storage(info, obj, Some(current)), precondition))
            },
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &to_served(info, updated),
        &warnings,
    ))
}

/// A patch may not rename an object or move it to another namespace.
fn check_identity(obj: &Value, name: &str, ns: Option<&str>) -> ApiResult<()> {
    let body_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(ns) = ns
        && !body_ns.is_empty()
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Server-side apply: create when missing, otherwise merge the configuration and drop the fields
/// this manager applied before but no longer does (see skiff_api::apply for what is simplified).
async fn server_side_apply(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let info = &t.info;
    let name = t.name.as_deref().unwrap_or_default();
    let manager = call
        .query
        .get("fieldManager")
        .unwrap_or_default()
        .to_owned();
    if manager.is_empty() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let value = parse_body("application/yaml", &call.body)?;
    let (config, warnings) = decode_object(info, value, call.query.field_validation()?)?;
    check_identity(&config, name, t.namespace.as_deref())?;
    let objects = Objects::new(&call.state, info);
    let dry_run = call.query.dry_run()?;
    match objects.get(t.namespace.as_deref(), name).await {
        Err(e) if e.code == StatusCode::NOT_FOUND => {
            if let Some(ns) = t.namespace.as_deref() {
                objects.check_namespace(ns, true).await?;
            }
            let mut obj = config.clone();
            obj["metadata"]["name"] = json!(name);
            record_manager(&mut obj, &manager, &config, &info.api_version());
            if info.kind == "CertificateSigningRequest" {
                crate::csr::set_requester(&mut obj, call.identity.as_ref());
            }
            let created = objects
                .create(t.namespace.as_deref(), to_storage(info, obj, None), dry_run)
                .await?;
            Ok(json_response(
                StatusCode::CREATED,
                &to_served(info, created),
                &warnings,
            ))
        }
        Err(e) => Err(e),
        Ok(_) => {
            let updated = objects
                .update(
                    t.namespace.as_deref(),
                    name,
                    t.subresource.as_deref(),
                    dry_run,
                    |current| {
                        let served = to_served(info, current.clone());
                        let mut merged = apply_configuration(&served, &config, &manager)
                            .map_err(|PatchError(msg)| ApiError::bad_request(msg))?;
                        record_manager(&mut merged, &manager, &config, &info.api_version());
                        let precondition = client_resource_version(&config)?;
                        if precondition.is_some_and(|p| p != current_revision(current)) {
                            return Err(ApiError::modified(info, name));
                        }
                        Ok((to_storage(info, merged, Some(current)), precondition))
                    },
                )
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &to_served(info, updated),
                &warnings,
            ))
        }
    }
}
