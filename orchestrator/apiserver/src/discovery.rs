//! Discovery: aggregated (`apidiscovery.k8s.io/v2`) and legacy (`APIVersions`, `APIGroupList`,
//! `APIResourceList`), plus `/version`. kubectl reads aggregated discovery only when the reply
//! carries its exact content type, and still needs the legacy `/api/v1` list for some commands.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skiff_api::{Registry, ResourceInfo};

use crate::error::ApiError;
use crate::handlers::json_response;
use crate::state::AppState;

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            let p = p.replace(' ', "");
            p.contains("as=APIGroupDiscoveryList") && p.contains("v=v2") && !p.contains("v=v2beta1")
        })
}

fn aggregated_response(body: &Value) -> Response {
    let mut r = (StatusCode::OK, serde_json::to_vec(body).unwrap_or_default()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(AGGREGATED));
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            json!({"subresource": s.name,
                   "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                   "verbs": s.verbs})
        })
        .collect();
    let mut out = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        out["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        out["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        out["subresources"] = json!(subresources);
    }
    out
}

fn aggregated_list(registry: &Registry, core: bool) -> Value {
    let items: Vec<Value> = registry
        .group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .in_group_version(&group, v)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// `GET /api`.
pub(crate) async fn api(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated_response(&aggregated_list(state.registry(), true));
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        &[],
    )
}

fn api_group(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// `GET /apis`: the built-in groups, then those APIServices hand to other servers.
pub(crate) async fn apis(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        let mut list = aggregated_list(state.registry(), false);
        let extra = crate::aggregator::discovery_items(&state).await;
        if let Some(items) = list["items"].as_array_mut() {
            items.extend(extra);
        }
        return aggregated_response(&list);
    }
    let mut groups: Vec<Value> = state
        .registry()
        .group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| api_group(&g, &v))
        .collect();
    groups.extend(
        crate::aggregator::group_versions(&state)
            .await
            .into_iter()
            .map(|(g, v)| api_group(&g, &v)),
    );
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        &[],
    )
}

/// `GET /apis/{group}`.
pub(crate) async fn group(State(state): State<AppState>, Path(group): Path<String>) -> Response {
    match state
        .registry()
        .group_versions()
        .into_iter()
        .find(|(g, _)| *g == group)
    {
        Some((g, v)) => {
            let mut body = api_group(&g, &v);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            json_response(StatusCode::OK, &body, &[])
        }
        None => match crate::aggregator::group_versions(&state)
            .await
            .into_iter()
            .find(|(g, _)| *g == group)
        {
            Some((g, v)) => {
                let mut body = api_group(&g, &v);
                body["kind"] = json!("APIGroup");
                body["apiVersion"] = json!("v1");
                json_response(StatusCode::OK, &body, &[])
            }
            None => ApiError::path_not_found().into_response(),
        },
    }
}

fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in registry.in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for s in &r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name), "singularName": "",
                "namespaced": r.namespaced, "kind": s.kind, "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                sub["group"] = json!(s.group);
                sub["version"] = json!(s.version);
            }
            resources.push(sub);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// `GET /api/v1`.
pub(crate) async fn core_resources(State(state): State<AppState>) -> Response {
    let list = resource_list(state.registry(), "", "v1").expect("core resources exist");
    json_response(StatusCode::OK, &list, &[])
}

/// `GET /apis/{group}/{version}`.
pub(crate) async fn group_resources(
    State(state): State<AppState>,
    Path((group, version)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    match resource_list(state.registry(), &group, &version) {
        Some(list) => json_response(StatusCode::OK, &list, &[]),
        None => match crate::aggregator::backend(&state, &group, &version).await {
            Some(backend) => crate::handlers::aggregated(&state, &backend, request).await,
            None => ApiError::path_not_found().into_response(),
        },
    }
}

/// `GET /version`.
pub(crate) async fn version(State(state): State<AppState>) -> Response {
    let git_version = state.serving().git_version.clone();
    let minor = git_version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("33")
        .to_owned();
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1", "minor": minor, "gitVersion": git_version,
            "gitCommit": option_env!("SKIFF_GIT_COMMIT").unwrap_or("unknown"),
            "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": format!("skiff {}", env!("CARGO_PKG_VERSION")),
            "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, arch()),
        }),
        &[],
    )
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_lists_include_subresources_with_their_groups() {
        let r = Registry::builtin();
        let core = resource_list(&r, "", "v1").unwrap();
        let resources = core["resources"].as_array().unwrap();
        let eviction = resources
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .unwrap();
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["kind"], "Eviction");
        let pods = resources.iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
    }

    #[test]
    fn aggregated_lists_carry_scope_and_response_kind() {
        let r = Registry::builtin();
        let apis = aggregated_list(&r, false);
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = &apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap()
            .clone();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["responseKind"]["kind"], "Deployment");
        assert_eq!(deploy["subresources"][1]["responseKind"]["kind"], "Scale");
        let autoscaling = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "autoscaling")
            .unwrap();
        assert_eq!(
            autoscaling["versions"][0]["version"], "v2",
            "preferred version first"
        );
    }
}
