//! The agent's Prometheus metrics (kubelet's names where kubelet has one).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every agent series.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// `kubelet_running_pods`.
    pub running_pods: Gauge,
    /// Pod syncs.
    pub syncs: Counter,
    /// Failed pod syncs.
    pub sync_errors: Counter,
    /// Pod status writes.
    pub status_updates: Counter,
    /// `kubelet_started_containers_total`.
    pub container_starts: Counter,
    /// Time to create and start a container.
    pub start_seconds: Histogram,
    /// Pod watch errors.
    pub watch_errors: Counter,
    /// Node status and lease heartbeats that failed.
    pub heartbeat_errors: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            running_pods: Gauge::default(),
            syncs: Counter::default(),
            sync_errors: Counter::default(),
            status_updates: Counter::default(),
            container_starts: Counter::default(),
            start_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            watch_errors: Counter::default(),
            heartbeat_errors: Counter::default(),
        }
    }
}

impl AgentMetrics {
    /// Register every series.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            self.running_pods.clone(),
        );
        registry.register(
            "kubelet_started_containers",
            "Cumulative number of containers started",
            self.container_starts.clone(),
        );
        let r = registry.sub_registry_with_prefix("skiff_agent");
        r.register("pod_syncs", "Pod worker syncs", self.syncs.clone());
        r.register(
            "pod_sync_errors",
            "Pod worker syncs that failed",
            self.sync_errors.clone(),
        );
        r.register(
            "pod_status_updates",
            "Pod status writes to the API",
            self.status_updates.clone(),
        );
        r.register(
            "container_start_duration_seconds",
            "Time to create and start a container",
            self.start_seconds.clone(),
        );
        r.register(
            "pod_watch_errors",
            "Errors of the watch on this node's pods",
            self.watch_errors.clone(),
        );
        r.register(
            "heartbeat_errors",
            "Node status and lease updates that failed",
            self.heartbeat_errors.clone(),
        );
    }
}
