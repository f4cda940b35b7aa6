//! Reconcile-loop metrics shared by every controller (named like controller-runtime's, which
//! operator dashboards already chart).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) controller: &'static str,
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ControllerLabels {
    pub(crate) controller: &'static str,
}

/// Every controller series.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    pub(crate) reconciles: Family<ResultLabels, Counter>,
    pub(crate) duration: Family<ControllerLabels, Histogram>,
    pub(crate) watch_errors: Family<InformerLabels, Counter>,
    workqueue: WorkqueueFamilies,
}

/// client-go's workqueue series, labelled by the queue's (controller's) `name`.
#[derive(Clone, Debug)]
struct WorkqueueFamilies {
    depth: Family<QueueLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    retries: Family<QueueLabels, Counter>,
    queue_duration: Family<QueueLabels, Histogram>,
    work_duration: Family<QueueLabels, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabels {
    pub(crate) name: &'static str,
}

/// client-go's buckets for both workqueue histograms: 10 ns to 1 000 s.
fn workqueue_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-8, 10.0, 12))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct InformerLabels {
    pub(crate) informer: &'static str,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        ControllerMetrics {
            reconciles: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            watch_errors: Family::default(),
            workqueue: WorkqueueFamilies {
                depth: Family::default(),
                adds: Family::default(),
                retries: Family::default(),
                queue_duration: Family::new_with_constructor(workqueue_histogram),
                work_duration: Family::new_with_constructor(workqueue_histogram),
            },
        }
    }
}

impl ControllerMetrics {
    /// Register every series.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("controller_runtime");
        r.register(
            "reconcile",
            "Reconciliations per controller and result (success, error, requeue)",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_time_seconds",
            "Time one reconciliation takes",
            self.duration.clone(),
        );
        registry.register(
            "controller_informer_watch_errors",
            "Failed watches of the controllers' shared informers (each is retried with backoff)",
            self.watch_errors.clone(),
        );
        let q = registry.sub_registry_with_prefix("workqueue");
        q.register(
            "depth",
            "Objects waiting to be reconciled, per controller queue",
            self.workqueue.depth.clone(),
        );
        q.register(
            "adds",
            "Objects added to a controller queue (an object already waiting counts once)",
            self.workqueue.adds.clone(),
        );
        q.register(
            "retries",
            "Failed reconciliations requeued with backoff",
            self.workqueue.retries.clone(),
        );
        q.register_with_unit(
            "queue_duration",
            "How long an object waits in a controller queue before its reconciliation starts",
            prometheus_client::registry::Unit::Seconds,
            self.workqueue.queue_duration.clone(),
        );
        q.register_with_unit(
            "work_duration",
            "How long processing an object from a controller queue takes",
            prometheus_client::registry::Unit::Seconds,
            self.workqueue.work_duration.clone(),
        );
    }

    pub(crate) fn workqueue_depth(&self, name: &'static str) -> Gauge {
        self.workqueue
            .depth
            .get_or_create(&QueueLabels { name })
            .clone()
    }

    pub(crate) fn workqueue_adds(&self, name: &'static str) -> Counter {
        self.workqueue
            .adds
            .get_or_create(&QueueLabels { name })
            .clone()
    }

    pub(crate) fn workqueue_retries(&self, name: &'static str) -> Counter {
        self.workqueue
            .retries
            .get_or_create(&QueueLabels { name })
            .clone()
    }

    pub(crate) fn workqueue_queue_duration(&self, name: &'static str) -> Histogram {
        self.workqueue
            .queue_duration
            .get_or_create(&QueueLabels { name })
            .clone()
    }

    pub(crate) fn workqueue_work_duration(&self, name: &'static str) -> Histogram {
        self.workqueue
            .work_duration
            .get_or_create(&QueueLabels { name })
            .clone()
    }

    pub(crate) fn watch_error(&self, informer: &'static str) {
        self.watch_errors
            .get_or_create(&InformerLabels { informer })
            .inc();
    }

    pub(crate) fn observe(&self, controller: &'static str, result: &'static str, secs: f64) {
        self.reconciles
            .get_or_create(&ResultLabels { controller, result })
            .inc();
        self.duration
            .get_or_create(&ControllerLabels { controller })
            .observe(secs);
    }
}
