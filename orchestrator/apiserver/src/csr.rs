//! CertificateSigningRequest rules the API server owns (upstream's CSR registry strategy): the
//! requester's identity is recorded on create, the PEM request must parse and carry a valid
//! self-signature, the spec never changes, approval conditions change only through `/approval`,
//! and an issued certificate is never replaced.

use base64::Engine;
use serde_json::{Value, json};
use skiff_api::validation::FieldError;
use x509_parser::prelude::FromDer;

use crate::auth::Identity;

/// Record who asked: `spec.username`, `spec.groups` (and clear what the client claimed).
pub(crate) fn set_requester(obj: &mut Value, identity: Option<&Identity>) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = obj["spec"].as_object_mut().expect("spec is an object");
    for field in ["username", "uid", "groups", "extra"] {
        spec.remove(field);
    }
    if let Some(id) = identity {
        spec.insert("username".into(), json!(id.user));
        spec.insert("groups".into(), json!(id.groups));
    }
}

/// The PEM in `spec.request` must be one CERTIFICATE REQUEST whose signature verifies.
pub(crate) fn check_request(obj: &Value) -> Vec<FieldError> {
    let Some(encoded) = obj.pointer("/spec/request").and_then(Value::as_str) else {
        return Vec::new(); // reported as Required by validation
    };
    let invalid = |detail: &str| {
        vec![FieldError::invalid(
            "spec.request",
            json!(format!("<{} bytes>", encoded.len() * 3 / 4)),
            detail,
        )]
    };
    let Ok(pem_bytes) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return invalid("must be base64 encoded PEM");
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem_bytes) else {
        return invalid("PEM block type must be CERTIFICATE REQUEST");
    };
    if pem.label != "CERTIFICATE REQUEST" {
        return invalid("PEM block type must be CERTIFICATE REQUEST");
    }
    match x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents) {
        Ok((_, csr)) if csr.verify_signature().is_ok() => Vec::new(),
        Ok(_) => invalid("the request's signature does not verify"),
        Err(e) => invalid(&format!("the certificate request does not parse: {e}")),
    }
}

/// An update of `old` to `new` through `subresource` (None, `status` or `approval`). For the
/// subresources the result is complete (`old` with the allowed status changes); for main writes
/// only the spec is pinned and the generic rules still apply.
pub(crate) fn prepare_update(subresource: Option<&str>, old: &Value, new: Value) -> Value {
    let is_approval = |c: &Value| matches!(c["type"].as_str(), Some("Approved" | "Denied"));
    let conditions = |v: &Value| -> Vec<Value> {
        v.pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match subresource {
        Some("approval") => {
            // Only the Approved/Denied conditions come from the client.
            let mut kept: Vec<Value> = conditions(old)
                .into_iter()
                .filter(|c| !is_approval(c))
                .collect();
            kept.extend(conditions(&new).into_iter().filter(|c| is_approval(c)));
            let mut out = old.clone();
            if !out.get("status").is_some_and(Value::is_object) {
                out["status"] = json!({});
            }
            out["status"]["conditions"] = json!(kept);
            out
        }
        Some("status") => {
            // Approval is not a status writer's to change.
            let mut kept: Vec<Value> = conditions(&new)
                .into_iter()
                .filter(|c| !is_approval(c))
                .collect();
            kept.extend(conditions(old).into_iter().filter(|c| is_approval(c)));
            let mut out = old.clone();
            out["status"] = match new.get("status") {
                Some(s) if s.is_object() => s.clone(),
                _ => json!({}),
            };
            out["status"]["conditions"] = json!(kept);
            if let Some(issued) = old
                .pointer("/status/certificate")
                .filter(|c| c != &&json!(""))
            {
                out["status"]["certificate"] = issued.clone();
            }
            out
        }
        _ => {
            let mut out = new;
            out["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_request() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    #[test]
    fn requests_must_be_signed_pem_csrs() {
        let ok = json!({"spec": {"request": pem_request()}});
        assert!(check_request(&ok).is_empty());
        let cert_pem = base64::engine::general_purpose::STANDARD
            .encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let wrong = json!({"spec": {"request": cert_pem}});
        assert!(
            check_request(&wrong)[0]
                .to_string()
                .contains("CERTIFICATE REQUEST")
        );
        let garbage = json!({"spec": {"request": "bm90IGEgcGVt"}});
        assert_eq!(check_request(&garbage).len(), 1);
    }

    #[test]
    fn approval_and_status_writers_stay_in_their_lanes() {
        let old = json!({"spec": {"signerName": "a.io/b"}, "status": {}});
        let approve = json!({"spec": {"signerName": "evil.io/x"},
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"}});
        let approved = prepare_update(Some("approval"), &old, approve);
        assert_eq!(approved["spec"]["signerName"], "a.io/b");
        assert_eq!(approved["status"]["conditions"][0]["type"], "Approved");
        assert!(approved["status"].get("certificate").is_none());

        let sign = json!({"status": {"conditions": [{"type": "Denied", "status": "True"}], "certificate": "Y2VydA=="}});
        let signed = prepare_update(Some("status"), &approved, sign);
        assert_eq!(signed["status"]["certificate"], "Y2VydA==");
        let types: Vec<&str> = signed["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, vec!["Approved"]);

        let replace = json!({"status": {"certificate": "b3RoZXI="}});
        assert_eq!(
            prepare_update(Some("status"), &signed, replace)["status"]["certificate"],
            "Y2VydA=="
        );
    }

    #[test]
    fn the_requester_is_the_caller() {
        let mut obj = json!({"spec": {"username": "someone-else", "groups": ["system:masters"]}});
        let id = Identity {
            user: "system:bootstrap:abcdef".into(),
            groups: vec!["system:bootstrappers".into()],
        };
        set_requester(&mut obj, Some(&id));
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(obj["spec"]["groups"], json!(["system:bootstrappers"]));
    }
}
