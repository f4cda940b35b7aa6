//! The agent's Prometheus metrics, served at `/metrics` on the agent's port with kubelet's names
//! where kubelet has one (the Kubelet dashboard of kubernetes-mixin reads them).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `operation_type` of runtime operations and pod worker syncs.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// e.g. `start_container`, `container_stats`; `create`/`sync` for pod workers.
    pub operation_type: String,
}

/// `container_state` of `kubelet_running_containers`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `running`, `exited`, `created`.
    pub container_state: String,
}

/// `node` of `kubelet_node_name`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Node name.
    pub node: String,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every agent series.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// `kubelet_node_name`.
    pub node_name: Family<NodeLabels, Gauge>,
    /// `kubelet_running_pods`.
    pub running_pods: Gauge,
    /// `kubelet_running_containers`.
    pub running_containers: Family<StateLabels, Gauge>,
    /// `kubelet_pod_start_duration_seconds`: first seen → running.
    pub pod_start_seconds: Histogram,
    /// `kubelet_pod_worker_duration_seconds`.
    pub pod_worker_seconds: Family<OperationLabels, Histogram>,
    /// `kubelet_runtime_operations_total`.
    pub runtime_operations: Family<OperationLabels, Counter>,
    /// `kubelet_runtime_operations_errors_total`.
    pub runtime_errors: Family<OperationLabels, Counter>,
    /// `kubelet_runtime_operations_duration_seconds`.
    pub runtime_seconds: Family<OperationLabels, Histogram>,
    /// `kubelet_pleg_relist_duration_seconds`.
    pub pleg_relist_duration: Histogram,
    /// `kubelet_pleg_relist_interval_seconds`.
    pub pleg_relist_interval: Histogram,
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
            node_name: Family::default(),
            running_pods: Gauge::default(),
            running_containers: Family::default(),
            pod_start_seconds: seconds_histogram(),
            pod_worker_seconds: Family::new_with_constructor(seconds_histogram),
            runtime_operations: Family::default(),
            runtime_errors: Family::default(),
            runtime_seconds: Family::new_with_constructor(seconds_histogram),
            pleg_relist_duration: seconds_histogram(),
            pleg_relist_interval: Histogram::new(exponential_buckets(0.5, 1.5, 10)),
            syncs: Counter::default(),
            sync_errors: Counter::default(),
            status_updates: Counter::default(),
            container_starts: Counter::default(),
            start_seconds: seconds_histogram(),
            watch_errors: Counter::default(),
            heartbeat_errors: Counter::default(),
        }
    }
}

impl AgentMetrics {
    /// Register every series.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubelet_node_name",
            "The node's name. The count is always 1.",
            self.node_name.clone(),
        );
        registry.register(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            self.running_pods.clone(),
        );
        registry.register(
            "kubelet_running_containers",
            "Number of containers currently running",
            self.running_containers.clone(),
        );
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            self.pod_start_seconds.clone(),
        );
        registry.register(
            "kubelet_pod_worker_duration_seconds",
            "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
            self.pod_worker_seconds.clone(),
        );
        registry.register(
            "kubelet_runtime_operations",
            "Cumulative number of runtime operations by operation type.",
            self.runtime_operations.clone(),
        );
        registry.register(
            "kubelet_runtime_operations_errors",
            "Cumulative number of runtime operation errors by operation type.",
            self.runtime_errors.clone(),
        );
        registry.register(
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type.",
            self.runtime_seconds.clone(),
        );
        registry.register(
            "kubelet_pleg_relist_duration_seconds",
            "Duration in seconds for relisting pods in PLEG.",
            self.pleg_relist_duration.clone(),
        );
        registry.register(
            "kubelet_pleg_relist_interval_seconds",
            "Interval in seconds between relisting in PLEG.",
            self.pleg_relist_interval.clone(),
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

    /// Count one runtime operation and its outcome.
    pub(crate) fn runtime_operation(&self, operation: &str, seconds: f64, ok: bool) {
        let labels = OperationLabels {
            operation_type: operation.to_owned(),
        };
        self.runtime_operations.get_or_create(&labels).inc();
        self.runtime_seconds.get_or_create(&labels).observe(seconds);
        if !ok {
            self.runtime_errors.get_or_create(&labels).inc();
        }
    }
}
