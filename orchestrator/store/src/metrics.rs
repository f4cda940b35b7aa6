//! The store's Prometheus metrics, declared once here.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metrics of a store instance. Cloning shares the underlying series.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Size of the database file plus its write-ahead log.
    pub db_size_bytes: Gauge,
    /// Latest committed revision.
    pub current_revision: Gauge,
    /// Oldest readable revision.
    pub compacted_revision: Gauge,
    /// Duration of one batched commit (fsync included).
    pub commit_duration_seconds: Histogram,
    /// Writes per committed batch.
    pub write_batch_size: Histogram,
    /// Open watches.
    pub watchers: Gauge,
    /// History rows removed by compaction.
    pub compacted_rows_total: Counter,
    /// Watchers that fell behind the live broadcast and replayed from disk.
    pub watch_replays_total: Counter,
    /// Errors in background maintenance (compaction, checkpoints).
    pub maintenance_errors_total: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            db_size_bytes: Gauge::default(),
            current_revision: Gauge::default(),
            compacted_revision: Gauge::default(),
            commit_duration_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            write_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            watchers: Gauge::default(),
            compacted_rows_total: Counter::default(),
            watch_replays_total: Counter::default(),
            maintenance_errors_total: Counter::default(),
        }
    }
}

impl StoreMetrics {
    /// Register every series under `skiff_store_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("skiff_store");
        r.register(
            "db_size_bytes",
            "Size of the SQLite database and its WAL in bytes",
            self.db_size_bytes.clone(),
        );
        r.register(
            "current_revision",
            "Latest committed store revision",
            self.current_revision.clone(),
        );
        r.register(
            "compacted_revision",
            "Oldest store revision still readable",
            self.compacted_revision.clone(),
        );
        r.register(
            "commit_duration_seconds",
            "Duration of one batched commit including fsync",
            self.commit_duration_seconds.clone(),
        );
        r.register(
            "write_batch_size",
            "Writes committed per transaction",
            self.write_batch_size.clone(),
        );
        r.register("watchers", "Open store watches", self.watchers.clone());
        r.register(
            "compacted_rows",
            "History rows removed by compaction",
            self.compacted_rows_total.clone(),
        );
        r.register(
            "watch_replays",
            "Watchers that fell behind the live broadcast and replayed history from disk",
            self.watch_replays_total.clone(),
        );
        r.register(
            "maintenance_errors",
            "Errors in background compaction and checkpointing",
            self.maintenance_errors_total.clone(),
        );
    }
}
