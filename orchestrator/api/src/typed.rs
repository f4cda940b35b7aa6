//! Decoding request bodies through the k8s-openapi types.
//!
//! Objects are stored as JSON, but every write is decoded into its typed struct and encoded
//! again. That gives us, for every built-in kind, exactly upstream's field names and types:
//! a wrong type is a decode error, and a field the type does not know disappears in the round
//! trip — which is how `fieldValidation=Strict` finds unknown fields without a schema walker.

use k8s_openapi::api;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Why a body could not be decoded as its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The JSON does not fit the type (wrong type of a field, bad enum value…).
    #[error("{0}")]
    Type(String),
}

/// The outcome of a round trip: the normalized object and the paths of fields the type does not
/// know (`spec.foo`, `spec.containers[0].bar`), in the order found.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object as the typed struct encodes it.
    pub object: Value,
    /// Unknown field paths, dotted as upstream reports them.
    pub unknown_fields: Vec<String>,
}

fn round_trip<T: DeserializeOwned + Serialize>(input: &Value) -> Result<Value, DecodeError> {
    let typed: T =
        serde_json::from_value(input.clone()).map_err(|e| DecodeError::Type(e.to_string()))?;
    serde_json::to_value(&typed).map_err(|e| DecodeError::Type(e.to_string()))
}

/// Decode `input` as `group/version` `kind`. Kinds without a typed struct (custom resources)
/// pass through unchanged.
pub fn decode(
    group: &str,
    version: &str,
    kind: &str,
    input: &Value,
) -> Result<Decoded, DecodeError> {
    use api::{
        apps::v1 as apps, autoscaling::v1 as as1, autoscaling::v2 as as2, batch::v1 as batch,
        coordination::v1 as coord, core::v1 as core, policy::v1 as policy, rbac::v1 as rbac,
    };
    let object = match (group, version, kind) {
        ("", "v1", "Namespace") => round_trip::<core::Namespace>(input)?,
        ("", "v1", "Pod") => round_trip::<core::Pod>(input)?,
        ("", "v1", "Node") => round_trip::<core::Node>(input)?,
        ("", "v1", "Event") => round_trip::<core::Event>(input)?,
        ("", "v1", "ConfigMap") => round_trip::<core::ConfigMap>(input)?,
        ("", "v1", "Secret") => round_trip::<core::Secret>(input)?,
        ("", "v1", "ServiceAccount") => round_trip::<core::ServiceAccount>(input)?,
        ("", "v1", "Service") => round_trip::<core::Service>(input)?,
        ("", "v1", "Endpoints") => round_trip::<core::Endpoints>(input)?,
        ("", "v1", "PersistentVolume") => round_trip::<core::PersistentVolume>(input)?,
        ("", "v1", "PersistentVolumeClaim") => round_trip::<core::PersistentVolumeClaim>(input)?,
        ("", "v1", "Binding") => round_trip::<core::Binding>(input)?,
        ("coordination.k8s.io", "v1", "Lease") => round_trip::<coord::Lease>(input)?,
        ("apiregistration.k8s.io", "v1", "APIService") => round_trip::<
            k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        >(input)?,
        ("certificates.k8s.io", "v1", "CertificateSigningRequest") => {
            round_trip::<api::certificates::v1::CertificateSigningRequest>(input)?
        }
        ("apps", "v1", "Deployment") => round_trip::<apps::Deployment>(input)?,
        ("apps", "v1", "ReplicaSet") => round_trip::<apps::ReplicaSet>(input)?,
        ("apps", "v1", "StatefulSet") => round_trip::<apps::StatefulSet>(input)?,
        ("apps", "v1", "DaemonSet") => round_trip::<apps::DaemonSet>(input)?,
        ("apps", "v1", "ControllerRevision") => round_trip::<apps::ControllerRevision>(input)?,
        ("batch", "v1", "Job") => round_trip::<batch::Job>(input)?,
        ("batch", "v1", "CronJob") => round_trip::<batch::CronJob>(input)?,
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
            round_trip::<as1::HorizontalPodAutoscaler>(input)?
        }
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => {
            round_trip::<as2::HorizontalPodAutoscaler>(input)?
        }
        ("autoscaling", "v1", "Scale") => round_trip::<as1::Scale>(input)?,
        ("policy", "v1", "Eviction") => round_trip::<policy::Eviction>(input)?,
        ("rbac.authorization.k8s.io", "v1", "Role") => round_trip::<rbac::Role>(input)?,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => {
            round_trip::<rbac::RoleBinding>(input)?
        }
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => {
            round_trip::<rbac::ClusterRole>(input)?
        }
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => {
            round_trip::<rbac::ClusterRoleBinding>(input)?
        }
        _ => input.clone(),
    };
    let mut unknown_fields = Vec::new();
    find_unknown(input, &object, &mut String::new(), &mut unknown_fields);
    Ok(Decoded {
        object,
        unknown_fields,
    })
}

/// Collect paths present (and non-null) in `input` but missing from `output`.
fn find_unknown(input: &Value, output: &Value, path: &mut String, found: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                if value.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match b.get(key) {
                    Some(out) => find_unknown(value, out, path, found),
                    None => found.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                find_unknown(x, y, path, found);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_with_upstream_paths() {
        let input = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "bogus": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "replica": 3,
                "template": {"spec": {"containers": [{"name": "c", "image": "x", "imagePull": "y"}]}}}});
        let decoded = decode("apps", "v1", "Deployment", &input).unwrap();
        assert_eq!(
            decoded.unknown_fields,
            vec![
                "metadata.bogus",
                "spec.replica",
                "spec.template.spec.containers[0].imagePull"
            ]
        );
        assert!(decoded.object.pointer("/spec/replica").is_none());
    }

    #[test]
    fn wrong_types_are_decode_errors() {
        let input = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": "three",
            "selector": {}, "template": {}}});
        assert!(decode("apps", "v1", "Deployment", &input).is_err());
    }

    #[test]
    fn secrets_keep_base64_data() {
        let input = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"k": "aGk="}, "stringData": {"x": "y"}});
        let decoded = decode("", "v1", "Secret", &input).unwrap();
        assert_eq!(decoded.object["data"]["k"], "aGk=");
        assert!(decoded.unknown_fields.is_empty());
    }
}
