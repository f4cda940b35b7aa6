//! POST (create), PUT (update) and DELETE.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::read::list_options;
use super::{Call, json_response};
use crate::codec::{client_resource_version, decode_object, parse_body, to_served, to_storage};
use crate::error::{ApiError, ApiResult};
use crate::objects::{DeleteOptions, Deleted, Objects, name_of};
use crate::request::content_type;

/// Decode the body as an object of the target's kind and check its namespace against the URL.
pub(super) fn body_object(call: &Call) -> ApiResult<(Value, Vec<String>)> {
    let value = parse_body(&content_type(&call.headers), &call.body)?;
    let (obj, warnings) = decode_object(&call.target.info, value, call.query.field_validation()?)?;
    check_namespace_matches(call, &obj)?;
    Ok((obj, warnings))
}

fn check_namespace_matches(call: &Call, obj: &Value) -> ApiResult<()> {
    let body_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match call.target.namespace.as_deref() {
        Some(ns) if !body_ns.is_empty() && body_ns != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        None if call.target.info.namespaced => Err(ApiError::path_not_found()),
        _ => Ok(()),
    }
}

pub(super) async fn create(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let (mut obj, warnings) = body_object(call)?;
    if t.info.kind == "CertificateSigningRequest" {
        crate::csr::set_requester(&mut obj, call.identity.as_ref());
    }
    if client_resource_version(&obj)?.is_some() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let objects = Objects::new(&call.state, &t.info);
    if let Some(ns) = t.namespace.as_deref() {
        objects.check_namespace(ns, true).await?;
    }
    let dry_run = call.query.dry_run()?;
    let created = objects
        .create(
            t.namespace.as_deref(),
            to_storage(&t.info, obj, None),
            dry_run,
        )
        .await?;
    if t.info.kind == "Namespace" && !dry_run {
        crate::bootstrap::ensure_default_service_account(&call.state, name_of(&created)).await;
    }
    Ok(json_response(
        StatusCode::CREATED,
        &to_served(&t.info, created),
        &warnings,
    ))
}

pub(super) async fn update(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let name = t.name.as_deref().unwrap_or_default();
    let (mut obj, warnings) = body_object(call)?;
    match name_of(&obj) {
        "" => obj["metadata"]["name"] = json!(name),
        body_name if body_name != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    if let Some(ns) = t.namespace.as_deref() {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let precondition = client_resource_version(&obj)?;
    let info = &t.info;
    let updated = Objects::new(&call.state, info)
        .update(
            t.namespace.as_deref(),
            name,
            t.subresource.as_deref(),
            call.query.dry_run()?,
            |current| Ok((to_storage(info, obj.clone(), Some(current)), precondition)),
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &to_served(info, updated),
        &warnings,
    ))
}

/// DeleteOptions from the body (kubectl sends `{"propagationPolicy":"Background"}`) and query.
fn delete_options(call: &Call) -> ApiResult<DeleteOptions> {
    let body: Value = if call.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&call.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    let str_field = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut propagation = str_field(&body, "propagationPolicy")
        .or_else(|| call.query.get("propagationPolicy").map(str::to_owned));
    let orphan = body
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| call.query.get("orphanDependents").map(|v| v == "true"));
    if propagation.is_none() && orphan == Some(true) {
        propagation = Some("Orphan".into());
    }
    if let Some(p) = &propagation
        && !["Orphan", "Background", "Foreground"].contains(&p.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "DeleteOptions.propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        )));
    }
    let dry_run = match body.get("dryRun").and_then(Value::as_array) {
        Some(d) => d.iter().any(|v| v == "All"),
        None => call.query.dry_run()?,
    };
    Ok(DeleteOptions {
        grace_period_seconds: body
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or(call.query.int("gracePeriodSeconds")?),
        propagation_policy: propagation,
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        precondition_resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        dry_run,
    })
}

pub(super) async fn delete(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let opts = delete_options(call)?;
    let name = t.name.as_deref().unwrap_or_default();
    match Objects::new(&call.state, &t.info)
        .delete(t.namespace.as_deref(), name, &opts)
        .await?
    {
        Deleted::Gone(obj) => Ok(json_response(StatusCode::OK, &to_served(&t.info, obj), &[])),
        Deleted::Pending(obj) => Ok(json_response(
            StatusCode::ACCEPTED,
            &to_served(&t.info, obj),
            &[],
        )),
    }
}

pub(super) async fn delete_collection(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let opts = delete_options(call)?;
    let objects = Objects::new(&call.state, &t.info);
    let matching = objects
        .list(t.namespace.as_deref(), &list_options(call)?)
        .await?;
    let mut deleted = Vec::new();
    for obj in matching.items {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match objects.delete(ns.as_deref(), name_of(&obj), &opts).await {
            Ok(Deleted::Gone(o) | Deleted::Pending(o)) => deleted.push(to_served(&t.info, o)),
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": format!("{}List", t.info.kind),
        "apiVersion": t.info.api_version(),
        "metadata": {"resourceVersion": call.state.store().current_revision().to_string()},
        "items": deleted,
    });
    Ok(json_response(StatusCode::OK, &list, &[]))
}
