//! kube-scheduler's metric names, so its dashboards and alerts work on Skiff.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AttemptLabels {
    pub(crate) result: &'static str,
    pub(crate) profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SliLabels {
    pub(crate) attempts: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabels {
    pub(crate) queue: &'static str,
}

/// Every scheduler series.
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    pub(crate) attempts: Family<AttemptLabels, Counter>,
    pub(crate) attempt_duration: Family<AttemptLabels, Histogram>,
    pub(crate) sli_duration: Family<SliLabels, Histogram>,
    pub(crate) pending: Family<QueueLabels, Gauge>,
    pub(crate) watch_errors: Counter,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        SchedulerMetrics {
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            sli_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 18))
            }),
            pending: Family::default(),
            watch_errors: Counter::default(),
        }
    }
}

impl SchedulerMetrics {
    /// Register every series.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("scheduler");
        r.register(
            "schedule_attempts",
            "Scheduling attempts by result (scheduled, unschedulable, error)",
            self.attempts.clone(),
        );
        r.register(
            "scheduling_attempt_duration_seconds",
            "Filtering and scoring time of one attempt, by result",
            self.attempt_duration.clone(),
        );
        r.register(
            "pod_scheduling_sli_duration_seconds",
            "From a pod's first scheduling attempt to its binding, by number of attempts",
            self.sli_duration.clone(),
        );
        r.register(
            "pending_pods",
            "Pods waiting to be scheduled, by queue (active, unschedulable)",
            self.pending.clone(),
        );
        r.register(
            "watch_errors",
            "Errors on the node and pod watches",
            self.watch_errors.clone(),
        );
    }
}
