//! `GET /metrics/cadvisor`: the container series cAdvisor exports through the kubelet, with its
//! names and labels (`container`, `id`, `image`, `name`, `namespace`, `pod`), so community
//! dashboards and recording rules (kubernetes-mixin) work unchanged. The machine itself is the
//! `id="/"` series; network counters are per pod (`container=""`), as upstream reports them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use skiff_telemetry::TextWriter;

use crate::Ctx;
use crate::runtime::InterfaceStats;
use crate::stats::{ContainerSample, Snapshot};

pub(crate) async fn cadvisor(State(ctx): State<Arc<Ctx>>) -> Response {
    let mut r = render(&ctx.stats.snapshot()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(skiff_telemetry::TEXT_0_0_4),
    );
    r
}

/// CFS period the agent configures (100 ms), in microseconds.
const CFS_PERIOD_US: f64 = 100_000.0;

type Value = fn(&ContainerSample) -> Option<f64>;

/// Per-container families: name, help, type, value (None = no sample for that container).
const CONTAINER_FAMILIES: &[(&str, &str, &str, Value)] = &[
    (
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        "counter",
        |c| (c.cpu_limit_milli > 0).then_some(c.usage.cpu_periods as f64),
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        "counter",
        |c| (c.cpu_limit_milli > 0).then_some(c.usage.cpu_throttled_periods as f64),
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        "counter",
        |c| (c.cpu_limit_milli > 0).then_some(c.usage.cpu_throttled_nanos as f64 / 1e9),
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        "counter",
        |c| Some(c.usage.cpu_system_nanos as f64 / 1e9),
    ),
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        "counter",
        |c| Some(c.usage.cpu_usage_nanos as f64 / 1e9),
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        "counter",
        |c| Some(c.usage.cpu_user_nanos as f64 / 1e9),
    ),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        "gauge",
        |c| Some(c.usage.memory_cache_bytes as f64),
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        "gauge",
        |c| Some(c.usage.memory_rss_bytes as f64),
    ),
    (
        "container_memory_swap",
        "Container swap usage in bytes.",
        "gauge",
        |c| Some(c.usage.memory_swap_bytes as f64),
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        "gauge",
        |c| Some(c.usage.memory_usage_bytes as f64),
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        "gauge",
        |c| Some(c.usage.memory_working_set_bytes as f64),
    ),
    (
        "container_spec_cpu_period",
        "CPU period of the container.",
        "gauge",
        |c| (c.cpu_limit_milli > 0).then_some(CFS_PERIOD_US),
    ),
    (
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        "gauge",
        |c| (c.cpu_limit_milli > 0).then_some(c.cpu_limit_milli as f64 * CFS_PERIOD_US / 1000.0),
    ),
    (
        "container_spec_cpu_shares",
        "CPU share of the container.",
        "gauge",
        // The kubelet's mapping of requests to shares: milli * 1024 / 1000, at least 2.
        |c| Some(((c.cpu_request_milli * 1024 / 1000).max(2)) as f64),
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        "gauge",
        |c| Some(c.memory_limit_bytes.max(0) as f64),
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        "gauge",
        |c| Some(c.started_at.as_millisecond() as f64 / 1e3),
    ),
];

type NetValue = fn(&InterfaceStats) -> u64;

const NETWORK_FAMILIES: &[(&str, &str, NetValue)] = &[
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        |i| i.rx_bytes,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        |i| i.rx_errors,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        |i| i.rx_dropped,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        |i| i.rx_packets,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        |i| i.tx_bytes,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        |i| i.tx_errors,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        |i| i.tx_dropped,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        |i| i.tx_packets,
    ),
];

/// The exposition of one snapshot.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut w = TextWriter::new();
    let node_ms = Some(s.node.at.as_millisecond());
    let root = [
        ("container", ""),
        ("id", "/"),
        ("image", ""),
        ("name", ""),
        ("namespace", ""),
        ("pod", ""),
    ];
    for (name, help, kind, value) in CONTAINER_FAMILIES {
        w.family(name, help, kind);
        // The machine as cAdvisor's root container.
        let root_value = match *name {
            "container_cpu_usage_seconds_total" => Some(s.node.cpu_nanos as f64 / 1e9),
            "container_memory_working_set_bytes" => Some(s.node.memory_working_set as f64),
            "container_memory_usage_bytes" => Some(s.node.memory_working_set as f64),
            _ => None,
        };
        if let Some(v) = root_value {
            w.sample(name, &root, v, node_ms);
        }
        for c in &s.containers {
            let Some(v) = value(c) else { continue };
            w.sample(
                name,
                &[
                    ("container", &c.name),
                    ("id", &c.identity.cgroup),
                    ("image", &c.image),
                    ("name", &c.identity.name),
                    ("namespace", &c.pod.namespace),
                    ("pod", &c.pod.name),
                ],
                v,
                Some(c.at.as_millisecond()),
            );
        }
    }
    for (name, help, value) in NETWORK_FAMILIES {
        w.family(name, help, "counter");
        for i in &s.node.network {
            let labels = [&root[..], &[("interface", i.name.as_str())]].concat();
            w.sample(name, &labels, value(i) as f64, node_ms);
        }
        for p in &s.pods {
            let Some((at, interfaces)) = &p.network else {
                continue;
            };
            let id = format!("/kubepods/pod{}", p.pod.uid);
            for i in interfaces {
                w.sample(
                    name,
                    &[
                        ("container", ""),
                        ("id", &id),
                        ("image", ""),
                        ("interface", &i.name),
                        ("name", ""),
                        ("namespace", &p.pod.namespace),
                        ("pod", &p.pod.name),
                    ],
                    value(i) as f64,
                    Some(at.as_millisecond()),
                );
            }
        }
    }
    w.family("machine_cpu_cores", "Number of logical CPU cores.", "gauge");
    w.sample("machine_cpu_cores", &[], s.node.cpus as f64, None);
    w.family(
        "machine_memory_bytes",
        "Amount of memory installed on the machine.",
        "gauge",
    );
    w.sample(
        "machine_memory_bytes",
        &[],
        s.node.memory_total as f64,
        None,
    );
    w.finish()
}
