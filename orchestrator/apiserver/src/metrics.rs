//! The API server's Prometheus metrics, with upstream's names and labels so community
//! dashboards work unchanged.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of `apiserver_request_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY`, `DELETE`, `CONNECT`.
    pub verb: String,
    /// API group, empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource, or empty.
    pub subresource: String,
    /// `resource`, `namespace` or `cluster`.
    pub scope: String,
    /// Always `apiserver`.
    pub component: String,
    /// HTTP status code.
    pub code: String,
    /// `All` for dry runs, else empty.
    pub dry_run: String,
}

/// Labels of `apiserver_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// As in [`RequestLabels`].
    pub verb: String,
    /// As in [`RequestLabels`].
    pub group: String,
    /// As in [`RequestLabels`].
    pub version: String,
    /// As in [`RequestLabels`].
    pub resource: String,
    /// As in [`RequestLabels`].
    pub subresource: String,
    /// As in [`RequestLabels`].
    pub scope: String,
    /// As in [`RequestLabels`].
    pub component: String,
}

/// Labels of `apiserver_longrunning_requests`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LongRunningLabels {
    /// `WATCH` or `CONNECT`.
    pub verb: String,
    /// Resource plural.
    pub resource: String,
}

fn duration_histogram() -> Histogram {
    // Upstream's buckets.
    Histogram::new([
        0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
        10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
    ])
}

/// Every API server series.
#[derive(Clone)]
pub struct ApiMetrics {
    /// `apiserver_request_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `apiserver_request_duration_seconds`.
    pub durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    /// `apiserver_longrunning_requests`.
    pub longrunning: Family<LongRunningLabels, Gauge>,
    /// `apiserver_current_inflight_requests`.
    pub inflight: Gauge,
    /// `apiserver_watch_events_total`.
    pub watch_events: Family<LongRunningLabels, Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            longrunning: Family::default(),
            inflight: Gauge::default(),
            watch_events: Family::default(),
        }
    }
}

impl ApiMetrics {
    /// Register under upstream's names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
            self.requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
            self.durations.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb and resource.",
            self.longrunning.clone(),
        );
        registry.register(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per request kind in last second.",
            self.inflight.clone(),
        );
        registry.register(
            "apiserver_watch_events",
            "Number of events sent in watch clients",
            self.watch_events.clone(),
        );
    }
}
