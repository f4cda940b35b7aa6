//! `metrics.k8s.io/v1beta1` over HTTP: NodeMetrics and PodMetrics (get, list, `labelSelector`)
//! in exactly the shapes metrics-server serves, so `kubectl top` and the HPA read them through
//! the API server's aggregation layer unchanged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use skiff_api::selector::LabelSelector;

use crate::Server;
use crate::storage::Usage;

const GROUP_VERSION: &str = "metrics.k8s.io/v1beta1";

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Response {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    if let Some(d) = details {
        body["details"] = d;
    }
    json_response(code, &body)
}

fn not_found(kind: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{kind}.metrics.k8s.io \"{name}\" not found"),
        Some(json!({"name": name, "group": "metrics.k8s.io", "kind": kind})),
    )
}

/// A CPU rate as the canonical decimal quantity Kubernetes prints (`137505622n`, `250m`).
pub(crate) fn cpu_quantity(nano_cores: u64) -> String {
    match nano_cores {
        0 => "0".into(),
        n if n % 1_000_000_000 == 0 => format!("{}", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}u", n / 1_000),
        n => format!("{n}n"),
    }
}

/// Bytes as the canonical binary quantity (`1634876Ki`, `64Mi`, or plain bytes).
pub(crate) fn memory_quantity(bytes: u64) -> String {
    const SUFFIXES: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    if bytes == 0 {
        return "0".into();
    }
    for (suffix, unit) in SUFFIXES {
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// A window as Go prints a `time.Duration` (`15.012s`, `1m0.5s`).
pub(crate) fn go_duration(ms: i64) -> String {
    let seconds = |ms: i64| {
        let (s, frac) = (ms / 1000, ms % 1000);
        if frac == 0 {
            format!("{s}s")
        } else {
            format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0'))
        }
    };
    if ms < 60_000 {
        seconds(ms)
    } else {
        format!("{}m{}", ms / 60_000, seconds(ms % 60_000))
    }
}

fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(skiff_api::time::format_rfc3339)
        .unwrap_or_default()
}

fn usage(u: &Usage) -> Value {
    json!({"cpu": cpu_quantity(u.nano_cores), "memory": memory_quantity(u.memory_bytes)})
}

fn selector(params: &std::collections::HashMap<String, String>) -> Result<LabelSelector, String> {
    match params.get("labelSelector").filter(|s| !s.is_empty()) {
        None => Ok(LabelSelector::everything()),
        Some(s) => LabelSelector::parse(s).map_err(|e| e.0),
    }
}

fn bad_selector(message: String) -> Response {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("unable to parse requirement: {message}"),
        None,
    )
}

fn node_metrics(server: &Server, name: &str) -> Option<Value> {
    let u = server.storage.read().expect("storage lock").node(name)?;
    let labels = server
        .cache
        .nodes
        .read()
        .expect("cache lock")
        .get(name)
        .map(|n| n.labels.clone())
        .unwrap_or_default();
    server.observe_freshness(u.timestamp_ms);
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": GROUP_VERSION,
        "metadata": {"name": name, "creationTimestamp": skiff_api::time::now_rfc3339(), "labels": labels},
        "timestamp": time(u.timestamp_ms), "window": go_duration(u.window_ms), "usage": usage(&u),
    }))
}

fn pod_metrics(
    server: &Server,
    namespace: &str,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<Value> {
    let containers = server
        .storage
        .read()
        .expect("storage lock")
        .pod(namespace, name)?;
    // The pod's timestamp and window are its earliest container's.
    let earliest = containers
        .iter()
        .map(|(_, u)| *u)
        .min_by_key(|u| u.timestamp_ms)?;
    server.observe_freshness(earliest.timestamp_ms);
    let containers: Vec<Value> = containers
        .iter()
        .map(|(c, u)| json!({"name": c, "usage": usage(u)}))
        .collect();
    Some(json!({
        "kind": "PodMetrics", "apiVersion": GROUP_VERSION,
        "metadata": {"name": name, "namespace": namespace,
                     "creationTimestamp": skiff_api::time::now_rfc3339(), "labels": labels},
        "timestamp": time(earliest.timestamp_ms), "window": go_duration(earliest.window_ms),
        "containers": containers,
    }))
}

async fn resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ]}),
    )
}

