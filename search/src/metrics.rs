//! The search service's Prometheus series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IndexLabels {
    pub index: String,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub lines: Counter,
    pub bytes: Counter,
    pub duplicates: Counter,
    pub truncated: Counter,
    pub rejected: Family<ReasonLabels, Counter>,
    pub commit_duration: Histogram,
    /// Per line: acknowledged → searchable (committed).
    pub time_to_searchable: Histogram,
    pub query_duration: Family<EndpointLabels, Histogram>,
    pub index_bytes: Family<IndexLabels, Gauge>,
    pub index_docs: Family<IndexLabels, Gauge>,
    pub wal_bytes: Gauge,
    pub queued_batches: Gauge,
    pub tail_clients: Gauge,
    pub tail_dropped: Counter,
    pub retention_deleted: Counter,
    /// Segment rollups (per-minute counts) waiting to be built, held, and build time.
    pub rollups_pending: Gauge,
    pub rollup_entries: Gauge,
    pub rollup_build_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            lines: Counter::default(),
            bytes: Counter::default(),
            duplicates: Counter::default(),
            truncated: Counter::default(),
            rejected: Family::default(),
            commit_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            time_to_searchable: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
            ]),
            query_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            index_bytes: Family::default(),
            index_docs: Family::default(),
            wal_bytes: Gauge::default(),
            queued_batches: Gauge::default(),
            tail_clients: Gauge::default(),
            tail_dropped: Counter::default(),
            retention_deleted: Counter::default(),
            rollups_pending: Gauge::default(),
            rollup_entries: Gauge::default(),
            rollup_build_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("skiff_search");
        r.register("ingested_lines", "Log lines stored", self.lines.clone());
        r.register_with_unit(
            "ingested",
            "Bytes of log messages stored",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "duplicate_lines",
            "Re-sent lines dropped because their source offset was already stored",
            self.duplicates.clone(),
        );
        r.register(
            "truncated_lines",
            "Lines cut to the longest line stored",
            self.truncated.clone(),
        );
        r.register(
            "rejected_requests",
            "Ingest requests refused, by reason (invalid, busy, too_large, …)",
            self.rejected.clone(),
        );
        r.register_with_unit(
            "commit_duration",
            "Time to commit the indexes and make new lines searchable",
            Unit::Seconds,
            self.commit_duration.clone(),
        );
        r.register_with_unit(
            "time_to_searchable",
            "Per line, from its acknowledgement to the commit that makes it searchable",
            Unit::Seconds,
            self.time_to_searchable.clone(),
        );
        r.register_with_unit(
            "query_duration",
            "Query time by endpoint",
            Unit::Seconds,
            self.query_duration.clone(),
        );
        r.register_with_unit(
            "index_size",
            "Bytes on disk per daily index",
            Unit::Bytes,
            self.index_bytes.clone(),
        );
        r.register(
            "index_documents",
            "Searchable lines per daily index",
            self.index_docs.clone(),
        );
        r.register_with_unit(
            "wal_size",
            "Bytes in the write-ahead log (lines not yet committed to an index)",
            Unit::Bytes,
            self.wal_bytes.clone(),
        );
        r.register(
            "indexing_queue_batches",
            "Acknowledged batches waiting for the indexer",
            self.queued_batches.clone(),
        );
        r.register(
            "tail_clients",
            "Connected live-tail clients",
            self.tail_clients.clone(),
        );
        r.register(
            "tail_dropped_lines",
            "Lines live-tail clients lost because they read too slowly",
            self.tail_dropped.clone(),
        );
        r.register(
            "retention_deleted_indexes",
            "Daily indexes deleted by retention",
            self.retention_deleted.clone(),
        );
        r.register(
            "rollups_pending",
            "Segment rollups (line counts per minute and label values) waiting to be built",
            self.rollups_pending.clone(),
        );
        r.register(
            "rollup_entries",
            "Entries (minute and label values) held by segment rollups",
            self.rollup_entries.clone(),
        );
        r.register_with_unit(
            "rollup_build_duration",
            "Time to build one segment's rollup",
            Unit::Seconds,
            self.rollup_build_duration.clone(),
        );
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn query(&self, endpoint: &'static str, secs: f64) {
        self.query_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(secs);
    }
}
