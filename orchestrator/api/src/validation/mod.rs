//! Validation of objects on create and update, producing field errors worded as upstream's
//! `field.Error` so `kubectl` prints the messages users know.

pub mod certificates;
mod core;
mod meta;
pub mod names;
mod pod;
mod workloads;

use serde_json::Value;

/// The kind of a field error; its `reason` becomes the `StatusCause.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// The value is malformed or out of range.
    Invalid,
    /// A required field is missing.
    Required,
    /// The value is not one of a fixed set.
    NotSupported,
    /// A value is repeated where it must be unique.
    Duplicate,
    /// The field may not be set or changed.
    Forbidden,
    /// The value is too long.
    TooLong,
    /// The value refers to something that does not exist.
    NotFound,
}

impl ErrorType {
    /// The `StatusCause.reason` string.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path such as `spec.template.spec.containers[0].image`.
    pub field: String,
    /// What is wrong.
    pub error_type: ErrorType,
    /// The offending value, if it is shown.
    pub value: Option<Value>,
    /// Extra explanation.
    pub detail: String,
}

impl FieldError {
    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::Invalid,
            value: Some(value),
            detail: detail.into(),
        }
    }

    /// `Required value[: <detail>]`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::Required,
            value: None,
            detail: detail.into(),
        }
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        FieldError {
            field: field.into(),
            error_type: ErrorType::NotSupported,
            value: Some(value),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: Value) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::Duplicate,
            value: Some(value),
            detail: String::new(),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }

    /// `Not found: <value>`.
    pub fn not_found(field: impl Into<String>, value: Value) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::NotFound,
            value: Some(value),
            detail: String::new(),
        }
    }

    /// `Too long: <detail>`.
    pub fn too_long(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::TooLong,
            value: None,
            detail: detail.into(),
        }
    }

    /// The message body without the field, as upstream's `ErrorBody()`.
    pub fn body(&self) -> String {
        let head = match self.error_type {
            ErrorType::Invalid => "Invalid value",
            ErrorType::Required => "Required value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::NotFound => "Not found",
        };
        let mut out = head.to_owned();
        if let Some(v) = &self.value {
            out.push_str(": ");
            out.push_str(&render_value(v));
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// The message of an Invalid status: `Deployment.apps "web" is invalid: spec.replicas: …`.
pub fn invalid_message(qualified_kind: &str, name: &str, errors: &[FieldError]) -> String {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let joined = if list.len() == 1 {
        list[0].clone()
    } else {
        format!("[{}]", list.join(", "))
    };
    format!("{qualified_kind} \"{name}\" is invalid: {joined}")
}

/// Validate a new object of `kind` (storage version, defaults applied).
pub fn validate_create(kind: &str, namespaced: bool, object: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(kind, namespaced, object);
    errs.extend(validate_kind(kind, object));
    errs
}

/// Validate an update of `old` to `new`: everything `validate_create` checks plus immutability.
pub fn validate_update(kind: &str, namespaced: bool, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_create(kind, namespaced, new);
    errs.extend(meta::validate_meta_update(new, old));
    errs.extend(match kind {
        "Pod" => pod::validate_pod_update(new, old),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" => {
            workloads::validate_selector_immutable(new, old)
        }
        "Service" => core::validate_service_update(new, old),
        "Secret" | "ConfigMap" => core::validate_immutable_data(kind, new, old),
        _ => Vec::new(),
    });
    if kind == "Job" {
        errs.extend(workloads::validate_job_update(new, old));
    }
    errs
}

fn validate_kind(kind: &str, object: &Value) -> Vec<FieldError> {
    match kind {
        "Pod" => pod::validate_pod(object),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            workloads::validate_workload(kind, object)
        }
        "Job" => workloads::validate_job(object),
        "CronJob" => workloads::validate_cronjob(object),
        "HorizontalPodAutoscaler" => workloads::validate_hpa(object),
        "Service" => core::validate_service(object),
        "ConfigMap" | "Secret" => core::validate_data_keys(kind, object),
        "Event" => core::validate_event(object),
        "CertificateSigningRequest" => certificates::validate_csr(object),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_read_like_upstream() {
        let errs = vec![FieldError::invalid(
            "spec.replicas",
            json!(-1),
            "must be greater than or equal to 0",
        )];
        assert_eq!(
            invalid_message("Deployment.apps", "web", &errs),
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let two = vec![
            FieldError::required("metadata.name", "name or generateName is required"),
            FieldError::not_supported(
                "spec.restartPolicy",
                json!("Sometimes"),
                &["Always", "Never"],
            ),
        ];
        assert_eq!(
            invalid_message("Pod", "", &two),
            "Pod \"\" is invalid: [metadata.name: Required value: name or generateName is required, spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\"]"
        );
    }
}
