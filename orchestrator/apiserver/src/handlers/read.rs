//! GET of one object and LIST of a collection, as JSON or as a Table.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::table::{IncludeObject, build_table};

use super::{Call, json_response};
use crate::codec::to_served;
use crate::error::{ApiError, ApiResult};
use crate::objects::{ListOptions, Objects};
use crate::request::wants_table;

pub(super) async fn get(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let name = t.name.as_deref().unwrap_or_default();
    let stored = Objects::new(&call.state, &t.info)
        .get(t.namespace.as_deref(), name)
        .await?;
    let object = to_served(&t.info, stored);
    if wants_table(&call.headers) {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let include = IncludeObject::parse(call.query.get("includeObject"));
        let table = build_table(
            &t.info.kind,
            std::slice::from_ref(&object),
            include,
            &rv,
            None,
        );
        return Ok(json_response(StatusCode::OK, &table, &[]));
    }
    Ok(json_response(StatusCode::OK, &object, &[]))
}

/// Label, field, paging and revision options of a list or watch.
pub(super) fn list_options(call: &Call) -> ApiResult<ListOptions> {
    let labels = match call.query.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.0))?,
        None => LabelSelector::everything(),
    };
    let fields = match call.query.get("fieldSelector") {
        Some(s) => {
            let f = FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.0))?;
            f.check_supported(&call.target.info.kind)
                .map_err(|e| ApiError::bad_request(e.0))?;
            f
        }
        None => FieldSelector::default(),
    };
    let limit = call.query.int("limit")?.unwrap_or(0).max(0) as usize;
    let continue_token = call
        .query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let exact_revision = match (
        call.query.get("resourceVersionMatch"),
        call.query.get("resourceVersion"),
    ) {
        (Some("Exact"), Some(rv)) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
        (Some("Exact"), None) => {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        _ => None,
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token,
        exact_revision,
    })
}

pub(super) async fn list(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let opts = list_options(call)?;
    let result = Objects::new(&call.state, &t.info)
        .list(t.namespace.as_deref(), &opts)
        .await?;
    let items: Vec<Value> = result
        .items
        .into_iter()
        .map(|o| to_served(&t.info, o))
        .collect();
    let rv = result.revision.to_string();
    if wants_table(&call.headers) {
        let include = IncludeObject::parse(call.query.get("includeObject"));
        let table = build_table(
            &t.info.kind,
            &items,
            include,
            &rv,
            result.continue_token.as_deref(),
        );
        return Ok(json_response(StatusCode::OK, &table, &[]));
    }
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(c) = result.continue_token {
        metadata["continue"] = json!(c);
    }
    let list = json!({
        "kind": format!("{}List", t.info.kind),
        "apiVersion": t.info.api_version(),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list, &[]))
}
