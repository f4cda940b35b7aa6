//! OpenAPI v3, generated from our registry and k8s-openapi's JSON Schemas.
//!
//! kubectl needs two things from it: `kubectl create/apply/replace --validate=strict` requires
//! each resource's PATCH operation to carry `x-kubernetes-group-version-kind` and a
//! `fieldValidation` parameter, and `kubectl explain` reads `components.schemas` entries tagged with
//! their GVK. The PATCH request bodies deliberately do not list strategic-merge-patch, so kubectl
//! computes strategic patches from its compiled-in types (which know every merge key).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use skiff_api::{Registry, ResourceInfo};

use crate::error::ApiError;
use crate::handlers::json_response;
use crate::state::AppState;

/// The generated documents, keyed by group-version path (`api/v1`, `apis/apps/v1`).
struct Documents {
    index: Value,
    docs: HashMap<String, Value>,
}

static DOCUMENTS: OnceLock<Documents> = OnceLock::new();

fn schema_name<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// Add a kind's schema (and everything it references); returns its schema name.
fn add_kind(
    generator: &mut SchemaGenerator,
    group: &str,
    version: &str,
    kind: &str,
) -> Option<String> {
    use api::{
        apps::v1 as apps, autoscaling::v1 as as1, autoscaling::v2 as as2, batch::v1 as batch,
        coordination::v1 as coord, core::v1 as core, policy::v1 as policy, rbac::v1 as rbac,
    };
    let g = generator;
    Some(match (group, version, kind) {
        ("", "v1", "Namespace") => schema_name::<core::Namespace>(g),
        ("", "v1", "Pod") => schema_name::<core::Pod>(g),
        ("", "v1", "Node") => schema_name::<core::Node>(g),
        ("", "v1", "Event") => schema_name::<core::Event>(g),
        ("", "v1", "ConfigMap") => schema_name::<core::ConfigMap>(g),
        ("", "v1", "Secret") => schema_name::<core::Secret>(g),
        ("", "v1", "ServiceAccount") => schema_name::<core::ServiceAccount>(g),
        ("", "v1", "Service") => schema_name::<core::Service>(g),
        ("", "v1", "Endpoints") => schema_name::<core::Endpoints>(g),
        ("", "v1", "PersistentVolume") => schema_name::<core::PersistentVolume>(g),
        ("", "v1", "PersistentVolumeClaim") => schema_name::<core::PersistentVolumeClaim>(g),
        ("", "v1", "Binding") => schema_name::<core::Binding>(g),
        ("coordination.k8s.io", "v1", "Lease") => schema_name::<coord::Lease>(g),
        ("apiregistration.k8s.io", "v1", "APIService") => schema_name::<
            k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        >(g),
        ("certificates.k8s.io", "v1", "CertificateSigningRequest") => {
            schema_name::<api::certificates::v1::CertificateSigningRequest>(g)
        }
        ("apps", "v1", "Deployment") => schema_name::<apps::Deployment>(g),
        ("apps", "v1", "ReplicaSet") => schema_name::<apps::ReplicaSet>(g),
        ("apps", "v1", "StatefulSet") => schema_name::<apps::StatefulSet>(g),
        ("apps", "v1", "DaemonSet") => schema_name::<apps::DaemonSet>(g),
        ("apps", "v1", "ControllerRevision") => schema_name::<apps::ControllerRevision>(g),
        ("batch", "v1", "Job") => schema_name::<batch::Job>(g),
        ("batch", "v1", "CronJob") => schema_name::<batch::CronJob>(g),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
            schema_name::<as1::HorizontalPodAutoscaler>(g)
        }
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => {
            schema_name::<as2::HorizontalPodAutoscaler>(g)
        }
        ("autoscaling", "v1", "Scale") => schema_name::<as1::Scale>(g),
        ("policy", "v1", "Eviction") => schema_name::<policy::Eviction>(g),
        ("rbac.authorization.k8s.io", "v1", "Role") => schema_name::<rbac::Role>(g),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => schema_name::<rbac::RoleBinding>(g),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => schema_name::<rbac::ClusterRole>(g),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => {
            schema_name::<rbac::ClusterRoleBinding>(g)
        }
        _ => return None,
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn ok_response(schema: Option<&str>) -> Value {
    match schema {
        Some(name) => {
            json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref(name)}}}})
        }
        None => json!({"200": {"description": "OK"}}),
    }
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "uniqueItems": true})
}

