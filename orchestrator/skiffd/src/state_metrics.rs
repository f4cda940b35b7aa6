//! `skiffd kube-state-metrics`: the object state exporter on its own (see skiff-state-metrics).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

/// Flags of `skiffd kube-state-metrics`.
#[derive(Args, Debug, Clone)]
pub(crate) struct StateMetricsArgs {
    /// kubeconfig for the API server (objects are watched through it).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Where to serve /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind_address: SocketAddr,
}

/// Run until SIGINT/SIGTERM.
pub(crate) async fn run(args: StateMetricsArgs) -> anyhow::Result<()> {
    let client = crate::up::kube_client(&args.kubeconfig).await?;
    let shutdown = CancellationToken::new();
    let server = skiff_state_metrics::start(client, args.bind_address, shutdown.clone()).await?;
    println!("state metrics serving http://{}/metrics", server.addr);
    crate::up::shutdown_signal().await;
    shutdown.cancel();
    server.wait().await;
    Ok(())
}
