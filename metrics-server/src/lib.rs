//! Skiff's metrics server (metrics-server's role): every `resolution` it scrapes each Ready
//! node's `/metrics/resource` concurrently, keeps the last two points of every node and
//! container, and serves `metrics.k8s.io/v1beta1` (NodeMetrics, PodMetrics) computed from them.
//! The API server reaches it through an APIService, so `kubectl top` and the HPA use it as
//! they use metrics-server.
//!
//! - [`parse`]: the resource metrics exposition.
//! - [`storage`]: points and the usage rules (rates, restarts, zero readings).
//! - [`scrape`]: the HTTPS client for node agents.
//! - `cache`: watch-fed Node and Pod views (addresses, labels).
//! - `api`: the HTTP routes.

mod api;
mod cache;
pub mod parse;
pub mod scrape;
pub mod storage;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use scrape::KubeletTls;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to serve (plain HTTP; loopback unless something in front authenticates).
    pub listen: SocketAddr,
    /// How often nodes are scraped (`--metric-resolution`).
    pub resolution: Duration,
    /// How to reach node agents.
    pub kubelet_tls: KubeletTls,
    /// Per-node scrape timeout.
    pub scrape_timeout: Duration,
    /// Nodes scraped at once.
    pub concurrency: usize,
}

impl Config {
    /// Defaults: 15 s resolution, 10 s timeout, 64 nodes at once.
    pub fn new(listen: SocketAddr, kubelet_tls: KubeletTls) -> Self {
        Config {
            listen,
            resolution: Duration::from_secs(15),
            kubelet_tls,
            scrape_timeout: Duration::from_secs(10),
            concurrency: 64,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuccessLabels {
    success: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

/// The server's own series (metrics-server's names).
#[derive(Debug, Clone)]
struct ServerMetrics {
    request_duration: Histogram,
    requests: Family<SuccessLabels, Counter>,
    last_request: Family<NodeLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    points: Family<TypeLabels, Gauge>,
    freshness: Histogram,
    tick: Histogram,
    rounds: Counter,
}

impl ServerMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = ServerMetrics {
            request_duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            requests: Family::default(),
            last_request: Family::default(),
            points: Family::default(),
            freshness: Histogram::new(exponential_buckets(1.0, 1.5, 12)),
            tick: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            rounds: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("metrics_server");
        r.register(
            "kubelet_request_duration_seconds",
            "Duration of requests to the kubelet API in seconds",
            m.request_duration.clone(),
        );
        r.register(
            "kubelet_request",
            "Number of requests sent to the kubelet API",
            m.requests.clone(),
        );
        r.register(
            "kubelet_last_request_time_seconds",
            "Time of last request performed to the kubelet API since unix epoch in seconds",
            m.last_request.clone(),
        );
        r.register(
            "storage_points",
            "Number of metrics points stored",
            m.points.clone(),
        );
        r.register(
            "api_metric_freshness_seconds",
            "Freshness of metrics exported",
            m.freshness.clone(),
        );
        r.register(
            "manager_tick_duration_seconds",
            "The total time spent collecting and storing metrics in seconds",
            m.tick.clone(),
        );
        r.register(
            "scrape_rounds",
            "Scrape rounds over every Ready node",
            m.rounds.clone(),
        );
        m
    }
}

/// Shared state of the loops and handlers.
pub(crate) struct Server {
    storage: RwLock<storage::Storage>,
    cache: Arc<cache::Cache>,
    metrics: ServerMetrics,
    registry: Registry,
}

impl Server {
    fn observe_freshness(&self, timestamp_ms: i64) {
        let age = (jiff::Timestamp::now().as_millisecond() - timestamp_ms) as f64 / 1e3;
        self.metrics.freshness.observe(age.max(0.0));
    }
}

/// One round: every Ready node with an address, scraped concurrently.
async fn scrape_round(server: &Server, client: &scrape::KubeletClient, config: &Config) {
    let started = Instant::now();
    let targets: Vec<(String, cache::NodeInfo)> = server
        .cache
        .nodes
        .read()
        .expect("cache lock")
        .iter()
        .filter(|(_, n)| n.ready && n.address.is_some())
        .map(|(name, n)| (name.clone(), n.clone()))
        .collect();
    let results: Vec<(String, Option<parse::NodeScrape>)> = futures::stream::iter(targets)
        .map(|(name, node)| async move {
            let started = Instant::now();
            let address = node.address.as_deref().unwrap_or_default();
            let result = client.get(address, node.port, &node.path).await;
            let m = &server.metrics;
            m.request_duration.observe(started.elapsed().as_secs_f64());
            m.requests
                .get_or_create(&SuccessLabels {
                    success: result.is_ok().to_string(),
                })
                .inc();
            m.last_request
                .get_or_create(&NodeLabels { node: name.clone() })
                .set(jiff::Timestamp::now().as_millisecond() as f64 / 1e3);
            match result {
                Ok(text) => {
                    let scraped = parse::parse(&text, jiff::Timestamp::now().as_millisecond());
                    (name, Some(scraped))
                }
                Err(e) => {
                    tracing::warn!(node = %name, address, port = node.port, error = %e, "scraping the node failed");
                    (name, None)
                }
            }
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    let scraped: Vec<(String, parse::NodeScrape)> = results
        .into_iter()
        .filter_map(|(n, s)| Some((n, s?)))
        .collect();
    let mut storage = server.storage.write().expect("storage lock");
    storage.store(scraped, config.resolution);
    let (nodes, containers) = storage.points();
    for (kind, n) in [("node", nodes), ("container", containers)] {
        server
            .metrics
            .points
            .get_or_create(&TypeLabels {
                r#type: kind.to_owned(),
            })
            .set(n as i64);
    }
    drop(storage);
    server.metrics.rounds.inc();
    server.metrics.tick.observe(started.elapsed().as_secs_f64());
}

/// A started server.
pub struct RunningMetricsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningMetricsServer {
    /// Wait for its tasks to end (after `shutdown`).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Start: watches, the scrape loop and the HTTP server, until `shutdown`. `registry` receives
/// the server's own metrics, served at `/metrics`.
pub async fn start(
    config: Config,
    client: kube::Client,
    mut registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningMetricsServer> {
    let kubelet = scrape::KubeletClient::new(&config.kubelet_tls, config.scrape_timeout)?;
    let metrics = ServerMetrics::new(&mut registry);
    registry.register_collector(Box::new(skiff_telemetry::ProcessCollector));
    let server = Arc::new(Server {
        storage: RwLock::new(storage::Storage::default()),
        cache: Arc::new(cache::Cache::default()),
        metrics,
        registry,
    });
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let watch = tokio::spawn(cache::run(client, server.cache.clone(), shutdown.clone()));
    let scraper = {
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tokio::spawn(async move {
            let span = tracing::info_span!("metrics_scrape", resolution = ?config.resolution);
            tracing::Instrument::instrument(
                async move {
                    let mut tick = tokio::time::interval(config.resolution);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tick.tick() => scrape_round(&server, &kubelet, &config).await,
                        }
                    }
                },
                span,
            )
            .await;
        })
    };
    let http = {
        let app = api::router(server);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "metrics server stopped serving");
            }
        })
    };
    tracing::info!(%addr, "metrics server serving metrics.k8s.io/v1beta1");
    Ok(RunningMetricsServer {
        addr,
        tasks: vec![watch, scraper, http],
    })
}