/// Paths of one resource: the collection, the object and its subresources.
fn resource_paths(
    r: &ResourceInfo,
    schema: &str,
    scale_schema: Option<&str>,
    paths: &mut Map<String, Value>,
) {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let base = format!("/{}", gv_path(&r.group, &r.version));
    let (collection, mut params) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            vec![path_param("namespace")],
        )
    } else {
        (format!("{base}/{}", r.plural), Vec::new())
    };
    let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk.clone(), "responses": ok_response(Some(schema))});
    let mut create = op("post");
    create["parameters"] = json!([
        query_param("dryRun"),
        query_param("fieldManager"),
        query_param("fieldValidation")
    ]);
    create["requestBody"] =
        json!({"content": {"application/json": {"schema": schema_ref(schema)}}});
    paths.insert(
        collection.clone(),
        json!({"get": op("list"), "post": create, "parameters": params.clone()}),
    );
    params.push(path_param("name"));
    let patch_op = |schema: &str| {
        json!({
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk.clone(),
            "parameters": [query_param("dryRun"), query_param("fieldManager"), query_param("fieldValidation"), query_param("force")],
            "requestBody": {"content": {
                "application/json-patch+json": {"schema": {"type": "object"}},
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/apply-patch+yaml": {"schema": {"type": "object"}},
            }},
            "responses": ok_response(Some(schema)),
        })
    };
    let mut replace = op("put");
    replace["parameters"] = json!([
        query_param("dryRun"),
        query_param("fieldManager"),
        query_param("fieldValidation")
    ]);
    replace["requestBody"] =
        json!({"content": {"application/json": {"schema": schema_ref(schema)}}});
    let object = format!("{collection}/{{name}}");
    paths.insert(
        object.clone(),
        json!({"get": op("get"), "put": replace, "patch": patch_op(schema), "delete": op("delete"), "parameters": params.clone()}),
    );
    for sub in &r.subresources {
        match sub.name.as_str() {
            "status" => {
                paths.insert(format!("{object}/status"), json!({"get": op("get"), "put": op("put"), "patch": patch_op(schema), "parameters": params.clone()}));
            }
            "scale" => {
                if let Some(scale) = scale_schema {
                    paths.insert(format!("{object}/scale"), json!({"get": {"responses": ok_response(Some(scale))}, "patch": patch_op(scale), "parameters": params.clone()}));
                }
            }
            _ => {}
        }
    }
}

fn build(registry: &Registry) -> Documents {
    let mut docs = HashMap::new();
    let mut index = Map::new();
    for (group, versions) in registry.group_versions() {
        for version in versions {
            let mut generator = SchemaSettings::openapi3().into_generator();
            let mut paths = Map::new();
            let mut tagged = Vec::new();
            let scale = add_kind(&mut generator, "autoscaling", "v1", "Scale");
            for r in registry.in_group_version(&group, &version) {
                let Some(schema) = add_kind(&mut generator, &r.group, &r.version, &r.kind) else {
                    continue;
                };
                resource_paths(r, &schema, scale.as_deref(), &mut paths);
                tagged.push((
                    schema,
                    json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
                ));
            }
            let mut schemas = generator.take_definitions(true);
            for (name, gvk) in tagged {
                if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
                    s.insert("x-kubernetes-group-version-kind".into(), gvk);
                }
            }
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
                "paths": paths,
                "components": {"schemas": schemas},
            });
            let path = gv_path(&group, &version);
            let hash = fnv_hex(&serde_json::to_vec(&doc).unwrap_or_default());
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            docs.insert(path, doc);
        }
    }
    Documents {
        index: json!({"paths": index}),
        docs,
    }
}

fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

fn documents(registry: &Registry) -> &'static Documents {
    DOCUMENTS.get_or_init(|| build(registry))
}

/// `GET /openapi/v3`.
pub(crate) async fn index(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &documents(state.registry()).index, &[])
}

/// `GET /openapi/v3/{*path}`.
pub(crate) async fn document(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    match documents(state.registry()).docs.get(path.trim_matches('/')) {
        Some(doc) => {
            let mut r = json_response(StatusCode::OK, doc, &[]);
            r.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("public, immutable"),
            );
            r
        }
        None => ApiError::path_not_found().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_carry_gvk_and_field_validation() {
        let docs = build(&Registry::builtin());
        let apps = &docs.docs["apis/apps/v1"];
        let patch =
            &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        let schema = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            schema["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert!(apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"].is_object());
        let text = serde_json::to_string(apps).unwrap();
        assert!(
            !text.contains("#/$defs/"),
            "references point into components"
        );
        assert!(
            docs.index["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
    }
}
