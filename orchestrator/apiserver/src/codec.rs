//! Bodies in and objects out: parsing request bodies (JSON or YAML), decoding them through the
//! typed structs, and the stored form of objects (JSON without `resourceVersion`, which is the
//! store revision and is set on every read).

use bytes::Bytes;
use serde_json::{Value, json};
use skiff_api::{ResourceInfo, convert, typed};
use skiff_store::KeyValue;

use crate::error::{ApiError, ApiResult};
use crate::request::FieldValidation;

/// Parse a JSON, YAML or (for the kinds kubectl's generators send) protobuf body.
pub(crate) fn parse_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    match content_type {
        "application/json" | "*/*" | "text/plain" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_norway::from_slice(body).map_err(|e| ApiError::bad_request(format!("yaml: {e}")))
        }
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode_object(body).map_err(|e| match e {
                crate::protobuf::ProtobufError::Malformed => ApiError::bad_request(e.to_string()),
                crate::protobuf::ProtobufError::Unsupported(_) => {
                    ApiError::unsupported_media_type_message(e.to_string())
                }
            })
        }
        other => Err(ApiError::unsupported_media_type(
            other,
            &[
                "application/json",
                "application/yaml",
                "application/vnd.kubernetes.protobuf",
            ],
        )),
    }
}

/// Check and decode an object body for `info` (the served version): fill a missing
/// apiVersion/kind, refuse a mismatched one, decode through the typed struct and handle unknown
/// fields as `fieldValidation` says. Returns the object and any warnings.
pub(crate) fn decode_object(
    info: &ResourceInfo,
    mut value: Value,
    validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: expected an object, got {}",
            short_type(&value)
        )));
    };
    let api_version = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        Some(_) => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
        Some(_) => {}
    }
    decode_typed(&info.group, &info.version, &info.kind, value, validation)
}

/// Decode a body of an explicit kind (`Scale`, `Eviction`, `Binding`, `DeleteOptions`…).
pub(crate) fn decode_typed(
    group: &str,
    version: &str,
    kind: &str,
    value: Value,
    validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let decoded = typed::decode(group, version, kind, &value).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}"
        ))
    })?;
    let unknown: Vec<String> = decoded
        .unknown_fields
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        FieldValidation::Warn => Ok((decoded.object, unknown)),
        _ => Ok((decoded.object, Vec::new())),
    }
}

fn short_type(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Object(_) => "an object",
    }
}

/// The bytes stored for an object: JSON without `resourceVersion`.
pub(crate) fn encode_for_store(object: &Value) -> Bytes {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(&object).expect("JSON values serialize"))
}

/// A stored object with its `resourceVersion` set from the store revision.
pub(crate) fn decode_stored(kv: &KeyValue) -> ApiResult<Value> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(object)
}

/// Set `metadata.resourceVersion`.
pub(crate) fn set_resource_version(object: &mut Value, revision: i64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

/// A stored object as the client's version shows it.
pub(crate) fn to_served(info: &ResourceInfo, stored: Value) -> Value {
    let mut object = if info.version == info.storage_version {
        stored
    } else {
        convert::from_storage(&info.kind, &info.version, stored)
    };
    if let Some(obj) = object.as_object_mut() {
        obj.insert("apiVersion".into(), json!(info.api_version()));
        obj.insert("kind".into(), json!(info.kind));
    }
    object
}

/// A served-version object converted for storage (`existing` keeps what the version cannot say).
pub(crate) fn to_storage(info: &ResourceInfo, object: Value, existing: Option<&Value>) -> Value {
    if info.version == info.storage_version {
        return object;
    }
    let mut stored = convert::to_storage(&info.kind, &info.version, object, existing);
    if let Some(obj) = stored.as_object_mut() {
        let api_version = if info.group.is_empty() {
            info.storage_version.clone()
        } else {
            format!("{}/{}", info.group, info.storage_version)
        };
        obj.insert("apiVersion".into(), json!(api_version));
    }
    stored
}

/// The `metadata.resourceVersion` a client sent, if any; a malformed one is a 400.
pub(crate) fn client_resource_version(object: &Value) -> ApiResult<Option<i64>> {
    match object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}"))),
    }
}
