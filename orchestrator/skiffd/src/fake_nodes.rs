//! `skiffd fake-nodes`: host many fake nodes in one process for scale tests (see skiff-fakenode).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use skiff_fakenode::{FakeNodeMetrics, FakeNodesConfig};
use tokio_util::sync::CancellationToken;

/// Flags of `skiffd fake-nodes`.
#[derive(Args, Debug, Clone)]
pub(crate) struct FakeNodesArgs {
    /// kubeconfig for the API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// How many nodes to host.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Node names are `<prefix><index>`.
    #[arg(long, default_value = "fake-")]
    prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    memory: String,
    /// Pods each node accepts.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Leave out the `skiff.dev/fake-node=true:NoSchedule` taint (any pod may land on them).
    #[arg(long)]
    no_taint: bool,
    /// Seconds between Lease renewals of each node.
    #[arg(long, default_value_t = 10)]
    lease_renew_interval_secs: u64,
    /// API requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Where to serve /metrics and /healthz (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:10260")]
    metrics_bind_address: SocketAddr,
    /// Serve every node's kubelet `/metrics/resource` with fake usage (10m CPU and 20 MiB per
    /// container) at this address (HTTPS, self-signed: scrape with `--kubelet-insecure-tls`),
    /// and point the nodes at it.
    #[arg(long)]
    kubelet_endpoint: Option<SocketAddr>,
}

/// Run `skiffd fake-nodes` until SIGINT/SIGTERM.
pub(crate) async fn run(args: FakeNodesArgs) -> anyhow::Result<()> {
    let client = crate::up::kube_client(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let metrics = FakeNodeMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let shutdown = CancellationToken::new();
    let server =
        crate::control::serve_metrics(args.metrics_bind_address, registry, shutdown.clone())
            .await?;
    let config = FakeNodesConfig {
        prefix: args.prefix,
        count: args.count,
        cpu: args.cpu,
        memory: args.memory,
        max_pods: args.max_pods,
        taint: !args.no_taint,
        lease_renew_interval: Duration::from_secs(args.lease_renew_interval_secs.max(1)),
        concurrency: args.concurrency.max(1),
        kubelet_endpoint: args.kubelet_endpoint,
    };
    let mut nodes = tokio::spawn(skiff_fakenode::run(
        client,
        config,
        metrics,
        shutdown.clone(),
    ));
    let result = tokio::select! {
        _ = crate::up::shutdown_signal() => {
            shutdown.cancel();
            (&mut nodes).await
        }
        // Only ends early when registration failed.
        result = &mut nodes => result,
    };
    shutdown.cancel();
    let _ = server.await;
    result.context("the fake nodes task panicked")?
}
