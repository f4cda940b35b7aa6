//! Skiff's object state exporter (kube-state-metrics' role): watches the cluster's objects and
//! renders, at every scrape, the `kube_*` series with kube-state-metrics' names and labels, so
//! kubernetes-mixin's recording rules and dashboards work unchanged.
//!
//! - `families`: every exported family with its help and type.
//! - `discovery`: Prometheus HTTP service discovery of nodes and pods (`/sd/nodes`, `/sd/pods`).
//! - [`render`]: objects → exposition.

mod discovery;
mod families;
pub mod render;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Stores {
    pods: Store<Pod>,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    daemonsets: Store<DaemonSet>,
    statefulsets: Store<StatefulSet>,
    jobs: Store<Job>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    hpas: Store<HorizontalPodAutoscaler>,
    registry: Registry,
}

/// Keep a store of every `K` in step with the cluster until `shutdown`; watch errors are
/// retried with kube-runtime's default backoff and counted.
fn reflect<K>(
    api: Api<K>,
    errors: Counter,
    shutdown: CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(move |event| {
            if let Err(e) = event {
                errors.inc();
                tracing::warn!(kind = std::any::type_name::<K>(), error = %e, "watch failed; retrying");
            }
            futures::future::ready(())
        });
    let span = tracing::info_span!("state_metrics_watch", kind = std::any::type_name::<K>());
    tasks.push(tokio::spawn(tracing::Instrument::instrument(
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = stream => {}
            }
        },
        span,
    )));
    store
}

async fn metrics(State(stores): State<Arc<Stores>>) -> Response {
    let objects = render::Objects {
        pods: stores.pods.state(),
        deployments: stores.deployments.state(),
        replicasets: stores.replicasets.state(),
        daemonsets: stores.daemonsets.state(),
        statefulsets: stores.statefulsets.state(),
        jobs: stores.jobs.state(),
        nodes: stores.nodes.state(),
        namespaces: stores.namespaces.state(),
        hpas: stores.hpas.state(),
    };
    let mut text = render::render(&objects);
    // The exporter's own series follow (kube-state-metrics serves them on a second port).
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &stores.registry);
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(skiff_telemetry::TEXT_0_0_4),
    );
    r
}

fn json_response(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn sd_nodes(State(stores): State<Arc<Stores>>) -> Response {
    json_response(discovery::nodes(&stores.nodes.state()))
}

async fn sd_pods(
    State(stores): State<Arc<Stores>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    json_response(discovery::pods(
        &stores.pods.state(),
        q.get("namespace").map(String::as_str),
    ))
}

/// A started exporter.
pub struct RunningStateMetrics {
    /// Where `/metrics` is served.
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningStateMetrics {
    /// Wait for its tasks to end (after `shutdown`).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Watch everything and serve `/metrics` at `listen` until `shutdown`.
pub async fn start(
    client: kube::Client,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningStateMetrics> {
    let mut registry = Registry::default();
    let errors = Counter::default();
    registry.register(
        "skiff_state_metrics_watch_errors",
        "Watch errors of the state exporter (each is retried with backoff)",
        errors.clone(),
    );
    registry.register_collector(Box::new(skiff_telemetry::ProcessCollector));
    let mut tasks = Vec::new();
    let c = &client;
    let stores = Arc::new(Stores {
        pods: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        deployments: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        replicasets: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        daemonsets: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        statefulsets: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        jobs: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        nodes: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        namespaces: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        hpas: reflect(
            Api::all(c.clone()),
            errors.clone(),
            shutdown.clone(),
            &mut tasks,
        ),
        registry,
    });
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/sd/nodes", axum::routing::get(sd_nodes))
        .route("/sd/pods", axum::routing::get(sd_pods))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(stores);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    }));
    tracing::info!(%addr, "state metrics serving /metrics");
    Ok(RunningStateMetrics { addr, tasks })
}
