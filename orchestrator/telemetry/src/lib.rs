//! Telemetry shared by Skiff's components: Prometheus exposition and OpenTelemetry traces.
//!
//! - [`metrics_response`]: a registry rendered as OpenMetrics or as the 0.0.4 text format,
//!   whichever the scraper's `Accept` header prefers (Prometheus asks for OpenMetrics first,
//!   `promtool check metrics` and `curl` get 0.0.4).
//! - [`ProcessCollector`]: the `process_*` series every Go component exports, read from procfs.
//! - [`TextWriter`]: the 0.0.4 text format written by hand, for endpoints whose samples carry
//!   their own timestamps (kubelet's `/metrics/resource` and `/metrics/cadvisor`) or that are
//!   rebuilt from a cache at every scrape (kube-state-metrics).
//! - [`trace`]: OTLP span export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, `traceparent`
//!   propagation, trace ids in JSON log lines.

mod exposition;
mod process;
mod text;
pub mod trace;

pub use exposition::{OPENMETRICS, TEXT_0_0_4, metrics_response, wants_openmetrics};
pub use process::ProcessCollector;
pub use text::TextWriter;
