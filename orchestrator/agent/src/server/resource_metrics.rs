//! `GET /metrics/resource`: kubelet's resource metrics endpoint, the one metrics-server
//! scrapes. Prometheus text 0.0.4, families in name order, every sample with the millisecond
//! timestamp of the moment it was taken (metrics-server computes CPU rates from those).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use skiff_telemetry::TextWriter;

use crate::Ctx;
use crate::stats::Snapshot;

pub(crate) async fn resource_metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    let text = render(&ctx.stats.snapshot());
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(skiff_telemetry::TEXT_0_0_4),
    );
    r
}

fn ms(t: jiff::Timestamp) -> Option<i64> {
    Some(t.as_millisecond())
}

/// The exposition of one snapshot.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut w = TextWriter::new();
    let name = "container_cpu_usage_seconds_total";
    w.family(
        name,
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for c in &s.containers {
        w.sample(
            name,
            &[
                ("container", &c.name),
                ("namespace", &c.pod.namespace),
                ("pod", &c.pod.name),
            ],
            c.usage.cpu_usage_nanos as f64 / 1e9,
            ms(c.at),
        );
    }
    let name = "container_memory_working_set_bytes";
    w.family(
        name,
        "[STABLE] Current working set of the container in bytes",
        "gauge",
    );
    for c in &s.containers {
        w.sample(
            name,
            &[
                ("container", &c.name),
                ("namespace", &c.pod.namespace),
                ("pod", &c.pod.name),
            ],
            c.usage.memory_working_set_bytes as f64,
            ms(c.at),
        );
    }
    let name = "container_start_time_seconds";
    w.family(
        name,
        "[STABLE] Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for c in &s.containers {
        w.sample(
            name,
            &[
                ("container", &c.name),
                ("namespace", &c.pod.namespace),
                ("pod", &c.pod.name),
            ],
            c.started_at.as_millisecond() as f64 / 1e3,
            ms(c.at),
        );
    }
    let name = "node_cpu_usage_seconds_total";
    w.family(
        name,
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    w.sample(name, &[], s.node.cpu_nanos as f64 / 1e9, ms(s.node.at));
    let name = "node_memory_working_set_bytes";
    w.family(
        name,
        "[STABLE] Current working set of the node in bytes",
        "gauge",
    );
    w.sample(name, &[], s.node.memory_working_set as f64, ms(s.node.at));
    let name = "pod_cpu_usage_seconds_total";
    w.family(
        name,
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for p in &s.pods {
        let (cpu, at) = pod_totals(s, &p.pod.uid, |c| c.usage.cpu_usage_nanos);
        w.sample(
            name,
            &[("namespace", &p.pod.namespace), ("pod", &p.pod.name)],
            cpu as f64 / 1e9,
            at,
        );
    }
    let name = "pod_memory_working_set_bytes";
    w.family(
        name,
        "[STABLE] Current working set of the pod in bytes",
        "gauge",
    );
    for p in &s.pods {
        let (bytes, at) = pod_totals(s, &p.pod.uid, |c| c.usage.memory_working_set_bytes);
        w.sample(
            name,
            &[("namespace", &p.pod.namespace), ("pod", &p.pod.name)],
            bytes as f64,
            at,
        );
    }
    let name = "resource_scrape_error";
    w.family(
        name,
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    w.sample(name, &[], if s.errors > 0 { 1.0 } else { 0.0 }, None);
    w.finish()
}

/// A pod's sum over its containers, stamped with its latest container sample.
fn pod_totals(
    s: &Snapshot,
    uid: &str,
    value: impl Fn(&crate::stats::ContainerSample) -> u64,
) -> (u64, Option<i64>) {
    let own = s.containers.iter().filter(|c| c.pod.uid == uid);
    let total = own.clone().map(&value).sum();
    (total, own.map(|c| c.at.as_millisecond()).max())
}
