//! Review resources answered per request: `SelfSubjectAccessReview` and
//! `SelfSubjectRulesReview` (`kubectl auth can-i`), `SelfSubjectReview` (`kubectl auth whoami`).
//!
//! kubectl sends these as protobuf only, so the few fields we read are decoded by hand. RBAC
//! objects are stored but not yet enforced: every authenticated user may do everything, and the
//! reviews say so.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Call, json_response};
use crate::auth::Identity;
use crate::codec::parse_body;
use crate::error::{ApiError, ApiResult};
use crate::request::content_type;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

pub(super) async fn review(call: &Call, identity: Option<&Identity>) -> ApiResult<Response> {
    let info = &call.target.info;
    let spec = if content_type(&call.headers) == PROTOBUF {
        decode_protobuf_spec(&info.kind, &call.body)?
    } else {
        parse_body(&content_type(&call.headers), &call.body)?
            .get("spec")
            .cloned()
            .unwrap_or(json!({}))
    };
    let status = match info.kind.as_str() {
        "SelfSubjectAccessReview" => {
            json!({"allowed": true, "reason": "RBAC is not enforced by this Skiff version"})
        }
        "SelfSubjectRulesReview" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        "SelfSubjectReview" => {
            let (user, groups) = identity.map_or(("system:anonymous".to_owned(), vec![]), |i| {
                (i.user.clone(), i.groups.clone())
            });
            json!({"userInfo": {"username": user, "groups": groups}})
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown review kind {other}"
            )));
        }
    };
    let mut body = json!({
        "kind": info.kind, "apiVersion": info.api_version(),
        "metadata": {"creationTimestamp": null}, "status": status,
    });
    if info.kind != "SelfSubjectReview" {
        body["spec"] = spec;
    }
    Ok(json_response(StatusCode::CREATED, &body, &[]))
}

/// A protobuf field's payload: length-delimited bytes are kept, varints only skipped.
enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
}

fn varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn fields(data: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let key = varint(data, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(data, &mut pos)?;
                out.push((number, Field::Varint));
            }
            2 => {
                let len = varint(data, &mut pos)? as usize;
                let bytes = data.get(pos..pos.checked_add(len)?)?;
                pos += len;
                out.push((number, Field::Bytes(bytes)));
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => return None,
        }
    }
    Some(out)
}

fn bytes_field<'a>(fs: &[(u64, Field<'a>)], n: u64) -> Option<&'a [u8]> {
    fs.iter().find_map(|(k, f)| match f {
        Field::Bytes(b) if *k == n => Some(*b),
        _ => None,
    })
}

fn string_fields(data: &[u8], names: &[&str]) -> Value {
    let fs = fields(data).unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        if let Some(b) = bytes_field(&fs, i as u64 + 1) {
            out.insert((*name).to_owned(), json!(String::from_utf8_lossy(b)));
        }
    }
    Value::Object(out)
}

/// The `spec` of a protobuf review: `k8s\0` + runtime.Unknown{raw: the object}.
fn decode_protobuf_spec(kind: &str, body: &[u8]) -> ApiResult<Value> {
    let bad = || ApiError::bad_request("could not decode the protobuf body");
    let envelope = body.strip_prefix(b"k8s\0").ok_or_else(bad)?;
    let unknown = fields(envelope).ok_or_else(bad)?;
    let raw = bytes_field(&unknown, 2).ok_or_else(bad)?;
    let object = fields(raw).ok_or_else(bad)?;
    let Some(spec) = bytes_field(&object, 2) else {
        return Ok(json!({}));
    };
    let spec_fields = fields(spec).ok_or_else(bad)?;
    Ok(match kind {
        "SelfSubjectAccessReview" => {
            let mut out = json!({});
            if let Some(r) = bytes_field(&spec_fields, 1) {
                out["resourceAttributes"] = string_fields(
                    r,
                    &[
                        "namespace",
                        "verb",
                        "group",
                        "version",
                        "resource",
                        "subresource",
                        "name",
                    ],
                );
            }
            if let Some(n) = bytes_field(&spec_fields, 2) {
                out["nonResourceAttributes"] = string_fields(n, &["path", "verb"]);
            }
            out
        }
        "SelfSubjectRulesReview" => string_fields(spec, &["namespace"]),
        _ => json!({}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fields: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, bytes) in fields {
            out.push(((n << 3) | 2) as u8);
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
        out
    }

    #[test]
    fn decodes_kubectls_access_review() {
        let attrs = message(&[(1, b"default"), (2, b"create"), (5, b"pods")]);
        let spec = message(&[(1, &attrs)]);
        let object = message(&[(2, &spec)]);
        let type_meta = message(&[
            (1, b"authorization.k8s.io/v1"),
            (2, b"SelfSubjectAccessReview"),
        ]);
        let mut body = b"k8s\0".to_vec();
        body.extend(message(&[(1, &type_meta), (2, &object)]));
        let spec = decode_protobuf_spec("SelfSubjectAccessReview", &body).unwrap();
        assert_eq!(spec["resourceAttributes"]["verb"], "create");
        assert_eq!(spec["resourceAttributes"]["resource"], "pods");
        assert!(decode_protobuf_spec("SelfSubjectAccessReview", b"junk").is_err());
    }
}
