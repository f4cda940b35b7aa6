//! Fake nodes for scale testing, kwok's idea: one process registers N Node objects, renews their
//! Leases like N agents would, and reports the pods bound to them as Running (and finishes their
//! deletion) without starting any container. The API server, scheduler and controllers cannot
//! tell the difference, so they can be measured at a thousand nodes on one machine.
//!
//! Fake nodes carry the label `skiff.dev/fake-node=true` and, unless disabled, the taint
//! `skiff.dev/fake-node=true:NoSchedule`, so real workloads stay off them unless they tolerate it.

mod metrics;
mod nodes;
mod pods;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use metrics::FakeNodeMetrics;

/// The label every fake node carries (and the key of its taint).
pub const FAKE_NODE_LABEL: &str = "skiff.dev/fake-node";

/// How many fake nodes, and what each one offers.
#[derive(Debug, Clone)]
pub struct FakeNodesConfig {
    /// Node names are `<prefix><index>`.
    pub prefix: String,
    /// How many nodes.
    pub count: usize,
    /// CPU capacity per node (a Kubernetes quantity).
    pub cpu: String,
    /// Memory capacity per node (a Kubernetes quantity).
    pub memory: String,
    /// Pod capacity per node.
    pub max_pods: u32,
    /// Add the `skiff.dev/fake-node=true:NoSchedule` taint.
    pub taint: bool,
    /// How often each node's Lease is renewed (the agent's default is 10 s).
    pub lease_renew_interval: Duration,
    /// How many API requests are in flight at once.
    pub concurrency: usize,
    /// Serve every node's kubelet `/metrics/resource` (fake usage) here, and point the nodes at
    /// it, so a metrics server can scrape them; `None` leaves the nodes without metrics.
    pub kubelet_endpoint: Option<std::net::SocketAddr>,
}

impl Default for FakeNodesConfig {
    fn default() -> Self {
        FakeNodesConfig {
            prefix: "fake-".into(),
            count: 10,
            cpu: "32".into(),
            memory: "256Gi".into(),
            max_pods: 110,
            taint: true,
            lease_renew_interval: Duration::from_secs(10),
            concurrency: 32,
            kubelet_endpoint: None,
        }
    }
}

impl FakeNodesConfig {
    fn names(&self) -> Vec<String> {
        (0..self.count)
            .map(|i| format!("{}{i}", self.prefix))
            .collect()
    }
}

/// Register the nodes, then keep their Leases fresh and play their pods until `shutdown`.
/// The nodes stay registered when this returns (they go NotReady once their Leases lapse), as
/// nodes whose agent stopped do.
pub async fn run(
    client: kube::Client,
    config: FakeNodesConfig,
    metrics: FakeNodeMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("fake_nodes", prefix = %config.prefix, count = config.count);
    let mut config = config;
    let usage = Arc::new(usage::Usage::new());
    let mut server = None;
    if let Some(addr) = config.kubelet_endpoint {
        let (task, bound) = usage::serve(addr, usage.clone(), shutdown.clone()).await?;
        span.in_scope(|| tracing::info!(%bound, "serving the fake nodes' /metrics/resource"));
        config.kubelet_endpoint = Some(bound);
        server = Some(task);
    }
    let names = config.names();
    let uids = tracing::Instrument::instrument(
        nodes::register_all(&client, &config, &names, &metrics),
        span.clone(),
    )
    .await?;
    span.in_scope(|| tracing::info!("fake nodes registered"));
    let leases = tokio::spawn(tracing::Instrument::instrument(
        nodes::renew_leases(
            client.clone(),
            config.clone(),
            uids,
            metrics.clone(),
            shutdown.clone(),
        ),
        span.clone(),
    ));
    let pods = tokio::spawn(tracing::Instrument::instrument(
        pods::run(client, config, names, metrics, usage, shutdown),
        span,
    ));
    let _ = leases.await;
    let _ = pods.await;
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}
