//! The aggregation layer (kube-aggregator's role): an `APIService` (`apiregistration.k8s.io/v1`)
//! whose `spec.service` names a Service hands its group/version to that service. Requests under
//! `/apis/<group>/<version>` are passed to an address of the Service's Endpoints, the group
//! appears in discovery (legacy and aggregated, the latter with the resources the service
//! lists), and an availability loop keeps the `Available` condition that `kubectl get
//! apiservice` shows. This is how `metrics.k8s.io` (the metrics server) is served.
//!
//! The service is reached over plain HTTP, like `services/proxy`; Skiff's aggregated servers
//! listen on the node's loopback.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::handlers::service_proxy::{forward, resolve};
use crate::objects::{ListOptions, Objects};
use crate::state::AppState;

/// Where an aggregated group/version is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub service: String,
    pub port: Option<i64>,
    pub group_priority: i64,
    pub version_priority: i64,
}

fn info(state: &AppState) -> skiff_api::registry::ResourceInfo {
    state
        .registry()
        .get("apiregistration.k8s.io", "v1", "apiservices")
        .expect("registered")
        .clone()
}

fn backend_of(obj: &Value) -> Option<Backend> {
    let spec = &obj["spec"];
    let service = spec.get("service").filter(|s| s.is_object())?;
    Some(Backend {
        group: spec["group"].as_str()?.to_owned(),
        version: spec["version"].as_str()?.to_owned(),
        namespace: service["namespace"].as_str()?.to_owned(),
        service: service["name"].as_str()?.to_owned(),
        port: service["port"].as_i64(),
        group_priority: spec["groupPriorityMinimum"].as_i64().unwrap_or(0),
        version_priority: spec["versionPriority"].as_i64().unwrap_or(0),
    })
}

