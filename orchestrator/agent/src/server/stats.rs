//! `GET /stats/summary`: the node, its pods and their containers in the shape of kubelet's
//! Summary API (`stats/v1alpha1`), from the latest housekeeping snapshot. `usageNanoCores` is
//! the rate between the last two samples, so it is absent for a container sampled once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Ctx;
use crate::runtime::InterfaceStats;
use crate::stats::{ContainerSample, Snapshot};

fn time(t: jiff::Timestamp) -> String {
    skiff_api::time::format_rfc3339(t)
}

fn cpu(at: jiff::Timestamp, cumulative: u64, rate: Option<u64>) -> Value {
    let mut v = json!({"time": time(at), "usageCoreNanoSeconds": cumulative});
    if let Some(r) = rate {
        v["usageNanoCores"] = json!(r);
    }
    v
}

fn interfaces(at: jiff::Timestamp, list: &[InterfaceStats]) -> Value {
    let items: Vec<Value> = list
        .iter()
        .map(|i| {
            json!({"name": i.name, "rxBytes": i.rx_bytes, "rxErrors": i.rx_errors,
                   "txBytes": i.tx_bytes, "txErrors": i.tx_errors})
        })
        .collect();
    let mut v = json!({"time": time(at), "interfaces": items});
    // The default interface (eth0, else the first) is repeated at the top level, as kubelet does.
    let default = list.iter().position(|i| i.name == "eth0").unwrap_or(0);
    if let Some(first) = items.get(default) {
        for (k, val) in first.as_object().into_iter().flatten() {
            v[k] = val.clone();
        }
    }
    v
}

fn container(c: &ContainerSample) -> Value {
    let mut v = json!({
        "name": c.name,
        "startTime": time(c.started_at),
        "cpu": cpu(c.at, c.usage.cpu_usage_nanos, c.nano_cores),
        "memory": {
            "time": time(c.at),
            "usageBytes": c.usage.memory_usage_bytes,
            "workingSetBytes": c.usage.memory_working_set_bytes,
            "rssBytes": c.usage.memory_rss_bytes,
        },
        "logs": {"time": time(c.at), "usedBytes": c.logs_bytes},
    });
    if c.memory_limit_bytes > 0 {
        v["memory"]["availableBytes"] =
            json!((c.memory_limit_bytes as u64).saturating_sub(c.usage.memory_working_set_bytes));
    }
    if let Some(rootfs) = c.rootfs_bytes {
        v["rootfs"] = json!({"time": time(c.at), "usedBytes": rootfs});
    }
    v
}

/// The summary of one snapshot.
pub(crate) fn render(s: &Snapshot, node_name: &str) -> Value {
    let n = &s.node;
    let mut node = json!({
        "nodeName": node_name,
        "cpu": cpu(n.at, n.cpu_nanos, n.nano_cores),
        "memory": {"time": time(n.at), "availableBytes": n.memory_available,
                   "usageBytes": n.memory_working_set, "workingSetBytes": n.memory_working_set},
        "network": interfaces(n.at, &n.network),
        "fs": {"time": time(n.at), "capacityBytes": n.fs_capacity,
               "availableBytes": n.fs_available, "usedBytes": n.fs_used},
    });
    node["runtime"] = json!({"imageFs": node["fs"].clone()});
    let pods: Vec<Value> = s
        .pods
        .iter()
        .map(|p| {
            let own: Vec<&ContainerSample> = s
                .containers
                .iter()
                .filter(|c| c.pod.uid == p.pod.uid)
                .collect();
            let at = own.iter().map(|c| c.at).max().unwrap_or(n.at);
            let sum = |f: fn(&ContainerSample) -> u64| own.iter().map(|c| f(c)).sum::<u64>();
            let mut v = json!({
                "podRef": {"name": p.pod.name, "namespace": p.pod.namespace, "uid": p.pod.uid},
                "containers": own.iter().map(|c| container(c)).collect::<Vec<_>>(),
                "cpu": cpu(at, sum(|c| c.usage.cpu_usage_nanos), p.nano_cores),
                "memory": {"time": time(at), "usageBytes": sum(|c| c.usage.memory_usage_bytes),
                           "workingSetBytes": sum(|c| c.usage.memory_working_set_bytes),
                           "rssBytes": sum(|c| c.usage.memory_rss_bytes)},
                "ephemeral-storage": {"time": time(at),
                    "usedBytes": sum(|c| c.logs_bytes + c.rootfs_bytes.unwrap_or(0))},
            });
            if let Some(start) = p.start_time {
                v["startTime"] = json!(time(start));
            }
            if let Some((at, list)) = &p.network {
                v["network"] = interfaces(*at, list);
            }
            v
        })
        .collect();
    json!({"node": node, "pods": pods})
}

pub(crate) async fn summary(State(ctx): State<Arc<Ctx>>) -> Response {
    let body = render(&ctx.stats.snapshot(), &ctx.config.node_name);
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
