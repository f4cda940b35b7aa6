//! Prometheus HTTP service discovery (`http_sd_configs`) of nodes and pods, with the same
//! `__meta_kubernetes_*` labels Prometheus's `kubernetes_sd_configs` (roles `node` and `pod`)
//! produces, so one set of relabeling rules works with either. Prometheus builds without the
//! Kubernetes discovery (Debian's) use this; others can point `kubernetes_sd_configs` at the API
//! server directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Map, Value, json};

/// A label name Prometheus accepts: every other character becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn add_map(labels: &mut Map<String, Value>, prefix: &str, map: Option<&BTreeMap<String, String>>) {
    for (k, v) in map.into_iter().flatten() {
        labels.insert(format!("{prefix}{}", sanitize(k)), json!(v));
        labels.insert(format!("{prefix}present_{}", sanitize(k)), json!("true"));
    }
}

/// One target group per node: its InternalIP and agent port.
pub(crate) fn nodes(nodes: &[Arc<Node>]) -> Value {
    let groups: Vec<Value> = nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let status = n.status.as_ref()?;
            let addresses = status.addresses.as_ref()?;
            let ip = addresses
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .or_else(|| addresses.first())?
                .address
                .clone();
            let port = status
                .daemon_endpoints
                .as_ref()
                .and_then(|d| d.kubelet_endpoint.as_ref())
                .map_or(10250, |e| e.port);
            let mut labels = Map::new();
            labels.insert("__meta_kubernetes_node_name".into(), json!(name));
            for a in addresses {
                labels.insert(
                    format!("__meta_kubernetes_node_address_{}", a.type_),
                    json!(a.address),
                );
            }
            add_map(
                &mut labels,
                "__meta_kubernetes_node_label_",
                n.metadata.labels.as_ref(),
            );
            add_map(
                &mut labels,
                "__meta_kubernetes_node_annotation_",
                n.metadata.annotations.as_ref(),
            );
            Some(json!({"targets": [format!("{ip}:{port}")], "labels": labels}))
        })
        .collect();
    Value::Array(groups)
}

/// One target group per pod with an IP (optionally in one namespace).
pub(crate) fn pods(pods: &[Arc<Pod>], namespace: Option<&str>) -> Value {
    let groups: Vec<Value> = pods
        .iter()
        .filter(|p| namespace.is_none_or(|ns| p.metadata.namespace.as_deref() == Some(ns)))
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            let mut labels = Map::new();
            labels.insert(
                "__meta_kubernetes_namespace".into(),
                json!(p.metadata.namespace),
            );
            labels.insert("__meta_kubernetes_pod_name".into(), json!(p.metadata.name));
            labels.insert("__meta_kubernetes_pod_ip".into(), json!(ip));
            labels.insert("__meta_kubernetes_pod_uid".into(), json!(p.metadata.uid));
            labels.insert(
                "__meta_kubernetes_pod_node_name".into(),
                json!(
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default()
                ),
            );
            labels.insert(
                "__meta_kubernetes_pod_phase".into(),
                json!(status.phase.clone().unwrap_or_default()),
            );
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            labels.insert(
                "__meta_kubernetes_pod_ready".into(),
                json!(ready.to_string()),
            );
            add_map(
                &mut labels,
                "__meta_kubernetes_pod_label_",
                p.metadata.labels.as_ref(),
            );
            add_map(
                &mut labels,
                "__meta_kubernetes_pod_annotation_",
                p.metadata.annotations.as_ref(),
            );
            Some(json!({"targets": [ip], "labels": labels}))
        })
        .collect();
    Value::Array(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_kubernetes_sd() {
        let node: Arc<Node> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux"}},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}
            }))
            .unwrap(),
        );
        let v = nodes(&[node]);
        assert_eq!(v[0]["targets"][0], "10.0.0.1:10250");
        assert_eq!(v[0]["labels"]["__meta_kubernetes_node_name"], "n1");
        assert_eq!(
            v[0]["labels"]["__meta_kubernetes_node_label_kubernetes_io_os"],
            "linux"
        );
        assert_eq!(
            v[0]["labels"]["__meta_kubernetes_node_address_InternalIP"],
            "10.0.0.1"
        );
        let pod: Arc<Pod> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "c", "namespace": "kube-system",
                             "labels": {"app.kubernetes.io/name": "skiff-log-collector"},
                             "annotations": {"prometheus.io/port": "2020"}},
                "spec": {"nodeName": "n1", "containers": []},
                "status": {"podIP": "10.0.0.1", "phase": "Running"}
            }))
            .unwrap(),
        );
        let v = pods(std::slice::from_ref(&pod), Some("kube-system"));
        assert_eq!(v[0]["targets"][0], "10.0.0.1");
        assert_eq!(
            v[0]["labels"]["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
            "skiff-log-collector"
        );
        assert_eq!(
            v[0]["labels"]["__meta_kubernetes_pod_annotation_prometheus_io_port"],
            "2020"
        );
        assert_eq!(pods(&[pod], Some("default")), json!([]));
    }
}
