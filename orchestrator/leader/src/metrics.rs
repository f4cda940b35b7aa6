//! `leader_election_master_status`, named as client-go's, so upstream alerts on it work.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// Whether this process leads, per Lease.
#[derive(Clone, Debug, Default)]
pub struct LeaderMetrics {
    master_status: Family<NameLabel, Gauge>,
}

impl LeaderMetrics {
    /// Register the series.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "leader_election_master_status",
            "1 while this process holds the named Lease, else 0",
            self.master_status.clone(),
        );
    }

    pub(crate) fn set_leading(&self, name: &str, leading: bool) {
        self.master_status
            .get_or_create(&NameLabel { name: name.into() })
            .set(i64::from(leading));
    }
}
