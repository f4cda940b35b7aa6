//! `metadata` checks shared by every kind.

use serde_json::{Value, json};

use super::FieldError;
use super::names::{check_object_name, is_dns1123_label, is_qualified_name, is_valid_label_value};

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

pub(super) fn validate_object_meta(
    kind: &str,
    namespaced: bool,
    object: &Value,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = object.get("metadata").cloned().unwrap_or(Value::Null);
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(name) => {
            if let Err(msg) = check_object_name(kind, name) {
                errs.push(FieldError::invalid("metadata.name", json!(name), msg));
            }
        }
    }
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else if let Err(msg) = is_dns1123_label(namespace) {
            errs.push(FieldError::invalid(
                "metadata.namespace",
                json!(namespace),
                msg,
            ));
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    errs.extend(validate_labels(meta.get("labels"), "metadata.labels"));
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Err(msg) = is_qualified_name(&k.to_lowercase()) {
                errs.push(FieldError::invalid("metadata.annotations", json!(k), msg));
            }
        }
        if total > MAX_ANNOTATIONS_BYTES {
            errs.push(FieldError::too_long(
                "metadata.annotations",
                format!("must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
            ));
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array) {
        let mut controllers = 0;
        for (i, r) in refs.iter().enumerate() {
            for field in ["apiVersion", "kind", "name", "uid"] {
                if r.get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errs.push(FieldError::invalid(
                        format!("metadata.ownerReferences[{i}].{field}"),
                        json!(""),
                        format!("{field} must not be empty"),
                    ));
                }
            }
            if r.get("controller") == Some(&json!(true)) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences",
                Value::Array(refs.clone()),
                "Only one reference can have Controller set to true",
            ));
        }
    }
    if let Some(finalizers) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, f) in finalizers.iter().enumerate() {
            let f = f.as_str().unwrap_or_default();
            if let Err(msg) = is_qualified_name(f) {
                errs.push(FieldError::invalid(
                    format!("metadata.finalizers[{i}]"),
                    json!(f),
                    msg,
                ));
            }
        }
    }
    errs
}

/// Label keys and values under `field`.
pub(super) fn validate_labels(labels: Option<&Value>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(labels) = labels.and_then(Value::as_object) {
        for (k, v) in labels {
            if let Err(msg) = is_qualified_name(k) {
                errs.push(FieldError::invalid(field, json!(k), msg));
            }
            let v = v.as_str().unwrap_or_default();
            if let Err(msg) = is_valid_label_value(v) {
                errs.push(FieldError::invalid(field, json!(v), msg));
            }
        }
    }
    errs
}

pub(super) fn validate_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    // Once deletion has begun, finalizers may only be removed.
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let list = |v: &Value| -> Vec<String> {
            v.pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (new_f, old_f) = (list(new), list(old));
        if let Some(added) = new_f.iter().find(|f| !old_f.contains(f)) {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{added:?}}}"),
            ));
        }
    }
    errs
}