async fn list_nodes(
    State(server): State<Arc<Server>>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let selector = match selector(&params) {
        Ok(s) => s,
        Err(e) => return bad_selector(e),
    };
    let names: Vec<String> = {
        let nodes = server.cache.nodes.read().expect("cache lock");
        let mut names: Vec<String> = nodes
            .iter()
            .filter(|(_, n)| selector.matches(&n.labels))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    };
    let items: Vec<Value> = names
        .iter()
        .filter_map(|n| node_metrics(&server, n))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "NodeMetricsList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}),
    )
}

async fn get_node(State(server): State<Arc<Server>>, Path(name): Path<String>) -> Response {
    match node_metrics(&server, &name) {
        Some(m) => json_response(StatusCode::OK, &m),
        None => not_found("nodemetrics", &name),
    }
}

fn list_pods_in(
    server: &Server,
    namespace: Option<&str>,
    params: &std::collections::HashMap<String, String>,
) -> Response {
    let selector = match selector(params) {
        Ok(s) => s,
        Err(e) => return bad_selector(e),
    };
    let mut pods: Vec<((String, String), std::collections::BTreeMap<String, String>)> = server
        .cache
        .pods
        .read()
        .expect("cache lock")
        .iter()
        .filter(|((ns, _), p)| {
            namespace.is_none_or(|want| want == ns) && selector.matches(&p.labels)
        })
        .map(|(k, p)| (k.clone(), p.labels.clone()))
        .collect();
    pods.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<Value> = pods
        .iter()
        .filter_map(|((ns, name), labels)| pod_metrics(server, ns, name, labels))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "PodMetricsList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}),
    )
}

async fn list_pods(
    State(server): State<Arc<Server>>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    list_pods_in(&server, None, &params)
}

async fn list_namespaced_pods(
    State(server): State<Arc<Server>>,
    Path(namespace): Path<String>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    list_pods_in(&server, Some(&namespace), &params)
}

async fn get_pod(
    State(server): State<Arc<Server>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let labels = server
        .cache
        .pods
        .read()
        .expect("cache lock")
        .get(&(namespace.clone(), name.clone()))
        .map(|p| p.labels.clone());
    match labels.and_then(|l| pod_metrics(&server, &namespace, &name, &l)) {
        Some(m) => json_response(StatusCode::OK, &m),
        None => not_found("podmetrics", &name),
    }
}

async fn own_metrics(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    skiff_telemetry::metrics_response(&server.registry, &headers)
}

/// Every route of the server.
pub(crate) fn router(server: Arc<Server>) -> Router {
    let base = "/apis/metrics.k8s.io/v1beta1";
    Router::new()
        .route(base, get(resources))
        .route(&format!("{base}/"), get(resources))
        .route(&format!("{base}/nodes"), get(list_nodes))
        .route(&format!("{base}/nodes/{{name}}"), get(get_node))
        .route(&format!("{base}/pods"), get(list_pods))
        .route(
            &format!("{base}/namespaces/{{namespace}}/pods"),
            get(list_namespaced_pods),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/pods/{{name}}"),
            get(get_pod),
        )
        .route("/metrics", get(own_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(137_505_622), "137505622n");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(5_000), "5u");
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(memory_quantity(1_634_876 * 1024), "1634876Ki");
        assert_eq!(memory_quantity(64 << 20), "64Mi");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(go_duration(15_012), "15.012s");
        assert_eq!(go_duration(15_000), "15s");
        assert_eq!(go_duration(15_500), "15.5s");
        assert_eq!(go_duration(60_500), "1m0.5s");
    }
}
