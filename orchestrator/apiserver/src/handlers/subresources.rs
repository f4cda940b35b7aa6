//! Subresources with their own shapes: `scale`, `pods/eviction`, `pods/binding` and
//! `namespaces/finalize`.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use skiff_api::selector::LabelSelector;

use super::patch::{PatchType, apply_patch, patch_type};
use super::{Call, json_response};
use crate::codec::{client_resource_version, decode_typed, parse_body, set_resource_version};
use crate::error::{ApiError, ApiResult};
use crate::objects::{DeleteOptions, Objects, current_revision, now};
use crate::request::{FieldValidation, content_type};

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| match LabelSelector::from_structured(s) {
            Ok(sel) if !sel.is_empty() => sel.to_string(),
            _ => String::new(),
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

pub(super) async fn scale(call: &Call, method: &Method) -> ApiResult<Response> {
    let t = &call.target;
    let name = t.name.as_deref().unwrap_or_default();
    let objects = Objects::new(&call.state, &t.info);
    if method == Method::GET {
        let obj = objects.get(t.namespace.as_deref(), name).await?;
        return Ok(json_response(StatusCode::OK, &scale_of(&obj), &[]));
    }
    let kind = match *method {
        Method::PUT => None,
        Method::PATCH => Some(patch_type(call)?),
        _ => return Err(ApiError::method_not_allowed(method.as_str(), &t.info)),
    };
    let body_scale = match kind {
        None | Some(PatchType::Apply) => {
            let value = parse_body(
                &content_type(&call.headers).replace("apply-patch+yaml", "yaml"),
                &call.body,
            )?;
            Some(decode_typed("autoscaling", "v1", "Scale", value, FieldValidation::Ignore)?.0)
        }
        Some(_) => None,
    };
    let updated = objects
        .update(
            t.namespace.as_deref(),
            name,
            None,
            call.query.dry_run()?,
            |current| {
                let scale = match (&body_scale, kind) {
                    (Some(s), _) => s.clone(),
                    (None, Some(k)) => apply_patch(k, &scale_of(current), &call.body)?,
                    (None, None) => unreachable!("PUT has a body scale"),
                };
                let precondition = client_resource_version(&scale)?;
                let precondition =
                    precondition.filter(|p| kind.is_none() || *p != current_revision(current));
                let replicas = scale
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let mut new = current.clone();
                new["spec"]["replicas"] = json!(replicas);
                Ok((new, precondition))
            },
        )
        .await?;
    Ok(json_response(StatusCode::OK, &scale_of(&updated), &[]))
}

fn success(code: StatusCode) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()})
}

/// `POST pods/{name}/eviction`: a delete with the eviction's options. (PodDisruptionBudgets are
/// not served yet, so no eviction is refused for budget reasons.)
pub(super) async fn eviction(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let name = t.name.as_deref().unwrap_or_default();
    let value = parse_body(&content_type(&call.headers), &call.body)?;
    let (eviction, _) = decode_typed("policy", "v1", "Eviction", value, FieldValidation::Ignore)?;
    let opts = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    let delete = DeleteOptions {
        grace_period_seconds: opts.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation_policy: opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_owned),
        precondition_uid: opts
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        precondition_resource_version: opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        dry_run: call.query.dry_run()?,
    };
    Objects::new(&call.state, &t.info)
        .delete(t.namespace.as_deref(), name, &delete)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &success(StatusCode::CREATED),
        &[],
    ))
}

/// `POST pods/{name}/binding`: assign the pod to a node, once.
pub(super) async fn binding(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let name = t.name.as_deref().unwrap_or_default();
    let value = parse_body(&content_type(&call.headers), &call.body)?;
    let (binding, _) = decode_typed("", "v1", "Binding", value, FieldValidation::Ignore)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if node.is_empty() {
        return Err(ApiError::bad_request("Binding.target.name: Required value"));
    }
    let precondition_uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Objects::new(&call.state, &t.info)
        .update(
            t.namespace.as_deref(),
            name,
            Some("binding"),
            call.query.dry_run()?,
            |current| {
                let existing = current
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !existing.is_empty() {
                    return Err(ApiError::conflict(
                        &t.info,
                        name,
                        &format!("pod {name} is already assigned to node \"{existing}\""),
                    ));
                }
                if current.pointer("/metadata/deletionTimestamp").is_some() {
                    return Err(ApiError::conflict(
                        &t.info,
                        name,
                        &format!("pod {name} is being deleted, cannot be assigned to a host"),
                    ));
                }
                if let Some(uid) = &precondition_uid
                    && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
                {
                    return Err(ApiError::conflict(
                        &t.info,
                        name,
                        "Precondition failed: UID mismatch",
                    ));
                }
                let mut new = current.clone();
                new["spec"]["nodeName"] = json!(node);
                set_condition(&mut new, "PodScheduled");
                Ok((new, None))
            },
        )
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &success(StatusCode::CREATED),
        &[],
    ))
}

fn set_condition(pod: &mut Value, ty: &str) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let condition =
        json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": now()});
    let conditions = pod["status"]
        .as_object_mut()
        .expect("status is an object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if let Some(list) = conditions.as_array_mut() {
        list.retain(|c| c.get("type") != Some(&json!(ty)));
        list.push(condition);
    }
}

/// `PUT namespaces/{name}/finalize`: replace `spec.finalizers`; a terminating namespace with none
/// left is deleted.
pub(super) async fn finalize(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let name = t.name.as_deref().unwrap_or_default();
    let value = parse_body(&content_type(&call.headers), &call.body)?;
    let mut out = Objects::new(&call.state, &t.info)
        .update(None, name, Some("finalize"), call.query.dry_run()?, |_| {
            Ok((value.clone(), None))
        })
        .await?;
    let rv = current_revision(&out);
    set_resource_version(&mut out, rv);
    Ok(json_response(StatusCode::OK, &out, &[]))
}
