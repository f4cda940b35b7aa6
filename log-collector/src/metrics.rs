//! The collector's Prometheus series (`skiff_log_collector_*`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabels {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub lines_read: Counter,
    pub read_bytes: Counter,
    pub lines_shipped: Counter,
    pub shipped_bytes: Counter,
    pub dropped_lines: Counter,
    pub errors: Family<KindLabels, Counter>,
    pub files: Gauge,
    pub lag: Family<FileLabels, Gauge>,
    pub checkpoint_saved: Gauge,
    pub send_duration: Histogram,
    lag_paths: Arc<Mutex<Vec<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            lines_read: Counter::default(),
            read_bytes: Counter::default(),
            lines_shipped: Counter::default(),
            shipped_bytes: Counter::default(),
            dropped_lines: Counter::default(),
            errors: Family::default(),
            files: Gauge::default(),
            lag: Family::default(),
            checkpoint_saved: Gauge::default(),
            send_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            lag_paths: Arc::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("skiff_log_collector");
        r.register(
            "lines_read",
            "Log lines read from files",
            self.lines_read.clone(),
        );
        r.register_with_unit(
            "read",
            "Bytes read from log files",
            Unit::Bytes,
            self.read_bytes.clone(),
        );
        r.register(
            "lines_shipped",
            "Log lines acknowledged by the sink",
            self.lines_shipped.clone(),
        );
        r.register_with_unit(
            "shipped",
            "Message bytes acknowledged by the sink",
            Unit::Bytes,
            self.shipped_bytes.clone(),
        );
        r.register(
            "dropped_lines",
            "Lines of batches the sink refused with a 4xx (not retried)",
            self.dropped_lines.clone(),
        );
        r.register(
            "errors",
            "Errors by kind (scan, read, send, refused)",
            self.errors.clone(),
        );
        r.register("files", "Log files followed", self.files.clone());
        r.register_with_unit(
            "file_lag",
            "Bytes of a followed file not yet read",
            Unit::Bytes,
            self.lag.clone(),
        );
        r.register_with_unit(
            "checkpoint_last_save_timestamp",
            "When the checkpoints were last saved (after an acknowledged batch)",
            Unit::Seconds,
            self.checkpoint_saved.clone(),
        );
        r.register_with_unit(
            "send_duration",
            "Time to send one batch and get its acknowledgement",
            Unit::Seconds,
            self.send_duration.clone(),
        );
    }

    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn checkpoint_saved(&self) {
        self.checkpoint_saved
            .set(jiff::Timestamp::now().as_second());
    }

    /// Replace the per-file lag series (files that are gone lose theirs).
    pub fn set_lag(&self, lag: &[(PathBuf, u64)]) {
        let mut paths = self.lag_paths.lock().expect("lag lock");
        for p in paths.drain(..) {
            self.lag.remove(&FileLabels { path: p });
        }
        for (path, bytes) in lag {
            let path = path.display().to_string();
            self.lag
                .get_or_create(&FileLabels { path: path.clone() })
                .set(*bytes as i64);
            paths.push(path);
        }
    }
}
