//! Skiff's log search service (Elasticsearch's role in the book's EFK stack): log lines arrive
//! in batches (native NDJSON, later the Loki push API), are made durable in a write-ahead log,
//! indexed with tantivy into one index per UTC day, and are searchable about a second later.

pub mod auth;
pub mod counts;
pub mod dedup;
pub mod http;
pub mod logql;
pub mod loki;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod push;
pub mod query;
pub mod record;
pub mod rollup;
pub mod schema;
pub mod store;
pub mod tail;
pub mod wal;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::store::{Store, WriterSettings};

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Holds `indexes/` (one tantivy index per day), `wal/` and the dedup marks.
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    /// How often new lines become searchable.
    pub commit_interval: Duration,
    /// Whole days kept (today included).
    pub retention_days: u32,
    /// Oldest days are deleted while the indexes exceed this.
    pub max_size_bytes: Option<u64>,
    /// Longer messages are cut to this many bytes.
    pub max_line_bytes: usize,
    pub writer_threads: usize,
    pub writer_memory_bytes: usize,
    /// Check bearer tokens against this kubeconfig's cluster; required to listen beyond
    /// loopback.
    pub auth_kubeconfig: Option<PathBuf>,
    /// Let callers on loopback in without a token (as when listening on loopback only): the
    /// control plane's own consumers beside the service, while remote collectors and users
    /// need tokens.
    pub trust_loopback: bool,
}

impl Config {
    pub fn new(data_dir: PathBuf, bind: SocketAddr) -> Config {
        Config {
            data_dir,
            bind,
            commit_interval: Duration::from_secs(1),
            retention_days: 7,
            max_size_bytes: None,
            max_line_bytes: 1024 * 1024,
            writer_threads: 1,
            writer_memory_bytes: 64 * 1024 * 1024,
            auth_kubeconfig: None,
            trust_loopback: false,
        }
    }
}

/// A started service.
pub struct Server {
    pub addr: SocketAddr,
    pub pipeline: Arc<Pipeline>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Wait until the service has stopped (after `shutdown`): every acknowledged line is
    /// indexed and committed.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Open the data directory (recovering from the write-ahead log), bind, and serve until
/// `shutdown`. `registry` receives the service's metrics and is served on `/metrics`.
pub async fn start(
    config: Config,
    mut registry: prometheus_client::registry::Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<Server> {
    let auth = match &config.auth_kubeconfig {
        Some(path) => Some(Arc::new(auth::Authenticator::from_kubeconfig(path).await?)),
        None if !config.bind.ip().is_loopback() => anyhow::bail!(
            "listening on {} (beyond loopback) needs a cluster to check bearer tokens with (--auth-kubeconfig)",
            config.bind
        ),
        None => None,
    };
    let metrics = Metrics::default();
    metrics.register(&mut registry);
    registry.register_collector(Box::new(skiff_telemetry::ProcessCollector));
    let data_dir = config.data_dir.clone();
    let settings = WriterSettings {
        threads: config.writer_threads.max(1),
        memory_bytes: config
            .writer_memory_bytes
            .max(15_000_000 * config.writer_threads.max(1)),
    };
    let pipeline_config = PipelineConfig {
        commit_interval: config.commit_interval,
        max_line_bytes: config.max_line_bytes,
        // 16 batches (32 000 lines from collectors) keep the indexer busy; a deeper queue only
        // delays searchability under overload (64 gave p99 ≤ 5 s at saturation, 16 gives 3 s),
        // and the 429s it sends instead leave the lines in the collectors' files.
        max_queued_batches: 16,
    };
    let m = metrics.clone();
    let pipeline = tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<Pipeline>> {
        let store = Arc::new(Store::open(&data_dir.join("indexes"), settings)?);
        Pipeline::start(&data_dir, store, pipeline_config, m)
    })
    .await??;
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "log search serving");
    let api = Arc::new(http::Api {
        pipeline: pipeline.clone(),
        registry,
        shutdown: shutdown.clone(),
        auth,
        trust_loopback: config.trust_loopback,
    });
    let app = http::router(api);
    let retention = tokio::spawn(
        retention_loop(pipeline.clone(), config.clone(), shutdown.clone())
            .instrument(tracing::info_span!("search_retention")),
    );
    let p = pipeline.clone();
    let task = tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "log search server failed");
        }
        let _ = retention.await;
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        tracing::info!("log search stopped");
    });
    Ok(Server {
        addr,
        pipeline,
        task,
    })
}

/// Every minute: delete days past retention or over the size cap, close idle writers.
async fn retention_loop(pipeline: Arc<Pipeline>, config: Config, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let p = pipeline.clone();
        let days = config.retention_days.max(1);
        let max = config.max_size_bytes;
        let result = tokio::task::spawn_blocking(move || {
            let today = store::day_of(jiff::Timestamp::now().as_nanosecond() as i64);
            let oldest_kept = today
                .checked_sub(jiff::Span::new().days(i64::from(days) - 1))
                .unwrap_or(today);
            p.store.close_idle_writers(Duration::from_secs(600));
            p.store.apply_retention(oldest_kept, max, today)
        })
        .await;
        match result {
            Ok(Ok(deleted)) => {
                for name in &deleted {
                    tracing::info!(index = %name, "deleted by retention");
                }
                pipeline
                    .metrics
                    .retention_deleted
                    .inc_by(deleted.len() as u64);
            }
            // Retried next minute; nothing is lost by waiting.
            Ok(Err(e)) => tracing::warn!(error = %e, "applying retention"),
            Err(e) => tracing::warn!(error = %e, "retention task"),
        }
    }
}
