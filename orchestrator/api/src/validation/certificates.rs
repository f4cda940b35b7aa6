//! CertificateSigningRequests (certificates.k8s.io/v1). The request's PEM itself is checked by
//! the API server, which has an X.509 parser; here are the field rules upstream applies.

use serde_json::{Value, json};

use super::FieldError;

/// Key usages a CSR may ask for (upstream's `KeyUsage` values).
pub const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Shortest certificate a CSR may ask for.
const MIN_EXPIRATION_SECONDS: i64 = 600;

pub(super) fn validate_csr(object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    if spec
        .get("request")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errs.push(FieldError::required("spec.request", ""));
    }
    match spec.get("signerName").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required("spec.signerName", "")),
        Some(name) if !is_signer_name(name) => errs.push(FieldError::invalid(
            "spec.signerName",
            json!(name),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )),
        Some(_) => {}
    }
    match spec.get("usages").and_then(Value::as_array) {
        None => errs.push(FieldError::required("spec.usages", "")),
        Some(list) if list.is_empty() => errs.push(FieldError::required("spec.usages", "")),
        Some(list) => {
            for (i, usage) in list.iter().enumerate() {
                let u = usage.as_str().unwrap_or_default();
                if !KEY_USAGES.contains(&u) {
                    errs.push(FieldError::not_supported(
                        format!("spec.usages[{i}]"),
                        usage.clone(),
                        KEY_USAGES,
                    ));
                }
            }
        }
    }
    if let Some(seconds) = spec.get("expirationSeconds").and_then(Value::as_i64)
        && seconds < MIN_EXPIRATION_SECONDS
    {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            json!(seconds),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    let conditions = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let has = |ty: &str| conditions.iter().any(|c| c.get("type") == Some(&json!(ty)));
    if has("Approved") && has("Denied") {
        errs.push(FieldError::invalid(
            "status.conditions",
            json!(conditions),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    for (i, c) in conditions.iter().enumerate() {
        if c.get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(
                format!("status.conditions[{i}].type"),
                "",
            ));
        }
        if let Some(status) = c.get("status").and_then(Value::as_str)
            && !["True", "False", "Unknown"].contains(&status)
        {
            errs.push(FieldError::not_supported(
                format!("status.conditions[{i}].status"),
                json!(status),
                &["True", "False", "Unknown"],
            ));
        }
    }
    errs
}

/// `example.com/name`: a DNS subdomain, a slash, and a non-empty path.
fn is_signer_name(name: &str) -> bool {
    let Some((domain, path)) = name.split_once('/') else {
        return false;
    };
    !path.is_empty()
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(spec: Value) -> Value {
        json!({"metadata": {"name": "x"}, "spec": spec})
    }

    #[test]
    fn a_kubelet_client_request_is_valid() {
        let ok = csr(json!({
            "request": "LS0t", "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"]
        }));
        assert!(validate_csr(&ok).is_empty());
    }

    #[test]
    fn missing_and_malformed_fields_are_reported() {
        let errs = validate_csr(&csr(json!({
            "signerName": "nodomain", "usages": ["client auth", "teleport"], "expirationSeconds": 60
        })));
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.starts_with("spec.request: Required value"))
        );
        assert!(
            text.iter()
                .any(|e| e.contains("fully qualified domain and path"))
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("spec.usages[1]: Unsupported value: \"teleport\""))
        );
        assert!(text.iter().any(|e| e.contains("less than 600 seconds")));
    }

    #[test]
    fn approved_and_denied_exclude_each_other() {
        let mut obj =
            csr(json!({"request": "LS0t", "signerName": "example.com/s", "usages": ["any"]}));
        obj["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        assert_eq!(validate_csr(&obj).len(), 1);
    }
}
