//! Reconcile-loop metrics shared by every controller (named like controller-runtime's, which
//! operator dashboards already chart).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
