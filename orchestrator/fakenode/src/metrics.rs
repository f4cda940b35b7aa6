//! What the fake nodes did, for the benchmark and for anyone wondering why a fake pod is Pending.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PodAction {
    pub(crate) action: &'static str,
    pub(crate) result: &'static str,
}

/// Fake-node series.
#[derive(Clone, Debug, Default)]
pub struct FakeNodeMetrics {
    pub(crate) nodes: Gauge,
    pub(crate) lease_renewals: Family<Outcome, Counter>,
    pub(crate) pod_actions: Family<PodAction, Counter>,
}

impl FakeNodeMetrics {
    /// Register every series under `skiff_fake_node_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("skiff_fake_node");
        r.register("nodes", "Fake nodes registered", self.nodes.clone());
        r.register(
            "lease_renewals",
            "Node Lease renewals by result",
            self.lease_renewals.clone(),
        );
        r.register(
            "pod_actions",
            "Pods reported Running (start) or finished deleting (delete), by result",
            self.pod_actions.clone(),
        );
    }
}
