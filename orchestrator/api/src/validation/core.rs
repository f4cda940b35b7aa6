//! Core kinds: Services, ConfigMaps, Secrets, Events.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use super::FieldError;

static CONFIG_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[-._a-zA-Z0-9]+$").unwrap());
const MAX_DATA_BYTES: usize = 1024 * 1024;
const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

pub(super) fn validate_service(object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            "spec.type",
            json!(ty),
            SERVICE_TYPES,
        ));
    }
    let ports = spec.get("ports").and_then(Value::as_array);
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = Vec::new();
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                json!(port),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if ports.is_some_and(|ps| ps.len() > 1) && name.is_empty() {
            errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        }
        if !name.is_empty() {
            if names.contains(&name) {
                errs.push(FieldError::duplicate(
                    format!("spec.ports[{i}].name"),
                    json!(name),
                ));
            }
            names.push(name);
        }
    }
    errs
}

pub(super) fn validate_service_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let old_ip = old
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let new_ip = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip {
        return vec![FieldError::invalid(
            "spec.clusterIPs[0]",
            json!(new_ip),
            "may not change once set",
        )];
    }
    Vec::new()
}

pub(super) fn validate_data_keys(kind: &str, object: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    let sections: &[&str] = if kind == "Secret" {
        &["data", "stringData"]
    } else {
        &["data", "binaryData"]
    };
    let mut seen = Vec::new();
    for section in sections {
        for (k, v) in object
            .get(*section)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            total += v.as_str().map_or(0, str::len);
            if !CONFIG_KEY.is_match(k) || k.len() > 253 {
                errs.push(FieldError::invalid(
                    format!("{section}[{k}]"),
                    json!(k),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
            if kind == "ConfigMap" && seen.contains(k) {
                errs.push(FieldError::invalid(
                    format!("{section}[{k}]"),
                    json!(k),
                    "duplicate of key present in data",
                ));
            }
            seen.push(k.clone());
        }
    }
    if total > MAX_DATA_BYTES {
        errs.push(FieldError::too_long(
            "data",
            format!("must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
    errs
}

pub(super) fn validate_immutable_data(kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    if old.get("immutable") != Some(&json!(true)) {
        return Vec::new();
    }
    let sections: &[&str] = if kind == "Secret" {
        &["data"]
    } else {
        &["data", "binaryData"]
    };
    let mut errs = Vec::new();
    for s in sections {
        if new.get(*s) != old.get(*s) {
            errs.push(FieldError::forbidden(
                *s,
                "field is immutable when `immutable` is set".to_string(),
            ));
        }
    }
    if new.get("immutable") != Some(&json!(true)) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    errs
}

pub(super) fn validate_event(object: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let event_ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let involved_ns = object
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !involved_ns.is_empty() && involved_ns != event_ns {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            json!(involved_ns),
            "does not match event.namespace",
        ));
    }
    errs
}
