//! The Prometheus scrape configuration `skiffd up` writes to `<data-dir>/prometheus.yml`: one
//! job per component with the job names kubernetes-mixin expects (`apiserver`, `kubelet`,
//! `cadvisor`, `kube-state-metrics`, `scheduler`, `controller-manager`, `metrics-server`,
//! `search`, `log-collector`) and a `cluster` label on every target. Nodes and the log
//! collector's pods are discovered — by Prometheus's `kubernetes_sd_configs` against this API
//! server in `prometheus-kubernetes-sd.yml`, by the state exporter's HTTP discovery (same
//! labels) in `prometheus.yml` — and node agents are scraped through the API server's
//! `nodes/proxy`, so both files keep working as nodes join.

use std::path::Path;

use serde_json::{Value, json};

/// Where each component serves its metrics.
pub(crate) struct Targets<'a> {
    /// `host:port` of the API server.
    pub apiserver: &'a str,
    pub scheduler: Option<String>,
    pub controller_manager: Option<String>,
    pub state_metrics: String,
    pub metrics_server: Option<String>,
    pub search: Option<String>,
}

fn static_job(name: &str, target: &str, cluster: &str) -> Value {
    json!({
        "job_name": name,
        "static_configs": [{"targets": [target], "labels": {"cluster": cluster}}],
    })
}

/// How Prometheus finds nodes and pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discovery {
    /// Prometheus's `kubernetes_sd_configs` against the API server (upstream builds).
    Kubernetes,
    /// `http_sd_configs` served by the state exporter (`/sd/nodes`, `/sd/pods`), with the same
    /// `__meta_kubernetes_*` labels: for Prometheus builds without Kubernetes discovery
    /// (Debian's).
    Http,
}

/// The configuration text.
pub(crate) fn render(
    targets: &Targets,
    pki: &Path,
    cluster: &str,
    discovery: Discovery,
) -> anyhow::Result<String> {
    let tls = json!({
        "ca_file": pki.join("ca.crt"),
        "cert_file": pki.join("admin.crt"),
        "key_file": pki.join("admin.key"),
    });
    let api_url = format!("https://{}", targets.apiserver);
    let sd = |role: &str, namespace: Option<&str>| -> (&'static str, Value) {
        match discovery {
            Discovery::Kubernetes => {
                let mut c = json!({"role": role, "api_server": api_url, "tls_config": tls});
                if let Some(ns) = namespace {
                    c["namespaces"] = json!({"names": [ns]});
                }
                ("kubernetes_sd_configs", json!([c]))
            }
            Discovery::Http => {
                let query = namespace
                    .map(|ns| format!("?namespace={ns}"))
                    .unwrap_or_default();
                let url = format!("http://{}/sd/{role}s{query}", targets.state_metrics);
                // A node that joins is scraped within 15 s (Prometheus's default is a minute).
                (
                    "http_sd_configs",
                    json!([{"url": url, "refresh_interval": "15s"}]),
                )
            }
        }
    };
    let node_job = |name: &str, path: &str| {
        let (key, config) = sd("node", None);
        json!({
            "job_name": name,
            "scheme": "https",
            "tls_config": tls,
            key: config,
            "relabel_configs": [
                {"target_label": "__address__", "replacement": targets.apiserver},
                {"source_labels": ["__meta_kubernetes_node_name"], "target_label": "__metrics_path__",
                 "replacement": format!("/api/v1/nodes/${{1}}/proxy{path}")},
                {"source_labels": ["__meta_kubernetes_node_name"], "target_label": "node"},
                {"target_label": "cluster", "replacement": cluster},
            ],
        })
    };
    let mut jobs = vec![
        json!({
            "job_name": "apiserver",
            "scheme": "https",
            "tls_config": tls,
            "static_configs": [{"targets": [targets.apiserver], "labels": {"cluster": cluster}}],
        }),
        node_job("kubelet", "/metrics"),
        node_job("cadvisor", "/metrics/cadvisor"),
        static_job("kube-state-metrics", &targets.state_metrics, cluster),
    ];
    if let Some(t) = &targets.scheduler {
        jobs.push(static_job("scheduler", t, cluster));
    }
    if let Some(t) = &targets.controller_manager {
        jobs.push(static_job("controller-manager", t, cluster));
    }
    if let Some(t) = &targets.metrics_server {
        jobs.push(static_job("metrics-server", t, cluster));
    }
    if let Some(t) = &targets.search {
        jobs.push(static_job("search", t, cluster));
        // The collector DaemonSet's pods announce their port with prometheus.io annotations.
        let (key, config) = sd("pod", Some("kube-system"));
        jobs.push(json!({
            "job_name": "log-collector",
            key: config,
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "regex": "skiff-log-collector", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "regex": "true", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_ip", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                 "regex": "(.+);(.+)", "target_label": "__address__", "replacement": "$1:$2"},
                {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"target_label": "cluster", "replacement": cluster},
            ],
        }));
    }
    let config = json!({
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": jobs,
    });
    let yaml = serde_norway::to_string(&config)?;
    Ok(format!(
        "# Written by `skiffd up` at every start: every Skiff component, with the job names\n\
         # community dashboards expect. Run: prometheus --config.file=<this file>\n{yaml}"
    ))
}
