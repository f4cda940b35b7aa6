//! `GET /stats/summary`: node and per-pod, per-container CPU and memory in the shape of kubelet's
//! Summary API. `usageNanoCores` is the rate between this call and the previous sample of the
//! same container (or node), so the first answer after a container starts has none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::Ctx;
use crate::runtime::ContainerState;

/// Previous CPU samples: key → (when, cumulative nanoseconds).
fn samples() -> &'static Mutex<HashMap<String, (Timestamp, u64)>> {
    static SAMPLES: OnceLock<Mutex<HashMap<String, (Timestamp, u64)>>> = OnceLock::new();
    SAMPLES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cpu(key: &str, now: Timestamp, total_nanos: u64) -> Value {
    let mut map = samples().lock().expect("samples lock");
    let rate = map.get(key).and_then(|(then, prev)| {
        let dt = (now.as_nanosecond() - then.as_nanosecond()) as f64;
        (dt > 0.0 && total_nanos >= *prev).then(|| ((total_nanos - prev) as f64 / dt * 1e9) as u64)
    });
    map.insert(key.to_owned(), (now, total_nanos));
    let mut v =
        json!({"time": skiff_api::time::format_rfc3339(now), "usageCoreNanoSeconds": total_nanos});
    if let Some(r) = rate {
        v["usageNanoCores"] = json!(r);
    }
    v
}

/// Cumulative CPU nanoseconds of the whole host, from /proc/stat.
fn node_cpu_nanos() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    busy * 10_000_000
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024
}

pub(crate) async fn summary(State(ctx): State<Arc<Ctx>>) -> Response {
    let now = Timestamp::now();
    let time = skiff_api::time::format_rfc3339(now);
    let total = meminfo("MemTotal");
    let available = meminfo("MemAvailable");
    let node = json!({
        "nodeName": ctx.config.node_name,
        "cpu": cpu("node", now, node_cpu_nanos()),
        "memory": {"time": time, "availableBytes": available, "usageBytes": total.saturating_sub(available),
                   "workingSetBytes": total.saturating_sub(available)},
    });
    let containers = ctx.runtime.list_containers().await.unwrap_or_default();
    let pods: Vec<Arc<k8s_openapi::api::core::v1::Pod>> = ctx
        .pods
        .read()
        .expect("pods lock")
        .values()
        .cloned()
        .collect();
    let mut out = Vec::new();
    for pod in pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut entries = Vec::new();
        let (mut pod_cpu, mut pod_ws, mut pod_rss) = (0u64, 0u64, 0u64);
        for c in containers.iter().filter(|c| c.pod.uid == uid) {
            let ContainerState::Running { started_at } = c.state else {
                continue;
            };
            let Ok(stats) = ctx.runtime.stats(&c.id).await else {
                continue;
            };
            pod_cpu += stats.cpu_usage_nanos;
            pod_ws += stats.memory_working_set_bytes;
            pod_rss += stats.memory_rss_bytes;
            entries.push(json!({
                "name": c.name,
                "startTime": skiff_api::time::format_rfc3339(started_at),
                "cpu": cpu(&c.id, now, stats.cpu_usage_nanos),
                "memory": {"time": time, "workingSetBytes": stats.memory_working_set_bytes,
                           "usageBytes": stats.memory_working_set_bytes, "rssBytes": stats.memory_rss_bytes},
            }));
        }
        out.push(json!({
            "podRef": {"name": pod.metadata.name, "namespace": pod.metadata.namespace, "uid": uid},
            "startTime": pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| skiff_api::time::format_rfc3339(t.0)),
            "containers": entries,
            "cpu": cpu(&format!("pod/{uid}"), now, pod_cpu),
            "memory": {"time": time, "workingSetBytes": pod_ws, "usageBytes": pod_ws, "rssBytes": pod_rss},
        }));
    }
    let body = json!({"node": node, "pods": out});
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