/// Every APIService served by a Service, highest group priority first.
pub(crate) async fn backends(state: &AppState) -> Vec<Backend> {
    let list = Objects::new(state, &info(state))
        .list(None, &ListOptions::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut out: Vec<Backend> = list.iter().filter_map(backend_of).collect();
    out.sort_by(|a, b| {
        (b.group_priority, &a.group, b.version_priority).cmp(&(
            a.group_priority,
            &b.group,
            a.version_priority,
        ))
    });
    out
}

/// The backend of `group/version`, when an APIService hands it to a Service.
pub(crate) async fn backend(state: &AppState, group: &str, version: &str) -> Option<Backend> {
    let obj = Objects::new(state, &info(state))
        .get(None, &format!("{version}.{group}"))
        .await
        .ok()?;
    backend_of(&obj)
}

/// Pass a request to the backend, path and query unchanged.
pub(crate) async fn proxy(
    state: &AppState,
    backend: &Backend,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    let port = backend.port.map(|p| p.to_string());
    let (host, port) =
        resolve(state, &backend.namespace, &backend.service, port.as_deref()).await?;
    forward(&host, port, method, path_and_query, headers, body, None).await
}

/// `GET /apis/<group>/<version>` on the backend, as JSON.
async fn fetch_resources(state: &AppState, backend: &Backend) -> ApiResult<Value> {
    let path = format!("/apis/{}/{}", backend.group, backend.version);
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::ACCEPT,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let call = proxy(
        state,
        backend,
        &Method::GET,
        &path,
        &headers,
        bytes::Bytes::new(),
    );
    let response = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| ApiError::unavailable(format!("{path}: timeout")))??;
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .map_err(|_| ApiError::unavailable(format!("{path}: timeout")))?
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(ApiError::unavailable(format!(
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::unavailable(format!("{path}: {e}")))
}

/// Recently fetched resource lists, so discovery does not call every backend every time.
type ResourceCache = Mutex<HashMap<String, (Instant, Option<Value>)>>;

fn cache() -> &'static ResourceCache {
    static CACHE: OnceLock<ResourceCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

const CACHE_TTL: Duration = Duration::from_secs(10);

async fn cached_resources(state: &AppState, backend: &Backend) -> Option<Value> {
    let key = format!(
        "{}/{}@{}/{}",
        backend.group, backend.version, backend.namespace, backend.service
    );
    if let Some((at, v)) = cache().lock().expect("cache lock").get(&key)
        && at.elapsed() < CACHE_TTL
    {
        return v.clone();
    }
    let v = fetch_resources(state, backend).await.ok();
    cache()
        .lock()
        .expect("cache lock")
        .insert(key, (Instant::now(), v.clone()));
    v
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`) entries of the aggregated groups: resources
/// as the backend lists them, or none with `freshness: Stale` while it does not answer.
pub(crate) async fn discovery_items(state: &AppState) -> Vec<Value> {
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for b in backends(state).await {
        let (resources, freshness) = match cached_resources(state, &b).await {
            Some(list) => (
                list["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| !r["name"].as_str().unwrap_or("").contains('/'))
                    .map(|r| {
                        json!({
                            "resource": r["name"],
                            "responseKind": {"group": "", "version": "", "kind": r["kind"]},
                            "scope": if r["namespaced"] == true { "Namespaced" } else { "Cluster" },
                            "singularResource": r["singularName"],
                            "verbs": r["verbs"],
                        })
                    })
                    .collect::<Vec<_>>(),
                "Current",
            ),
            None => (Vec::new(), "Stale"),
        };
        let version = json!({"version": b.version, "resources": resources, "freshness": freshness});
        match groups.iter_mut().find(|(g, _)| *g == b.group) {
            Some((_, versions)) => versions.push(version),
            None => groups.push((b.group.clone(), vec![version])),
        }
    }
    groups
        .into_iter()
        .map(|(g, versions)| {
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect()
}

/// Aggregated groups with their versions, preferred first.
pub(crate) async fn group_versions(state: &AppState) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for b in backends(state).await {
        match out.iter_mut().find(|(g, _)| *g == b.group) {
            Some((_, v)) => v.push(b.version),
            None => out.push((b.group, vec![b.version])),
        }
    }
    out
}

/// What the availability check concluded.
fn condition(state: &str, reason: &str, message: &str) -> (String, String, String) {
    (state.to_owned(), reason.to_owned(), message.to_owned())
}

async fn check(state: &AppState, backend: &Backend) -> (String, String, String) {
    match fetch_resources(state, backend).await {
        Ok(_) => condition("True", "Passed", "all checks passed"),
        Err(e) => {
            let message = e.message.clone();
            let reason = if message.contains("no endpoints") {
                "MissingEndpoints"
            } else if message.contains("not found") {
                "ServiceNotFound"
            } else {
                "FailedDiscoveryCheck"
            };
            condition(
                "False",
                reason,
                &format!(
                    "failing or missing response from {}/{}: {message}",
                    backend.group, backend.version
                ),
            )
        }
    }
}

/// Keep `status.conditions[type=Available]` of every service-backed APIService current.
pub(crate) async fn availability(state: AppState, shutdown: CancellationToken) {
    let span = tracing::info_span!("apiservice_availability");
    tracing::Instrument::instrument(
        async move {
            loop {
                for b in backends(&state).await {
                    let (status, reason, message) = check(&state, &b).await;
                    let name = format!("{}.{}", b.version, b.group);
                    let objects = Objects::new(&state, &info(&state));
                    let Ok(current) = objects.get(None, &name).await else {
                        continue;
                    };
                    let unchanged = current["status"]["conditions"]
                        .as_array()
                        .and_then(|c| c.iter().find(|c| c["type"] == "Available"))
                        .is_some_and(|o| {
                            o["status"] == status.as_str() && o["reason"] == reason.as_str()
                        });
                    if unchanged {
                        continue;
                    }
                    let result = objects
                        .update(None, &name, Some("status"), false, |obj| {
                            let mut obj = obj.clone();
                            obj["status"] = json!({"conditions": [{
                                "type": "Available", "status": status, "reason": reason,
                                "message": message,
                                "lastTransitionTime": crate::objects::now(),
                            }]});
                            Ok((obj, None))
                        })
                        .await;
                    match result {
                        Ok(_) => tracing::info!(apiservice = %name, available = %status, %reason, "APIService availability changed"),
                        Err(e) => tracing::debug!(apiservice = %name, error = %e.message, "updating APIService status failed"),
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        },
        span,
    )
    .await;
}
